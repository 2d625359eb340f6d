"""SeqIO task splits -> numpy arrays, materialized once and cached.

The training set of a sequential-recommendation task is small (ML-100K: ~97k
examples of 81 input tokens), so the built-in trainer reads each split of the
SeqIO task once through tf.data, converts it to the T5X encoder-decoder features
(the same result as `seqio.EncDecFeatureConverter(pack=False)`), and keeps plain
numpy arrays (cost_jax.seq2seq.batching turns them into batches):

  encoder_input_tokens   int32 [n, input_len]    "inputs", zero padded
  decoder_target_tokens  int32 [n, target_len]   "targets", zero padded
  decoder_input_tokens   int32 [n, target_len]   targets shifted right, BOS = 0
  decoder_loss_weights   float32 [n, target_len] 1 where the target is not padding
  item_index, user_index int32 [n]               carried through for metrics
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

import numpy as np
import seqio
import tensorflow as tf

from cost_jax.io import UserError, atomic_write_npz

TOKEN_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                  "decoder_loss_weights")
CACHE_FORMAT = "cost_jax.input_pipeline/v1"  # the cache key's format tag (kept: same keys)


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


def eval_subset(arrays: ExampleArrays, num_users: int | None, seed: int) -> ExampleArrays:
  """A fixed random subset of `num_users` rows (all rows when None or >= n), in row order."""
  n = len(arrays)
  if num_users is None or num_users >= n:
    return arrays
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
  return arrays.take(np.sort(rng.choice(n, size=int(num_users), replace=False)))
