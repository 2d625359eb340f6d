"""SeqIO task splits -> numpy arrays (materialized once, cached) -> device batches.

The training set of a sequential-recommendation task is small (ML-100K: ~97k
examples of 81 input tokens), so the built-in trainer reads each split of the
SeqIO task once through tf.data, converts it to the T5X encoder-decoder features
(the same result as `seqio.EncDecFeatureConverter(pack=False)`), and keeps plain
numpy arrays. The hot loop only gathers rows: no tf.data per step.

  encoder_input_tokens   int32 [n, input_len]    "inputs", zero padded
  decoder_target_tokens  int32 [n, target_len]   "targets", zero padded
  decoder_input_tokens   int32 [n, target_len]   targets shifted right, BOS = 0
  decoder_loss_weights   float32 [n, target_len] 1 where the target is not padding
  item_index, user_index int32 [n]               carried through for metrics

The batch for training step s is a deterministic function of (seed, s): the
example stream is the concatenation of per-epoch permutations, permutation e
drawn from numpy's `default_rng(SeedSequence([seed, e]))`. A run that
stops at step k and resumes therefore sees the same batches as one that never
stopped.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
import seqio
import tensorflow as tf

from cost_jax.io import UserError, atomic_write_npz
from cost_jax.seq2seq import packing as packing_lib

TOKEN_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                  "decoder_loss_weights")
CACHE_FORMAT = "cost_jax.input_pipeline/v1"


@dataclasses.dataclass
class ExampleArrays:
  """One materialized split: T5X encoder-decoder features plus item/user indices."""

  encoder_input_tokens: np.ndarray
  decoder_input_tokens: np.ndarray
  decoder_target_tokens: np.ndarray
  decoder_loss_weights: np.ndarray
  item_index: np.ndarray
  user_index: np.ndarray

  def __len__(self) -> int:
    return int(self.encoder_input_tokens.shape[0])

  @property
  def feature_lengths(self) -> dict[str, int]:
    return {"inputs": int(self.encoder_input_tokens.shape[1]),
            "targets": int(self.decoder_target_tokens.shape[1])}

  def as_dict(self) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def take(self, index: np.ndarray) -> "ExampleArrays":
    return ExampleArrays(**{k: v[index] for k, v in self.as_dict().items()})

  def model_batch(self, index: np.ndarray | slice) -> dict[str, np.ndarray]:
    """The four model features for the rows `index`."""
    return {k: getattr(self, k)[index] for k in TOKEN_FEATURES}


def encdec_features(inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
  """T5X EncDecFeatureConverter (pack=False) in numpy: zero-padded int arrays in."""
  inputs = np.asarray(inputs, np.int32)
  targets = np.asarray(targets, np.int32)
  decoder_inputs = np.zeros_like(targets)
  decoder_inputs[:, 1:] = targets[:, :-1]
  return {
      "encoder_input_tokens": inputs,
      "decoder_input_tokens": decoder_inputs,
      "decoder_target_tokens": targets,
      "decoder_loss_weights": (targets != 0).astype(np.float32),
  }


def get_task(task_or_name: Any):
  """A registered seqio Task (or Mixture) from a name (the built-in ones register on importing
  cost_jax.seq2seq.registry, as the CLIs and gin files do)."""
  if not isinstance(task_or_name, str):
    return task_or_name
  try:
    return seqio.get_mixture_or_task(task_or_name)
  except ValueError:
    known = sorted(seqio.TaskRegistry.names())
    hint = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
    raise UserError(f"task '{task_or_name}' is not a registered SeqIO task "
                    f"(registered: {hint or 'none'})") from None


def materialize_split(task: Any, split: str,
                      feature_lengths: Mapping[str, int] | None = None) -> ExampleArrays:
  """Reads one split of a SeqIO task into arrays (tf.data used here only).

  `feature_lengths` {"inputs": n, "targets": m} pads every example to those
  lengths; None pads to the longest example of this split.
  """
  task = get_task(task)
  try:
    ds = task.get_dataset(sequence_length=dict(feature_lengths) if feature_lengths else None,
                          split=split, shuffle=False, num_epochs=1,
                          use_cached=False)
  except UserError:
    raise
  except (FileNotFoundError, tf.errors.NotFoundError) as e:
    raise UserError(f"task '{task.name}' split '{split}': missing file ({e})") from None
  keep = ("inputs", "targets", "item_index", "user_index")
  present = [k for k in keep if k in ds.element_spec]
  if "inputs" not in present or "targets" not in present:
    raise UserError(f"task '{task.name}' split '{split}': examples need 'inputs' and 'targets' "
                    f"features, got {sorted(ds.element_spec)}")
  ds = ds.map(lambda ex: {k: ex[k] for k in present}).padded_batch(4096)
  chunks: dict[str, list[np.ndarray]] = {k: [] for k in present}
  try:
    for ex in ds.as_numpy_iterator():
      for k in present:
        chunks[k].append(np.asarray(ex[k]))
  except tf.errors.NotFoundError as e:
    raise UserError(f"task '{task.name}' split '{split}': missing file ({e.message})") from None
  if not chunks["inputs"]:
    raise UserError(f"task '{task.name}' split '{split}' has no examples")
  lengths = dict(feature_lengths or {})
  longest = {k: max(c.shape[1] for c in chunks[k]) for k in ("inputs", "targets")}
  padded = {}
  for k, name in (("inputs", "inputs"), ("targets", "targets")):
    length = int(lengths.get(k) or longest[k])
    if longest[k] > length:
      raise UserError(f"task '{task.name}' split '{split}': feature '{name}' has examples of "
                      f"{longest[k]} tokens, more than the feature length {length}")
    padded[k] = np.concatenate(
        [np.pad(c, ((0, 0), (0, length - c.shape[1]))) for c in chunks[k]]).astype(np.int32)
  n = len(padded["inputs"])
  ids = {k: (np.concatenate(chunks[k]).astype(np.int32).reshape(n) if k in present
             else np.full(n, -1, np.int32)) for k in ("item_index", "user_index")}
  feats = encdec_features(padded["inputs"], padded["targets"])
  return ExampleArrays(**feats, **ids)


def cached_split(task: Any, split: str, cache_dir: str | None, fingerprint: str = "",
                 feature_lengths: Mapping[str, int] | None = None) -> ExampleArrays:
  """`materialize_split` with an .npz cache keyed by task, split, lengths and `fingerprint`.

  `fingerprint` should identify the inputs (e.g. `cost_jax.io.files_fingerprint` of the
  dataset's sequences.parquet and the tokenizer's semantic_ids.npy/vocabulary.json).
  With `cache_dir=None` nothing is cached.
  """
  task = get_task(task)
  if cache_dir is None:
    return materialize_split(task, split, feature_lengths)
  key = json.dumps({"format": CACHE_FORMAT, "task": task.name, "split": split,
                    "lengths": dict(sorted((feature_lengths or {}).items())),
                    "fingerprint": fingerprint}, sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f"{task.name}.{split}.{digest}.npz")
  if os.path.exists(path):
    try:
      with np.load(path) as z:
        return ExampleArrays(**{f.name: z[f.name] for f in dataclasses.fields(ExampleArrays)})
    except (OSError, KeyError, ValueError):
      pass  # unreadable cache: rebuild it
  arrays = materialize_split(task, split, feature_lengths)
  os.makedirs(cache_dir, exist_ok=True)
  atomic_write_npz(path, **arrays.as_dict())
  return arrays


class EpochBatcher:
  """Training batches as a pure function of (seed, step), no dropped examples.

  Example position p = step * batch_size + j reads row perm_e[p mod n] of
  epoch e = p // n, where perm_e is a seeded permutation of the n rows.
  """

  def __init__(self, arrays: ExampleArrays, batch_size: int, seed: int, cached_epochs: int = 3,
               packing: str = "off", pack_row_multiple: int = 8, pack_widths: str = "",
               pack_max_segments: int | None = None):
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

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The step's examples: padded rows, or packed (cost_jax.seq2seq.packing) with the same
    examples in the same decoder order."""
    padded = self.arrays.model_batch(self.indices(step))
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
    return int(self.encoder_lengths[idx].sum() + self.decoder_lengths[idx].sum())

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
                 pack_max_segments: int | None = None) -> EpochBatcher:
  """The trainer's batcher for TrainConfig.packing ("off", "encoder" or "bucket")."""
  if packing == "bucket":
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
                      pack_max_segments=pack_max_segments)


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


def eval_subset(arrays: ExampleArrays, num_users: int | None, seed: int) -> ExampleArrays:
  """A fixed random subset of `num_users` rows (all rows when None or >= n), in row order."""
  n = len(arrays)
  if num_users is None or num_users >= n:
    return arrays
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
  return arrays.take(np.sort(rng.choice(n, size=int(num_users), replace=False)))
