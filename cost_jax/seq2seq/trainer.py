"""The built-in trainer for machines without T5X: SeqIO task + model config -> Orbax checkpoints.

`train(config, model_dir, model_config)` runs the loop; `train_and_evaluate(...)` is the
in-process API (many calls per process); `python -m cost_jax.train` is cost_jax.seq2seq.cli.

  * the task's train/validation splits are materialized once into numpy arrays (cached in
    model_dir/cache, keyed by task, feature lengths and file hashes);
  * the batch for step s and its dropout key are pure functions of (seed, s), so a run killed
    and restarted from its last checkpoint ends with the same parameters as one that never
    stopped;
  * a ('data', 'model') mesh over every device of every process (cost_jax.seq2seq.devices;
    TrainConfig.num_partitions devices along 'model', default 1 = data parallel): parameters
    and optimizer state sharded by the network's logical axis names with T5X's rules
    (cost_jax.seq2seq.partitioning), batches split over 'data'; multi-process runs start
    with jax.distributed.initialize() when the environment asks for it, and each process puts
    only its own rows of a batch on its devices;
  * the one jitted train step of cost_jax.seq2seq.model with the optimizer of
    cost_jax.seq2seq.optim, the state donated;
  * Orbax checkpoints every `checkpoint_every` steps and at the end (last `keep_checkpoints`
    kept), restored automatically on start; the run's record in model_dir/config.json
    (cost_jax.seq2seq.run_dir) must match on resume;
  * CLU metric writer (TensorBoard event files in model_dir), progress lines with steps/s,
    examples/s and ETA; periodic validation Recall/NDCG@K with trie-constrained beam search;
  * at the end (eval_test) the test split is scored (cost_jax.seq2seq.evaluator):
    metrics.json, topk.npy, targets.npy, user_ids.npy, scores.npy.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import sys
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from clu import metric_writers

from cost_jax import checkpoints, results, stop
from cost_jax.io import UserError, atomic_write_json, atomic_write_npy, atomic_write_text
from cost_jax.progress import Progress
from cost_jax.seq2seq import batching, devices, gin_config, model, network, optim, splits
from cost_jax.seq2seq import partitioning
from cost_jax.seq2seq import packing as packing_lib
from cost_jax.seq2seq import evaluator as eval_lib
from cost_jax.seq2seq import run_dir
from cost_jax.seq2seq.selection import SELECTION_KEYS
from cost_jax.seq2seq.validation import Validator
from cost_jax.seq2seq import task as task_lib
from cost_jax.seq2seq.config import TrainConfig, finalize_model_config, plain
from cost_jax.seq2seq.network import TransformerConfig
from cost_jax.tokenizer import artifact



class _Throughput:
  """Steps, examples and real tokens per second between log points; the first interval (which
  includes compilation) is left out of the run's totals."""

  def __init__(self, start_step: int, batch_size: int):
    self.start, self.batch_size = start_step, batch_size
    self.steps, self.secs, self.cpu, self.tokens, self.pending_tokens = 0, 0.0, 0.0, 0, 0
    self.t, self.cpu_t, self.step = time.perf_counter(), time.process_time(), start_step

  def add_tokens(self, n: int) -> None:
    self.pending_tokens += n

  def interval(self, step: int) -> dict[str, float]:
    """Rates since the last call (or the start); counted in the totals unless it is the first."""
    now, cpu_now = time.perf_counter(), time.process_time()
    dt, ds = now - self.t, step - self.step
    if self.step > self.start:
      self.steps += ds
      self.secs += dt
      self.cpu += cpu_now - self.cpu_t
      self.tokens += self.pending_tokens
    rates = {"steps_per_sec": ds / dt, "examples_per_sec": ds * self.batch_size / dt,
             "real_tokens_per_sec": self.pending_tokens / dt}
    self.t, self.cpu_t, self.step, self.pending_tokens = now, cpu_now, step, 0
    return rates

  def totals(self) -> dict[str, float]:
    if not self.steps:
      return {}
    # Process CPU seconds per step (all threads): robust to other load on a shared machine.
    return {"steps_per_sec": self.steps / self.secs,
            "examples_per_sec": self.steps * self.batch_size / self.secs,
            "real_tokens_per_sec": self.tokens / self.secs, "cpu_sec_per_step": self.cpu / self.steps}


