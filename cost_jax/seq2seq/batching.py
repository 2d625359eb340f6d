"""Training batches from materialized splits: a pure function of (seed, step).

The batch for training step s is a deterministic function of (seed, s): the
example stream is the concatenation of per-epoch permutations, permutation e
drawn from numpy's `default_rng(SeedSequence([seed, e]))`. A run that
stops at step k and resumes therefore sees the same batches as one that never
stopped. The hot loop only gathers rows: no tf.data per step. Packed rows:
cost_jax.seq2seq.packing.

History cropping (`history_crop` = p, TrainConfig.history_crop): each example of a step is, with
probability p, cut to a suffix of its history of 1..n items (n = its history length), drawn
uniformly, also a pure function of (seed, step); the user token and the target stay. At p = 1
a target is seen with every history length equally often, as when training on every contiguous
sub-sequence of a user's items (the augmentation of the GRID reproduction of TIGER); TIGER's
paper trains on the full histories (p = 0, the default).
"""

from __future__ import annotations

import collections
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from cost_jax.io import UserError
from cost_jax.seq2seq import packing as packing_lib
from cost_jax.seq2seq.splits import ExampleArrays


def crop_histories(encoder_tokens: np.ndarray, lengths: np.ndarray, keep_items: np.ndarray,
                   tokens_per_item: int, prefix_tokens: int = 1) -> np.ndarray:
  """Rows of left-aligned [prefix tokens] + items x `tokens_per_item` tokens, each cut to its
  last `keep_items` items (the prefix kept, zeros after); a row keeps all its items where
  `keep_items` >= their number."""
  tokens = np.asarray(encoder_tokens)
  lengths = np.asarray(lengths, np.int64)
  items = (lengths - prefix_tokens) // tokens_per_item
  drop = np.maximum(items - np.asarray(keep_items, np.int64), 0) * tokens_per_item
  t = np.arange(tokens.shape[1])[None, :]
  source = np.where(t < prefix_tokens, t, t + drop[:, None])
  keep = source < lengths[:, None]
  out = np.take_along_axis(tokens, np.minimum(source, tokens.shape[1] - 1), axis=1)
  return np.where(keep, out, 0).astype(tokens.dtype)


