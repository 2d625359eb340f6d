"""`python -m cost_jax.tokenize`: item embeddings (.npy) -> unique semantic IDs.

  python -m cost_jax.tokenize --embeddings items.npy --method cost --output out/cost [--seed 0]
      [--epochs 50] [--set key=value ...] [--gin_file gin/tokenizer/cost.gin] [--gin_param ...]
  python -m cost_jax.tokenize --from_checkpoint out/cost --embeddings new.npy --output out/new

Writes a tokenizer dir (cost_jax.tokenizer.artifact): semantic_ids.npy (int32 [N, L], rows
distinct), vocabulary.json, report.json, config.json and checkpoint/ (Orbax: params + config;
neural methods) or baseline.npz (hyperplanes / centroids; baselines). Everything is written
into a temp dir beside DIR and moved into place at the end, so a failed run never touches DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from cost_jax.io import exits_cleanly, json_default
from cost_jax.tokenizer import config as tc
from cost_jax.tokenizer.fit import encode_new, fit


# --- CLI -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m cost_jax.tokenize",
                              description=__doc__.split("\n")[0])
  p.add_argument("--embeddings", required=True, help=".npy float [num_items, dim], row i = item i")
  p.add_argument("--method", choices=tc.METHODS, default="cost")
  p.add_argument("--output", required=True, help="output directory (replaced atomically)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--epochs", type=int, default=None, help="overrides the preset's epochs")
  p.add_argument("--preset", choices=sorted(tc.PRESETS), default=None,
                 help="hyperparameter preset (default by method: cost -> cost, rqvae -> tiger)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a TokenizerConfig field, e.g. --set codebook_size=128")
  p.add_argument("--gin_file", action="append", default=[], help="gin file with tokenizer.X = Y")
  p.add_argument("--gin_param", action="append", default=[], help="gin binding tokenizer.X = Y")
  p.add_argument("--from_checkpoint", default=None, metavar="DIR",
                 help="tokenize new embeddings with the tokenizer trained in DIR")
  p.add_argument("--quiet", action="store_true", help="no progress lines")
  return p


@exits_cleanly
def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if args.from_checkpoint:
    report = encode_new(args.from_checkpoint, args.embeddings, args.output, log=not args.quiet)
  else:
    overrides = tc.gin_overrides(args.gin_file, args.gin_param)
    overrides.update(tc.parse_set_args(args.set))
    if args.epochs is not None:
      overrides["epochs"] = args.epochs
    if args.preset:
      overrides["preset"] = args.preset
    report = fit(args.embeddings, args.method, args.output, seed=args.seed, overrides=overrides,
                 log=not args.quiet)
  summary = {k: report.get(k) for k in ("method", "num_items", "usage_per_level", "all_distinct",
                                        "largest_collision_group", "reconstruction_cosine",
                                        "wall_time_s")}
  print(json.dumps(summary, default=json_default))
  return 0


if __name__ == "__main__":
  sys.exit(main())
