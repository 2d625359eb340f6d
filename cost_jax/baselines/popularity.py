"""Most-popular baseline: recommend the globally most frequent items to every user.

Context for the generative models' numbers on the same leave-one-out split (TIGER §4.2
compares against non-generative baselines). Counts are the interactions a model may see at
test time: every user's training part plus the validation target (the test history is
train + [valid], as in cost_jax.seq2seq.seqrec_task); for the validation split only the training parts count.
Ties are broken by the lower item index. Like TIGER/CoST, no history items are filtered:
every item is ranked for every user.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cost_jax.results import KS, score_topk, write_results

DEFAULT_KS = KS  # CoST Table 2 columns


def item_counts(sequences: Sequence[np.ndarray], num_items: int,
                extra_items: np.ndarray | None = None) -> np.ndarray:
  """int64 [num_items] interaction counts over `sequences` (+ `extra_items`)."""
  counts = np.zeros(num_items, np.int64)
  for seq in sequences:
    np.add.at(counts, np.asarray(seq, np.int64), 1)
  if extra_items is not None:
    np.add.at(counts, np.asarray(extra_items, np.int64), 1)
  return counts


def top_items(counts: np.ndarray, k: int) -> np.ndarray:
  """int32 [min(k, N)] item indices by descending count, ties by ascending index."""
  order = np.lexsort((np.arange(len(counts)), -np.asarray(counts)))
  return order[:k].astype(np.int32)


def popularity_topk(train: Sequence[np.ndarray], valid_target: np.ndarray, num_items: int,
                    k: int, split: str = "test") -> np.ndarray:
  """int32 [num_users, k] the same most-popular list for every user of the split."""
  if split not in ("test", "validation"):
    raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
  extra = valid_target if split == "test" else None
  ranked = top_items(item_counts(train, num_items, extra), k)
  if len(ranked) < k:  # fewer items than k: pad with -1 (never a hit)
    ranked = np.concatenate([ranked, -np.ones(k - len(ranked), np.int32)])
  return np.tile(ranked[None, :], (len(train), 1))


def evaluate(loo, num_items: int, ks: Sequence[int] = DEFAULT_KS, split: str = "test",
             output_dir: str | None = None) -> dict:
  """Scores the baseline on a LeaveOneOut split with cost_jax.metrics.retrieval_metrics.

  Returns a dict with the keys of the trainer's metrics.json (recall@k, ndcg@k,
  invalid_id_rate, num_users). With `output_dir`, writes the split's files
  (cost_jax.results.write_results).
  """
  k = max(ks)
  topk = popularity_topk(loo.train, np.asarray(loo.valid_target), num_items, k, split)
  targets = np.asarray(loo.test_target if split == "test" else loo.valid_target, np.int32)
  result = score_topk(topk, targets, ks=tuple(ks))
  if output_dir is not None:
    write_results(output_dir, split, result, topk, targets, user_rows(loo))
  return result


def user_rows(loo) -> np.ndarray:
  """The user_index of each LeaveOneOut row (its row number when the split has none)."""
  if getattr(loo, "user_index", None) is not None:
    return np.asarray(loo.user_index, np.int32)
  return np.arange(len(loo.train), dtype=np.int32)
