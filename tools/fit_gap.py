"""Underfit or overfit? A trained TIGER model's loss on training examples against validation.

  python tools/fit_gap.py --model_dir M [--steps best,3000] [--num 4000] [--batch 256]

For each checkpoint, the teacher-forced cross-entropy (nats per target token, dropout off) on a
fixed random sample of `num` training prefixes and of `num` validation users, per semantic-ID
level and summed over the levels (nats per item), plus the training sample's loss with dropout
on (what the trainer's logged loss measures). A validation loss close to the training loss
means the model underfits (more epochs or less regularisation should help); a validation loss
well above it means it overfits (more regularisation, or stop earlier). Last line: the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def level_nll(module, params, arrays, batch: int, dropout_seed: int | None) -> np.ndarray:
  """Mean cross-entropy per target position [L] over the rows of `arrays` (weights > 0)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cost_jax.seq2seq import model  # pylint: disable=g-import-not-at-top

  @jax.jit
  def token_nll(p, feats, rng):
    logits = model._forward(module, p, feats, rng is not None, rng)  # pylint: disable=protected-access
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, feats["decoder_target_tokens"][..., None], -1)[..., 0]
    w = feats["decoder_loss_weights"].astype(jnp.float32)
    return jnp.sum(nll * w, axis=0), jnp.sum(w, axis=0)

  n = len(arrays)
  total, count = 0.0, 0.0
  for b in range(0, n, batch):
    idx = np.arange(b, min(b + batch, n))
    pad = batch - len(idx)
    feats = arrays.model_batch(np.concatenate([idx, np.repeat(idx[:1], pad)]))
    feats["decoder_loss_weights"] = feats["decoder_loss_weights"].copy()
    if pad:
      feats["decoder_loss_weights"][-pad:] = 0
    rng = None if dropout_seed is None else jax.random.PRNGKey(dropout_seed + b)
    s, c = token_nll(params, feats, rng)
    total, count = total + np.asarray(s, np.float64), count + np.asarray(c, np.float64)
  return total / np.maximum(count, 1.0)


def main(argv=None) -> list[dict]:
  from cost_jax.io import UserError  # pylint: disable=g-import-not-at-top
  from cost_jax.seq2seq import run_dir, splits  # pylint: disable=g-import-not-at-top

  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model_dir", required=True)
  ap.add_argument("--steps", default="best", help="comma-separated checkpoint steps or 'best'")
  ap.add_argument("--num", type=int, default=4000, help="sampled examples per split")
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  rows = []
  try:
    for step in [s.strip() for s in args.steps.split(",") if s.strip()]:
      run = run_dir.load_run(args.model_dir, step=step if step == "best" else int(step))
      train = splits.eval_subset(run.split_arrays("train"), args.num, args.seed)
      valid = splits.eval_subset(run.split_arrays("validation"), args.num, args.seed)
      tr = level_nll(run.module, run.params, train, args.batch, None)
      tr_drop = level_nll(run.module, run.params, train, args.batch, args.seed)
      va = level_nll(run.module, run.params, valid, args.batch, None)
      row = {"step": run.step, "train_nll": tr.tolist(), "train_nll_dropout": tr_drop.tolist(),
             "valid_nll": va.tolist(), "train_nats_per_item": float(tr.sum()),
             "train_dropout_nats_per_item": float(tr_drop.sum()),
             "valid_nats_per_item": float(va.sum()), "num_train": len(train),
             "num_valid": len(valid)}
      rows.append(row)
      fmt = lambda v: " ".join(f"{x:.3f}" for x in v)
      print(f"step {run.step}: nats per level, train (dropout off) {fmt(tr)} | train (dropout on) "
            f"{fmt(tr_drop)} | validation {fmt(va)}")
      print(f"step {run.step}: nats per item, train {tr.sum():.3f}, train with dropout "
            f"{tr_drop.sum():.3f}, validation {va.sum():.3f}, gap {va.sum() - tr.sum():+.3f} "
            f"({len(train)} training prefixes, {len(valid)} validation users)")
  except UserError as e:
    print(f"fit_gap: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  print("summary: " + json.dumps([{k: r[k] for k in ("step", "train_nats_per_item",
                                                       "valid_nats_per_item")} for r in rows]))
  return rows


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
