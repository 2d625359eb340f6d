"""SASRec's training loop and run outputs (the network, loss and step: cost_jax.baselines.sasrec).

Training data: each user's training part (items[:-2]); every epoch draws one random window of
up to max_len + 1 items per user (next-item targets at every position, `sample_windows`).
`train` validates on a fixed sample of users every `eval_every_epochs`, keeps the best epoch's
parameters, stops on `patience`, and with a checkpoint folder saves the whole state every epoch
so that a rerun continues bit for bit. `fit_and_score` then ranks all items for the test split
from train + [valid] (cost_jax.results.score_topk); `train_and_evaluate` is the stage's entry
point (metrics.json, topk.npy, targets.npy, config.json, losses.json).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Sequence

import jax
import numpy as np
import optax

from cost_jax import stop
from cost_jax.baselines import epoch_checkpoints
from cost_jax.baselines.popularity import user_rows
from cost_jax.baselines.sasrec import (SASRec, SASRecConfig, init_params, left_pad,
                                       make_train_step, predict_topk, target_positions)
from cost_jax.io import UserError, atomic_write_json, read_json_or
from cost_jax.progress import Progress
from cost_jax.results import KS, score_topk, write_results

DEFAULT_KS = KS  # CoST Table 2 columns


def sample_windows(train: Sequence[np.ndarray], max_len: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
  """One random window per user with >= 2 training items: (inputs, targets) int32 [U, max_len]."""
  inputs, targets = [], []
  for s in train:
    s = np.asarray(s)
    if len(s) < 2:
      continue
    end = int(rng.integers(2, len(s) + 1))
    w = s[max(0, end - max_len - 1):end]
    inputs.append(w[:-1])
    targets.append(w[1:])
  return left_pad(inputs, max_len), left_pad(targets, max_len)


def make_tx(config: SASRecConfig) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate, b2=0.98)  # SASRec: Adam, beta2 = 0.98


def train(config: SASRecConfig, train_seqs: Sequence[np.ndarray], seed: int = 0,
          progress_desc: str = "sasrec", valid_target: np.ndarray | None = None,
          curve: list | None = None, selection: dict | None = None,
          checkpoint_dir: str | None = None) -> tuple[dict, list[float]]:
  """Trains from scratch, or resumes; returns (params, per-epoch mean losses).

  With `valid_target` (the validation item of each training sequence) and a `curve` list,
  appends {"epoch", "recall@10", "ndcg@10", "num_users"} on the validation split every
  `config.eval_every_epochs` epochs (the learning curve); with `config.keep_best` the returned
  parameters are those of the best validation Recall@10, and `config.patience` stops the run
  early. `selection` (a dict) receives {"best_epoch", "final_epoch", "stop_reason"} and, for a
  resumed run, "resumed_from_epoch" and the earlier attempts' "earlier_train_seconds". Stops
  with a UserError naming the epoch when the loss stops being finite.

  With `checkpoint_dir`, the whole state is saved after every epoch
  (`epoch_checkpoints.EpochCheckpoints`) and a rerun with the same config and seed resumes after
  the last saved epoch, bit for bit the run it would have been; a stop request (SIGTERM / Ctrl-C) ends at the next epoch boundary.
  """
  eval_rows = None
  if valid_target is not None and curve is not None and config.eval_every_epochs > 0:
    n = len(train_seqs)
    pick = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(n)
    eval_rows = np.sort(pick[:config.eval_num_users or n])
    eval_rows = eval_rows[[len(train_seqs[i]) > 0 for i in eval_rows]]
  model = SASRec(config)
  params = init_params(model, seed)
  tx = make_tx(config)
  opt_state = tx.init(params)
  step_fn = make_train_step(model, tx)
  np_rng = np.random.default_rng(seed)
  rng = jax.random.PRNGKey(seed + 1)
  num_users = sum(1 for s in train_seqs if len(s) >= 2)
  if num_users == 0:
    raise UserError("sasrec: no user has >= 2 training items")
  steps_per_epoch = -(-num_users // config.batch_size)
  losses: list[float] = []
  best, best_params, stale, stop_reason = None, None, 0, "num_epochs"
  earlier_s, t0 = 0.0, time.perf_counter()
  ckpts = (epoch_checkpoints.EpochCheckpoints(
               checkpoint_dir, epoch_checkpoints.run_record(dataclasses.asdict(config), seed))
           if checkpoint_dir else None)
  if ckpts is not None:
    restored = ckpts.restore({"params": params, "opt_state": opt_state, "rng": rng,
                              "best_params": params}, progress_desc)
    if restored is not None:
      arrays, meta, epoch = restored
      params, opt_state, rng = arrays["params"], arrays["opt_state"], arrays["rng"]
      best_params = arrays["best_params"] if meta["best"] is not None else None
      np_rng.bit_generator.state = meta["np_rng"]
      losses, best, stale = list(meta["losses"]), meta["best"], int(meta["stale"])
      earlier_s = float(meta["train_seconds"])
      if curve is not None:
        curve[:] = list(meta["curve"])
      if selection is not None:
        selection.update(resumed_from_epoch=epoch, earlier_train_seconds=earlier_s)
      print(f"[{progress_desc}] resuming after epoch {epoch} of {config.num_epochs} "
            f"({checkpoint_dir})", file=sys.stderr, flush=True)
      if config.patience and stale >= config.patience:
        stop_reason = "patience"
  step = len(losses) * steps_per_epoch
  progress = Progress(config.num_epochs * steps_per_epoch, desc=progress_desc, unit="steps",
                      items_per_step=config.batch_size, items_name="sequences", start_step=step)
  while len(losses) < config.num_epochs and stop_reason != "patience":
    inputs, targets = sample_windows(train_seqs, config.max_len, np_rng)
    order = np_rng.permutation(len(inputs))
    epoch_losses = []
    for b in range(steps_per_epoch):
      idx = order[b * config.batch_size:(b + 1) * config.batch_size]
      if len(idx) < config.batch_size:  # fixed shapes: top up from the front of the order
        idx = np.concatenate([idx, order[:config.batch_size - len(idx)]])
      rng, step_rng = jax.random.split(rng)
      batch_targets = targets[idx]
      params, opt_state, loss = step_fn(params, opt_state, inputs[idx], batch_targets, step_rng,
                                        target_positions(batch_targets))
      step += 1
      epoch_losses.append(loss)
      progress.update(step, {"loss": float(loss)} if step % 20 == 0 else None)
    losses.append(float(np.mean(jax.device_get(epoch_losses))))
    if not np.isfinite(losses[-1]):
      raise UserError(f"{progress_desc}: the training loss is {losses[-1]} in epoch "
                      f"{len(losses)} (diverged; lower learning_rate)")
    if eval_rows is not None and (len(losses) % config.eval_every_epochs == 0
                                  or len(losses) == config.num_epochs):
      topk = predict_topk(config, params, [train_seqs[i] for i in eval_rows], 10)
      m = score_topk(topk, np.asarray(valid_target, np.int32)[eval_rows], ks=(10,))
      curve.append({"epoch": len(losses), "recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
                    "num_users": int(len(eval_rows))})
      if best is None or curve[-1]["recall@10"] > best["recall@10"]:
        best, best_params, stale = curve[-1], params, 0  # params are immutable: no copy
      else:
        stale += 1
      if config.patience and stale >= config.patience:
        stop_reason = "patience"
    if ckpts is not None:
      ckpts.save(len(losses), {"params": params, "opt_state": opt_state, "rng": rng,
                               "best_params": params if best_params is None else best_params},
                 {"losses": losses, "curve": list(curve or []), "best": best, "stale": stale,
                  "np_rng": np_rng.bit_generator.state,
                  "train_seconds": earlier_s + time.perf_counter() - t0})
    stop.check(f"after {progress_desc} epoch {len(losses)} ("
               + (f"a rerun resumes from it: {checkpoint_dir})" if ckpts is not None else
                  "nothing written)"))
  progress.close({"loss": losses[-1]} if losses else None)
  if selection is not None:
    selection.update(final_epoch=len(losses), stop_reason=stop_reason,
                     best_epoch=None if best is None else best["epoch"])
  if config.keep_best and best_params is not None:
    return best_params, losses
  return params, losses


def fit_and_score(loo, config: SASRecConfig, seed: int = 0, ks: Sequence[int] = DEFAULT_KS,
                  checkpoint_dir: str | None = None):
  """Trains on `loo.train` (resuming from `checkpoint_dir` when it holds this run's
  checkpoints), ranks all items for the test split from train + [valid].

  Returns (metrics, params, topk [U, max(ks)], per-epoch losses, train seconds (all attempts),
  the validation learning curve).
  """
  t0 = time.perf_counter()
  curve: list[dict] = []
  selection: dict = {}
  params, losses = train(config, loo.train, seed=seed,
                         progress_desc="cove_sasrec" if config.cove is not None else "sasrec",
                         valid_target=np.asarray(loo.valid_target), curve=curve,
                         selection=selection, checkpoint_dir=checkpoint_dir)
  train_s = time.perf_counter() - t0 + selection.pop("earlier_train_seconds", 0.0)
  histories = [np.concatenate([np.asarray(t), [v]]) for t, v in zip(loo.train, loo.valid_target)]
  topk = predict_topk(config, params, histories, max(ks))
  result = score_topk(topk, np.asarray(loo.test_target, np.int32), ks=tuple(ks))
  if config.keep_best and selection.get("best_epoch") is not None:
    result["epoch"] = selection["best_epoch"]  # the scored parameters' epoch
  result.update(selection)
  return result, params, topk, losses, train_s, curve


def write_outputs(output_dir: str, config: SASRecConfig, loo, result: dict, topk: np.ndarray,
                  losses: list[float], train_s: float, seed: int,
                  curve: Sequence[dict] = ()) -> None:
  """metrics.json, topk.npy, targets.npy (cost_jax.results), config.json, losses.json."""
  os.makedirs(output_dir, exist_ok=True)
  atomic_write_json(os.path.join(output_dir, "config.json"), dataclasses.asdict(config))
  atomic_write_json(os.path.join(output_dir, "losses.json"),
                    {"epoch_loss": list(losses), "train_seconds": train_s, "seed": seed,
                     "validation_curve": list(curve)})
  write_results(output_dir, "test", result, topk, np.asarray(loo.test_target, np.int32),
                user_rows(loo))


def make_config(num_items: int, config: SASRecConfig | None = None, **overrides) -> SASRecConfig:
  if config is None:
    return SASRecConfig(num_items=num_items, **overrides)
  return dataclasses.replace(config, **overrides) if overrides else config


def train_and_evaluate(loo, num_items: int, config: SASRecConfig | None = None, seed: int = 0,
                       output_dir: str | None = None, ks: Sequence[int] = DEFAULT_KS,
                       **overrides) -> dict:
  """Trains on `loo.train`, scores the test split; returns metrics.json's keys (+ timing).

  With `output_dir`: writes metrics.json, topk.npy, targets.npy, config.json, losses.json, and
  checkpoints every epoch there (a rerun into the same folder resumes).
  """
  config = make_config(num_items, config, **overrides)
  result, _, topk, losses, train_s, curve = fit_and_score(loo, config, seed, ks,
                                                          checkpoint_dir=output_dir)
  if output_dir is not None:
    write_outputs(output_dir, config, loo, result, topk, losses, train_s, seed, curve)
  return result


def load_scored_params(output_dir: str) -> tuple[SASRecConfig, dict, int]:
  """(config, parameters, epoch) that a finished run in `output_dir` scored on test: its best
  validation epoch's with `keep_best`, else its last epoch's (from its per-epoch checkpoint)."""
  cfg = read_json_or(os.path.join(output_dir, "config.json"))
  losses = read_json_or(os.path.join(output_dir, "losses.json"))
  if not isinstance(cfg, dict) or not isinstance(losses, dict) or "seed" not in losses:
    raise UserError(f"{output_dir}: no config.json / losses.json of a finished SASRec run")
  config, seed = SASRecConfig(**cfg), int(losses["seed"])
  params = init_params(SASRec(config), seed)
  template = {"params": params, "opt_state": make_tx(config).init(params),
              "rng": jax.random.PRNGKey(seed + 1), "best_params": params}
  ckpts = epoch_checkpoints.EpochCheckpoints(output_dir,
                                             epoch_checkpoints.run_record(cfg, seed))
  restored = ckpts.restore(template, "sasrec")
  if restored is None:
    raise UserError(f"{output_dir}: no SASRec checkpoint")
  arrays, meta, epoch = restored
  if config.keep_best and meta.get("best") is not None:
    return config, arrays["best_params"], int(meta["best"]["epoch"])
  return config, arrays["params"], int(epoch)