class EpochBatcher:
  """Training batches as a pure function of (seed, step), no dropped examples.

  Example position p = step * batch_size + j reads row perm_e[p mod n] of
  epoch e = p // n, where perm_e is a seeded permutation of the n rows.
  """

  def __init__(self, arrays: ExampleArrays, batch_size: int, seed: int, cached_epochs: int = 3,
               packing: str = "off", pack_row_multiple: int = 8, pack_widths: str = "",
               pack_max_segments: int | None = None, history_crop: float = 0.0,
               tokens_per_item: int = 0, prefix_tokens: int = 1):
    if len(arrays) == 0:
      raise UserError("training split has no examples")
    if batch_size < 1:
      raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if packing not in ("encoder", "off"):
      raise UserError(f"packing must be 'encoder' or 'off', got {packing!r}")
    self.arrays = arrays
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.packing = packing
    self.pack_row_multiple = int(pack_row_multiple)
    # Real tokens per example (encoder, decoder): for tokens/s, whatever the layout.
    self.encoder_lengths = packing_lib.token_lengths(arrays.encoder_input_tokens)
    self.decoder_lengths = np.count_nonzero(arrays.decoder_loss_weights, axis=1)
    full = arrays.encoder_input_tokens.shape[1]
    if pack_widths == "auto":
      self.pack_widths = packing_lib.auto_widths(self.encoder_lengths, full)
    elif pack_widths in ("none", ""):
      self.pack_widths = ()
    else:
      self.pack_widths = tuple(sorted({int(w) for w in str(pack_widths).split(",")
                                       if 0 < int(w) < full}))
    # Segment slots per packed row: fixed for the split (at most `pack_max_segments`), so it
    # adds no batch shapes.
    self.max_segments = packing_lib.max_segments(self.encoder_lengths, full)
    if pack_max_segments:
      self.max_segments = min(self.max_segments, int(pack_max_segments))
    self.history_crop = float(history_crop)
    self.tokens_per_item, self.prefix_tokens = int(tokens_per_item), int(prefix_tokens)
    if self.history_crop:
      if not 0.0 < self.history_crop <= 1.0:
        raise UserError(f"history_crop must be in [0, 1], got {history_crop}")
      history = self.encoder_lengths - self.prefix_tokens
      if self.tokens_per_item < 1 or (history < 0).any() or (history % self.tokens_per_item).any():
        raise UserError(f"history_crop: the training inputs are not {self.prefix_tokens} prefix "
                        f"token(s) + whole items of {self.tokens_per_item} tokens")
    self._perms: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
    self._cached_epochs = cached_epochs

  @property
  def num_examples(self) -> int:
    return len(self.arrays)

  def permutation(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))
      perm = rng.permutation(self.num_examples)
      self._perms[epoch] = perm
      while len(self._perms) > self._cached_epochs:
        self._perms.popitem(last=False)
    return perm

  def indices(self, step: int) -> np.ndarray:
    n = self.num_examples
    pos = int(step) * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(pos, n)
    out = np.empty(self.batch_size, np.int64)
    for e in np.unique(epochs):
      m = epochs == e
      out[m] = self.permutation(int(e))[offsets[m]]
    return out

  def kept_items(self, step: int, idx: np.ndarray) -> np.ndarray | None:
    """History items each example of step `step` keeps (None: no cropping); a pure function
    of (seed, step)."""
    if not self.history_crop:
      return None
    items = (self.encoder_lengths[idx] - self.prefix_tokens) // self.tokens_per_item
    rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(step), 0xC409]))
    crop = rng.random(len(idx)) < self.history_crop
    drawn = rng.integers(1, np.maximum(items, 1) + 1)
    return np.where(crop, np.minimum(drawn, items), items)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The step's examples: padded rows, or packed (cost_jax.seq2seq.packing) with the same
    examples in the same decoder order; histories cropped with `history_crop`."""
    idx = self.indices(step)
    padded = self.arrays.model_batch(idx)
    keep = self.kept_items(step, idx)
    if keep is not None:
      padded["encoder_input_tokens"] = crop_histories(
          padded["encoder_input_tokens"], self.encoder_lengths[idx], keep, self.tokens_per_item,
          self.prefix_tokens)
    if self.packing == "off":
      return padded
    return packing_lib.pack_batch(padded, self.pack_row_multiple, self.pack_widths,
                                  self.max_segments)

  def shape_batches(self, start: int = 0, stop: int | None = None,
                    max_steps: int = 2048) -> list[dict[str, np.ndarray]]:
    """One batch of every shape that steps [start, stop) yield (at most `max_steps` of them
    scanned), to compile the step ahead of time. Padded batches have one shape; packed ones
    one per row count (and per narrow width) that occurs, a few per epoch. A shape first met
    after the scanned steps compiles when it comes."""
    stop = start + max_steps if stop is None else min(int(stop), int(start) + max_steps)
    shapes: dict[tuple, dict[str, np.ndarray]] = {}
    for step in range(int(start), max(int(stop), int(start) + 1)):
      b = self.batch(step)
      shapes.setdefault(tuple(sorted((k, v.shape) for k, v in b.items())), b)
      if self.packing == "off":
        break
    return list(shapes.values())

  def real_tokens(self, step: int) -> int:
    """Real (non-padding) encoder + decoder tokens of step `step`."""
    idx = self.indices(step)
    keep = self.kept_items(step, idx)
    enc = (self.encoder_lengths[idx] if keep is None
           else self.prefix_tokens + keep * self.tokens_per_item)
    return int(enc.sum() + self.decoder_lengths[idx].sum())

  def epoch_of(self, step: int) -> float:
    return step * self.batch_size / self.num_examples


class BucketBatcher(EpochBatcher):
  """Length-bucketed batches (TrainConfig.packing = "bucket"): every batch holds examples of
  similar length, padded only to its bucket's width, so a few fixed shapes compile.

  Epoch e: the examples in the order of perm_e (the seeded permutation of EpochBatcher) are
  split by bucket (the narrowest width that holds them); each bucket is cut into full batches
  in that order; the leftovers of all buckets, in that order, fill the last batches at the
  full input width, the final one completed by padding rows of loss weight 0. The batches of
  an epoch then run in a seeded order. Every example is seen once per epoch, the number of
  steps per epoch is the same for every epoch, and step s's batch is a pure function of
  (seed, s), as the bit-identical resume needs. Unlike "encoder" packing, a step's examples
  are not the padded batch's: batches are length-homogeneous.
  """

  def __init__(self, arrays: ExampleArrays, batch_size: int, seed: int,
               widths: Sequence[int] = (), cached_epochs: int = 3):
    super().__init__(arrays, batch_size, seed, cached_epochs=cached_epochs, packing="off")
    full = int(arrays.encoder_input_tokens.shape[1])
    self.widths = tuple(sorted({int(w) for w in widths if 0 < int(w) < full})) + (full,)
    self.bucket_of = np.searchsorted(np.asarray(self.widths), self.encoder_lengths)
    counts = np.bincount(self.bucket_of, minlength=len(self.widths))
    self.full_batches = counts // self.batch_size
    leftovers = int((counts % self.batch_size).sum())
    self.steps_per_epoch = int(self.full_batches.sum()) + -(-leftovers // self.batch_size)
    self._epochs: collections.OrderedDict[int, tuple] = collections.OrderedDict()

  def _epoch(self, epoch: int) -> tuple[list[np.ndarray], list[int], np.ndarray]:
    """(example rows per batch (-1 = padding), width per batch, batch order) of an epoch."""
    got = self._epochs.get(epoch)
    if got is None:
      perm = self.permutation(epoch)
      buckets = self.bucket_of[perm]
      batches, widths, rest = [], [], []
      for b, w in enumerate(self.widths):
        where = np.flatnonzero(buckets == b)  # positions in perm_e order
        n_full = int(self.full_batches[b]) * self.batch_size
        batches += list(perm[where[:n_full]].reshape(-1, self.batch_size))
        widths += [w] * int(self.full_batches[b])
        rest.append(where[n_full:])
      rest_rows = perm[np.sort(np.concatenate(rest))]  # leftovers, in perm_e order
      pad = (-len(rest_rows)) % self.batch_size
      rest_rows = np.concatenate([rest_rows, np.full(pad, -1, np.int64)])
      batches += list(rest_rows.reshape(-1, self.batch_size))
      widths += [self.widths[-1]] * (len(rest_rows) // self.batch_size)
      rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch), 0xB0C]))
      got = (batches, widths, rng.permutation(len(batches)))
      self._epochs[epoch] = got
      while len(self._epochs) > self._cached_epochs:
        self._epochs.popitem(last=False)
    return got

  def _locate(self, step: int) -> tuple[np.ndarray, int]:
    epoch, j = divmod(int(step), self.steps_per_epoch)
    batches, widths, order = self._epoch(epoch)
    return batches[order[j]], widths[order[j]]

  def indices(self, step: int) -> np.ndarray:
    """The step's example rows; -1 marks a padding row (loss weight 0)."""
    return self._locate(step)[0]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    rows, width = self._locate(step)
    out = self.arrays.model_batch(np.maximum(rows, 0))
    out["encoder_input_tokens"] = np.ascontiguousarray(out["encoder_input_tokens"][:, :width])
    if (rows < 0).any():
      out["decoder_loss_weights"] = out["decoder_loss_weights"] * (rows >= 0)[:, None]
    return out

  def real_tokens(self, step: int) -> int:
    idx = self.indices(step)
    idx = idx[idx >= 0]
    return int(self.encoder_lengths[idx].sum() + self.decoder_lengths[idx].sum())

  def epoch_of(self, step: int) -> float:
    return step / self.steps_per_epoch

  def shape_batches(self, start: int = 0, stop: int | None = None,
                    max_steps: int = 2048) -> list[dict[str, np.ndarray]]:
    """One batch of every shape this batcher yields (to compile the step ahead of time)."""
    del start, stop, max_steps  # every bucket width, whichever steps run
    rows = np.arange(self.batch_size) % self.num_examples
    out = []
    for w in self.widths:
      b = self.arrays.model_batch(rows)
      b["encoder_input_tokens"] = np.ascontiguousarray(b["encoder_input_tokens"][:, :w])
      out.append(b)
    return out