def _write_run_files(model_dir: str, record: dict, resume_step: int | None, item_tokens,
                     tokenizer_dir: str, operative_gin: str | None) -> None:
  """config.json (checked against the one there on resume), the item tokens, the run's own copy
  of the tokenizer and the operative gin config (cost_jax.seq2seq.run_dir)."""
  run_dir.write_or_check_config(model_dir, record, resume_step)
  atomic_write_npy(os.path.join(model_dir, run_dir.ITEM_TOKENS_FILE), item_tokens)
  run_dir.snapshot_tokenizer(model_dir, tokenizer_dir)
  if operative_gin is not None:
    atomic_write_text(os.path.join(model_dir, run_dir.OPERATIVE_GIN_FILE), operative_gin)


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def _check_finite(metrics: Mapping[str, Any], step: int, ckpt: checkpoints.Checkpointer) -> None:
  """Stops a diverged run: the loss and gradient norm of step `step` must be finite.

  Nothing of the diverged state is saved; the checkpoints already written stay.
  """
  host = jax.device_get({k: metrics[k] for k in ("loss", "grad_norm") if k in metrics})
  bad = {k: float(v) for k, v in host.items() if not np.isfinite(v)}
  if bad:
    ckpt.close()
    last = ckpt.latest_step()
    raise UserError(f"training diverged at step {step}: " + ", ".join(
        f"{k} = {v}" for k, v in bad.items()) + "; stopped without saving it ("
        + (f"last good checkpoint: step {last}" if last is not None else "no checkpoint yet")
        + "). Lower TrainConfig.learning_rate or check the data.")


def train(config: TrainConfig, model_dir: str, model_config=None, *,
          operative_gin: str | None = None, show_progress: bool = True) -> dict[str, Any]:
  """`_train` holding model_dir's lock (cost_jax.seq2seq.run_dir.RunLock)."""
  config.validate()
  devices.initialize_distributed()
  model_dir = os.path.abspath(model_dir)
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise UserError(f"{model_dir}: model_dir exists and is not a directory")
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise UserError(f"{model_dir}: cannot create model_dir ({e.strerror or e})") from None
  if jax.process_index() > 0:  # process 0 holds the lock for the whole (multi-process) run
    return _train(config, model_dir, model_config, operative_gin=operative_gin,
                  show_progress=False)
  with run_dir.RunLock(model_dir):
    return _train(config, model_dir, model_config, operative_gin=operative_gin,
                  show_progress=show_progress)


