"""Benchmark SASRec's train step: the output layer over every position against the targets only.

  python tools/bench_sasrec.py [--dataset_dir DIR] [--steps 20] [--rounds 3] [--cove]

`cost_jax.baselines.sasrec.make_train_step` scores a batch's non-pad targets only (packed by
`target_positions`); the dense form scores all batch x max_len positions against every item
and masks the padding afterwards. Both take the same batches (one random window per user, as
the trainer draws them) and are timed in alternating rounds in one process, so machine load
falls on both alike. Prints the median s/step of each, the ratio, and the share of positions
that hold a target. Without --dataset_dir the users' training lengths are drawn to look like
Amazon Beauty's (geometric, mean ~7 training items; 12,101 items).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from cost_jax.baselines import sasrec, sasrec_train
from cost_jax.tokenizer.cove import CoveConfig


def training_sequences(args) -> tuple[list[np.ndarray], int]:
  if args.dataset_dir:
    from cost_jax.data.processed import ProcessedDataset  # pylint: disable=import-outside-toplevel
    ds = ProcessedDataset.load(args.dataset_dir)
    return list(ds.leave_one_out().train), ds.num_items
  rng = np.random.default_rng(0)
  lengths = 3 + rng.geometric(1.0 / (args.mean_len - 2), size=args.users)
  return [rng.integers(0, args.num_items, n) for n in lengths], args.num_items


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--dataset_dir", default="", help="a processed dataset (prepare's output)")
  ap.add_argument("--num_items", type=int, default=12101)
  ap.add_argument("--users", type=int, default=22363)
  ap.add_argument("--mean_len", type=float, default=7.0)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--max_len", type=int, default=50)
  ap.add_argument("--steps", type=int, default=20, help="timed steps per round and form")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--cove", action="store_true", help="COVE_SASRec (codebooks (500, 50))")
  args = ap.parse_args(argv)

  seqs, num_items = training_sequences(args)
  config = sasrec.SASRecConfig(num_items=num_items, max_len=args.max_len,
                               batch_size=args.batch, cove=CoveConfig() if args.cove else None)
  model = sasrec.SASRec(config)
  params = sasrec.init_params(model, 0)
  import optax  # pylint: disable=import-outside-toplevel
  tx = optax.adam(config.learning_rate, b2=0.98)
  step_fn = sasrec.make_train_step(model, tx)
  rng = np.random.default_rng(1)
  inputs, targets = sasrec_train.sample_windows(seqs, config.max_len, rng)
  batches = []
  for _ in range(args.steps):
    idx = rng.choice(len(inputs), args.batch, replace=False)
    batches.append((inputs[idx], targets[idx], sasrec.target_positions(targets[idx])))
  share = float(np.mean([(t > 0).mean() for _, t, _ in batches]))
  sizes = sorted({len(p[0]) for _, _, p in batches})

  def run(packed: bool, state) -> tuple[float, object]:
    p, o = state
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    for x, t, pos in batches:
      p, o, loss = step_fn(p, o, x, t, key, pos if packed else None)
    jax.block_until_ready(loss)
    return (time.perf_counter() - t0) / len(batches), (p, o)

  state = (params, tx.init(params))
  for packed in (False, True):  # compile every shape once, untimed
    run(packed, state)
  times = {False: [], True: []}
  for _ in range(args.rounds):
    for packed in (False, True):
      s, _ = run(packed, state)
      times[packed].append(s)
  dense, packed = statistics.median(times[False]), statistics.median(times[True])
  out = {"dense_s_per_step": dense, "packed_s_per_step": packed, "speedup": dense / packed,
         "target_share": share, "packed_sizes": sizes, "num_items": num_items,
         "batch": args.batch, "max_len": args.max_len, "cove": bool(args.cove)}
  print(f"SASRec{' + COVE' if args.cove else ''} train step, batch {args.batch} x {args.max_len}, "
        f"{num_items:,} items; {share:.1%} of positions hold a target (packed to {sizes})")
  print(f"  every position : {dense * 1e3:8.1f} ms/step  ({1 / dense:6.2f} steps/s)")
  print(f"  targets only   : {packed * 1e3:8.1f} ms/step  ({1 / packed:6.2f} steps/s)")
  print(f"  speedup        : {dense / packed:8.2f}x  (median of {args.rounds} alternating rounds "
        f"of {args.steps} steps)")
  return out


if __name__ == "__main__":
  main()