def auto_bucket_widths(lengths: np.ndarray, full: int,
                       quantiles: Sequence[float] = (0.3, 0.5, 0.65, 0.8, 0.9)) -> tuple[int, ...]:
  """Bucket widths for "bucket" batches: the example lengths at these quantiles (each an
  observed length, so no bucket pads its longest example), plus the full input length."""
  lengths = np.sort(np.asarray(lengths))
  if not lengths.size:
    return (full,)
  picks = {int(lengths[min(int(q * len(lengths)), len(lengths) - 1)]) for q in quantiles}
  return tuple(sorted(w for w in picks if w < full)) + (full,)


def make_batcher(arrays: ExampleArrays, batch_size: int, seed: int, packing: str,
                 pack_row_multiple: int = 8, pack_widths: str = "",
                 pack_max_segments: int | None = None, history_crop: float = 0.0,
                 tokens_per_item: int = 0) -> EpochBatcher:
  """The trainer's batcher for TrainConfig.packing ("off", "encoder" or "bucket")."""
  if packing == "bucket":
    if history_crop:
      raise UserError("history_crop needs packing 'encoder' or 'off' (length buckets are drawn "
                      "once per epoch, before any cropping)")
    full = arrays.encoder_input_tokens.shape[1]
    lengths = packing_lib.token_lengths(arrays.encoder_input_tokens)
    if pack_widths in ("auto", ""):
      widths = auto_bucket_widths(lengths, full)
    elif pack_widths == "none":
      widths = (full,)
    else:
      widths = tuple(int(w) for w in str(pack_widths).split(","))
    return BucketBatcher(arrays, batch_size, seed, widths)
  return EpochBatcher(arrays, batch_size, seed, packing=packing,
                      pack_row_multiple=pack_row_multiple, pack_widths=pack_widths,
                      pack_max_segments=pack_max_segments, history_crop=history_crop,
                      tokens_per_item=tokens_per_item)


def device_batches(batcher: EpochBatcher, start_step: int, end_step: int, sharding: Any = None,
                   prefetch: int = 2, put: Any = None) -> Iterator[tuple[int, Any]]:
  """Yields (step, batch on device) for steps [start_step, end_step), `prefetch` ahead.

  `put` (default: jax.device_put to `sharding`) places a host batch; a multi-process run
  passes DeviceLayout.put, which copies only the process's own rows. Putting is
  asynchronous, so placing the next batches while the current step runs overlaps the
  host->device copy with compute.
  """
  put = put or (lambda b: jax.device_put(b, sharding))
  queue: collections.deque = collections.deque()
  step = start_step
  while step < end_step or queue:
    while step < end_step and len(queue) < max(prefetch, 1):
      queue.append((step, put(batcher.batch(step))))
      step += 1
    yield queue.popleft()
