"""SemanticIDVocabulary: a seqio.Vocabulary over the semantic-ID TokenLayout.

Token ids follow cost_jax.tokenizer.layout.TokenLayout (pad = 0, eos = 1, unk = 2, one range
per semantic-ID level, then the hashed user tokens, rounded up to a multiple of 128).
Every id has one readable name, so a token sequence has an exact string form:

  0 "<pad>"   1 "</s>"   2 "<unk>"
  level l code c  -> "<{letter}_{c}>"  (letter a, b, c, ... t for levels 0..19;
                                         "<l20_c>" from the 21st level on; u and x are
                                         taken by user and unused tokens)
  user bucket b    -> "<u_{b}>"
  unused padding id i (num_used_tokens <= i < vocab_size) -> "<x_{i}>"

e.g. "<u_123> <a_12> <b_7> <c_200> <d_0>". `decode` drops pad and eos (like
SentencePiece drops control tokens) and stops at the first eos (seqio), so
`encode(decode(ids)) == ids` for every id sequence of ids in [3, vocab_size).
`encode` maps an unknown name to unk.

The layout is read lazily from `tokenizer_dir/vocabulary.json` on first use, so a
vocabulary (and a seqio.Task holding one) can be built before the tokenizer ran.
"""

from __future__ import annotations

import functools
import os
import re
import string
from typing import Iterable, Sequence

import gin
import seqio
import tensorflow as tf

from cost_jax.io import UserError
from cost_jax.tokenizer.layout import EOS_ID, PAD_ID, UNK_ID, TokenLayout

_SPECIAL_NAMES = {PAD_ID: "<pad>", EOS_ID: "</s>", UNK_ID: "<unk>"}
_LEVEL_LETTERS = string.ascii_lowercase[:20]  # a..t
_LEVEL_RE = re.compile(r"^<(?:([a-t])|l(\d+))_(\d+)>$")


def level_prefix(level: int) -> str:
  """The name prefix of level `level`: a, b, c, ... t, then l20, l21, ..."""
  return _LEVEL_LETTERS[level] if level < len(_LEVEL_LETTERS) else f"l{level}"


def token_names(layout: TokenLayout) -> list[str]:
  """The name of every token id in [0, layout.vocab_size)."""
  names = [f"<x_{i}>" for i in range(layout.vocab_size)]
  for i, name in _SPECIAL_NAMES.items():
    names[i] = name
  for level, (offset, size) in enumerate(zip(layout.level_offsets, layout.codebook_sizes)):
    prefix = level_prefix(level)
    for c in range(size):
      names[offset + c] = f"<{prefix}_{c}>"
  for b in range(layout.num_user_buckets):
    names[layout.user_offset + b] = f"<u_{b}>"
  return names


