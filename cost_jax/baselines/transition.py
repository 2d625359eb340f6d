"""Item-transition baseline: a first-order Markov chain over the users' item sequences.

Context for the generative models on the same leave-one-out split, next to MostPop: for each
user, the items that followed the user's latest item anywhere in the training sequences, most
frequent first, then the most popular items to fill the list. On Amazon-2014 data consecutive
reviews are often items bought together, so this count table alone is a strong baseline
(docs/results.md).

The table and the popularity fill are counted on the training parts only, the data TIGER and
SASRec train on (the validation items are not trained on); the user's latest item is the last
training item when ranking the validation split and the validation item when ranking the test
split (the test history is train + [valid], as in cost_jax.seq2seq.seqrec_task). MostPop counts
the validation items too at test time (cost_jax.baselines.popularity); this baseline does not, so
that it never knows more than the models it is compared with. Ties: more transitions, then more
interactions, then the lower item index. No history item is filtered out (TIGER and CoST rank
every item).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cost_jax.baselines.popularity import item_counts, top_items, user_rows
from cost_jax.results import KS, score_topk, write_results

DEFAULT_KS = KS


def latest_items(train: Sequence[np.ndarray], valid_target: np.ndarray, split: str
                 ) -> np.ndarray:
  """int64 [num_users]: each user's latest item when ranking `split` (-1: none)."""
  if split == "test":
    return np.asarray(valid_target, np.int64)
  if split == "validation":
    return np.asarray([t[-1] if len(t) else -1 for t in train], np.int64)
  raise ValueError(f"split must be 'test' or 'validation', got {split!r}")


def transition_counts(sequences: Sequence[np.ndarray], num_items: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The table of consecutive pairs (a -> b): sorted `src`, `dst` and their `count` arrays."""
  pairs = [np.stack([s[:-1], s[1:]], 1) for s in sequences if len(s) > 1]
  if not pairs:
    empty = np.zeros(0, np.int64)
    return empty, empty, empty
  both = np.concatenate(pairs)
  keys, count = np.unique(both[:, 0] * num_items + both[:, 1], return_counts=True)
  return keys // num_items, keys % num_items, count


def transition_topk(sequences: Sequence[np.ndarray], latest: np.ndarray, num_items: int,
                    k: int) -> np.ndarray:
  """int32 [len(latest), k]: the successors of each user's `latest` item in `sequences`, then
  MostPop of `sequences`; -1 pads a catalogue smaller than k. `latest` -1: the MostPop list."""
  sequences = [np.asarray(q, np.int64) for q in sequences]
  pop = item_counts(sequences, num_items)
  fill = top_items(pop, k)
  src, dst, count = transition_counts(sequences, num_items)
  # Rank each item's successors: more transitions, more interactions, lower index.
  order = np.lexsort((dst, -pop[dst], -count, src))
  src, dst = src[order], dst[order]
  starts = np.searchsorted(src, np.arange(num_items + 1))
  lists: dict[int, np.ndarray] = {}
  out = np.full((len(latest), k), -1, np.int32)
  for row, last in enumerate(np.asarray(latest, np.int64).tolist()):
    if last not in lists:
      nxt = dst[starts[last]:starts[last + 1]][:k] if last >= 0 else dst[:0]
      rest = fill[~np.isin(fill, nxt)]
      lists[last] = np.concatenate([nxt, rest])[:k].astype(np.int32)
    ranked = lists[last]
    out[row, :len(ranked)] = ranked
  return out


def evaluate(loo, num_items: int, ks: Sequence[int] = DEFAULT_KS, split: str = "test",
             output_dir: str | None = None) -> dict:
  """Scores the baseline on a LeaveOneOut split (cost_jax.results.score_topk); with
  `output_dir`, writes the split's files (cost_jax.results.write_results)."""
  latest = latest_items(loo.train, np.asarray(loo.valid_target), split)
  topk = transition_topk(loo.train, latest, num_items, max(ks))
  targets = np.asarray(loo.test_target if split == "test" else loo.valid_target, np.int32)
  result = score_topk(topk, targets, ks=tuple(ks))
  if output_dir is not None:
    write_results(output_dir, split, result, topk, targets, user_rows(loo))
  return result
