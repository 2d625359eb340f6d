"""How long must the tokenizer train? Its codes measured against epochs (not a test).

  python tools/tokenizer_convergence.py --embeddings E.npy --method rqvae \
      --epochs 400 --at 1,5,10,25,50,100,200,400 [--gin.TokenizerConfig.preset="'tiger'"] [--output DIR]

One training run; after each epoch in --at the current parameters encode every item and the
codes are measured: per-level codebook usage, items that share their raw ID (collisions before
de-duplication), the largest group, neighbour precision@10 and reconstruction cosine (CoST
preprint §4.1), and the epoch's loss. Prints a line per snapshot, then the first snapshot from
which every measure stays within --tolerance of its last value (the plateau: a CPU budget that
stops there loses nothing measurable). With --output: curve.json and convergence.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cost_jax import io as cost_io

cost_io.quiet_tensorflow_logs()  # before TensorFlow loads

import numpy as np  # pylint: disable=g-import-not-at-top

from cost_jax import gin_cli
from cost_jax.tokenizer import config as tc
from cost_jax.tokenizer import dedup as sid
from cost_jax.tokenizer import fit as fit_lib
from cost_jax.tokenizer import trainer as tt
from cost_jax.tokenizer.embeddings import load_embeddings

MEASURES = ("usage_min", "collisions", "neighbor_precision", "reconstruction_cosine")


def measure(method: str, cfg: tc.TokenizerConfig, x: np.ndarray, params: dict,
            seed: int) -> dict:
  tok = fit_lib.Tokenizer(method, cfg, x.shape[1], seed, params=params)
  codes, _, quality = tok.analyse(x, quality_seed=seed)
  stats = sid.collision_stats(codes)
  usage = sid.usage_per_level(codes, tok.raw_sizes)
  return {"usage": usage, "usage_min": min(usage), "collisions": stats["items_to_move"],
          "largest_group": stats["largest_group"],
          "neighbor_precision": quality["neighbor_precision"]["value"],
          "reconstruction_cosine": quality["reconstruction_cosine"]}


def plateau(curve: list[dict], tolerance: float) -> int:
  """The first snapshot epoch from which every measure stays within `tolerance` (relative to
  the last value; collisions: relative to the item count) of the last snapshot."""
  last = curve[-1]
  n = max(last.get("num_items", 1), 1)

  def close(row):
    for k in MEASURES:
      scale = n if k == "collisions" else max(abs(last[k]), 1e-12)
      if abs(row[k] - last[k]) / scale > tolerance:
        return False
    return True

  epoch = last["epoch"]
  for row in reversed(curve):
    if not close(row):
      break
    epoch = row["epoch"]
  return epoch


def plot(curve: list[dict], path: str, title: str) -> None:
  from cost_jax.experiments.plots import pyplot, savefig
  plt = pyplot()
  epochs = [r["epoch"] for r in curve]
  fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
  for ax, key, label in zip(axes, MEASURES, ("min usage over levels", "items sharing a raw ID",
                                             "neighbour precision@10", "reconstruction cosine")):
    ax.plot(epochs, [r[key] for r in curve], marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_title(label)
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  savefig(fig, path)
  plt.close(fig)


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--embeddings", required=True)
  ap.add_argument("--method", default="rqvae", choices=tc.NEURAL_METHODS)
  ap.add_argument("--epochs", type=int, default=400)
  ap.add_argument("--at", default="1,5,10,25,50,100,200,400")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--tolerance", type=float, default=0.02)
  ap.add_argument("--output", default="")
  gin_cli.add_flags(ap, old_set_example="TokenizerConfig.preset='tiger'")
  args = gin_cli.parse_args(ap, argv)
  gin_cli.register(tc.TokenizerConfig)
  with gin_cli.fresh():
    gin_cli.parse(args.gin_file, args.gin_param)
    overrides = dict(gin_cli.bindings(tc.TokenizerConfig), epochs=args.epochs)
  cfg = tc.make_config(args.method, overrides)
  x = load_embeddings(args.embeddings)
  at = sorted({int(a) for a in args.at.split(",") if 0 < int(a) <= args.epochs} | {args.epochs})
  curve: list[dict] = []
  t0 = time.perf_counter()

  def on_epoch(epoch: int, params: dict) -> None:
    if epoch not in at:
      return
    row = {"epoch": epoch, "num_items": len(x), "train_s": round(time.perf_counter() - t0, 1),
           **measure(args.method, cfg, x, params, args.seed)}
    curve.append(row)
    print(f"epoch {epoch:5d}: usage {'/'.join(f'{u:.2f}' for u in row['usage'])}  "
          f"collisions {row['collisions']:6d} (largest {row['largest_group']:3d})  "
          f"neighbour precision {row['neighbor_precision']:.4f}  "
          f"reconstruction cosine {row['reconstruction_cosine']:.4f}  ({row['train_s']} s)",
          flush=True)

  result = tt.train(x, cfg, seed=args.seed, desc=f"tokenize {args.method}", on_epoch=on_epoch)
  losses = {h["epoch"]: h["loss"] for h in result.history}
  for row in curve:
    row["loss"] = losses.get(row["epoch"])
  stop = plateau(curve, args.tolerance)
  summary = (f"summary: {args.method} ({cfg.preset}) on {len(x):,} items: every measure within "
             f"{args.tolerance:.0%} of epoch {args.epochs}'s from epoch {stop} on "
             f"({result.train_time_s / args.epochs * stop:.0f} s of training here)")
  print(summary)
  out = {"method": args.method, "preset": cfg.preset, "embeddings": os.path.abspath(args.embeddings),
         "seed": args.seed, "config": cfg.to_dict(), "curve": curve, "plateau_epoch": stop,
         "tolerance": args.tolerance, "seconds_per_epoch": result.train_time_s / args.epochs}
  if args.output:
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "curve.json"), "w") as f:
      json.dump(out, f, indent=1)
    plot(curve, os.path.join(args.output, "convergence.png"),
         f"{args.method} ({cfg.preset}), {len(x):,} items: codes against epochs")
  return out


if __name__ == "__main__":
  main()
  sys.exit(0)
