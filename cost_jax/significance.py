"""Per-user metrics, bootstrap confidence intervals and paired tests (pure numpy).

A claim that method A beats B is judged over the same test users:
  * `per_user(topk, targets, k)`: hit@k and ndcg@k per user (leave-one-out: one target, so
    Recall@k = hit@k and NDCG@k = 1 / log2(rank + 2) when the rank is below k);
  * `bootstrap_ci(values)`: the 95% percentile interval of the mean over users, resampled
    with replacement;
  * `paired_test(a, b)`: a two-sided paired permutation test (random sign flips of the
    per-user differences), p = (1 + #{|mean flipped| >= |mean observed|}) / (1 + n).
Seeds are averaged per user before testing, so every user counts once.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """0-based rank of each user's target in its list; len(list) when absent."""
  topk = np.asarray(topk)
  targets = np.asarray(targets).reshape(-1, 1)
  hit = topk == targets
  return np.where(hit.any(axis=1), hit.argmax(axis=1), topk.shape[1]).astype(np.int64)


def per_user(topk: np.ndarray, targets: np.ndarray, k: int) -> dict[str, np.ndarray]:
  """{"recall@k": hit [U], "ndcg@k": gain [U]} for a single target per user."""
  r = ranks(topk, targets)
  inside = r < min(int(k), np.asarray(topk).shape[1])
  return {f"recall@{k}": inside.astype(np.float64),
          f"ndcg@{k}": np.where(inside, 1.0 / np.log2(r + 2.0), 0.0)}


def bootstrap_ci(values: np.ndarray, num_samples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = np.empty(num_samples)
  for s in range(0, num_samples, 200):  # chunks keep memory at 200 x U
    n = min(200, num_samples - s)
    idx = rng.integers(0, values.size, size=(n, values.size))
    means[s:s + n] = values[idx].mean(axis=1)
  tail = (1.0 - level) / 2.0
  return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def paired_test(a: np.ndarray, b: np.ndarray, num_samples: int = 10000, seed: int = 0) -> float:
  """Two-sided paired permutation (sign-flip) p-value for mean(a - b) != 0."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if d.shape != np.asarray(a).shape or d.size == 0:
    raise ValueError("paired_test needs two arrays over the same users")
  observed = abs(d.mean())
  if not np.any(d):
    return 1.0
  rng = np.random.default_rng(seed)
  count = 0
  for s in range(0, num_samples, 500):
    n = min(500, num_samples - s)
    signs = rng.integers(0, 2, size=(n, d.size)) * 2 - 1
    count += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-15))
  return (1.0 + count) / (1.0 + num_samples)


def mean_over_seeds(per_seed: Sequence[np.ndarray]) -> np.ndarray:
  """Per-user mean over seeds (all arrays over the same users, in the same order)."""
  arrays = [np.asarray(a, np.float64) for a in per_seed]
  if any(a.shape != arrays[0].shape for a in arrays):
    raise ValueError("seeds were scored on different users")
  return np.mean(arrays, axis=0)