@gin.configurable
class SemanticIDVocabulary(seqio.Vocabulary):
  """seqio vocabulary of semantic-ID, user and special tokens (see module doc)."""

  def __init__(self, tokenizer_dir: str | os.PathLike | None = None,
               layout: TokenLayout | None = None, extra_ids: int = 0):
    """Args:
      tokenizer_dir: a tokenizer dir (cost_jax.tokenizer.artifact) or its vocabulary.json;
        read lazily on first use.
      layout: a TokenLayout, instead of tokenizer_dir.
      extra_ids: seqio extra ids appended after the layout's vocab_size (normally 0).
    """
    if (tokenizer_dir is None) == (layout is None):
      raise UserError("SemanticIDVocabulary: give exactly one of tokenizer_dir or layout")
    self._tokenizer_dir = None if tokenizer_dir is None else os.path.abspath(
        os.fspath(tokenizer_dir))
    self._given_layout = layout
    super().__init__(extra_ids=extra_ids)

  # --- layout (lazy) ----------------------------------------------------------
  @functools.cached_property
  def layout(self) -> TokenLayout:
    if self._given_layout is not None:
      return self._given_layout
    path = self._tokenizer_dir
    if not path.endswith(".json"):
      path = os.path.join(path, "vocabulary.json")
    return TokenLayout.load(path)

  @property
  def tokenizer_dir(self) -> str | None:
    return self._tokenizer_dir

  @functools.cached_property
  def _names(self) -> list[str]:
    names = token_names(self.layout)
    names += [f"<x_{i}>" for i in range(len(names), self.vocab_size)]  # extra_ids
    return names

  @functools.cached_property
  def _name_to_id(self) -> dict[str, int]:
    return {name: i for i, name in enumerate(self._names)}

  # --- seqio.Vocabulary interface ---------------------------------------------
  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  @property
  def _base_vocab_size(self) -> int:
    return self.layout.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    get = self._name_to_id.get
    return [get(piece, UNK_ID) for piece in s.split()]

  def _decode(self, ids: Iterable[int]) -> str:
    names = self._names
    out = []
    for i in ids:
      i = int(i)
      if i in (PAD_ID, EOS_ID):
        continue
      out.append(names[i] if 0 <= i < len(names) else _SPECIAL_NAMES[UNK_ID])
    return " ".join(out)

  def _table(self) -> tf.lookup.StaticHashTable:
    # Built per call: a table belongs to the graph (tf.data map fn) it is made in.
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self._names), tf.range(len(self._names), dtype=tf.int32)),
        default_value=UNK_ID)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """string scalar -> int32 [n]; string [B] -> int32 RaggedTensor [B, None]."""
    pieces = tf.strings.split(s)
    if isinstance(pieces, tf.RaggedTensor):
      return pieces.with_flat_values(self._table().lookup(pieces.flat_values))
    return self._table().lookup(pieces)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """int [..., T] -> string [...]; pad and eos are dropped."""
    ids = tf.convert_to_tensor(ids)
    ids = tf.cast(ids, tf.int32)
    names = tf.gather(tf.constant(self._names), tf.clip_by_value(ids, 0, len(self._names) - 1))
    keep = tf.logical_and(tf.not_equal(ids, PAD_ID), tf.not_equal(ids, EOS_ID))
    if ids.shape.rank == 1:
      return tf.strings.reduce_join(tf.boolean_mask(names, keep), separator=" ")
    return tf.strings.reduce_join(tf.ragged.boolean_mask(names, keep), axis=-1, separator=" ")

  # --- semantic-ID helpers -----------------------------------------------------
  def level_token(self, level: int, code: int) -> int:
    """Token id of code `code` at level `level`."""
    return int(self.layout.level_offsets[level] + code)

  def user_token(self, user_id: str | int) -> int:
    """Hashed user token of the raw user id (TIGER §4.1.3, hashing trick)."""
    return self.layout.user_token(user_id)

  def parse_name(self, name: str) -> tuple[int, int] | None:
    """'<c_200>' -> (2, 200); None for a name that is not a level token."""
    m = _LEVEL_RE.match(name)
    if not m:
      return None
    level = _LEVEL_LETTERS.index(m.group(1)) if m.group(1) else int(m.group(2))
    return level, int(m.group(3))

  def __eq__(self, other) -> bool:
    if not isinstance(other, SemanticIDVocabulary):
      return False
    if self is other:
      return True
    if (self._tokenizer_dir is not None and self._tokenizer_dir == other._tokenizer_dir
        and self.extra_ids == other.extra_ids):
      return True
    return self.layout == other.layout and self.extra_ids == other.extra_ids

  def __hash__(self) -> int:
    # Equal layouts from different dirs are equal, so the hash ignores the dir.
    return hash((type(self).__name__, self.extra_ids))

  def __repr__(self) -> str:
    src = self._tokenizer_dir if self._tokenizer_dir else repr(self._given_layout)
    return f"SemanticIDVocabulary({src})"

  __str__ = __repr__


@gin.configurable
def vocabulary_size(vocabulary: seqio.Vocabulary) -> int:
  """`vocabulary.vocab_size`, for gin: `TransformerConfig.vocab_size = @vocabulary_size()`."""
  return int(vocabulary.vocab_size)
