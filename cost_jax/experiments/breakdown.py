"""Where each model's hits come from: Recall@K by how often the test target occurs in training,
and how much of the catalogue the top-K lists cover.

A mean Recall@10 hides what a generative retriever trades: beam search over semantic IDs can
concentrate its lists on a few popular prefixes, winning on popular targets and missing nearly
every long-tail one, while SASRec or an item-transition table spread over the catalogue. The
report prints both views for every scored row, from the same test lists the significance section
reads (user_ids.npy, topk.npy, targets.npy), so the trade is visible in every run.

Popularity of a test target = its interactions in the training parts (each user's sequence
without the last two items), the data every model of the reproduction learned from.

A second split asks whether a model recalls what it saw: a test user's transition (the last item
of the history, i.e. the validation item, followed by the test target) either occurs somewhere
in the training parts or it does not. An item-transition table hits most of the first kind and
almost none of the second; a model that generalises from content does the reverse. On Amazon
Beauty 8.6% of the test users are of the first kind, and they carry most of the Markov chain's
Recall@10. Those seen steps are split further by how many training steps leave the user's last
item: a step out of a rare item is unambiguous for a transition table (one or two successors)
and the hardest thing for a model that has to recognise that item from its semantic ID.
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


def bucket_labels(edges: Sequence[int] = POPULARITY_EDGES, start: int = 0) -> list[str]:
  """"a-b" labels of the buckets [start, e1), [e1, e2), ..., [e_last, inf)."""
  lo = [start, *edges]
  return [f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in zip(lo, edges)] + [f">= {edges[-1]}"]


def bucket_index(values: np.ndarray, edges: Sequence[int]) -> np.ndarray:
  """Bucket of each value: 0 below edges[0], i for edges[i-1] <= v < edges[i], len(edges) above."""
  return np.searchsorted(np.asarray(edges), np.asarray(values), side="right")


def buckets(counts: np.ndarray, targets: np.ndarray,
            edges: Sequence[int] = POPULARITY_EDGES) -> np.ndarray:
  """Bucket index of each test target's training count (0 .. len(edges))."""
  return bucket_index(counts[np.asarray(targets)], edges)


