"""A trained model_dir: its config.json record (checked on resume) and loading it back.

  model_dir/config.json       the run's TrainConfig, TransformerConfig, task and layout
  model_dir/item_tokens.npy   every item's semantic ID in token space (the trie)
  model_dir/tokenizer/        the tokenizer's vocabulary.json and semantic IDs as trained on, so
                              the run evaluates after its tokenizer folder is moved or rebuilt
  model_dir/config.gin        the operative gin config (when run from gin)
  model_dir/checkpoints/      Orbax checkpoints (cost_jax.checkpoints)
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import jax
import numpy as np

from cost_jax.io import (DirLock, LOCK_NAME, StagedDir, UserError, atomic_write_json, copy_file,
                         read_json)
from cost_jax import checkpoints
from cost_jax.seq2seq import model, network, optim, splits
from cost_jax.seq2seq.config import TrainConfig, model_config_from_dict
from cost_jax.seq2seq.devices import DeviceLayout
from cost_jax.tokenizer import artifact
from cost_jax.seq2seq.task import data_fingerprint, input_fingerprints, resolve_task

CONFIG_FILE = "config.json"
OPERATIVE_GIN_FILE = "config.gin"
ITEM_TOKENS_FILE = "item_tokens.npy"
CONFIG_FORMAT = "cost_jax.train/v1"
TOKENIZER_SNAPSHOT = "tokenizer"

# Fields that change the training trajectory: a resumed run must match them.
# A record written before a field existed holds that field's default.
TRAJECTORY_FIELDS = ("batch_size", "optimizer", "weight_decay", "grad_clip_norm", "seed",
                     "history_crop", "max_history")
# The schedule may change on resume where the new one gives the same rate at every step taken
# (e.g. a constant run extended by a "wsd" cooldown that starts at or after the resumed step).
SCHEDULE_FIELDS = ("learning_rate", "lr_schedule", "lr_constant_steps", "lr_decay_steps")


def schedule_change(old: dict, new: dict, steps_taken: int) -> str | None:
  """None if both TrainConfig records give the same rate at steps 0..steps_taken-1, else why."""
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  old_cfg = dataclasses.replace(TrainConfig(), **{k: v for k, v in old.items()
                                                 if k in SCHEDULE_FIELDS and k in fields})
  new_cfg = dataclasses.replace(TrainConfig(), **{k: v for k, v in new.items()
                                                 if k in SCHEDULE_FIELDS and k in fields})
  if all(getattr(old_cfg, k) == getattr(new_cfg, k) for k in SCHEDULE_FIELDS):
    return None
  steps = np.arange(max(int(steps_taken), 0))
  a = np.asarray(optim.schedule_of(old_cfg)(steps))
  b = np.asarray(optim.schedule_of(new_cfg)(steps))
  bad = np.flatnonzero(~np.isclose(a, b, rtol=1e-6, atol=0.0))
  if not len(bad):
    return None
  s = int(bad[0])
  return (f"learning-rate schedule: {', '.join(f'{k}={getattr(old_cfg, k)!r}' for k in SCHEDULE_FIELDS)}"
          f" -> {', '.join(f'{k}={getattr(new_cfg, k)!r}' for k in SCHEDULE_FIELDS)} "
          f"changes the rate at step {s} ({a[s]:.6g} -> {b[s]:.6g}), before the resumed step "
          f"{steps_taken}")


def write_or_check_config(model_dir: str, record: dict, resume_step: int | None) -> None:
  """Writes config.json, or, resuming from `resume_step`, checks it describes the same run."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if resume_step is not None and os.path.exists(path):
    old = read_json(path)
    diffs = []
    if old.get("model") != record["model"]:
      keys = sorted(set(old.get("model", {})) | set(record["model"]))
      diffs += [f"model.{k}: {old.get('model', {}).get(k)!r} -> {record['model'].get(k)!r}"
                for k in keys if old.get("model", {}).get(k) != record["model"].get(k)]
    defaults = dataclasses.asdict(TrainConfig())
    for k in TRAJECTORY_FIELDS:
      was = old.get("train", {}).get(k, defaults[k])
      now = record["train"].get(k, defaults[k])
      if was != now:
        diffs.append(f"TrainConfig.{k}: {was!r} -> {now!r}")
    why = schedule_change(old.get("train", {}), record["train"], resume_step)
    if why:
      diffs.append(why)
    if old.get("task", {}).get("name") != record["task"]["name"]:
      diffs.append(f"task: {old.get('task', {}).get('name')!r} -> {record['task']['name']!r}")
    for k, new_fp in record.get("fingerprints", {}).items():
      old_fp = old.get("fingerprints", {}).get(k)
      if old_fp is not None and old_fp != new_fp:
        where = record["task"].get(f"{k}_dir") or ""
        diffs.append(f"{k} {where} has other contents (sha256 {old_fp[:12]} -> {new_fp[:12]})")
    if diffs:
      raise UserError(f"{path}: model_dir holds checkpoints of a different run; resuming would mix "
                      f"them ({'; '.join(diffs)}). Use a new --model_dir.")
  atomic_write_json(path, record)


def snapshot_tokenizer(model_dir: str, tokenizer_dir: str) -> str:
  """Copies the tokenizer's vocabulary.json and semantic-IDs file into model_dir/tokenizer,
  replacing an older copy whole; returns that folder. Copies, not hard links: a tokenizer
  rewritten in place must not change the run's own IDs."""
  dst = os.path.join(model_dir, TOKENIZER_SNAPSHOT)
  if os.path.abspath(tokenizer_dir) == os.path.abspath(dst):
    return dst
  with StagedDir(dst, kind="tokenizer snapshot") as staged:
    for src in (os.path.join(tokenizer_dir, artifact.VOCABULARY_FILE),
                artifact.ids_path(tokenizer_dir)):
      copy_file(src, staged.file(os.path.basename(src)))
    staged.commit()
  return dst


