"""The token layout shared by the tokenizer's `vocabulary.json` and the SeqIO vocabulary.

  0 = pad, 1 = eos, 2 = unk,
  then one token range per semantic-ID level (code c at level l is token
  level_offsets[l] + c), then `num_user_buckets` hashed user tokens (TIGER: 2,000,
  the hashing trick on the raw user id), the total rounded up to a multiple of 128.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

import numpy as np

from cost_jax.io import UserError, read_json

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
NUM_RESERVED = 3
DEFAULT_USER_BUCKETS = 2000  # TIGER §4.1.3
VOCAB_MULTIPLE = 128


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  codebook_sizes: tuple[int, ...]
  num_user_buckets: int = DEFAULT_USER_BUCKETS
  vocab_multiple: int = VOCAB_MULTIPLE

  def __post_init__(self):
    object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
    if not self.codebook_sizes or min(self.codebook_sizes) < 1:
      raise UserError(f"codebook_sizes must be positive, got {self.codebook_sizes}")
    if self.num_user_buckets < 0:
      raise UserError(f"num_user_buckets must be >= 0, got {self.num_user_buckets}")

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)

  @property
  def level_offsets(self) -> tuple[int, ...]:
    offsets, o = [], NUM_RESERVED
    for k in self.codebook_sizes:
      offsets.append(o)
      o += k
    return tuple(offsets)

  @property
  def user_offset(self) -> int:
    return NUM_RESERVED + sum(self.codebook_sizes)

  @property
  def num_used_tokens(self) -> int:
    return self.user_offset + self.num_user_buckets

  @property
  def vocab_size(self) -> int:
    m = self.vocab_multiple
    return -(-self.num_used_tokens // m) * m

  # --- codes <-> tokens -------------------------------------------------------
  def codes_to_tokens(self, codes: np.ndarray) -> np.ndarray:
    """int [..., L] codes -> int32 tokens."""
    codes = np.asarray(codes)
    if codes.shape[-1] != self.num_levels:
      raise ValueError(f"expected last dim {self.num_levels}, got {codes.shape}")
    return (codes + np.asarray(self.level_offsets)).astype(np.int32)

  def tokens_to_codes(self, tokens: np.ndarray) -> np.ndarray:
    """int [..., L] tokens -> codes; -1 where a token is not of its level's range."""
    tokens = np.asarray(tokens)
    offs = np.asarray(self.level_offsets)
    sizes = np.asarray(self.codebook_sizes)
    codes = tokens - offs
    ok = (codes >= 0) & (codes < sizes)
    return np.where(ok, codes, -1).astype(np.int32)

  def user_token(self, user_id: str | int) -> int:
    """Hashing trick: a stable hash of the raw user id into `num_user_buckets` tokens."""
    if self.num_user_buckets == 0:
      raise ValueError("this layout has no user tokens")
    return self.user_offset + user_bucket(user_id, self.num_user_buckets)

  # --- (de)serialization --------------------------------------------------------
  def to_json_dict(self, **extra) -> dict:
    d = {
        "format": "cost_jax.vocabulary/v1",
        "num_levels": self.num_levels,
        "codebook_sizes": list(self.codebook_sizes),
        "level_offsets": list(self.level_offsets),
        "num_user_buckets": self.num_user_buckets,
        "user_offset": self.user_offset,
        "special_tokens": {"pad": PAD_ID, "eos": EOS_ID, "unk": UNK_ID},
        "vocab_size": self.vocab_size,
        "vocab_multiple": self.vocab_multiple,
    }
    d.update(extra)
    return d

  @classmethod
  def from_json_dict(cls, d: dict, source: str = "vocabulary.json") -> "TokenLayout":
    try:
      layout = cls(codebook_sizes=tuple(d["codebook_sizes"]),
                   num_user_buckets=int(d.get("num_user_buckets", DEFAULT_USER_BUCKETS)),
                   vocab_multiple=int(d.get("vocab_multiple", VOCAB_MULTIPLE)))
    except KeyError as e:
      raise UserError(f"{source}: missing field {e}") from None
    except (TypeError, ValueError) as e:
      raise UserError(f"{source}: bad field value ({e})") from None
    if "level_offsets" in d and list(d["level_offsets"]) != list(layout.level_offsets):
      raise UserError(f"{source}: field 'level_offsets' {d['level_offsets']} does not match "
                      f"codebook_sizes {list(layout.codebook_sizes)}")
    return layout

  @classmethod
  def load(cls, path: str | os.PathLike) -> "TokenLayout":
    path = os.fspath(path)
    if os.path.isdir(path):
      path = os.path.join(path, "vocabulary.json")
    return cls.from_json_dict(read_json(path), source=path)


def user_bucket(user_id: str | int, num_buckets: int) -> int:
  """Stable across processes and platforms (Python's hash() is salted)."""
  digest = hashlib.md5(str(user_id).encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "little") % num_buckets


def layout_for_ids(semantic_ids: np.ndarray, codebook_sizes: Sequence[int] | None = None,
                   num_user_buckets: int = DEFAULT_USER_BUCKETS) -> TokenLayout:
  """A layout whose level sizes cover `semantic_ids` (int [N, L])."""
  ids = np.asarray(semantic_ids)
  observed = ids.max(axis=0) + 1 if len(ids) else np.ones(ids.shape[1], int)
  if codebook_sizes is None:
    codebook_sizes = observed
  sizes = [max(int(k), int(o)) for k, o in zip(codebook_sizes, observed)]
  return TokenLayout(tuple(sizes), num_user_buckets=num_user_buckets)
