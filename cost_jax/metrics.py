"""Leave-one-out retrieval metrics: Recall@K and NDCG@K with one target item per user.

recall@k = 1[target in top-k];  ndcg@k = 1 / log2(rank + 2) if rank < k else 0
(rank 0-based; with a single relevant item the ideal DCG is 1). Entries -1 in the
top-K lists are invalid IDs (TIGER §5, Fig. 6): they never match a target and are
counted in `invalid_id_rate`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_KS = (5, 10, 20, 40)  # CoST §4.1: Recall/NDCG@{5,10,20,40}; TIGER §4.1.2: @{5,10}


def target_ranks(topk_items: np.ndarray, target_items: np.ndarray) -> np.ndarray:
  """0-based rank of each user's target in their list, or K (= len) if absent. int [B]."""
  topk = np.asarray(topk_items)
  tgt = np.asarray(target_items).reshape(-1)
  if topk.ndim != 2 or topk.shape[0] != tgt.shape[0]:
    raise ValueError(f"topk_items must be [B, K] with B = len(target_items); got {topk.shape} "
                     f"and {tgt.shape}")
  hit = (topk == tgt[:, None]) & (topk >= 0)
  return np.where(hit.any(axis=1), hit.argmax(axis=1), topk.shape[1])


def retrieval_metrics(topk_items: np.ndarray, target_items: np.ndarray,
                      ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
  """Mean recall@k / ndcg@k over users, plus num_users and invalid_id_rate.

  topk_items int [B, K] (best first, -1 = invalid), target_items int [B].
  A k larger than K is evaluated on the K available entries. invalid_id_rate is the
  share of -1 entries in the whole [B, K] array; invalid_id_rate@k for each k too.
  """
  topk = np.asarray(topk_items)
  ranks = target_ranks(topk, target_items)
  found = ranks < topk.shape[1]  # a target outside the returned list is a miss at every k
  out: dict[str, float] = {}
  for k in ks:
    hit = found & (ranks < k)
    out[f"recall@{k}"] = float(hit.mean()) if len(ranks) else 0.0
    out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) \
        if len(ranks) else 0.0
  out["num_users"] = int(len(ranks))
  out["invalid_id_rate"] = float((topk < 0).mean()) if topk.size else 0.0
  for k in ks:
    sub = topk[:, :k]
    out[f"invalid_id_rate@{k}"] = float((sub < 0).mean()) if sub.size else 0.0
  return out


def seqio_retrieval_metrics(targets: Sequence[Any], predictions: Sequence[Any],
                            ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
  """SeqIO metric fn: metric_fn(targets, predictions) -> {name: value}.

  targets: per example the target item index (int, or a mapping with "item_index",
  as SeqIO passes the postprocessed target). predictions: per example the ranked list
  of predicted item indices (best first; -1 = invalid ID), e.g. the output of a
  postprocessor mapping decoded beams to items. Lists shorter than the longest are
  padded with -1.
  """
  tgt = [t["item_index"] if isinstance(t, Mapping) else t for t in targets]
  preds = [list(np.asarray(p).reshape(-1)) for p in predictions]
  width = max([len(p) for p in preds] + [1])
  topk = np.full((len(preds), width), -1, np.int64)
  for i, p in enumerate(preds):
    topk[i, :len(p)] = p
  return retrieval_metrics(topk, np.asarray(tgt, np.int64), ks)


def category_entropy_at_k(topk_items: np.ndarray, item_categories: Sequence[Sequence[int]],
                          k: int) -> np.ndarray:
  """Entropy@K (TIGER §4.4.2, Table 5) per user: the entropy, in nats, of the distribution of
  ground-truth categories over the first k items of each list. float [B].

  An item with several categories (a film with three genres) gives each of them 1/|cats| of
  its weight; invalid entries (-1) and items with no category are skipped. A user whose list
  has no categorized item gets entropy 0.
  """
  topk = np.asarray(topk_items)[:, :k]
  cats = [np.asarray(c, np.int64) for c in item_categories]
  num_cats = 1 + max((int(c.max()) for c in cats if c.size), default=-1)
  out = np.zeros(topk.shape[0], np.float64)
  for u, row in enumerate(topk):
    mass = np.zeros(max(num_cats, 1), np.float64)
    for item in row:
      if item < 0 or not cats[item].size:
        continue
      np.add.at(mass, cats[item], 1.0 / cats[item].size)
    total = mass.sum()
    if total > 0:
      p = mass[mass > 0] / total
      out[u] = float(-(p * np.log(p)).sum())
  return out
