"""Underfit or overfit? A trained TIGER model's loss on training examples against validation.

  python tools/fit_gap.py --model_dir M [--steps best,3000] [--num 4000] [--batch 256]
                          [--sasrec_dir S]

For each checkpoint, the teacher-forced cross-entropy (nats per target token, dropout off) on a
fixed random sample of `num` training prefixes and of `num` validation users, per semantic-ID
level and summed over the levels (nats per item), plus the training sample's loss with dropout
on (what the trainer's logged loss measures). A validation loss close to the training loss
means the model underfits (more epochs or less regularisation should help); a validation loss
well above it means it overfits (more regularisation, or stop earlier).

With `--sasrec_dir` (a finished SASRec run on the same processed dataset, e.g. a reproduction's
`stages/sasrec-s0-*`), SASRec's loss on the same validation users from the parameters it scored
(full softmax over items). Both per-item losses are also printed by how often the validation
item occurs in the training parts (the report's popularity buckets). TIGER's per-item loss is an
upper bound of its loss over real items: its softmax also gives mass to IDs of no item. Last
line: the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def level_nll(module, params, arrays, batch: int, dropout_seed: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
  """(mean cross-entropy per target position [L] over the rows of `arrays` (weights > 0), each
  row's summed cross-entropy [N])."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cost_jax.seq2seq import model  # pylint: disable=g-import-not-at-top

  @jax.jit
  def token_nll(p, feats, rng):
    logits = model._forward(module, p, feats, rng is not None, rng)  # pylint: disable=protected-access
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, feats["decoder_target_tokens"][..., None], -1)[..., 0]
    w = feats["decoder_loss_weights"].astype(jnp.float32)
    return jnp.sum(nll * w, axis=0), jnp.sum(w, axis=0), jnp.sum(nll * w, axis=1)

  n = len(arrays)
  total, count, per_row = 0.0, 0.0, []
  for b in range(0, n, batch):
    idx = np.arange(b, min(b + batch, n))
    pad = batch - len(idx)
    feats = arrays.model_batch(np.concatenate([idx, np.repeat(idx[:1], pad)]))
    feats["decoder_loss_weights"] = feats["decoder_loss_weights"].copy()
    if pad:
      feats["decoder_loss_weights"][-pad:] = 0
    rng = None if dropout_seed is None else jax.random.PRNGKey(dropout_seed + b)
    s, c, r = token_nll(params, feats, rng)
    total, count = total + np.asarray(s, np.float64), count + np.asarray(c, np.float64)
    per_row.append(np.asarray(r, np.float64)[:len(idx)])
  return total / np.maximum(count, 1.0), np.concatenate(per_row) if per_row else np.zeros(0)


def sasrec_nll(sasrec_dir: str, histories, targets: np.ndarray) -> tuple[np.ndarray, int]:
  """(SASRec's cross-entropy of each target item given its history [N], the scored epoch)."""
  import jax  # pylint: disable=g-import-not-at-top

  from cost_jax.baselines import sasrec, sasrec_train  # pylint: disable=g-import-not-at-top

  config, params, epoch = sasrec_train.load_scored_params(sasrec_dir)
  model = sasrec.SASRec(config)
  log_probs = jax.jit(lambda p, t: jax.nn.log_softmax(
      model.apply({"params": p}, t, method=sasrec.SASRec.score_last), axis=-1))
  tokens = sasrec.left_pad(histories, config.max_len)
  out = []
  for b in range(0, len(tokens), config.eval_batch_size):
    lp = np.asarray(log_probs(params, tokens[b:b + config.eval_batch_size]), np.float64)
    out.append(-lp[np.arange(len(lp)), targets[b:b + config.eval_batch_size]])
  return np.concatenate(out), epoch


def by_bucket(values: np.ndarray, bucket: np.ndarray, num: int) -> list[float | None]:
  n = np.bincount(bucket, minlength=num)
  s = np.bincount(bucket, weights=values, minlength=num)
  return [float(s[i] / n[i]) if n[i] else None for i in range(num)]


def compare_sasrec(sasrec_dir: str, run, valid, tiger_rows: np.ndarray) -> dict:
  """SASRec's per-item validation loss on TIGER's validation sample, and both by popularity."""
  from cost_jax.data.processed import ProcessedDataset  # pylint: disable=g-import-not-at-top
  from cost_jax.experiments import breakdown  # pylint: disable=g-import-not-at-top
  from cost_jax.io import UserError  # pylint: disable=g-import-not-at-top

  ds = ProcessedDataset.load(run.train_config.dataset_dir)
  loo = ds.leave_one_out()
  row_of = {int(u): i for i, u in enumerate(loo.user_index)}
  rows = np.asarray([row_of[int(u)] for u in valid.user_index])
  targets = np.asarray(loo.valid_target)[rows]
  if not np.array_equal(targets, np.asarray(valid.item_index)):
    raise UserError(f"{sasrec_dir}: the validation items differ from the TIGER run's "
                    f"({run.train_config.dataset_dir})")
  nll, epoch = sasrec_nll(sasrec_dir, [loo.train[i] for i in rows], targets)
  counts = breakdown.train_counts(loo.train, ds.num_items)
  names = breakdown.bucket_labels()
  bucket = breakdown.buckets(counts, targets)
  t_b, s_b = (by_bucket(v, bucket, len(names)) for v in (tiger_rows, nll))
  share = np.bincount(bucket, minlength=len(names)) / len(bucket)
  print(f"SASRec (epoch {epoch}) on the same {len(nll)} validation users: {nll.mean():.3f} nats "
        f"per item; TIGER {tiger_rows.mean():.3f}")
  for n, sh, t, q in zip(names, share, t_b, s_b):
    if t is not None:
      print(f"  validation item with {n} training interactions ({sh:.1%}): TIGER {t:.3f}, "
            f"SASRec {q:.3f} nats")
  return {"sasrec_epoch": epoch, "sasrec_valid_nats_per_item": float(nll.mean()),
          "buckets": names, "tiger_by_bucket": t_b, "sasrec_by_bucket": s_b}


def main(argv=None) -> list[dict]:
  from cost_jax.io import UserError  # pylint: disable=g-import-not-at-top
  from cost_jax.seq2seq import run_dir, splits  # pylint: disable=g-import-not-at-top

  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model_dir", required=True)
  ap.add_argument("--steps", default="best", help="comma-separated checkpoint steps or 'best'")
  ap.add_argument("--num", type=int, default=4000, help="sampled examples per split")
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--sasrec_dir", help="a finished SASRec run on the same dataset")
  args = ap.parse_args(argv)
  rows = []
  try:
    for step in [s.strip() for s in args.steps.split(",") if s.strip()]:
      run = run_dir.load_run(args.model_dir, step=step if step == "best" else int(step))
      train = splits.eval_subset(run.split_arrays("train"), args.num, args.seed)
      valid = splits.eval_subset(run.split_arrays("validation"), args.num, args.seed)
      tr, _ = level_nll(run.module, run.params, train, args.batch, None)
      tr_drop, _ = level_nll(run.module, run.params, train, args.batch, args.seed)
      va, va_rows = level_nll(run.module, run.params, valid, args.batch, None)
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
      if args.sasrec_dir:
        row.update(compare_sasrec(args.sasrec_dir, run, valid, va_rows))
  except UserError as e:
    print(f"fit_gap: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  keys = ("step", "train_nats_per_item", "valid_nats_per_item", "sasrec_valid_nats_per_item")
  print("summary: " + json.dumps([{k: r[k] for k in keys if k in r} for r in rows]))
  return rows


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
