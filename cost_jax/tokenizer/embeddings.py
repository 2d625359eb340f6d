"""Item embeddings as the tokenizer reads them: a float [num_items, dim] .npy, validated."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cost_jax.io import UserError


def _rows(idx: np.ndarray, limit: int = 5) -> str:
  shown = ", ".join(str(int(i)) for i in idx[:limit])
  more = f" (+{len(idx) - limit} more)" if len(idx) > limit else ""
  return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def load_embeddings(path: str) -> np.ndarray:
  """Reads a float [num_items, dim] .npy; UserError naming the file for anything else."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise UserError(f"{path}: no such file")
  if os.path.isdir(path):
    raise UserError(f"{path}: is a directory, expected a .npy file")
  if os.path.getsize(path) == 0:
    raise UserError(f"{path}: empty file, expected a .npy array [num_items, dim]")
  try:
    x = np.load(path, allow_pickle=False, mmap_mode=None)
  except PermissionError:
    raise UserError(f"{path}: cannot read (permission denied)") from None
  except OSError as e:
    raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
  except (ValueError, EOFError) as e:
    why = str(e).splitlines()[0] if str(e) else "bad header"
    raise UserError(f"{path}: not a .npy file ({why})") from None
  if isinstance(x, np.lib.npyio.NpzFile):
    x.close()
    raise UserError(f"{path}: is an .npz archive, expected a single .npy array")
  return validate_embeddings(x, path)


def validate_embeddings(x: Any, source: str = "embeddings", min_items: int = 1) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
    raise UserError(f"{source}: dtype {x.dtype} is not numeric, expected float [num_items, dim]")
  if x.ndim != 2:
    raise UserError(f"{source}: expected a 2-D array [num_items, dim], got shape {x.shape} "
                    f"(rank {x.ndim})")
  if x.shape[0] == 0:
    raise UserError(f"{source}: no items (shape {x.shape})")
  if x.shape[1] == 0:
    raise UserError(f"{source}: items have dimension 0 (shape {x.shape})")
  x = x.astype(np.float32)
  bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
  if len(bad):
    kinds = []
    if np.isnan(x[bad]).any():
      kinds.append("NaN")
    if np.isinf(x[bad]).any():
      kinds.append("inf")
    raise UserError(f"{source}: {_rows(bad)} contain{'s' if len(bad) == 1 else ''} "
                    f"{' and '.join(kinds)} values")
  if x.shape[0] < min_items:
    raise UserError(f"{source}: {x.shape[0]} items but each codebook level has {min_items} codes; "
                    f"need at least {min_items} items (or lower codebook_size with --set)")
  return x
