"""Packed training batches: pay only for real encoder tokens (pure numpy, no JAX).

A TIGER example is short on the decoder side (the next item's L tokens, every example the
same length) and long, mostly padding, on the encoder side (a user token plus up to 20
items of L tokens; 34% real on Amazon Beauty). The built-in trainer therefore packs only
the encoder: the examples of one step are laid out by first-fit decreasing into R rows of
the full input length, and every decoder row stays one example, in the batch's order.

  encoder_input_tokens     int32 [R, Ti]   several examples per row, zero padded
  encoder_segment_ids      int32 [R, Ti]   1, 2, ... per example in its row, 0 = padding
  encoder_positions        int32 [R, Ti]   0, 1, ... within each segment (absolute embeddings)
  decoder_*                      [B, Tt]   unchanged: one example per row
  decoder_encoder_row      int32 [B]       the encoder row of example b
  decoder_encoder_segment  int32 [B]       its segment id in that row

The network (cost_jax.seq2seq.network) masks self-attention to a segment and lets decoder
row b cross-attend only to its own segment of encoder row `decoder_encoder_row[b]`. T5's
relative position buckets depend only on key minus query position, which is the same for
a segment wherever it sits in the row, so each example's logits equal its padded ones.

The examples of step s are exactly the padded batch's (EpochBatcher.indices(s)); packing is
a pure function of those rows, so the packed batch of step s is still a function of
(seed, s). R is rounded up to a multiple of `row_multiple`, so only a few shapes compile.
T5X users pack with seqio's `EncDecFeatureConverter(pack=True)` instead (gin/t5x/).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from cost_jax.io import UserError

PACKED_FEATURES = ("encoder_segment_ids", "encoder_positions", "decoder_encoder_row",
                   "decoder_encoder_segment")


def token_lengths(encoder_tokens: np.ndarray) -> np.ndarray:
  """Real tokens per row of a left-aligned zero-padded [n, T] array (checked)."""
  nonzero = encoder_tokens != 0
  lengths = nonzero.sum(axis=1).astype(np.int64)
  t = encoder_tokens.shape[1]
  if not np.array_equal(nonzero, np.arange(t)[None, :] < lengths[:, None]):
    raise UserError("encoder inputs are not left-aligned (a padding token 0 inside an example); "
                    "cannot pack them")
  return lengths


def first_fit_decreasing(lengths: np.ndarray, row_len: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Bins `lengths` into rows of `row_len`: (row [n], offset [n], number of rows).

  Longest first, each into the first row with room (ties by input position: stable), so the
  result is a pure function of `lengths`.
  """
  lengths = np.asarray(lengths, np.int64)
  if lengths.size and int(lengths.max()) > row_len:
    raise UserError(f"an example of {int(lengths.max())} tokens does not fit a row of {row_len}")
  order = np.argsort(-lengths, kind="stable")
  free = np.full(len(lengths), row_len, np.int64)  # at most n rows
  used = 0
  row = np.empty(len(lengths), np.int64)
  offset = np.empty(len(lengths), np.int64)
  for i in order:
    n = lengths[i]
    fits = np.flatnonzero(free[:used] >= n)
    r = int(fits[0]) if fits.size else used
    used = max(used, r + 1)
    row[i], offset[i] = r, row_len - free[r]
    free[r] -= n
  return row, offset, used


def round_up(value: int, multiple: int) -> int:
  return -(-int(value) // int(multiple)) * int(multiple)


def pack_batch(batch: Mapping[str, np.ndarray], row_multiple: int = 8) -> dict[str, np.ndarray]:
  """A padded batch (T5X features, one example per row) -> the packed layout above."""
  tokens = np.asarray(batch["encoder_input_tokens"])
  b, t = tokens.shape
  lengths = token_lengths(tokens)
  row, offset, used = first_fit_decreasing(lengths, t)
  rows = max(round_up(used, row_multiple), row_multiple)
  packed = np.zeros((rows, t), tokens.dtype)
  segments = np.zeros((rows, t), np.int32)
  positions = np.zeros((rows, t), np.int32)
  segment_of = np.zeros(b, np.int32)
  count = np.zeros(rows, np.int32)
  # Segment ids numbered by position in the row (1 = leftmost), independent of the order above.
  for i in np.lexsort((offset, row)):
    r, o, n = row[i], offset[i], lengths[i]
    count[r] += 1
    packed[r, o:o + n] = tokens[i, :n]
    segments[r, o:o + n] = count[r]
    positions[r, o:o + n] = np.arange(n)
    segment_of[i] = count[r]
  out = {k: np.asarray(v) for k, v in batch.items() if k != "encoder_input_tokens"}
  out.update(encoder_input_tokens=packed, encoder_segment_ids=segments, encoder_positions=positions,
             decoder_encoder_row=row.astype(np.int32), decoder_encoder_segment=segment_of)
  return out


def real_tokens(batch: Mapping[str, np.ndarray]) -> tuple[int, int]:
  """(real encoder tokens, real decoder target tokens) of a padded or packed batch."""
  enc = int(np.count_nonzero(batch["encoder_input_tokens"]))
  w = batch.get("decoder_loss_weights")
  dec = int(np.count_nonzero(w)) if w is not None else int(
      np.count_nonzero(batch["decoder_target_tokens"]))
  return enc, dec


def padded_share(encoder_tokens: np.ndarray) -> float:
  """Share of real tokens in a padded [n, T] encoder array (the packing opportunity)."""
  return float(np.count_nonzero(encoder_tokens)) / max(int(encoder_tokens.size), 1)
