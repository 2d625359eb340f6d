"""User-facing errors: one clear line, no traceback, non-zero exit."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
  """Bad input or configuration. The message names the file, line or field."""


def exits_cleanly(main: F) -> F:
  """Wraps a CLI `main` so a UserError prints `error: ...` and exits with 2."""

  @functools.wraps(main)
  def wrapper(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      raise SystemExit(2) from None
    except KeyboardInterrupt:
      print("interrupted", file=sys.stderr)
      raise SystemExit(130) from None

  return wrapper  # type: ignore[return-value]


def read_json(path: str):
  """Reads a JSON file; an unreadable or malformed file is a UserError naming file and line."""
  import json  # local: this module stays import-light for every CLI
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
