"""Item embeddings as the tokenizer reads them: a float [num_items, dim] .npy, validated."""

from __future__ import annotations

import mmap
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
  x = _open_npy(path)
  return validate_embeddings(x, path)


def _check_header(dtype: np.dtype, shape: tuple, source: str) -> None:
  if dtype.kind not in "fiu" or dtype == np.bool_:
    raise UserError(f"{source}: dtype {dtype} is not numeric, expected float [num_items, dim]")
  if len(shape) != 2:
    raise UserError(f"{source}: expected a 2-D array [num_items, dim], got shape {shape} "
                    f"(rank {len(shape)})")
  if shape[0] == 0:
    raise UserError(f"{source}: no items (shape {shape})")
  if shape[1] == 0:
    raise UserError(f"{source}: items have dimension 0 (shape {shape})")


def validate_embeddings(x: Any, source: str = "embeddings", min_items: int = 1,
                        first_row: int = 0) -> np.ndarray:
  """float32 copy of x, or a UserError naming `source` (rows numbered from `first_row`)."""
  x = np.asarray(x)
  _check_header(x.dtype, tuple(x.shape), source)
  x = x.astype(np.float32)
  bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
  if len(bad):
    kinds = []
    if np.isnan(x[bad]).any():
      kinds.append("NaN")
    if np.isinf(x[bad]).any():
      kinds.append("inf")
    raise UserError(f"{source}: {_rows(bad + first_row)} contain{'s' if len(bad) == 1 else ''} "
                    f"{' and '.join(kinds)} values")
  if x.shape[0] < min_items:
    raise UserError(f"{source}: {x.shape[0]} items but each codebook level has {min_items} codes; "
                    f"need at least {min_items} items (or lower codebook_size with --set)")
  return x


class EmbeddingStream:
  """A float [N, D] .npy read in pieces through a memory map, never whole.

  `rows(index)` and `chunks(size)` return float32 copies. Pages of the map that were read are
  handed back to the kernel (madvise MADV_DONTNEED) after every `release_bytes` read, so the
  process's resident set stays bounded: the file stays in the page cache, not in this process.
  """

  def __init__(self, path: str, release_bytes: int = 256 << 20):
    self.path = os.fspath(path)
    self._map = _open_npy(self.path, mmap_mode="r")
    self.shape = tuple(int(s) for s in self._map.shape)
    self.dtype = self._map.dtype
    self._release_bytes = int(release_bytes)
    self._since_release = 0

  def __len__(self) -> int:
    return self.shape[0]

  def release(self) -> None:
    """Drops the mapped pages read so far from this process (they stay cached by the kernel)."""
    raw = getattr(self._map, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_DONTNEED"):
      raw.madvise(mmap.MADV_DONTNEED)
    self._since_release = 0

  def _account(self, nbytes: int) -> None:
    self._since_release += nbytes
    if self._since_release >= self._release_bytes:
      self.release()

  def rows(self, index: np.ndarray) -> np.ndarray:
    """float32 [len(index), D], in the order of `index`."""
    index = np.asarray(index, np.int64)
    order = np.argsort(index, kind="stable")  # read in file order, return in the caller's
    out = np.empty((len(index), self.shape[1]), np.float32)
    out[order] = self._map[index[order]]
    self._account(len(index) * self.shape[1] * self.dtype.itemsize)
    return out

  def chunks(self, size: int):
    """Yields (start, float32 [<= size, D]) over the rows in order."""
    size = max(int(size), 1)
    for start in range(0, self.shape[0], size):
      part = np.asarray(self._map[start:start + size], np.float32)
      self._account(part.nbytes)
      yield start, part
    self.release()


def _open_npy(path: str, mmap_mode: str | None = None) -> Any:
  """np.load of one .npy, with every failure as a UserError naming the file."""
  if not os.path.exists(path):
    raise UserError(f"{path}: no such file")
  if os.path.isdir(path):
    raise UserError(f"{path}: is a directory, expected a .npy file")
  if os.path.getsize(path) == 0:
    raise UserError(f"{path}: empty file, expected a .npy array [num_items, dim]")
  try:
    x = np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
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
  return x


def open_embeddings(path: str, chunk_rows: int = 65536) -> EmbeddingStream:
  """An EmbeddingStream over `path`, checked like load_embeddings (dtype, shape, and every row
  finite, read chunk by chunk)."""
  stream = EmbeddingStream(path)
  _check_header(stream.dtype, stream.shape, path)
  for start, part in stream.chunks(chunk_rows):
    validate_embeddings(part, path, first_row=start)
  return stream


def should_stream(path: str, above_gb: float) -> bool:
  """Whether a .npy at `path` is large enough to be streamed (cost_jax.tokenizer.config)."""
  return os.path.isfile(path) and os.path.getsize(path) > above_gb * 1e9