def own_tokenizer_dir(model_dir: str) -> str | None:
  """model_dir/tokenizer when the run holds its tokenizer snapshot, else None (older runs)."""
  d = os.path.join(model_dir, TOKENIZER_SNAPSHOT)
  return d if os.path.isfile(os.path.join(d, artifact.VOCABULARY_FILE)) else None


LOCK_FILE = LOCK_NAME  # model_dir/.lock (cost_jax.io.DirLock)


def RunLock(model_dir: str) -> DirLock:  # pylint: disable=invalid-name
  """model_dir/.lock: one `train` per model_dir (cost_jax.io.DirLock)."""
  return DirLock(os.path.join(os.path.abspath(model_dir), LOCK_NAME), "train")


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
  # Score against inputs whose contents changed since training (said on stderr); default: refuse.
  allow_changed_inputs: bool = False

  @property
  def batch_sharding(self):
    return self.layout.batch

  def check_inputs(self, info: Any = None) -> dict[str, str]:
    """The dataset and tokenizer the run was trained on must be the ones on disk now (their
    sha256 in config.json "fingerprints"); a changed one is refused with one line naming it.
    Returns the fingerprints now."""
    if info is None:
      _, info = resolve_task(self.train_config)
    recorded = self.record.get("fingerprints") or {}
    now = input_fingerprints(info)
    changed = [k for k, old in recorded.items() if k in now and now[k] != old]
    if not changed:
      return now
    what = "; ".join(
        f"{k} {self.record.get('task', {}).get(f'{k}_dir') or ''} has other contents than when "
        f"this model was trained (sha256 {recorded[k][:12]} -> {now[k][:12]})" for k in changed)
    if self.allow_changed_inputs:
      print(f"warning: {self.model_dir}: {what}; scoring anyway (--allow_changed_inputs)",
            file=sys.stderr, flush=True)
      return now
    raise UserError(f"{os.path.join(self.model_dir, CONFIG_FILE)}: {what}. Scores would mix "
                    "them; restore the original files, or pass --allow_changed_inputs")

  def round_batch(self, batch_size: int) -> int:
    return self.layout.round_batch(batch_size)

  def split_arrays(self, split: str) -> splits.ExampleArrays:
    config = self.train_config
    task, info = resolve_task(config)
    now = self.check_inputs(info)
    lengths = self.record["feature_lengths"]
    return splits.cached_split(task, split, cache_dir(config, self.model_dir),
                                       data_fingerprint(info, now), lengths)


def cache_dir(config: TrainConfig, model_dir: str) -> str:
  return config.cache_dir or os.path.join(model_dir, "cache")


def load_run(model_dir: str, step: int | str | None = None,
             allow_changed_inputs: bool = False) -> Run:
  """Reads DIR/config.json + item_tokens.npy and restores the params of a checkpoint: `step`,
  "best" (the best validation checkpoint), or None = the one the run scored on test (the best
  one when it kept one, else the latest)."""
  model_dir = os.path.abspath(model_dir)
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{path}: missing (not a cost_jax.train model_dir)")
  record = read_json(path)
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  train_config = TrainConfig(**{k: v for k, v in record.get("train", {}).items() if k in fields})
  task = record.get("task", {})
  # The run's own task dirs, so a task registered on the fly resolves again; the tokenizer from
  # the run's own snapshot (model_dir/tokenizer) where it has one.
  train_config = dataclasses.replace(
      train_config, task=task.get("name", train_config.task),
      dataset_dir=task.get("dataset_dir") or train_config.dataset_dir,
      tokenizer_dir=(own_tokenizer_dir(model_dir) or task.get("tokenizer_dir")
                     or train_config.tokenizer_dir))
  if not isinstance(record.get("model"), dict):
    raise UserError(f"{path}: no \"model\" section (not a cost_jax.train model_dir)")
  model_config = model_config_from_dict(record["model"], path)
  module = network.Transformer(model_config)
  tokens_path = os.path.join(model_dir, ITEM_TOKENS_FILE)
  try:
    item_tokens = np.load(tokens_path)
  except OSError:
    raise UserError(f"{tokens_path}: missing (not a cost_jax.train model_dir)") from None
  layout = DeviceLayout.create()
  tx = optim.make_optimizer(train_config)
  lengths = record["feature_lengths"]
  abstract = jax.eval_shape(
      lambda: model.init_state(module, tx, lengths, train_config.seed, layout.replicated))
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=layout.replicated), abstract)
  best_dir = checkpoints.checkpoint_dir(model_dir, checkpoints.BEST_SUBDIR)
  if step is None and train_config.test_from_best and os.path.isdir(best_dir) and any(
      d.isdigit() for d in os.listdir(best_dir)):
    step = "best"
  subdir = checkpoints.BEST_SUBDIR if step == "best" else checkpoints.CHECKPOINT_SUBDIR
  with checkpoints.Checkpointer(model_dir, read_only=True, subdir=subdir) as ckpt:
    if ckpt.latest_step() is None:
      raise UserError(f"{ckpt.directory}: no checkpoints (train a model into {model_dir} first)")
    if step is None or step == "best":
      state, _ = ckpt.restore_latest(abstract)
    else:
      state = ckpt.restore(abstract, int(step))
  return Run(model_dir, record, train_config, model_config, module, state["params"],
             int(state["step"]), item_tokens, layout, allow_changed_inputs)
