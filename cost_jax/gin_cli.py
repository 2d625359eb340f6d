"""Gin on every command line: one configuration language and one override syntax.

Every CLI (`tokenize`, `train`, `reproduce`) takes T5X's flags:
  --gin_file=F        a gin file (repeatable), searched in ., the repo root and gin/
  --gin_param="X.f = v"  one binding (repeatable)
  --gin.X.f=v         the same binding, T5X's short form

and gin's own parser reads them. The typed dataclasses (TrainConfig, TransformerConfig,
TokenizerConfig, SASRecConfig, CoveConfig, Profile) are the targets gin binds; their defaults are
the papers' values, each written once, with its section, in the dataclass. `bindings(...)` reads
what the files and flags bound (a dict of overrides), checked against the field types here.
The old `--set key=value` answers with one line showing the new spelling.
"""

from __future__ import annotations

import argparse
import collections.abc
import contextlib
import dataclasses
import logging
import os
import typing
from typing import Any, Iterator, Sequence

import gin

from cost_jax.io import UserError


def register(*classes: type) -> None:
  """Registers dataclasses with gin under their own names (idempotent)."""
  for cls in classes:
    try:
      gin.register(cls, module=cls.__module__)
    except ValueError:  # registered already
      pass


def add_flags(parser: argparse.ArgumentParser, *, old_set_example: str) -> None:
  """--gin_file, --gin_param; --set is kept only to answer with the new spelling."""
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file (repeatable); searched in ., the repo root and gin/")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="gin binding, e.g. 'TrainConfig.seed = 1' (repeatable); "
                           "or the short form --gin.TrainConfig.seed=1")
  parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
  parser.set_defaults(_old_set_example=old_set_example)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
               set_spelling=None) -> argparse.Namespace:
  """parse_known_args + T5X's --gin.X=v; `--set k=v` is refused naming its gin spelling
  (`set_spelling(k, v)` -> 'X.f = v', or None for unknown keys)."""
  args, rest = parser.parse_known_args(argv)
  for r in rest:
    if r.startswith("--gin.") and "=" in r:
      k, v = r[len("--gin."):].split("=", 1)
      args.gin_param.append(f"{k} = {v}")
    else:
      parser.error(f"unrecognized argument: {r}")
  if args.set:
    item = args.set[0]
    key, _, value = item.partition("=")
    new = set_spelling(key.strip(), value.strip()) if set_spelling else None
    shown = (f"--gin.{new.replace(' = ', '=', 1)}" if new
             else f"--gin.{args._old_set_example}")
    raise UserError(f"--set {item!r}: --set is gone; settings are gin bindings now, e.g. "
                    f"{shown} (or --gin_param \"{new or args._old_set_example.replace('=', ' = ', 1)}\")")
  return args


@contextlib.contextmanager
def fresh() -> Iterator[None]:
  """Clears gin before and after, so repeated calls in one process do not leak bindings."""
  with gin.unlock_config():
    gin.clear_config()
  try:
    yield
  finally:
    with gin.unlock_config():
      gin.clear_config()


def search_dirs() -> list[str]:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  dirs = []
  for d in (os.getcwd(), root, os.path.join(root, "gin")):
    if os.path.isdir(d) and d not in dirs:
      dirs.append(d)
  return dirs


def resolve_file(f: str) -> str:
  for d in [""] + search_dirs():
    p = os.path.join(d, f) if d else f
    if os.path.isfile(p):
      return os.path.abspath(p)
  raise UserError(f"{f}: gin file not found (searched {', '.join(search_dirs())})")


class _DropGinPathNoise(logging.Filter):
  """gin logs 'Path not found' for every search-path miss before a hit; hide those."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith("Path not found")


def parse(gin_files: Sequence[str] = (), gin_params: Sequence[str] = ()) -> None:
  """Parses files + bindings into gin's (already cleared) global config; one-line errors."""
  files = [resolve_file(f) for f in gin_files]
  noise = _DropGinPathNoise()
  logging.getLogger().addFilter(noise)
  try:
    for d in search_dirs():
      gin.add_config_file_search_path(d)
    try:
      gin.parse_config_files_and_bindings(files, list(gin_params), finalize_config=False)
    except (ValueError, SyntaxError, IOError, KeyError, ImportError, RuntimeError) as e:
      msg = " ".join(str(e).split("\n")[:3]) if str(e) else type(e).__name__
      raise UserError(f"gin: {msg}") from None
  finally:
    logging.getLogger().removeFilter(noise)


def check_type(cls: type, key: str, value: Any, where: str = "") -> Any:
  """`value` checked against field `key` of dataclass `cls` (ints accepted for floats, lists
  for tuples); returns the value (a list as a tuple). One line naming the field otherwise."""
  hints = typing.get_type_hints(cls)
  name = f"{cls.__name__}.{key}"
  if key not in hints:
    raise UserError(f"{where}{name}: no such setting (known: {', '.join(sorted(hints))})")
  t = hints[key]
  origin = typing.get_origin(t)
  ok = True
  if t is bool:
    ok = isinstance(value, bool)
  elif t is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif t is float:  # an int stays an int: a stage's config (and its hash) is as written
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif t is str:
    ok = isinstance(value, str)
  elif origin is tuple:
    ok = isinstance(value, (tuple, list))
    value = tuple(value) if ok else value
  elif t is dict or origin in (dict, collections.abc.Mapping):
    ok = isinstance(value, dict)
  if not ok:
    want = getattr(t, "__name__", str(t))
    raise UserError(f"{where}{name} expects {want}, got {value!r}")
  return value


def bindings(cls: type, scope: str = "") -> dict[str, Any]:
  """What gin's config binds for dataclass `cls` (in `scope` and outside it), type-checked."""
  selector = f"{scope}/{cls.__name__}" if scope else cls.__name__
  try:
    raw = gin.get_bindings(selector)
  except ValueError:
    return {}
  return {k: check_type(cls, k, v) for k, v in raw.items()}


def field_names(cls: type) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)}
