"""Semantic_KNN (TIGER §4.4.1, Figure 5): nearest neighbours of a user's history in the
content-embedding space, the cold-start baseline.

A user's query is the mean of the L2-normalized embeddings of their history items; every
candidate item is scored by cosine similarity to it, history items excluded, and the top K
are returned (ties by the lower item index). Candidates default to every item, so unseen
(cold-start) items are retrievable: they have text embeddings but no interactions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def semantic_knn_topk(histories: Sequence[np.ndarray], embeddings: np.ndarray, k: int,
                      candidates: np.ndarray | None = None, batch_size: int = 1024
                      ) -> np.ndarray:
  """int32 [U, k] items by cosine to the mean normalized history embedding (-1 = none)."""
  x = np.asarray(embeddings, np.float32)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  n = len(x)
  allowed = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool)
  out = np.full((len(histories), k), -1, np.int32)
  for start in range(0, len(histories), batch_size):
    hist = histories[start:start + batch_size]
    q = np.stack([x[np.asarray(h, np.int64)].mean(axis=0) if len(h) else np.zeros(x.shape[1],
                                                                                   np.float32)
                  for h in hist])
    scores = q @ x.T  # [b, N]
    scores[:, ~allowed] = -np.inf
    for r, h in enumerate(hist):
      scores[r, np.asarray(h, np.int64)] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(n), scores.shape), -scores), axis=1)[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    out[start:start + len(hist)] = np.where(np.isfinite(top), order, -1)
  return out
