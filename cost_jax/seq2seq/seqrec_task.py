"""Next-item prediction as a seqio.Task over semantic-ID tokens (TIGER §3.2, CoST §3.2).

One example = (user, history, next item):
  "inputs"  = [user token] + the L semantic-ID tokens of each of the latest
              `max_history` history items, oldest first (TIGER §4.1.3), no EOS;
  "targets" = the next item's L tokens, no EOS (IDs have a fixed length L);
  "item_index" (the target item) and "user_index" (int32 scalars) ride along for metrics.

Splits follow the leave-one-out protocol (TIGER §4.1.1, CoST §4.1) of
ProcessedDataset.leave_one_out():
  train       every prefix of each user's training part: history items[:t], target items[t], t >= 1
  validation  history = training part,                    target = valid_target (items[-2])
  test        history = training part + [valid_target],   target = test_target (items[-1])

Files are read at get_dataset time (not at registration), so tasks register
before the data and tokenizer exist; a missing file is a UserError naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from cost_jax import metrics
from cost_jax.data.processed import ProcessedDataset
from cost_jax.io import UserError
from cost_jax.tokenizer.artifact import ids_path, load_item_tokens
from cost_jax.tokenizer.layout import TokenLayout
from cost_jax.seq2seq.vocabulary import SemanticIDVocabulary

SPLITS = ("train", "validation", "test")
DEFAULT_MAX_HISTORY = 20  # TIGER §4.1.1: "we limit the number of items in a user's history to 20"

# Items of history in "inputs" for a dataset of this name (folder name); others take 20.
MAX_HISTORY = {
    "ml100k": DEFAULT_MAX_HISTORY,  # TIGER §4.1.1 cap (20); ML-100K is not in the papers
    "mind": 70,                     # CoST §4.1: MIND sequences capped at 70 items
    "beauty": DEFAULT_MAX_HISTORY,  # TIGER §4.1.1: 20
    "sports": DEFAULT_MAX_HISTORY,  # TIGER §4.1.1: 20
    "toys": DEFAULT_MAX_HISTORY,    # TIGER §4.1.1: 20
    "office": DEFAULT_MAX_HISTORY,  # CoST §4.1 Office(S) sequences have 10-20 items; TIGER cap 20
}


def max_history_of(dataset: str) -> int:
  """Items of history per example for the dataset named `dataset` (MAX_HISTORY, else 20)."""
  return MAX_HISTORY.get(dataset, DEFAULT_MAX_HISTORY)


@dataclasses.dataclass(frozen=True)
class SplitIndex:
  """Examples of one split as index arrays into `sequences` (numpy, built once).

  Example e has history sequences[start[e]:end[e]] (item indices, oldest first)
  and target item target[e] (= sequences[end[e]]).
  """

  sequences: np.ndarray   # int32 [total], every user's train + [valid, test] items, concatenated
  start: np.ndarray       # int64 [E]
  end: np.ndarray         # int64 [E]
  target: np.ndarray      # int32 [E]
  user_row: np.ndarray    # int64 [E], row of the user in the LeaveOneOut

  def __len__(self) -> int:
    return len(self.target)


def split_index(train: Sequence[np.ndarray], valid_target: np.ndarray, test_target: np.ndarray,
                split: str, max_history: int) -> SplitIndex:
  """The examples of `split` (see module doc) as index arrays; pure numpy."""
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
  if max_history < 1:
    raise UserError(f"max_history must be >= 1, got {max_history}")
  n_train = np.asarray([len(t) for t in train], np.int64)
  full = [np.concatenate([np.asarray(t, np.int32), [v, s]]).astype(np.int32)
          for t, v, s in zip(train, valid_target, test_target)]
  offsets = np.concatenate([[0], np.cumsum(n_train + 2)])[:-1].astype(np.int64)
  sequences = np.concatenate(full) if full else np.zeros([0], np.int32)
  if split == "train":
    # One example per target position t = 1 .. n_train - 1 of each user.
    counts = np.maximum(n_train - 1, 0)
    user_row = np.repeat(np.arange(len(train), dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    t = np.arange(int(counts.sum()), dtype=np.int64) - first + 1
    end = offsets[user_row] + t
  else:
    user_row = np.arange(len(train), dtype=np.int64)
    end = offsets + n_train + (1 if split == "test" else 0)
  start = np.maximum(end - max_history, offsets[user_row])
  return SplitIndex(sequences=sequences, start=start, end=end,
                    target=sequences[end] if len(end) else np.zeros([0], np.int32),
                    user_row=user_row)


@dataclasses.dataclass(frozen=True)
class TaskData:
  """What one task reads from its dataset and tokenizer dirs."""

  layout: TokenLayout
  item_tokens: np.ndarray       # int32 [N, L]: token ids of each item's semantic ID
  user_ids: list[str]           # raw user ids, LeaveOneOut order
  user_index: np.ndarray        # int32 [U]
  user_tokens: np.ndarray       # int32 [U]: hashed user token (TIGER §4.1.3)
  train: list[np.ndarray]
  valid_target: np.ndarray
  test_target: np.ndarray

  @property
  def id_length(self) -> int:
    return self.item_tokens.shape[1]


def load_task_data(dataset_dir: str, tokenizer_dir: str) -> TaskData:

  if not os.path.isdir(dataset_dir):
    raise UserError(f"{dataset_dir}: dataset directory missing; build it with "
                    "`python -m cost_jax.data prepare ...`")
  ds = ProcessedDataset.load(dataset_dir)
  layout, item_tokens = load_item_tokens(tokenizer_dir, ds.num_items)
  loo = ds.leave_one_out()
  user_index = (np.asarray(loo.user_index, np.int32) if loo.user_index is not None
                else np.arange(len(loo.user_ids), dtype=np.int32))
  if layout.num_user_buckets:
    user_tokens = np.asarray([layout.user_token(u) for u in loo.user_ids], np.int32)
  else:
    user_tokens = np.full([len(loo.user_ids)], 2, np.int32)  # unk: the layout has no user tokens
  return TaskData(layout=layout, item_tokens=item_tokens, user_ids=list(loo.user_ids),
                  user_index=user_index, user_tokens=user_tokens, train=list(loo.train),
                  valid_target=np.asarray(loo.valid_target, np.int32),
                  test_target=np.asarray(loo.test_target, np.int32))


class SeqRecSource:
  """One (dataset dir, tokenizer dir) pair, read lazily; seqio dataset_fn and pre/postprocessors."""

  def __init__(self, name: str, dataset_dir: str, tokenizer_dir: str, max_history: int):
    self.name = name
    self.dataset_dir = os.path.abspath(dataset_dir)
    self.tokenizer_dir = os.path.abspath(tokenizer_dir)
    self.max_history = int(max_history)

  @functools.cached_property
  def data(self) -> TaskData:
    return load_task_data(self.dataset_dir, self.tokenizer_dir)

  @functools.cached_property
  def _item_of_codes(self) -> dict[tuple[int, ...], int]:
    codes = self.data.layout.tokens_to_codes(self.data.item_tokens)
    return {tuple(int(c) for c in row): i for i, row in enumerate(codes)}

  def split_index(self, split: str) -> SplitIndex:
    d = self.data
    return split_index(d.train, d.valid_target, d.test_target, split, self.max_history)

  def num_examples(self, split: str) -> int:
    return len(self.split_index(split))

  # --- seqio hooks -----------------------------------------------------------------
  def dataset_fn(self, split: str, shuffle_files: bool = False, seed: int | None = None,
                 shard_info: seqio.ShardInfo | None = None) -> tf.data.Dataset:
    """The split's examples; shuffle_files shuffles all examples (numpy, by `seed`).

    With `shard_info` (index i of n) only every n-th example of that order from the i-th on is
    built: the shards of one (split, seed) are disjoint and together cover the split, and a host
    of a pod builds only its own (ShardedDataSource).
    """
    d = self.data
    idx = self.split_index(split)
    order = np.arange(len(idx))
    if shuffle_files:
      np.random.default_rng(seed).shuffle(order)
    if shard_info is not None and shard_info.num_shards > 1:
      if not 0 <= shard_info.index < shard_info.num_shards:
        raise UserError(f"task {self.name}: shard index {shard_info.index} is outside "
                        f"[0, {shard_info.num_shards})")
      order = order[shard_info.index::shard_info.num_shards]
    num_levels = d.id_length
    sequences = tf.constant(idx.sequences, tf.int32)
    item_tokens = tf.constant(d.item_tokens, tf.int32)
    slices = {
        "start": idx.start[order],
        "end": idx.end[order],
        "user_token": d.user_tokens[idx.user_row[order]],
        "user_index": d.user_index[idx.user_row[order]],
        "item_index": idx.target[order],
    }

    def to_example(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
      history = sequences[ex["start"]:ex["end"]]
      history_tokens = tf.reshape(tf.gather(item_tokens, history), [-1])
      return {
          "inputs": tf.concat([ex["user_token"][None], history_tokens], axis=0),
          "targets": tf.ensure_shape(tf.gather(item_tokens, ex["item_index"]), [num_levels]),
          "item_index": ex["item_index"],
          "user_index": ex["user_index"],
      }

    return tf.data.Dataset.from_tensor_slices(slices).map(
        to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def fit_lengths(self, dataset: tf.data.Dataset,
                  sequence_length: Mapping[str, int | None] | None = None) -> tf.data.Dataset:
    """Checks targets == L; trims whole items from the *oldest* end when inputs are too long.

    seqio's own trimming cuts the end of a sequence, which would drop the latest history.
    """
    if not sequence_length:
      return dataset
    num_levels = self.data.id_length
    t_len = sequence_length.get("targets")
    if t_len is not None and t_len != num_levels:
      raise UserError(
          f"task {self.name}: feature length targets={t_len}, but the semantic IDs in "
          f"{ids_path(self.tokenizer_dir)} have length {num_levels}; "
          f"set TASK_FEATURE_LENGTHS = {{'inputs': {1 + self.max_history * num_levels}, "
          f"'targets': {num_levels}}}")
    i_len = sequence_length.get("inputs")
    if i_len is None or i_len >= 1 + self.max_history * num_levels:
      return dataset
    if i_len < 1 + num_levels:
      raise UserError(f"task {self.name}: feature length inputs={i_len} cannot hold the user "
                      f"token and one item of {num_levels} tokens")
    keep = (i_len - 1) // num_levels * num_levels

    def trim(ex):
      ex = dict(ex)
      ex["inputs"] = tf.concat([ex["inputs"][:1], ex["inputs"][1:][-keep:]], axis=0)
      return ex

    return dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def item_of_tokens(self, tokens: Sequence[int]) -> int:
    """Item index of a token sequence (its first L tokens), -1 when no item has that ID."""
    num_levels = self.data.id_length
    tokens = np.asarray(list(tokens)[:num_levels], np.int64)
    if len(tokens) != num_levels:
      return -1
    codes = self.data.layout.tokens_to_codes(tokens)
    return self._item_of_codes.get(tuple(int(c) for c in codes), -1)

  def postprocess(self, output: Any, example: Mapping[str, Any] | None = None,
                  is_target: bool = False) -> Any:
    """seqio postprocess_fn: decoded string(s) -> item index(es).

    Targets -> example["item_index"] (int). Predictions: one decoded string (top-1)
    -> [item]; a list of strings (T5X `return_all_decodes=True`, sorted by increasing
    score) -> items best first. -1 marks an ID that matches no item.
    """
    if is_target:
      if example is not None and "item_index" in example:
        return int(np.asarray(example["item_index"]))
      return self._item_of_string(output)
    if isinstance(output, (str, bytes)):
      return [self._item_of_string(output)]
    return [self._item_of_string(s) for s in reversed(list(output))]

  @functools.cached_property
  def _vocab(self) -> SemanticIDVocabulary:
    return SemanticIDVocabulary(layout=self.data.layout)

  def _item_of_string(self, s: str | bytes) -> int:
    if isinstance(s, bytes):
      s = s.decode("utf-8")
    return self.item_of_tokens(self._vocab.encode(s))


class ShardedDataSource(seqio.DataSource):
  """The task's seqio source: a SeqRecSource's examples, sharded by example before they are built.

  Unlike seqio.FunctionDataSource (which refuses a ShardInfo, so seqio would build every example
  on every host and drop the others), this source honours `shard_info` itself
  (supports_arbitrary_sharding), which is what T5X's multi-host input asks of it.
  """

  def __init__(self, source: SeqRecSource, splits: Sequence[str]):
    super().__init__(splits=splits, num_input_examples=None)
    self.source = source

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *,
                  sequence_length: Mapping[str, int] | None = None, use_cached: bool = False,
                  num_epochs: int | None = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # not used by a raw source (as seqio's own)
    return self.source.dataset_fn(split, shuffle_files=shuffle, seed=seed,
                                  shard_info=shard_info)


def retrieval_metric_fn(targets: Sequence[int], predictions: Sequence[Sequence[int]],
                        ks: Sequence[int] = metrics.DEFAULT_KS) -> dict[str, float]:
  """seqio metric fn: Recall@k / NDCG@k (CoST §4.1 k = 5..40) and invalid-ID rates.

  `predictions[i]` are item indices best first (-1 = invalid ID), as the task's
  postprocess_fn returns them; delegates to cost_jax.metrics.seqio_retrieval_metrics.
  """

  return metrics.seqio_retrieval_metrics(targets, predictions, ks=tuple(ks))


def register_task(name: str, dataset_dir: str, tokenizer_dir: str,
                  max_history: int = DEFAULT_MAX_HISTORY, *,
                  metric_fns: Sequence[Callable[..., Any]] | None = None,
                  replace: bool = True) -> seqio.Task:
  """Registers (or replaces) task `name` over a processed dir and a tokenizer dir.

  Nothing is read until get_dataset. metric_fns default to [retrieval_metric_fn].
  """
  source = SeqRecSource(name, dataset_dir, tokenizer_dir, max_history)
  vocab = SemanticIDVocabulary(tokenizer_dir=source.tokenizer_dir)
  if replace and name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=ShardedDataSource(source, SPLITS),
      preprocessors=[source.fit_lengths],
      output_features={
          "inputs": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
          "targets": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
      },
      postprocess_fn=source.postprocess,
      metric_fns=list(metric_fns) if metric_fns is not None else [retrieval_metric_fn],
  )


def task_source(task: seqio.Task | str) -> SeqRecSource:
  """The SeqRecSource behind a registered task (for tools that want its files/items)."""
  task = seqio.get_mixture_or_task(task) if isinstance(task, str) else task
  fn = task.postprocessor
  owner = getattr(fn, "__self__", None)
  if not isinstance(owner, SeqRecSource):
    raise UserError(f"task {task.name} is not a cost-jax SeqRec task")
  return owner
