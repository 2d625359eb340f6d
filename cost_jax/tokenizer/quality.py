"""Quality of a tokenizer's reconstruction: cosine to the input, neighbour precision@K."""

from __future__ import annotations

from typing import Any

import numpy as np


def reconstruction_cosine(x: np.ndarray, x_hat: np.ndarray) -> float:
  num = np.sum(x * x_hat, axis=1)
  den = np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(x_hat, axis=1), 1e-12)
  return float(np.mean(num / den))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (np.sum(a * a, 1)[:, None] - 2.0 * (a @ b.T) + np.sum(b * b, 1)[None, :])


def sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
  """The rows neighbour precision reads: all n, or a seeded sorted sample of `sample`."""
  return np.arange(n) if n <= sample else np.sort(
      np.random.default_rng(seed).choice(n, sample, replace=False))


def neighbor_precision(x: np.ndarray, x_hat: np.ndarray, k: int = 10, sample: int = 5000,
                       seed: int = 0) -> dict[str, Any]:
  """Top-K precision (CoST preprint §4.1) on a sample of at most `sample` items.

  For item i: N_in = its K nearest other items by ||x_i - x_j||; N_rec = its K nearest other
  items by ||x_i - x_hat_j|| (input of i to the outputs of all items). Precision =
  |N_in & N_rec| / K, averaged.
  """
  n = len(x)
  idx = sample_rows(n, sample, seed)
  xs, hs = x[idx].astype(np.float32), x_hat[idx].astype(np.float32)
  k = min(k, len(idx) - 1)
  if k < 1:
    return {"value": None, "k": k, "sample_size": int(len(idx)), "num_items": n}
  d_in = _sq_dists(xs, xs)
  d_rec = _sq_dists(xs, hs)
  np.fill_diagonal(d_in, np.inf)
  np.fill_diagonal(d_rec, np.inf)
  # Exact ties (items whose codes, hence reconstructions, are equal) go to the lower index, so
  # the figure does not depend on how a partial sort happens to order them.
  nn_in = np.argsort(d_in, axis=1, kind="stable")[:, :k]
  nn_rec = np.argsort(d_rec, axis=1, kind="stable")[:, :k]
  hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(nn_in, nn_rec)]
  return {"value": float(np.mean(hits) / k), "k": k, "sample_size": int(len(idx)),
          "num_items": n, "sampled": bool(n > sample)}


def boundary_ties(x: np.ndarray, x_hat: np.ndarray, k: int = 10, sample: int = 5000,
                  seed: int = 0, rtol: float = 1e-4) -> int:
  """How many hits of `neighbor_precision` float rounding can move: on its sample, the pairs
  (i, j) whose reconstruction distance ||x_i - x_hat_j|| lies within `rtol` (relative) of item
  i's k-th distance but not equal to it, each able to swap in or out of N_rec when x_hat changes
  in its last bits (e.g. computed in other chunks). Exact ties are broken by index in
  `neighbor_precision`, the same way in both computations. Two computations of the same
  reconstructions give precisions that differ by at most this count / (sample size * k).
  """
  idx = sample_rows(len(x), sample, seed)
  xs, hs = x[idx].astype(np.float32), x_hat[idx].astype(np.float32)
  k = min(k, len(idx) - 1)
  if k < 1:
    return 0
  d_rec = _sq_dists(xs, hs)
  np.fill_diagonal(d_rec, np.inf)
  kth = np.partition(d_rec, k - 1, axis=1)[:, k - 1:k]           # [n, 1] the k-th distance
  gap = np.abs(d_rec - kth)
  near = (gap > 0) & (gap <= rtol * np.maximum(np.abs(kth), 1e-12))
  return int(np.sum(near))
