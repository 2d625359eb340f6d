"""Built-in trainer for machines without T5X: SeqIO task + gin model -> Orbax checkpoints.

  python -m cost_jax.train --gin_file=gin/train/tiger_ml100k.gin --model_dir=DIR \
      [--gin_param="TrainConfig.num_train_steps = 2000"] [--gin.TrainConfig.seed=1]

The model (cost_jax.network.TransformerConfig) comes only from the model gin the
trainer gin includes; the trainer's own settings are the gin-configurable
`TrainConfig` below (defaults = TIGER §4.1.3). What it does:

  * materializes the task's train/validation splits once into numpy arrays
    (cached in DIR/cache, keyed by task, feature lengths and file hashes);
  * batch for step s and dropout key are pure functions of (seed, s), so a run
    killed and restarted from its last checkpoint ends with the same parameters
    as one that never stopped;
  * data parallelism over jax.local_devices() (batch dimension sharded over a
    1-D "data" mesh, parameters and optimizer state replicated);
  * optax optimizer (Adafactor with T5X's defaults, or AdamW), one jitted train
    step with the state donated;
  * Orbax checkpoints every `checkpoint_every` steps and at the end (last
    `keep_checkpoints` kept), restored automatically on start;
  * CLU metric writer (TensorBoard event files in DIR), progress lines with
    steps/s, examples/s and ETA; periodic validation Recall/NDCG@K with
    trie-constrained beam search on a (configurable) user subsample;
  * at the end (eval_test) the test split is scored by cost_jax.evaluate:
    DIR/metrics.json, DIR/topk.npy, DIR/targets.npy, DIR/user_ids.npy.

In-process (no gin, callable many times): `train_and_evaluate(task, model_dir, ...)`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
from typing import Any, Mapping, Sequence

import gin
import numpy as np

from cost_jax import input_pipeline
from cost_jax.errors import UserError, exits_cleanly

CONFIG_FILE = "config.json"
OPERATIVE_GIN_FILE = "config.gin"
ITEM_TOKENS_FILE = "item_tokens.npy"
CONFIG_FORMAT = "cost_jax.train/v1"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Trainer settings (gin: `TrainConfig.<field> = ...`). Model settings live in the model gin."""

  # What to train on: a registered SeqIO task name ({method}_{dataset}), or a
  # processed dataset dir + tokenizer dir (then a task is registered on the fly,
  # named `task` or "{method}_{dataset}").
  task: str = ""
  dataset_dir: str = ""
  tokenizer_dir: str = ""
  batch_size: int = 256  # TIGER §4.1.3 (CoST RecSys'24 §4.1: 512)
  num_train_steps: int = 200_000  # TIGER §4.1.3 (Beauty, Sports; 100k for Toys)
  # Optimizer: T5X's default Adafactor (TIGER §4.1.3 trains with T5X): factored
  # second moments, decay 0.8, update clipping 1.0, parameter-scaled steps.
  # "adamw" = optax.adamw(b1=0.9, b2=0.999) with `weight_decay`.
  optimizer: str = "adafactor"
  learning_rate: float = 0.01  # TIGER §4.1.3 (CoST RecSys'24 §4.1: 1e-3)
  # "rsqrt": lr * sqrt(c / max(step, c)) with c = lr_constant_steps, i.e. constant
  # for the first 10k steps then inverse square root decay (TIGER §4.1.3);
  # "constant": lr throughout.
  lr_schedule: str = "rsqrt"
  lr_constant_steps: int = 10_000  # TIGER §4.1.3
  weight_decay: float = 0.0
  grad_clip_norm: float = 0.0  # global-norm clipping; 0 = off (Adafactor clips updates itself)
  seed: int = 0  # params init, dropout and data order
  log_every: int = 100
  eval_every: int = 5_000  # validation Recall/NDCG every N steps; 0 = never during training
  eval_at_end: bool = True  # validation Recall/NDCG after the last step -> metrics_validation.json
  eval_num_users: int = 0  # validation user subsample for speed; 0 = all users
  eval_batch_size: int = 64
  num_beams: int = 50  # >= 40 = max K of Recall@40 (CoST §4.1); TIGER Fig. 6 shows K <= 20
  topk: int = 40
  checkpoint_every: int = 1_000
  keep_checkpoints: int = 3
  eval_test: bool = True  # score the test split at the end -> metrics.json
  cache_dir: str = ""  # materialized splits; "" = model_dir/cache
  # Items of history per example when the task is registered here from
  # dataset_dir/tokenizer_dir; 0 = cost_jax_tasks.MAX_HISTORY of the dataset
  # (TIGER §4.1.1: 20). A registered task keeps its own.
  max_history: int = 0

  def validate(self) -> None:
    checks = [
        (self.batch_size >= 1, "batch_size must be >= 1"),
        (self.num_train_steps >= 0, "num_train_steps must be >= 0"),
        (self.optimizer in ("adafactor", "adamw"), "optimizer must be 'adafactor' or 'adamw'"),
        (self.lr_schedule in ("rsqrt", "constant"), "lr_schedule must be 'rsqrt' or 'constant'"),
        (self.learning_rate > 0, "learning_rate must be > 0"),
        (self.lr_constant_steps >= 1, "lr_constant_steps must be >= 1"),
        (self.log_every >= 1, "log_every must be >= 1"),
        (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
        (self.num_beams >= self.topk >= 1, "need num_beams >= topk >= 1"),
        (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
        (bool(self.task) or bool(self.dataset_dir and self.tokenizer_dir),
         "set TrainConfig.task (a SeqIO task name) or both dataset_dir and tokenizer_dir"),
    ]
    for ok, msg in checks:
      if not ok:
        raise UserError(f"TrainConfig: {msg} (got {self})")


# Gin binds `TrainConfig.x` through this registered subclass; the plain dataclass
# above stays unaffected by global gin state (for the in-process API).
_GinTrainConfig = gin.external_configurable(TrainConfig, "TrainConfig")

# Fields that change the training trajectory: a resumed run must match them.
_TRAJECTORY_FIELDS = ("batch_size", "optimizer", "learning_rate", "lr_schedule",
                      "lr_constant_steps", "weight_decay", "grad_clip_norm", "seed")


# --- optimizer --------------------------------------------------------------------


def learning_rate_fn(config: TrainConfig):
  """step -> learning rate (jnp scalar), see TrainConfig.lr_schedule."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  lr, c = float(config.learning_rate), float(config.lr_constant_steps)
  if config.lr_schedule == "constant":
    return lambda step: jnp.asarray(lr, jnp.float32)

  def rsqrt(step):
    s = jnp.maximum(jnp.asarray(step, jnp.float32), c)
    return lr * jnp.sqrt(c / s)

  return rsqrt


def make_optimizer(config: TrainConfig):
  import optax  # pylint: disable=g-import-not-at-top
  schedule = learning_rate_fn(config)
  if config.optimizer == "adafactor":
    # optax.adafactor's defaults equal T5X's Adafactor defaults (decay_rate 0.8,
    # clipping_threshold 1.0, multiply_by_parameter_scale, factored, eps 1e-30).
    tx = optax.adafactor(learning_rate=schedule)
  else:
    tx = optax.adamw(learning_rate=schedule, b1=0.9, b2=0.999, weight_decay=config.weight_decay)
  if config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx


# --- task, data and model ------------------------------------------------------------


@dataclasses.dataclass
class TaskInfo:
  name: str
  dataset_dir: str | None
  tokenizer_dir: str | None
  vocab_size: int
  max_history: int | None = None  # items of history in "inputs" (cost_jax_tasks)

  def feature_lengths(self, id_length: int) -> dict[str, int] | None:
    """T5X TASK_FEATURE_LENGTHS: inputs = 1 + max_history * L, targets = L (Contract 3)."""
    if self.max_history is None:
      return None
    return {"inputs": 1 + self.max_history * id_length, "targets": id_length}


def _task_source(task):
  """The cost_jax_tasks SeqRecSource behind `task`, or None for a foreign task."""
  try:
    import cost_jax_tasks  # pylint: disable=g-import-not-at-top
    return cost_jax_tasks.task_source(task)
  except (ImportError, UserError, AttributeError):
    return None


def resolve_task(config: TrainConfig):
  """The seqio Task of `config` (registering one for dataset_dir/tokenizer_dir) + TaskInfo."""
  if config.dataset_dir and config.tokenizer_dir:
    for d, what in ((config.dataset_dir, "dataset_dir"), (config.tokenizer_dir, "tokenizer_dir")):
      if not os.path.isdir(d):
        raise UserError(f"{d}: {what} does not exist")
    import seqio  # pylint: disable=g-import-not-at-top
    try:
      import cost_jax_tasks  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise UserError(f"cannot import cost_jax_tasks ({e})") from None
    name = config.task or _default_task_name(config.dataset_dir, config.tokenizer_dir)
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
    dataset = os.path.basename(os.path.normpath(config.dataset_dir))
    max_history = config.max_history or cost_jax_tasks.MAX_HISTORY.get(
        dataset, cost_jax_tasks.DEFAULT_MAX_HISTORY)
    task = cost_jax_tasks.register_task(name, os.path.abspath(config.dataset_dir),
                                        os.path.abspath(config.tokenizer_dir), max_history)
  else:
    task = input_pipeline.get_task(config.task)
  source = _task_source(task)
  ds = getattr(source, "dataset_dir", None)
  tok = getattr(source, "tokenizer_dir", None) or getattr(
      task.output_features["targets"].vocabulary, "tokenizer_dir", None)
  if config.dataset_dir:
    ds = os.path.abspath(config.dataset_dir)
  if config.tokenizer_dir:
    tok = os.path.abspath(config.tokenizer_dir)
  if tok is None:
    raise UserError(f"task '{task.name}': cannot find its tokenizer dir (targets vocabulary "
                    "has no tokenizer_dir); set TrainConfig.tokenizer_dir")
  _check_tokenizer_dir(tok)
  if ds is not None and not os.path.isdir(ds):
    raise UserError(f"{ds}: dataset directory of task '{task.name}' does not exist (build it with "
                    "`python -m cost_jax.data prepare ...`)")
  vocab_size = int(task.output_features["targets"].vocabulary.vocab_size)
  max_history = getattr(source, "max_history", None)
  return task, TaskInfo(task.name, ds, tok, vocab_size, max_history)


def _default_task_name(dataset_dir: str, tokenizer_dir: str) -> str:
  method = "tok"
  try:
    with open(os.path.join(tokenizer_dir, "vocabulary.json")) as f:
      method = str(json.load(f).get("method", method))
  except (OSError, ValueError):
    pass
  dataset = os.path.basename(os.path.normpath(dataset_dir))
  # SeqIO task names are identifiers: "rqvae+cost" -> "rqvae_cost" (the tasks/ convention).
  return re.sub(r"[^0-9A-Za-z_]", "_", f"{method}_{dataset}")


def _check_tokenizer_dir(tokenizer_dir: str) -> None:
  if not os.path.isdir(tokenizer_dir):
    raise UserError(f"{tokenizer_dir}: tokenizer dir does not exist "
                    "(run `python -m cost_jax.tokenize --output DIR` first)")
  for f in ("semantic_ids.npy", "vocabulary.json"):
    if not os.path.isfile(os.path.join(tokenizer_dir, f)):
      raise UserError(f"{os.path.join(tokenizer_dir, f)}: missing (not a tokenizer output dir)")


def load_item_tokens(tokenizer_dir: str) -> np.ndarray:
  """int32 [num_items, L]: every item's semantic ID in token space (for the trie)."""
  from cost_jax.layout import TokenLayout  # pylint: disable=g-import-not-at-top
  _check_tokenizer_dir(tokenizer_dir)
  layout = TokenLayout.load(tokenizer_dir)
  path = os.path.join(tokenizer_dir, "semantic_ids.npy")
  try:
    ids = np.load(path)
  except (OSError, ValueError) as e:
    raise UserError(f"{path}: cannot read ({e})") from None
  if ids.ndim != 2 or ids.shape[1] != layout.num_levels:
    raise UserError(f"{path}: expected int [num_items, {layout.num_levels}], got {ids.shape}")
  if (ids < 0).any() or (ids >= np.asarray(layout.codebook_sizes)).any():
    raise UserError(f"{path}: codes outside the codebook sizes {list(layout.codebook_sizes)}")
  return layout.codes_to_tokens(ids)


def data_fingerprint(info: TaskInfo) -> str:
  files = []
  if info.dataset_dir:
    files.append(os.path.join(info.dataset_dir, "sequences.parquet"))
  if info.tokenizer_dir:
    files += [os.path.join(info.tokenizer_dir, f) for f in ("semantic_ids.npy", "vocabulary.json")]
  return input_pipeline.file_fingerprint(files)


def default_model_config():
  """TransformerConfig from its dataclass defaults only (ignores global gin state)."""
  from cost_jax import network  # pylint: disable=g-import-not-at-top
  cls = network.TransformerConfig
  kwargs = {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}
  kwargs.update({f.name: f.default_factory() for f in dataclasses.fields(cls)
                 if f.default_factory is not dataclasses.MISSING})  # type: ignore[misc]
  return cls(**kwargs)


def _plain(obj: Any) -> Any:
  """dataclass/tuple -> JSON-able."""
  if dataclasses.is_dataclass(obj):
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
  if isinstance(obj, (list, tuple)):
    return [_plain(v) for v in obj]
  if isinstance(obj, (np.integer, np.floating)):
    return obj.item()
  return obj


def model_config_from_dict(d: Mapping[str, Any]):
  from cost_jax import network  # pylint: disable=g-import-not-at-top
  cls = network.TransformerConfig
  fields = {f.name: f for f in dataclasses.fields(cls)}
  kwargs = {}
  for k, v in d.items():
    if k not in fields:
      raise UserError(f"{CONFIG_FILE}: model field '{k}' is not a TransformerConfig field")
    kwargs[k] = tuple(v) if isinstance(v, list) else v
  base = default_model_config()
  return dataclasses.replace(base, **kwargs)


def finalize_model_config(model_config, vocab_size: int, lengths: Mapping[str, int]):
  """Sets vocab_size (from the tokenizer) and max lengths (from the data) on the model config."""
  names = {f.name for f in dataclasses.fields(model_config)}
  updates: dict[str, Any] = {"vocab_size": int(vocab_size)}
  if "max_input_len" in names:
    updates["max_input_len"] = max(int(lengths["inputs"]), int(model_config.max_input_len or 0))
  if "max_target_len" in names:
    updates["max_target_len"] = max(int(lengths["targets"]), int(model_config.max_target_len or 0))
  return dataclasses.replace(model_config, **updates)


# --- compilation cache ---------------------------------------------------------------


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache unless the user configured one.

  $COST_JAX_COMPILATION_CACHE: a directory, or "0" to disable; default
  cost_jax.paths.data_root()/jax_cache. A resumed or repeated run then skips
  recompiling the train step, init and beam search.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from cost_jax import paths  # pylint: disable=g-import-not-at-top
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  where = os.environ.get("COST_JAX_COMPILATION_CACHE", "")
  if where == "0":
    return None
  where = where or os.path.join(paths.data_root(), "jax_cache")
  try:
    os.makedirs(where, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return where


# --- devices -------------------------------------------------------------------------------


@dataclasses.dataclass
class DeviceLayout:
  """A 1-D data-parallel mesh over the local devices."""

  mesh: Any
  batch: Any  # NamedSharding: dim 0 over "data"
  replicated: Any

  @property
  def num_devices(self) -> int:
    return int(self.mesh.devices.size)

  @classmethod
  def create(cls) -> "DeviceLayout":
    import jax  # pylint: disable=g-import-not-at-top
    from jax.sharding import Mesh, NamedSharding  # pylint: disable=g-import-not-at-top
    from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
    mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
    return cls(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))

  def round_batch(self, batch_size: int) -> int:
    """Smallest multiple of the device count >= batch_size."""
    return -(-batch_size // self.num_devices) * self.num_devices


# --- train state ---------------------------------------------------------------------


def init_state(module, tx, lengths: Mapping[str, int], seed: int, replicated):
  """{"params", "opt_state", "step", "dropout_rng"} placed (replicated) on the mesh."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def init_fn(rng):
    enc = jnp.ones((1, int(lengths["inputs"])), jnp.int32)
    dec = jnp.ones((1, int(lengths["targets"])), jnp.int32)
    variables = module.init({"params": rng, "dropout": rng}, enc, dec, dec, enable_dropout=False)
    params = flax.core.meta.unbox(variables["params"])
    # The dropout key of step s is fold_in(dropout_rng, s): a function of (seed, step).
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
            "dropout_rng": jax.random.fold_in(rng, 0x0D0)}

  return jax.jit(init_fn, out_shardings=replicated)(jax.random.PRNGKey(seed))


def make_train_step(module, tx, config: TrainConfig, layout: DeviceLayout):
  """jit((state, batch) -> (state, metrics)) with the state donated."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from cost_jax import models  # pylint: disable=g-import-not-at-top
  schedule = learning_rate_fn(config)
  loss_fn = functools.partial(models.loss_fn, module=module)

  def step_fn(state, batch):
    rng = jax.random.fold_in(state["dropout_rng"], state["step"])
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    out = {k: v for k, v in dict(metrics or {}).items() if getattr(v, "ndim", 1) == 0}
    out.update(loss=loss, learning_rate=schedule(state["step"]), grad_norm=optax.global_norm(grads))
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
            "dropout_rng": state["dropout_rng"]}, out

  return jax.jit(step_fn, in_shardings=(layout.replicated, layout.batch),
                 out_shardings=(layout.replicated, layout.replicated), donate_argnums=(0,))


# --- model_dir config ----------------------------------------------------------------


def _atomic_write_text(path: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _write_or_check_config(model_dir: str, record: dict, has_checkpoint: bool) -> None:
  path = os.path.join(model_dir, CONFIG_FILE)
  if has_checkpoint and os.path.exists(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f"{path}: unreadable ({e})") from None
    diffs = []
    if old.get("model") != record["model"]:
      keys = sorted(set(old.get("model", {})) | set(record["model"]))
      diffs += [f"model.{k}: {old.get('model', {}).get(k)!r} -> {record['model'].get(k)!r}"
                for k in keys if old.get("model", {}).get(k) != record["model"].get(k)]
    for k in _TRAJECTORY_FIELDS:
      if old.get("train", {}).get(k) != record["train"].get(k):
        diffs.append(f"TrainConfig.{k}: {old.get('train', {}).get(k)!r} -> {record['train'][k]!r}")
    if old.get("task", {}).get("name") != record["task"]["name"]:
      diffs.append(f"task: {old.get('task', {}).get('name')!r} -> {record['task']['name']!r}")
    if diffs:
      raise UserError(f"{path}: model_dir holds checkpoints of a different run; resuming would mix "
                      f"them ({'; '.join(diffs)}). Use a new --model_dir.")
  _atomic_write_text(path, json.dumps(record, indent=2) + "\n")


@dataclasses.dataclass
class Run:
  """A trained model_dir loaded for evaluation (see `load_run`)."""

  model_dir: str
  record: dict
  train_config: TrainConfig
  model_config: Any
  module: Any
  params: Any
  step: int
  item_tokens: np.ndarray
  layout: DeviceLayout

  @property
  def batch_sharding(self):
    return self.layout.batch

  def round_batch(self, batch_size: int) -> int:
    return self.layout.round_batch(batch_size)

  def split_arrays(self, split: str) -> input_pipeline.ExampleArrays:
    config = self.train_config
    task, info = resolve_task(config)
    lengths = self.record["feature_lengths"]
    return input_pipeline.cached_split(task, split, _cache_dir(config, self.model_dir),
                                       data_fingerprint(info), lengths)


def _cache_dir(config: TrainConfig, model_dir: str) -> str:
  return config.cache_dir or os.path.join(model_dir, "cache")


def load_run(model_dir: str, step: int | None = None) -> Run:
  """Reads DIR/config.json + item_tokens.npy and restores the params of a checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  from cost_jax import checkpoints, network  # pylint: disable=g-import-not-at-top
  model_dir = os.path.abspath(model_dir)
  path = os.path.join(model_dir, CONFIG_FILE)
  try:
    with open(path) as f:
      record = json.load(f)
  except FileNotFoundError:
    raise UserError(f"{path}: missing (not a cost_jax.train model_dir)") from None
  except ValueError as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  train_config = TrainConfig(**{k: v for k, v in record.get("train", {}).items() if k in fields})
  task = record.get("task", {})
  # The run's own task dirs, so a task registered on the fly resolves again.
  train_config = dataclasses.replace(
      train_config, task=task.get("name", train_config.task),
      dataset_dir=task.get("dataset_dir") or train_config.dataset_dir,
      tokenizer_dir=task.get("tokenizer_dir") or train_config.tokenizer_dir)
  model_config = model_config_from_dict(record["model"])
  module = network.Transformer(model_config)
  tokens_path = os.path.join(model_dir, ITEM_TOKENS_FILE)
  try:
    item_tokens = np.load(tokens_path)
  except OSError:
    raise UserError(f"{tokens_path}: missing (not a cost_jax.train model_dir)") from None
  layout = DeviceLayout.create()
  tx = make_optimizer(train_config)
  lengths = record["feature_lengths"]
  abstract = jax.eval_shape(
      lambda: init_state(module, tx, lengths, train_config.seed, layout.replicated))
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=layout.replicated), abstract)
  with checkpoints.Checkpointer(model_dir, read_only=True) as ckpt:
    if ckpt.latest_step() is None:
      raise UserError(f"{ckpt.directory}: no checkpoints (train a model into {model_dir} first)")
    state = ckpt.restore(abstract, step)
  return Run(model_dir, record, train_config, model_config, module, state["params"],
             int(state["step"]), item_tokens, layout)


# --- the training loop ---------------------------------------------------------------


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  import jax  # pylint: disable=g-import-not-at-top
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def train(config: TrainConfig, model_dir: str, model_config=None, *,
          operative_gin: str | None = None, show_progress: bool = True) -> dict[str, Any]:
  """Trains (resuming from the latest checkpoint in model_dir) and evaluates.

  Returns {"step", "train": last logged train metrics, "validation": last
  validation metrics, "test": test metrics (if eval_test), "steps_per_sec",
  "examples_per_sec", "resumed_from"}.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from cost_jax import checkpoints, network  # pylint: disable=g-import-not-at-top
  from cost_jax import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  from cost_jax.progress import Progress  # pylint: disable=g-import-not-at-top

  config.validate()
  enable_compilation_cache()
  model_dir = os.path.abspath(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  layout = DeviceLayout.create()
  if config.batch_size % layout.num_devices:
    raise UserError(f"TrainConfig.batch_size {config.batch_size} is not a multiple of the "
                    f"{layout.num_devices} local devices")
  log = functools.partial(print, file=sys.stderr, flush=True)

  # Data (tf.data only here, once; cached as .npz).
  task, info = resolve_task(config)
  item_tokens = load_item_tokens(info.tokenizer_dir)
  from cost_jax.layout import TokenLayout  # pylint: disable=g-import-not-at-top
  token_layout = TokenLayout.load(info.tokenizer_dir)
  cache_dir = _cache_dir(config, model_dir)
  fingerprint = data_fingerprint(info)
  t0 = time.perf_counter()
  train_arrays = input_pipeline.cached_split(task, "train", cache_dir, fingerprint,
                                             info.feature_lengths(item_tokens.shape[1]))
  lengths = train_arrays.feature_lengths
  valid_arrays = input_pipeline.cached_split(task, "validation", cache_dir, fingerprint, lengths)
  log(f"[train] task {info.name}: {len(train_arrays):,} train examples, {len(valid_arrays):,} "
      f"validation users, {len(item_tokens):,} items, feature lengths {lengths} "
      f"({time.perf_counter() - t0:.1f}s to load)")
  if int(train_arrays.decoder_target_tokens.max()) >= info.vocab_size:
    raise UserError(f"task '{info.name}': target tokens exceed the vocabulary size "
                    f"{info.vocab_size}")

  # Model + optimizer + state.
  model_config = finalize_model_config(model_config or default_model_config(),
                                       info.vocab_size, lengths)
  module = network.Transformer(model_config)
  tx = make_optimizer(config)
  ckpt = checkpoints.Checkpointer(model_dir, keep=config.keep_checkpoints)
  resumed_from = ckpt.latest_step()
  record = {"format": CONFIG_FORMAT, "train": _plain(config), "model": _plain(model_config),
            "task": dataclasses.asdict(info), "feature_lengths": lengths,
            "num_items": int(len(item_tokens)), "num_devices": layout.num_devices,
            "layout": {"level_offsets": list(token_layout.level_offsets),
                       "codebook_sizes": list(token_layout.codebook_sizes)}}
  _write_or_check_config(model_dir, record, resumed_from is not None)
  np.save(os.path.join(model_dir, ITEM_TOKENS_FILE), item_tokens)
  if operative_gin is not None:
    _atomic_write_text(os.path.join(model_dir, OPERATIVE_GIN_FILE), operative_gin)

  state = init_state(module, tx, lengths, config.seed, layout.replicated)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  if resumed_from is not None:
    state = ckpt.restore(state, resumed_from)
    log(f"[train] resumed from {ckpt.directory}/{resumed_from}")
  start = int(state["step"])
  log(f"[train] {num_params:,} params, {layout.num_devices} device(s), batch {config.batch_size}, "
      f"steps {start} -> {config.num_train_steps}, {config.optimizer} lr {config.learning_rate} "
      f"({config.lr_schedule})")

  train_step = make_train_step(module, tx, config, layout)
  batcher = input_pipeline.EpochBatcher(train_arrays, config.batch_size, config.seed)
  writer = metric_writers.create_default_writer(model_dir, just_logging=jax.process_index() > 0,
                                                asynchronous=True)
  eval_batch = layout.round_batch(config.eval_batch_size)
  eval_users = input_pipeline.eval_subset(valid_arrays, config.eval_num_users or None, config.seed)
  predict_fn = None

  def run_validation(step: int) -> dict[str, float]:
    nonlocal predict_fn
    if predict_fn is None:
      predict_fn = eval_lib.make_predict_fn(module, item_tokens, config.num_beams, config.topk,
                                            token_layout.level_offsets,
                                            token_layout.codebook_sizes)
    t = time.perf_counter()
    m, _, _ = eval_lib.evaluate_arrays(
        module, state["params"], eval_users, item_tokens, batch_size=eval_batch,
        sharding=layout.batch, predict_fn=predict_fn, desc=f"validate@{step}",
        show_progress=show_progress)
    writer.write_scalars(step, {f"valid/{k}": v for k, v in m.items()})
    log(f"[train] step {step} validation ({len(eval_users)} users, "
        f"{time.perf_counter() - t:.1f}s): "
        + " ".join(f"{k}={m[k]:.4f}" for k in ("recall@5", "recall@10", "ndcg@10", "recall@40")))
    return m

  progress = Progress(config.num_train_steps, desc="train", unit="steps",
                      items_per_step=config.batch_size, start_step=start,
                      stream=sys.stderr if show_progress else io.StringIO())
  history: list[dict] = []
  last_train: dict[str, float] = {}
  last_valid: dict[str, float] = {}
  timed_steps, timed_secs, timed_cpu = 0, 0.0, 0.0
  t_log, cpu_log, step_log = time.perf_counter(), time.process_time(), start
  step = start
  try:
    for step_, batch in input_pipeline.device_batches(batcher, start, config.num_train_steps,
                                                      layout.batch):
      state, metrics = train_step(state, batch)
      history.append(metrics)
      step = step_ + 1
      if step % config.log_every == 0 or step == config.num_train_steps:
        last_train = _mean_metrics(history)
        history = []
        now, cpu_now = time.perf_counter(), time.process_time()
        dt, ds = now - t_log, step - step_log
        if step_log > start:  # the first interval includes compilation
          timed_steps += ds
          timed_secs += dt
          timed_cpu += cpu_now - cpu_log
        t_log, cpu_log, step_log = now, cpu_now, step
        rates = {"steps_per_sec": ds / dt, "examples_per_sec": ds * config.batch_size / dt,
                 "epoch": batcher.epoch_of(step)}
        writer.write_scalars(step, {**{f"train/{k}": v for k, v in last_train.items()}, **rates})
        progress.update(step, {"loss": last_train["loss"], "lr": last_train["learning_rate"]},
                        force=True)
      else:
        progress.update(step)
      if step % config.checkpoint_every == 0:
        ckpt.save(step, state)
      if config.eval_every and step % config.eval_every == 0 and step < config.num_train_steps:
        last_valid = run_validation(step)
  except KeyboardInterrupt:
    try:  # the state may have been donated to a step that did not finish
      interrupted_at = int(state["step"])
      ckpt.save(interrupted_at, state)
      log(f"[train] interrupted: saved step {interrupted_at}")
    except (RuntimeError, ValueError):
      log(f"[train] interrupted: resume from the last checkpoint ({ckpt.latest_step()})")
    ckpt.close()
    raise
  progress.close()
  final_step = int(state["step"])
  ckpt.save(final_step, state)
  ckpt.close()

  result: dict[str, Any] = {"step": final_step, "resumed_from": resumed_from, "train": last_train}
  if timed_steps:
    result["steps_per_sec"] = timed_steps / timed_secs
    result["examples_per_sec"] = timed_steps * config.batch_size / timed_secs
    # Process CPU seconds per step (all threads): robust to other load on a shared machine.
    result["cpu_sec_per_step"] = timed_cpu / timed_steps
  if config.eval_at_end:
    last_valid = run_validation(final_step)
    _atomic_write_text(eval_lib.result_file(model_dir, "metrics.json", "validation"),
                       json.dumps({**last_valid, "split": "validation", "step": final_step,
                                   "num_beams": config.num_beams, "topk": config.topk}, indent=2))
  result["validation"] = last_valid
  if config.eval_test:
    test_arrays = input_pipeline.cached_split(task, "test", cache_dir, fingerprint, lengths)
    m, items, scores = eval_lib.evaluate_arrays(
        module, state["params"], test_arrays, item_tokens, batch_size=eval_batch,
        sharding=layout.batch, predict_fn=predict_fn or eval_lib.make_predict_fn(
            module, item_tokens, config.num_beams, config.topk, token_layout.level_offsets,
            token_layout.codebook_sizes),
        desc="test", show_progress=show_progress)
    m.update(split="test", step=final_step, num_beams=config.num_beams, topk=config.topk)
    eval_lib.write_results(model_dir, "test", m, items, test_arrays.item_index,
                           test_arrays.user_index, scores)
    writer.write_scalars(final_step, {f"test/{k}": v for k, v in m.items()
                                      if isinstance(v, (int, float))})
    log("[train] test: " + " ".join(f"{k}={m[k]:.4f}" for k in eval_lib.METRIC_KEYS[:-1]))
    result["test"] = m
  writer.flush()
  writer.close()
  return result


# --- in-process API ------------------------------------------------------------------


@contextlib.contextmanager
def _fresh_gin():
  """Clears gin before and after, so repeated calls in one process do not leak bindings."""
  with gin.unlock_config():
    gin.clear_config()
  try:
    yield
  finally:
    with gin.unlock_config():
      gin.clear_config()


def _repo_gin_dirs() -> list[str]:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  dirs = []
  for d in (os.getcwd(), root, os.path.join(root, "gin")):
    if os.path.isdir(d) and d not in dirs:
      dirs.append(d)
  return dirs


class _DropGinPathNoise(logging.Filter):
  """gin logs 'Path not found' for every search-path miss before a hit; hide those."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith("Path not found")


def _resolve_gin_file(f: str) -> str:
  for d in [""] + _repo_gin_dirs():
    p = os.path.join(d, f) if d else f
    if os.path.isfile(p):
      return os.path.abspath(p)
  raise UserError(f"{f}: gin file not found (searched {', '.join(_repo_gin_dirs())})")


def configs_from_gin(gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()):
  """(TrainConfig, TransformerConfig, operative gin text) from gin files + bindings.

  Clears the global gin config before and after, so it can be called many times.
  """
  from cost_jax import network  # pylint: disable=g-import-not-at-top
  files = [_resolve_gin_file(f) for f in gin_files]
  noise = _DropGinPathNoise()
  logging.getLogger().addFilter(noise)
  try:
    with _fresh_gin():
      for d in _repo_gin_dirs():
        gin.add_config_file_search_path(d)
      try:
        gin.parse_config_files_and_bindings(files, list(gin_bindings), finalize_config=False)
      except (ValueError, SyntaxError, IOError, KeyError, ImportError, RuntimeError) as e:
        msg = " ".join(str(e).split("\n")[:3]) if str(e) else type(e).__name__
        raise UserError(f"gin: {msg}") from None
      try:
        cfg = _GinTrainConfig()
        model_config = network.TransformerConfig()
      except (TypeError, ValueError) as e:
        raise UserError(f"gin: {e}") from None
      operative = gin.config_str()
  finally:
    logging.getLogger().removeFilter(noise)
  train_config = TrainConfig(**{f.name: getattr(cfg, f.name)
                                for f in dataclasses.fields(TrainConfig)})
  return train_config, model_config, operative


# Alternative names accepted by train_and_evaluate(**kwargs).
_ALIASES = {"train_steps": "num_train_steps", "warmup_steps": "lr_constant_steps",
            "steps": "num_train_steps", "lr": "learning_rate"}


def split_overrides(kwargs: Mapping[str, Any], model_config=None) -> tuple[dict, dict]:
  """Routes flat keyword overrides to (TrainConfig fields, TransformerConfig fields)."""
  train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
  if model_config is None:
    from cost_jax import network  # pylint: disable=g-import-not-at-top
    model_fields = {f.name for f in dataclasses.fields(network.TransformerConfig)}
  else:
    model_fields = {f.name for f in dataclasses.fields(model_config)}
  train_kw, model_kw = {}, {}
  for k, v in kwargs.items():
    k = _ALIASES.get(k, k)
    if k in train_fields:
      train_kw[k] = v
    elif k in model_fields:
      model_kw[k] = tuple(v) if isinstance(v, list) else v
    else:
      raise UserError(f"train_and_evaluate: unknown setting '{k}' (neither a TrainConfig nor a "
                      f"TransformerConfig field; TrainConfig: {', '.join(sorted(train_fields))})")
  return train_kw, model_kw


def train_and_evaluate(task: str | tuple[str, str] | Mapping[str, str] | None = None,
                       model_dir: str | None = None, *, dataset_dir: str | None = None,
                       tokenizer_dir: str | None = None,
                       train_config: TrainConfig | None = None, model_config=None,
                       gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = (),
                       show_progress: bool = True, **overrides: Any) -> dict[str, Any]:
  """Trains into `model_dir` (resuming if it has checkpoints) and returns the test metrics.

  What to train on: `task` = a registered SeqIO task name, or (dataset_dir,
  tokenizer_dir), or dataset_dir=/tokenizer_dir= keywords (a task is registered
  for them, named "{method}_{dataset}").
  Configs: explicit `train_config` / `model_config` dataclasses, else the
  defaults (TrainConfig() = TIGER §4.1.3 schedule, TransformerConfig dataclass
  defaults = TIGER size); with gin_files / gin_bindings they are read from gin
  instead (gin is cleared before and after, so repeated calls do not leak).
  `**overrides`: any TrainConfig or TransformerConfig field by name (aliases:
  train_steps, warmup_steps), e.g. seed=1, num_train_steps=2000, emb_dim=64.

  Returns metrics.json's content (recall@5..40, ndcg@5..40, invalid_id_rate,
  num_users, split, step, ...) when TrainConfig.eval_test, else the last
  validation metrics; the trainer's summary (throughput, validation, resume
  step) is under the key "summary".
  """
  if model_dir is None:
    raise UserError("train_and_evaluate: model_dir is required")
  operative = None
  if gin_files or gin_bindings:
    gin_train, gin_model, operative = configs_from_gin(gin_files, gin_bindings)
    train_config = train_config or gin_train
    model_config = model_config or gin_model
  train_config = train_config or TrainConfig()
  model_config = model_config or default_model_config()
  if isinstance(task, Mapping):
    dataset_dir, tokenizer_dir = task["dataset_dir"], task["tokenizer_dir"]
    task = task.get("name") or None
  elif isinstance(task, (tuple, list)):
    (dataset_dir, tokenizer_dir), task = task, None
  if dataset_dir or tokenizer_dir:
    if not (dataset_dir and tokenizer_dir):
      raise UserError("train_and_evaluate: give both dataset_dir and tokenizer_dir")
    train_config = dataclasses.replace(train_config, task=task or "", dataset_dir=str(dataset_dir),
                                       tokenizer_dir=str(tokenizer_dir))
  elif task:
    train_config = dataclasses.replace(train_config, task=str(task), dataset_dir="",
                                       tokenizer_dir="")
  train_kw, model_kw = split_overrides(overrides, model_config)
  train_config = dataclasses.replace(train_config, **train_kw)
  model_config = dataclasses.replace(model_config, **model_kw)
  summary = train(train_config, model_dir, model_config, operative_gin=operative,
                  show_progress=show_progress)
  out = dict(summary.get("test") or summary.get("validation") or {})
  out["summary"] = summary
  return out


# --- CLI -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None):
  p = argparse.ArgumentParser(prog="python -m cost_jax.train", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gin_file", action="append", default=[],
                 help="gin file (repeatable); searched in ., the repo root and gin/")
  p.add_argument("--gin_param", action="append", default=[],
                 help="gin binding, e.g. 'TrainConfig.num_train_steps = 100' (repeatable)")
  p.add_argument("--model_dir", required=True, help="checkpoints, summaries, metrics.json")
  p.add_argument("--no_eval_test", action="store_true", help="skip scoring the test split")
  args, rest = p.parse_known_args(argv)
  for r in rest:  # T5X-style --gin.TrainConfig.seed=1
    if r.startswith("--gin.") and "=" in r:
      k, v = r[len("--gin."):].split("=", 1)
      args.gin_param.append(f"{k} = {v}")
    else:
      p.error(f"unrecognized argument: {r}")
  if args.no_eval_test:
    args.gin_param.append("TrainConfig.eval_test = False")
  return args


def _interrupt_on_sigterm() -> None:
  """SIGTERM (preemption, `kill`) -> KeyboardInterrupt: the trainer saves a checkpoint first."""
  import signal  # pylint: disable=g-import-not-at-top

  def handler(signum, frame):
    del signum, frame
    raise KeyboardInterrupt

  signal.signal(signal.SIGTERM, handler)


@exits_cleanly
def _main(args) -> int:
  _interrupt_on_sigterm()
  train_config, model_config, operative = configs_from_gin(args.gin_file, args.gin_param)
  summary = train(train_config, args.model_dir, model_config, operative_gin=operative)
  print(json.dumps({k: summary.get(k) for k in ("step", "resumed_from", "steps_per_sec",
                                                 "examples_per_sec", "cpu_sec_per_step", "test",
                                                 "validation")}, indent=2, default=float))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  return _main(parse_args(argv))


if __name__ == "__main__":
  raise SystemExit(main())