def _train(config: TrainConfig, model_dir: str, model_config=None, *,
           operative_gin: str | None = None, show_progress: bool = True) -> dict[str, Any]:
  """Trains (resuming from the latest checkpoint in model_dir) and evaluates.

  Returns {"step", "train": last logged train metrics, "validation": last
  validation metrics, "test": test metrics (if eval_test), "steps_per_sec",
  "examples_per_sec", "resumed_from"}.
  """

  config.validate()
  devices.enable_compilation_cache()
  model_dir = os.path.abspath(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  layout = devices.DeviceLayout.create(config.num_partitions)
  if config.batch_size % layout.data_size:
    raise UserError(f"TrainConfig.batch_size {config.batch_size} is not a multiple of the "
                    f"{layout.data_size} devices along the mesh's 'data' axis")
  primary = jax.process_index() == 0
  log = functools.partial(print, file=sys.stderr, flush=True)

  # Data (tf.data only here, once; cached as .npz).
  task, info = task_lib.resolve_task(config)
  token_layout, item_tokens = artifact.load_item_tokens(info.tokenizer_dir)
  cache = run_dir.cache_dir(config, model_dir)
  inputs = task_lib.input_fingerprints(info)  # each input file hashed once per run
  fingerprint = task_lib.data_fingerprint(info, inputs)
  t0 = time.perf_counter()
  train_arrays = splits.cached_split(task, "train", cache, fingerprint,
                                             info.feature_lengths(item_tokens.shape[1]))
  lengths = train_arrays.feature_lengths
  valid_arrays = splits.cached_split(task, "validation", cache, fingerprint, lengths)
  log(f"[train] task {info.name}: {len(train_arrays):,} train examples, {len(valid_arrays):,} "
      f"validation users, {len(item_tokens):,} items, feature lengths {lengths} "
      f"({time.perf_counter() - t0:.1f}s to load)")
  if int(train_arrays.decoder_target_tokens.max()) >= info.vocab_size:
    raise UserError(f"task '{info.name}': target tokens exceed the vocabulary size "
                    f"{info.vocab_size}")

  # Model + optimizer + state.
  model_config = finalize_model_config(model_config or TransformerConfig(),
                                       info.vocab_size, lengths)
  module = network.Transformer(model_config)
  tx = optim.make_optimizer(config)
  ckpt = checkpoints.Checkpointer(model_dir, keep=config.keep_checkpoints)
  resume_step = ckpt.latest_step()
  if primary:
    record = {"format": run_dir.CONFIG_FORMAT, "train": plain(config),
              "model": plain(model_config), "task": dataclasses.asdict(info),
              "feature_lengths": lengths, "fingerprints": inputs,
              "num_items": int(len(item_tokens)), "num_devices": layout.num_devices,
              "mesh": {"data": layout.data_size, "model": layout.model_size},
              "layout": {"level_offsets": list(token_layout.level_offsets),
                         "codebook_sizes": list(token_layout.codebook_sizes)}}
    try:
      _write_run_files(model_dir, record, resume_step, item_tokens, info.tokenizer_dir,
                       operative_gin)
    except UserError:
      ckpt.close()  # an open Orbax manager left to interpreter exit prints event-loop tracebacks
      raise

  state_sharding = partitioning.state_shardings(
      model.abstract_state(module, tx, lengths), partitioning.logical_param_specs(module, lengths),
      layout.mesh)
  state = model.init_state(module, tx, lengths, config.seed, state_sharding)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  state, resumed_from = ckpt.restore_latest(state, log)
  if resumed_from is not None:
    log(f"[train] resumed from {ckpt.directory}/{resumed_from}")
  start = int(state["step"])
  log(f"[train] {num_params:,} params, {layout.num_devices} device(s) in {jax.process_count()} "
      f"process(es), mesh data {layout.data_size} x model {layout.model_size} ("
      f"{partitioning.sharded_fraction(state)['params']:.0%} of the parameters sharded), "
      f"batch {config.batch_size}, "
      f"steps {start} -> {config.num_train_steps}, {config.optimizer} lr {config.learning_rate} "
      f"({config.lr_schedule})")

  train_step = model.make_train_step(module, tx, optim.schedule_of(config),
                                     state_sharding=state_sharding,
                                     batch_sharding=layout.batch)
  batcher = batching.make_batcher(
      train_arrays, config.batch_size, config.seed, config.packing,
      pack_row_multiple=int(np.lcm(config.pack_row_multiple, layout.data_size)),
      pack_widths=config.pack_widths, pack_max_segments=config.pack_max_segments,
      history_crop=config.history_crop, tokens_per_item=int(lengths["targets"]))
  widths = getattr(batcher, "widths", None) or (
      batcher.pack_widths + (lengths["inputs"],) if config.packing == "encoder" else ())
  log(f"[train] batches: {'no' if config.packing == 'off' else config.packing} packing"
      + (f" (row widths {', '.join(map(str, widths))})" if widths else "") + "; "
      f"{packing_lib.padded_share(train_arrays.encoder_input_tokens):.0%} of the padded "
      "encoder tokens are real"
      + (f"; histories cropped with probability {config.history_crop:g}"
         if config.history_crop else ""))
  if config.packing != "off" and start < config.num_train_steps:
    # Compile every batch shape of the run (bucket widths; packed row counts) before the
    # first step, so that no compilation lands inside the timed steps.
    t = time.perf_counter()
    shapes = batcher.shape_batches(start, config.num_train_steps)
    for shape_batch in shapes:
      stop.check("while compiling (nothing to save yet)")
      spare = jax.tree.map(lambda x: x.copy(), state)  # the step donates its state
      jax.block_until_ready(train_step(spare, layout.put(shape_batch)))
    log(f"[train] compiled the step for {len(shapes)} batch shapes in "
        f"{time.perf_counter() - t:.1f}s")
  writer = metric_writers.create_default_writer(model_dir, just_logging=jax.process_index() > 0,
                                                asynchronous=True)
  eval_batch = layout.round_batch(config.eval_batch_size)
  validator = Validator(config, model_dir, module, item_tokens, token_layout,
                        splits.eval_subset(valid_arrays, config.eval_num_users or None,
                                           config.seed),
                        eval_batch, layout.batch, writer, start, log, show_progress)
  stop_reason = "num_train_steps"

  progress = Progress(config.num_train_steps, desc="train", unit="steps",
                      items_per_step=config.batch_size, items_name="examples", start_step=start,
                      stream=sys.stderr if show_progress else io.StringIO())
  history: list[dict] = []
  last_train: dict[str, float] = {}
  last_valid: dict[str, float] = {}
  meter = _Throughput(start, config.batch_size)
  step = start
  t_train = time.perf_counter()
  queued = None  # the metrics of the step dispatched before this one
  try:
    for step_, batch in batching.device_batches(batcher, start, config.num_train_steps,
                                                      put=layout.put):
      state, metrics = train_step(state, batch)
      # Dispatch is asynchronous: without this wait a large batch queues every step up to the
      # next checkpoint and the progress line counts dispatches, not steps (minutes of
      # silence). Waiting for the previous step keeps one step queued behind the running one.
      if queued is not None:
        jax.block_until_ready(queued)
      queued = metrics
      history.append(metrics)
      meter.add_tokens(batcher.real_tokens(step_))
      step = step_ + 1
      if step % config.checkpoint_every == 0 or step % config.log_every == 0:
        _check_finite(metrics, step, ckpt)  # before any NaN state is logged or saved
      if step % config.log_every == 0 or step == config.num_train_steps:
        last_train = _mean_metrics(history)
        history = []
        rates = {**meter.interval(step), "epoch": batcher.epoch_of(step)}
        writer.write_scalars(step, {**{f"train/{k}": v for k, v in last_train.items()}, **rates})
        progress.update(step, {"loss": last_train["loss"], "lr": last_train["learning_rate"],
                               "tok/s": rates["real_tokens_per_sec"],
                               "epoch": round(rates["epoch"], 2)}, force=True)
      else:
        progress.update(step)
      if step % config.checkpoint_every == 0:
        ckpt.save(step, state)
      if config.eval_every and step % config.eval_every == 0 and step < config.num_train_steps:
        last_valid = validator.run(step, state)
        if validator.patience_ran_out():
          best = validator.best
          log(f"[train] early stop at step {step}: {config.patience} validations without a "
              f"better {config.select_metric} than {best[config.select_metric]:.4f} "
              f"(step {best['step']})")
          stop_reason = "patience"
          break
      if config.time_budget_min and time.perf_counter() - t_train > 60.0 * config.time_budget_min:
        log(f"[train] time budget of {config.time_budget_min:g} min reached at step {step}")
        stop_reason = "time_budget"
        break
      # A signal only sets a flag (cost_jax.stop): here, between steps, the state in hand is
      # whole (no step holds it donated), so it is always saved.
      stop.check(f"at step {step}")
  except KeyboardInterrupt:
    try:  # after a second signal, the state may have been donated to a step that did not end
      interrupted_at = int(state["step"])
      ckpt.save(interrupted_at, state)
      log(f"[train] interrupted: saved step {interrupted_at}")
    except (RuntimeError, ValueError):
      log(f"[train] interrupted: resume from the last checkpoint ({ckpt.latest_step()})")
    ckpt.close()
    validator.close()
    raise
  progress.close()
  if history:
    _check_finite(history[-1], step, ckpt)
  final_step = int(state["step"])
  ckpt.save(final_step, state)
  ckpt.close()

  result: dict[str, Any] = {"step": final_step, "resumed_from": resumed_from, "train": last_train,
                            **meter.totals()}
  if config.eval_at_end and not (validator.has_point(final_step) and last_valid):
    last_valid = validator.run(final_step, state)
  scored_step = final_step
  best = validator.best
  if config.test_from_best and best is not None and best["step"] != final_step:
    scored_step = best["step"]
    last_valid = {k: v for k, v in best.items() if k != "step"}
    if config.eval_test:
      state = validator.best_ckpt.restore(state, scored_step)
      log(f"[train] scoring the best checkpoint: step {scored_step} "
          f"({config.select_metric} {best[config.select_metric]:.4f} on validation)")
  selection = dict(zip(SELECTION_KEYS, (final_step, stop_reason, config.select_metric,
                                        None if best is None else best["step"],
                                        len(validator.curve))))
  result.update(selection)
  if config.eval_at_end and last_valid:
    atomic_write_json(results.result_file(model_dir, "metrics.json", "validation"),
                      {**last_valid, "split": "validation", "step": scored_step,
                       "num_beams": config.num_beams, "topk": config.topk, **selection})
  result["validation"] = last_valid
  validator.close()
  if config.eval_test:
    test_arrays = splits.cached_split(task, "test", cache, fingerprint, lengths)
    m, items, scores = eval_lib.evaluate_arrays(
        module, state["params"], test_arrays, item_tokens, batch_size=eval_batch,
        sharding=layout.batch, predict_fn=validator.predict_fn(), desc="test",
        show_progress=show_progress)
    m.update(split="test", step=scored_step, num_beams=config.num_beams, topk=config.topk,
             score_over=config.score_over, **selection)
    results.write_results(model_dir, "test", m, items, test_arrays.item_index,
                           test_arrays.user_index, scores)
    writer.write_scalars(final_step, {f"test/{k}": v for k, v in m.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
    log("[train] test: " + " ".join(f"{k}={m[k]:.4f}" for k in results.METRIC_KEYS[:-1]))
    result["test"] = m
  writer.flush()
  writer.close()
  return result


def split_overrides(kwargs: Mapping[str, Any], model_config=None) -> tuple[dict, dict]:
  """Routes flat keyword overrides to (TrainConfig fields, TransformerConfig fields)."""
  train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
  model_fields = {f.name for f in dataclasses.fields(model_config or TransformerConfig)}
  train_kw, model_kw = {}, {}
  for k, v in kwargs.items():
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
  `**overrides`: any TrainConfig or TransformerConfig field by name, e.g. seed=1,
  num_train_steps=2000, emb_dim=64.

  Returns metrics.json's content (recall@5..40, ndcg@5..40, invalid_id_rate,
  num_users, split, step, ...) when TrainConfig.eval_test, else the last
  validation metrics; the trainer's summary (throughput, validation, resume
  step) is under the key "summary".
  """
  if model_dir is None:
    raise UserError("train_and_evaluate: model_dir is required")
  operative = None
  if gin_files or gin_bindings:
    gin_train, gin_model, operative = gin_config.configs_from_gin(gin_files, gin_bindings)
    train_config = train_config or gin_train
    model_config = model_config or gin_model
  train_config = train_config or TrainConfig()
  model_config = model_config or TransformerConfig()
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
