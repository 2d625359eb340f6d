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
  encoder_row_examples     int32 [R, S]    the example in segment j + 1 of each row (B: none);
                                           S: fixed per split (max_segments, at most
                                           TrainConfig.pack_max_segments), not per batch

The network (cost_jax.seq2seq.network) masks self-attention to a segment and lets decoder
row b cross-attend only to its own segment of encoder row `decoder_encoder_row[b]`: the
queries move into their row's segment slots, so cross-attention runs once per packed row. T5's
relative position buckets depend only on key minus query position, which is the same for
a segment wherever it sits in the row, so each example's logits equal its padded ones.

The examples of step s are exactly the padded batch's (EpochBatcher.indices(s)); packing is
a pure function of those rows, so the packed batch of step s is still a function of
(seed, s). R is rounded up to a multiple of `row_multiple`, so only a few shapes compile.
T5X users pack with seqio's `EncDecFeatureConverter(pack=True)` instead (gin/t5x/).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from cost_jax.io import UserError

PACKED_FEATURES = ("encoder_segment_ids", "encoder_positions", "decoder_encoder_row",
                   "decoder_encoder_segment", "encoder_row_examples")


def token_lengths(encoder_tokens: np.ndarray) -> np.ndarray:
  """Real tokens per row of a left-aligned zero-padded [n, T] array (checked)."""
  nonzero = encoder_tokens != 0
  lengths = nonzero.sum(axis=1).astype(np.int64)
  t = encoder_tokens.shape[1]
  if not np.array_equal(nonzero, np.arange(t)[None, :] < lengths[:, None]):
    raise UserError("encoder inputs are not left-aligned (a padding token 0 inside an example); "
                    "cannot pack them")
  return lengths


def first_fit_decreasing(lengths: np.ndarray, row_len: int | Sequence[int],
                         max_per_row: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray, int] | tuple[np.ndarray, np.ndarray,
                                                                         np.ndarray]:
  """Bins `lengths` into rows: (row [n], offset [n], number of rows).

  Longest first, each into the first open row with room and fewer than `max_per_row`
  examples (ties by input position: stable), so the result is a pure function of `lengths`.
  With one `row_len` every row has that width. With several widths (ascending), a new row takes
  the narrowest width that holds the example that opens it, and later (shorter) examples fill any
  open row with room; the third result is then the width of each row [rows].
  """
  widths = (int(row_len),) if np.ndim(row_len) == 0 else tuple(int(w) for w in row_len)
  if list(widths) != sorted(set(widths)) or widths[0] < 1:
    raise UserError(f"row widths must be distinct, positive and ascending, got {widths}")
  lengths = np.asarray(lengths, np.int64)
  if lengths.size and int(lengths.max()) > widths[-1]:
    raise UserError(f"an example of {int(lengths.max())} tokens does not fit a row of "
                    f"{widths[-1]}")
  order = np.argsort(-lengths, kind="stable")
  free = np.zeros(len(lengths), np.int64)  # at most n rows
  width = np.zeros(len(lengths), np.int64)
  held = np.zeros(len(lengths), np.int64)
  cap = len(lengths) if max_per_row is None else int(max_per_row)
  used = 0
  row = np.empty(len(lengths), np.int64)
  offset = np.empty(len(lengths), np.int64)
  for i in order:
    n = lengths[i]
    fits = np.flatnonzero((free[:used] >= n) & (held[:used] < cap))
    if fits.size:
      r = int(fits[0])
    else:
      r = used
      used += 1
      width[r] = free[r] = widths[int(np.searchsorted(widths, n))]
    row[i], offset[i] = r, width[r] - free[r]
    free[r] -= n
    held[r] += 1
  if np.ndim(row_len) == 0:
    return row, offset, used
  return row, offset, width[:used]


