"""Where each model's hits come from: Recall@K by how often the test target occurs in training,
and how much of the catalogue the top-K lists cover.

A mean Recall@10 hides what a generative retriever trades: beam search over semantic IDs can
concentrate its lists on a few popular prefixes, winning on popular targets and missing nearly
every long-tail one, while SASRec or an item-transition table spread over the catalogue. The
report prints both views for every scored row, from the same test lists the significance section
reads (user_ids.npy, topk.npy, targets.npy), so the trade is visible in every run.

Popularity of a test target = its interactions in the training parts (each user's sequence
without the last two items), the data every model of the reproduction learned from.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from cost_jax import significance

# Bucket edges in training interactions: 0, 1-4, 5-19, 20-99, >= 100.
POPULARITY_EDGES = (1, 5, 20, 100)
HEAD_ITEMS = 100  # the coverage view: share of all list slots taken by the 100 most listed items


def train_counts(train: Sequence[np.ndarray], num_items: int) -> np.ndarray:
  """[num_items] interactions of each item in the training parts."""
  flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in train]) if len(train) else \
      np.zeros(0, np.int64)
  return np.bincount(flat, minlength=num_items)[:num_items]


def bucket_labels(edges: Sequence[int] = POPULARITY_EDGES) -> list[str]:
  lo = [0, *edges]
  return [f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in zip(lo, edges)] + [f">= {edges[-1]}"]


def buckets(counts: np.ndarray, targets: np.ndarray,
            edges: Sequence[int] = POPULARITY_EDGES) -> np.ndarray:
  """Bucket index of each test target's training count (0 .. len(edges))."""
  return np.searchsorted(np.asarray(edges), counts[np.asarray(targets)], side="right")


def recall_by_bucket(topk: np.ndarray, targets: np.ndarray, bucket: np.ndarray,
                     num_buckets: int, k: int) -> np.ndarray:
  """[num_buckets] Recall@k of the users in each bucket (nan where a bucket has no user)."""
  hit = significance.per_user(topk, targets, k)[f"recall@{k}"]
  n = np.bincount(bucket, minlength=num_buckets).astype(np.float64)
  h = np.bincount(bucket, weights=hit, minlength=num_buckets)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(n > 0, h / n, np.nan)


def coverage(topk: np.ndarray, k: int, head: int = HEAD_ITEMS) -> tuple[int, float]:
  """(distinct items in the top-k lists, share of the lists' slots taken by the `head` most
  listed items). Padding (-1) slots are not items."""
  slots = np.asarray(topk)[:, :k].ravel()
  slots = slots[slots >= 0]
  if not slots.size:
    return 0, float("nan")
  counts = np.sort(np.bincount(slots))[::-1]
  return int(np.count_nonzero(counts)), float(counts[:head].sum() / slots.size)


def markdown(lists: Mapping[str, Sequence[tuple]], counts: np.ndarray, order: Sequence[str],
             label: Callable[[str], str] = str, k: int = 10,
             edges: Sequence[int] = POPULARITY_EDGES) -> list[str]:
  """The report's section: one row per method (means over its seeds), or nothing without
  lists. `lists`: method -> [(user_ids, topk, targets) per seed]."""
  methods = [m for m in order if lists.get(m)]
  if not methods:
    return []
  names = bucket_labels(edges)
  first = lists[methods[0]][0]
  share = np.bincount(buckets(counts, first[2], edges), minlength=len(names)) / len(first[2])
  md = [f"## Where the hits come from (Recall@{k} by the test target's training interactions)", "",
        "Users grouped by how often their test item occurs in the training parts (share of test "
        f"users in brackets); coverage = distinct items in all top-{k} lists (of "
        f"{len(counts):,}) and the share of list slots the {HEAD_ITEMS} most listed items take. "
        "Means over seeds.", "",
        "| row | " + " | ".join(f"{n} ({s:.1%})" for n, s in zip(names, share))
        + f" | distinct items | top-{HEAD_ITEMS} share |",
        "|---|" + "---|" * (len(names) + 2)]
  for m in methods:
    rec, dist, head = [], [], []
    for _, topk, targets in lists[m]:
      rec.append(recall_by_bucket(topk, targets, buckets(counts, targets, edges), len(names), k))
      d, h = coverage(topk, k)
      dist.append(d)
      head.append(h)
    with warnings.catch_warnings():  # a bucket without users in every seed stays nan
      warnings.simplefilter("ignore", RuntimeWarning)
      r = np.nanmean(np.stack(rec), axis=0)
    cells = ["-" if np.isnan(v) else f"{v:.4f}" for v in r]
    md.append(f"| {label(m)} | " + " | ".join(cells)
              + f" | {np.mean(dist):,.0f} | {np.mean(head):.1%} |")
  return md + [""]
