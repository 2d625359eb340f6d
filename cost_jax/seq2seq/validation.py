"""Validation during training: the learning curve, the best checkpoint, the patience counter.

`Validator.run(step, state)` scores the fixed validation sample (`TrainConfig.eval_num_users`)
with trie-constrained beam search, appends the point to model_dir/validation_curve.json, and
saves the state to model_dir/best_checkpoint when the point improves `select_metric` by more
than `select_min_delta` (the choice itself: cost_jax.seq2seq.selection, pure). The curve is
kept across a resume, so the best point and the patience counter are too.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from cost_jax import results
from cost_jax.io import atomic_write_json, read_json
from cost_jax import checkpoints
from cost_jax.seq2seq import evaluator as eval_lib
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq.selection import best_of_curve, evals_since_best

# Validation Recall/NDCG@K at every validation step (the learning curve), in model_dir.
VALIDATION_CURVE_FILE = "validation_curve.json"


class Validator:
  """The validation passes of one training run (see the module doc)."""

  def __init__(self, config: TrainConfig, model_dir: str, module: Any, item_tokens, token_layout,
               eval_users, eval_batch: int, batch_sharding: Any, writer: Any, start_step: int,
               log: Callable[[str], None], show_progress: bool = True):
    self.config, self.model_dir, self.module = config, model_dir, module
    self.item_tokens, self.token_layout = item_tokens, token_layout
    self.eval_users, self.eval_batch, self.batch_sharding = eval_users, eval_batch, batch_sharding
    self.writer, self.log, self.show_progress = writer, log, show_progress
    self._predict_fn = None
    path = os.path.join(model_dir, VALIDATION_CURVE_FILE)
    old = read_json(path).get("curve", []) if os.path.isfile(path) else []
    self.curve = [c for c in old if c.get("step", 0) <= start_step]  # kept across a resume
    selects = bool(config.eval_every or config.eval_at_end)
    self.best_ckpt = (checkpoints.Checkpointer(model_dir, keep=1, subdir=checkpoints.BEST_SUBDIR)
                      if selects else None)
    self.best = best_of_curve(self.curve, config.select_metric, config.select_min_delta)
    if (self.best is not None and self.best_ckpt is not None
        and self.best["step"] not in self.best_ckpt.all_steps()):
      self.best = None  # its state is gone (e.g. a run started before best checkpoints existed)

  def predict_fn(self):
    if self._predict_fn is None:
      c = self.config
      self._predict_fn = eval_lib.make_predict_fn(
          self.module, self.item_tokens, c.num_beams, c.topk, self.token_layout.level_offsets,
          self.token_layout.codebook_sizes, c.score_over)
    return self._predict_fn

  def since_best(self) -> int:
    return evals_since_best(self.curve, self.best)

  def patience_ran_out(self) -> bool:
    return bool(self.config.patience) and self.since_best() >= self.config.patience

  def has_point(self, step: int) -> bool:
    return bool(self.curve) and self.curve[-1]["step"] == int(step)

  def run(self, step: int, state: Any) -> dict[str, float]:
    c = self.config
    t = time.perf_counter()
    m, _, _ = eval_lib.evaluate_arrays(
        self.module, state["params"], self.eval_users, self.item_tokens,
        batch_size=self.eval_batch, sharding=self.batch_sharding, predict_fn=self.predict_fn(),
        desc=f"validate@{step}", show_progress=self.show_progress)
    self.writer.write_scalars(step, {f"valid/{k}": v for k, v in m.items()})
    if self.has_point(step):  # the end-of-run validation of that step
      self.curve.pop()
    self.curve.append({"step": int(step), **{k: float(m[k]) for k in results.METRIC_KEYS[:-1]},
                       "num_users": int(len(self.eval_users))})
    improved = self.best is None or self.curve[-1][c.select_metric] > (
        self.best[c.select_metric] + c.select_min_delta)
    if improved:
      if self.best_ckpt is not None:
        self.best_ckpt.save(int(step), state)
      self.best = dict(self.curve[-1])
    atomic_write_json(os.path.join(self.model_dir, VALIDATION_CURVE_FILE),
                      {"curve": self.curve, "select_metric": c.select_metric, "best": self.best})
    self.log(f"[train] step {step} validation ({len(self.eval_users)} users, "
             f"{time.perf_counter() - t:.1f}s): "
             + " ".join(f"{k}={m[k]:.4f}" for k in ("recall@5", "recall@10", "ndcg@10",
                                                     "recall@40"))
             + (" (best so far)" if improved else
                f" (best {self.best[c.select_metric]:.4f} at step {self.best['step']}; "
                f"{self.since_best()} without improvement)"))
    return m

  def close(self) -> None:
    if self.best_ckpt is not None:
      self.best_ckpt.close()
