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
import os
import sys
from typing import Any, Sequence

from gin import config_parser

from cost_jax import stop
from cost_jax.io import LOCK_NAME, DirLock, UserError, exits_cleanly, json_default
from cost_jax.tokenizer import config as tc
from cost_jax.tokenizer.fit import encode_new, fit


def gin_overrides(gin_files: list[str] | None, gin_params: list[str] | None) -> dict[str, Any]:
  """Reads `tokenizer.<field> = value` bindings from gin files / params into a dict.

  Uses gin's parser only (gin's global config is left alone); bindings of other selectors are
  ignored, `include` statements are followed, later bindings win.
  """
  if not gin_files and not gin_params:
    return {}

  class _Delegate(config_parser.ParserDelegate):

    def configurable_reference(self, scoped_name, evaluate):
      raise ValueError(f"@{scoped_name}: references are not supported in tokenizer bindings")

    def macro(self, name):
      raise ValueError(f"%{name}: macros are not supported in tokenizer bindings")

  values: dict[str, Any] = {}

  def parse(text: str, source: str, depth: int = 0) -> None:
    try:
      statements = list(config_parser.ConfigParser(text, _Delegate()))
    except (SyntaxError, ValueError) as e:
      raise UserError(f"{source}: {str(e).splitlines()[0] if str(e) else 'bad gin syntax'}"
                      ) from None
    for st in statements:
      if isinstance(st, config_parser.IncludeStatement) and depth < 10:
        inc = st.filename
        if not os.path.isabs(inc) and os.path.exists(source):
          inc = os.path.join(os.path.dirname(source), inc)
        parse(_read(inc), inc, depth + 1)
      elif isinstance(st, config_parser.BindingStatement) and st.selector == "tokenizer":
        values[st.arg_name] = tc.coerce(st.arg_name, st.value)

  def _read(path: str) -> str:
    try:
      with open(path) as f:
        return f.read()
    except OSError as e:
      raise UserError(f"{path}: cannot read gin file ({e.strerror or e})") from None

  for path in gin_files or []:
    parse(_read(path), path)
  for i, binding in enumerate(gin_params or []):
    parse(binding, f"--gin_param #{i + 1} ({binding!r})")
  return values


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m cost_jax.tokenize",
                              description=__doc__.split("\n")[0])
  p.add_argument("--embeddings", required=True, help=".npy float [num_items, dim], row i = item i")
  p.add_argument("--method", choices=[m for m in tc.METHODS if m not in tc.INTERACTION_METHODS],
                 default=None, help="default cost (with --from_checkpoint: the checkpoint's)")
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
    given = [flag for flag, value in (("--method", args.method), ("--set", args.set),
                                      ("--gin_file", args.gin_file), ("--gin_param", args.gin_param),
                                      ("--epochs", args.epochs), ("--preset", args.preset))
             if value]
    if given:
      raise UserError(f"--from_checkpoint uses the trained tokenizer's own method and settings; "
                      f"{', '.join(given)} would be ignored, so they are refused")
    report = encode_new(args.from_checkpoint, args.embeddings, args.output, log=not args.quiet)
  else:
    args.method = args.method or "cost"
    overrides = gin_overrides(args.gin_file, args.gin_param)
    overrides.update(tc.parse_set_args(args.set))
    if args.epochs is not None:
      overrides["epochs"] = args.epochs
    if args.preset:
      overrides["preset"] = args.preset
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


if __name__ == "__main__":
  sys.exit(main())
