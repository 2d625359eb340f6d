"""`python -m cost_jax.tokenize`: item embeddings (.npy) -> unique semantic IDs.

  python -m cost_jax.tokenize --embeddings items.npy --method cost --output out/cost [--seed 0]
      [--gin.TokenizerConfig.epochs=100] [--gin.TokenizerConfig.preset="'tiger'"]
      [--gin_file gin/tokenizer/tiger.gin] [--gin_param "TokenizerConfig.codebook_size = 128"]

Settings: TokenizerConfig (cost_jax.tokenizer.config): its defaults, then the method's preset
(PRESETS; `TokenizerConfig.preset` picks another), then the gin bindings.
  python -m cost_jax.tokenize --from_checkpoint out/cost --embeddings new.npy --output out/new

Writes a tokenizer dir (cost_jax.tokenizer.artifact): semantic_ids.npy (int32 [N, L], rows
distinct), vocabulary.json, report.json, config.json and checkpoint/ (Orbax: params + config;
neural methods) or baseline.npz (hyperplanes / centroids; baselines). Everything is written
into a temp dir beside DIR and moved into place at the end, so a failed run never touches DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from cost_jax import gin_cli, stop
from cost_jax.io import LOCK_NAME, DirLock, UserError, exits_cleanly, json_default
from cost_jax.tokenizer import config as tc
from cost_jax.tokenizer.config import TokenizerConfig
from cost_jax.tokenizer.fit import encode_new, fit

gin_cli.register(TokenizerConfig)  # gin: TokenizerConfig.<field> = value


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m cost_jax.tokenize",
                              description=__doc__.split("\n")[0])
  p.add_argument("--embeddings", required=True, help=".npy float [num_items, dim], row i = item i")
  p.add_argument("--method", choices=[m for m in tc.METHODS if m not in tc.INTERACTION_METHODS],
                 default=None, help="default cost (with --from_checkpoint: the checkpoint's)")
  p.add_argument("--output", required=True, help="output directory (replaced atomically)")
  p.add_argument("--seed", type=int, default=0)
  # Gone (one way to set a value): --epochs N, --preset P, --set k=v -> gin bindings.
  p.add_argument("--epochs", default=None, help=argparse.SUPPRESS)
  p.add_argument("--preset", default=None, help=argparse.SUPPRESS)
  gin_cli.add_flags(p, old_set_example="TokenizerConfig.codebook_size=128")
  p.add_argument("--from_checkpoint", default=None, metavar="DIR",
                 help="tokenize new embeddings with the tokenizer trained in DIR")
  p.add_argument("--quiet", action="store_true", help="no progress lines")
  return p


@exits_cleanly
def main(argv: Sequence[str] | None = None) -> int:
  args = gin_cli.parse_args(build_parser(), argv, set_spelling=_set_spelling)
  for flag, field, quote in (("epochs", "epochs", ""), ("preset", "preset", "'")):
    value = getattr(args, flag)
    if value is not None:
      raise UserError(f"--{flag} {value}: the flag is gone; settings are gin bindings now: "
                      f"--gin.TokenizerConfig.{field}={quote}{value}{quote}")
  if args.from_checkpoint:
    given = [flag for flag, value in (("--method", args.method),
                                      ("--gin_file", args.gin_file), ("--gin_param", args.gin_param))
             if value]
    if given:
      raise UserError(f"--from_checkpoint uses the trained tokenizer's own method and settings; "
                      f"{', '.join(given)} would be ignored, so they are refused")
    report = encode_new(args.from_checkpoint, args.embeddings, args.output, log=not args.quiet)
  else:
    args.method = args.method or "cost"
    with gin_cli.fresh():
      gin_cli.parse(args.gin_file, args.gin_param)
      overrides = gin_cli.bindings(TokenizerConfig)
    # SIGTERM / SIGINT stop training after the current epoch; nothing is written and the
    # temporary output folder is removed (exit 128 + the signal, cost_jax.stop).
    # One writer per output (a lock file beside it, since the folder is swapped in whole).
    with DirLock(os.path.abspath(args.output).rstrip(os.sep) + LOCK_NAME, "tokenize"), \
        stop.handling():
      report = fit(args.embeddings, args.method, args.output, seed=args.seed,
                   overrides=overrides, log=not args.quiet)
  summary = {k: report.get(k) for k in ("method", "num_items", "usage_per_level", "all_distinct",
                                        "largest_collision_group", "reconstruction_cosine",
                                        "wall_time_s")}
  print(json.dumps(summary, default=json_default))
  return 0


def _set_spelling(key: str, value: str) -> str | None:
  if key not in gin_cli.field_names(TokenizerConfig):
    return None
  quoted = repr(value) if isinstance(TokenizerConfig.__dataclass_fields__[key].default, str) \
      else value
  return f"TokenizerConfig.{key} = {quoted}"


if __name__ == "__main__":
  sys.exit(main())