def scored_users(lists: Mapping[str, Sequence[tuple]], methods: Sequence[str]
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(sorted user ids that some row scored, the target of each): the users a header's shares
  are over (rows may score samples)."""
  users, first_at = np.unique(np.concatenate([np.asarray(u, np.int64) for m in methods
                                              for u, _, _ in lists[m]]), return_index=True)
  targets = np.concatenate([np.asarray(t) for m in methods for _, _, t in lists[m]])
  return users, targets[first_at]


def recall_by_bucket(topk: np.ndarray, targets: np.ndarray, bucket: np.ndarray,
                     num_buckets: int, k: int) -> np.ndarray:
  """[num_buckets] Recall@k of the users in each bucket (nan where a bucket has no user)."""
  hit = significance.per_user(topk, targets, k)[f"recall@{k}"]
  n = np.bincount(bucket, minlength=num_buckets).astype(np.float64)
  h = np.bincount(bucket, weights=hit, minlength=num_buckets)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(n > 0, h / n, np.nan)


def seen_transitions(train: Sequence[np.ndarray], last: np.ndarray, targets: np.ndarray
                     ) -> np.ndarray:
  """[U] whether each user's (last, target) pair occurs as consecutive items in some training
  part."""
  last = np.asarray(last, np.int64)
  targets = np.asarray(targets, np.int64)
  n = int(max([last.max(initial=-1), targets.max(initial=-1)]
              + [int(np.max(t, initial=-1)) for t in train])) + 1
  codes = [np.asarray(t[:-1], np.int64) * n + np.asarray(t[1:], np.int64)
           for t in train if len(t) > 1]
  known = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
  return np.isin(last * n + targets, known)


def steps_out(train: Sequence[np.ndarray], last: np.ndarray) -> np.ndarray:
  """[U] how many consecutive-item steps in the training parts start at each user's `last`
  item (repeats counted)."""
  last = np.asarray(last, np.int64)
  starts = [np.asarray(t[:-1], np.int64) for t in train if len(t) > 1]
  n = int(max([last.max(initial=-1)] + [int(s.max(initial=-1)) for s in starts])) + 1
  out = np.bincount(np.concatenate(starts), minlength=n) if starts else np.zeros(n, np.int64)
  return out[last]


def user_flags(flags_users: tuple[np.ndarray, np.ndarray], user_ids: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
  """(found, value) for each of `user_ids`, looked up in (sorted user ids, values): a flag or a
  count per user; users not found get False (0)."""
  users, flags = flags_users
  pos = np.clip(np.searchsorted(users, user_ids), 0, max(len(users) - 1, 0))
  found = (users[pos] == user_ids) if len(users) else np.zeros(len(user_ids), bool)
  return found, np.where(found, flags[pos] if len(users) else False, False)


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
             edges: Sequence[int] = POPULARITY_EDGES,
             seen: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
  """The report's section: one row per method (means over its seeds), or nothing without
  lists. `lists`: method -> [(user_ids, topk, targets) per seed]. `seen`: (sorted user ids,
  whether each one's test transition occurs in training: seen_transitions) adds two columns."""
  methods = [m for m in order if lists.get(m)]
  if not methods:
    return []
  names = bucket_labels(edges)
  users, user_targets = scored_users(lists, methods)
  share = np.bincount(buckets(counts, user_targets, edges), minlength=len(names)) / len(users)
  seen_cols = []
  if seen is not None:
    found, flag = user_flags(seen, users)
    if found.any():
      p = flag[found].mean()
      seen_cols = [f"seen transition ({p:.1%})", f"unseen ({1 - p:.1%})"]
  md = [f"## Where the hits come from (Recall@{k} by the test target's training interactions)", "",
        "Users grouped by how often their test item occurs in the training parts (share of test "
        f"users in brackets); coverage = distinct items in all top-{k} lists (of "
        f"{len(counts):,}) and the share of list slots the {HEAD_ITEMS} most listed items take. "
        + ("Seen transition: the user's last history item followed by the test item occurs in "
           "some training part (what an item-transition table can recall); unseen: it does not. "
           if seen_cols else "") + "Means over seeds.", "",
        "| row | " + " | ".join([f"{n} ({s:.1%})" for n, s in zip(names, share)] + seen_cols)
        + f" | distinct items | top-{HEAD_ITEMS} share |",
        "|---|" + "---|" * (len(names) + len(seen_cols) + 2)]
  for m in methods:
    rec, dist, head = [], [], []
    for user_ids, topk, targets in lists[m]:
      row = recall_by_bucket(topk, targets, buckets(counts, targets, edges), len(names), k)
      if seen_cols:
        found, flag = user_flags(seen, np.asarray(user_ids))
        hit = significance.per_user(topk, targets, k)[f"recall@{k}"]
        row = np.concatenate([row, [hit[found & flag].mean() if (found & flag).any() else np.nan,
                                    hit[found & ~flag].mean() if (found & ~flag).any()
                                    else np.nan]])
      rec.append(row)
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


# Seen steps by the training steps out of the user's last item: 1-2, 3-5, 6-15, >= 16.
STEPS_OUT_EDGES = (3, 6, 16)


def seen_steps_markdown(lists: Mapping[str, Sequence[tuple]], order: Sequence[str],
                        seen: tuple[np.ndarray, np.ndarray], steps: tuple[np.ndarray, np.ndarray],
                        label: Callable[[str], str] = str, k: int = 10,
                        edges: Sequence[int] = STEPS_OUT_EDGES) -> list[str]:
  """Recall@k of the users whose test transition was seen in training, by the number of training
  steps out of their last item (`seen`: seen_by_user, `steps`: steps_out_by_user; users missing
  from either are skipped). Nothing when no listed user has a seen transition."""
  methods = [m for m in order if lists.get(m)]
  if not methods:
    return []
  users, _ = scored_users(lists, methods)
  found, flag = user_flags(seen, users)
  has, n_out = user_flags(steps, users)
  known = found & flag & has
  if not known.any():
    return []
  names = bucket_labels(edges, start=1)  # a seen step leaves its last item at least once
  share = np.bincount(bucket_index(n_out[known], edges), minlength=len(names)) / known.sum()
  md = [f"## Seen transitions by the training steps out of the last item (Recall@{k})", "",
        f"The {known.sum():,} users whose test transition occurs in training, grouped by how many "
        "training steps start at their last history item (share in brackets): with few, the "
        "step is nearly certain for a transition table. Means over seeds.", "",
        "| row | " + " | ".join(f"{n} ({s:.1%})" for n, s in zip(names, share)) + " |",
        "|---|" + "---|" * len(names)]
  for m in methods:
    rec = []
    for user_ids, topk, targets in lists[m]:
      u = np.asarray(user_ids)
      f1, s1 = user_flags(seen, u)
      f2, c = user_flags(steps, u)
      keep = f1 & s1 & f2
      rec.append(recall_by_bucket(topk[keep], targets[keep],
                                  bucket_index(c[keep], edges), len(names), k)
                 if keep.any() else np.full(len(names), np.nan))
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      r = np.nanmean(np.stack(rec), axis=0)
    md.append(f"| {label(m)} | " + " | ".join("-" if np.isnan(v) else f"{v:.4f}" for v in r)
              + " |")
  return md + [""]


def steps_out_by_user(split) -> tuple[np.ndarray, np.ndarray]:
  """(sorted user index, training steps out of each user's last test-history item, i.e. the
  validation item) of a LeaveOneOut split: seen_steps_markdown's `steps`."""
  order = np.argsort(np.asarray(split.user_index), kind="stable")
  return (np.asarray(split.user_index)[order],
          steps_out(split.train, split.valid_target)[order])


def seen_by_user(split) -> tuple[np.ndarray, np.ndarray]:
  """(sorted user index, whether each user's test transition occurs in training) of a
  LeaveOneOut split: `markdown`'s `seen`. At test time the history ends with the validation item."""
  order = np.argsort(np.asarray(split.user_index), kind="stable")
  seen = seen_transitions(split.train, split.valid_target, split.test_target)
  return np.asarray(split.user_index)[order], seen[order]
