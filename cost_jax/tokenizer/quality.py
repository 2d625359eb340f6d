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
  nn_in = np.argpartition(d_in, k, axis=1)[:, :k]
  nn_rec = np.argpartition(d_rec, k, axis=1)[:, :k]
  hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(nn_in, nn_rec)]
  return {"value": float(np.mean(hits) / k), "k": k, "sample_size": int(len(idx)),
          "num_items": n, "sampled": bool(n > sample)}
