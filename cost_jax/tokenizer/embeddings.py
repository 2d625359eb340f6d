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
  x = x.astype(np.float32, copy=False)  # already float32 (a streamed piece): no second copy
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
                    f"need at least {min_items} items (or lower TokenizerConfig.codebook_size)")
  return x


class EmbeddingStream:
  """A float [N, D] .npy read in pieces with positioned reads (os.preadv), never whole.

  `rows(index)` and `chunks(size)` return float32 copies of just those rows. Nothing is mapped
  into this process, so its resident set holds the pieces alone: the file stays in the kernel's
  page cache. (A memory map would not do: every page fault maps its neighbours too, and random
  rows of a 6 GB map put 6 GB in the resident set.)
  """

  def __init__(self, path: str):
    self.path = os.fspath(path)
    header = _open_npy(self.path, mmap_mode="r")  # parses the header; its data is never touched
    self.shape = tuple(int(s) for s in header.shape)
    self.dtype = header.dtype
    if len(self.shape) == 2 and header.flags.f_contiguous and not header.flags.c_contiguous:
      raise UserError(f"{self.path}: Fortran-order array; save it with np.save(path, "
                      "np.ascontiguousarray(x))")
    self._offset = int(header.offset)
    del header
    self._row_bytes = (self.shape[1] if len(self.shape) == 2 else 1) * self.dtype.itemsize
    self._fd = os.open(self.path, os.O_RDONLY)

  def __len__(self) -> int:
    return self.shape[0]

  def __del__(self):
    fd = getattr(self, "_fd", None)
    if fd is not None:
      os.close(fd)
      self._fd = None

  def _read(self, start: int, count: int, into: memoryview) -> None:
    want, got = count * self._row_bytes, 0
    while got < want:
      n = os.preadv(self._fd, [into[got:want]], self._offset + start * self._row_bytes + got)
      if n <= 0:
        raise UserError(f"{self.path}: file ends before row {start + count} (truncated?)")
      got += n

  def _to_float32(self, raw: np.ndarray) -> np.ndarray:
    return raw if raw.dtype == np.float32 else raw.astype(np.float32)

  def rows(self, index: np.ndarray) -> np.ndarray:
    """float32 [len(index), D], in the order of `index` (read in file order)."""
    index = np.asarray(index, np.int64)
    if len(index) and (index.min() < 0 or index.max() >= self.shape[0]):
      raise IndexError(f"{self.path}: rows outside [0, {self.shape[0]})")
    order = np.argsort(index, kind="stable")
    raw = np.empty((len(index), self.shape[1]), self.dtype)
    view = memoryview(raw.reshape(-1).view(np.uint8))
    rb = self._row_bytes
    for k, i in enumerate(index[order].tolist()):
      self._read(i, 1, view[k * rb:(k + 1) * rb])
    out = np.empty((len(index), self.shape[1]), np.float32)
    out[order] = raw
    return out

  def chunks(self, size: int):
    """Yields (start, float32 [<= size, D]) over the rows in order."""
    size = max(int(size), 1)
    for start in range(0, self.shape[0], size):
      m = min(size, self.shape[0] - start)
      raw = np.empty((m, self.shape[1]), self.dtype)
      self._read(start, m, memoryview(raw.reshape(-1).view(np.uint8)))
      yield start, self._to_float32(raw)


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