def round_up(value: int, multiple: int) -> int:
  return -(-int(value) // int(multiple)) * int(multiple)


def bucket_key(width: int) -> str:
  """The batch key prefix of the packed rows `width` tokens wide (narrower than the inputs)."""
  return f"encoder_rows_{int(width)}/"


def max_segments(lengths: np.ndarray, row_len: int) -> int:
  """The most examples a row of `row_len` tokens can hold when the shortest has
  min(`lengths`) tokens: the segment slots per row (a pure function of the split)."""
  shortest = int(np.min(lengths)) if np.size(lengths) else 1
  return max(1, int(row_len) // max(shortest, 1))


def pack_batch(batch: Mapping[str, np.ndarray], row_multiple: int = 8,
               widths: Sequence[int] = (), slots: int | None = None
               ) -> dict[str, np.ndarray]:
  """A padded batch (T5X features, one example per row) -> the packed layout above.

  `widths`: narrower row widths (tokens) besides the full input length T. Rows of width
  w < T go to `encoder_rows_{w}/{encoder_input_tokens, encoder_segment_ids,
  encoder_positions}`; the full-width rows keep the standard keys. Self-attention then
  costs w^2 per narrow row instead of T^2. `decoder_encoder_row` indexes the rows of all
  widths concatenated, narrowest first, full width last (the network's order). Each
  width's row count is rounded up to `row_multiple` (widths with no rows get none, except
  the full width, which always has at least `row_multiple`). `slots`: the segment slots per row
  of `encoder_row_examples`: at most this many examples share a row (default: no cap, and
  as many slots as this batch's fullest row needs).
  """
  tokens = np.asarray(batch["encoder_input_tokens"])
  b, t = tokens.shape
  all_widths = tuple(sorted({int(w) for w in widths if 0 < int(w) < t})) + (t,)
  lengths = token_lengths(tokens)
  row, offset, row_width = first_fit_decreasing(lengths, all_widths, slots)
  # Rows of each width, in order of first use; then renumbered: narrow widths first.
  new_index = np.empty(len(row_width), np.int64)
  start = 0
  counts = {}
  for w in all_widths:
    mine = np.flatnonzero(row_width == w)
    n_rows = round_up(mine.size, row_multiple) if mine.size or w == t else 0
    n_rows = max(n_rows, row_multiple) if w == t else n_rows
    new_index[mine] = start + np.arange(mine.size)
    counts[w] = (start, n_rows)
    start += n_rows
  row = new_index[row]
  total = start
  packed = np.zeros((total, t), tokens.dtype)
  segments = np.zeros((total, t), np.int32)
  positions = np.zeros((total, t), np.int32)
  segment_of = np.zeros(b, np.int32)
  count = np.zeros(total, np.int32)
  # Segment ids numbered by position in the row (1 = leftmost), independent of the order above.
  for i in np.lexsort((offset, row)):
    r, o, n = row[i], offset[i], lengths[i]
    count[r] += 1
    packed[r, o:o + n] = tokens[i, :n]
    segments[r, o:o + n] = count[r]
    positions[r, o:o + n] = np.arange(n)
    segment_of[i] = count[r]
  out = {k: np.asarray(v) for k, v in batch.items() if k != "encoder_input_tokens"}
  for w in all_widths:
    s, n_rows = counts[w]
    prefix = "" if w == t else bucket_key(w)
    if w != t and n_rows == 0:
      continue
    out[prefix + "encoder_input_tokens"] = packed[s:s + n_rows, :w]
    out[prefix + "encoder_segment_ids"] = segments[s:s + n_rows, :w]
    out[prefix + "encoder_positions"] = positions[s:s + n_rows, :w]
  slots = int(count.max()) if slots is None else int(slots)
  examples = np.full((total, slots), b, np.int32)
  examples[row, segment_of - 1] = np.arange(b, dtype=np.int32)
  out.update(decoder_encoder_row=row.astype(np.int32), decoder_encoder_segment=segment_of,
             encoder_row_examples=examples)
  return out


def narrow_rows(batch: Mapping[str, Any]) -> list[tuple[Any, Any, Any]]:
  """(tokens, segment_ids, positions) of the narrow-row buckets of a packed batch, narrowest
  first (the order `decoder_encoder_row` counts them in)."""
  widths = sorted(int(k[len("encoder_rows_"):].split("/")[0]) for k in batch
                  if k.startswith("encoder_rows_") and k.endswith("/encoder_input_tokens"))
  return [(batch[bucket_key(w) + "encoder_input_tokens"],
           batch[bucket_key(w) + "encoder_segment_ids"],
           batch[bucket_key(w) + "encoder_positions"]) for w in widths]


def auto_widths(lengths: np.ndarray, full: int, multiple: int = 4) -> tuple[int, ...]:
  """Narrow row widths for a split whose examples have `lengths` real encoder tokens: about
  T/4 and T/2 (rounded up to `multiple`), kept only where at least a quarter of the examples
  fit. A pure function of the split, so every step of a run uses the same widths."""
  lengths = np.asarray(lengths)
  out = []
  for frac in (4, 2):
    w = round_up(-(-full // frac), multiple)
    if w < full and lengths.size and float(np.mean(lengths <= w)) >= 0.25:
      out.append(w)
  return tuple(sorted(set(out)))


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
