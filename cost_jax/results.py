"""The files of an evaluated split and the metrics written into them (one writer for all models).

The seq2seq evaluator and the baselines (most-popular, SASRec) write through `write_results`,
so every ranking can be re-scored the same way:

  metrics.json   recall@{5,10,20,40}, ndcg@{5,10,20,40}, invalid_id_rate, num_users, + extras
  topk.npy       int32 [num_users, K] item indices, best first (-1 = invalid ID / no item)
  targets.npy    int32 [num_users] held-out item index
  user_ids.npy   int32 [num_users] user_index of each row
  scores.npy     float32 [num_users, K] scores of the ranked items (optional)

Split "test" writes these names; other splits get a `_{split}` suffix. Each file is written
atomically (cost_jax.io), metrics.json last.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from cost_jax import metrics as metrics_lib
from cost_jax.io import atomic_write_json, atomic_write_npy

KS = metrics_lib.DEFAULT_KS  # the K list, written once in cost_jax.metrics
METRIC_KEYS = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in KS) + (
    "invalid_id_rate", "num_users")


def result_file(model_dir: str, name: str, split: str) -> str:
  """DIR/metrics.json for the test split, DIR/metrics_validation.json otherwise."""
  stem, ext = os.path.splitext(name)
  return os.path.join(model_dir, name if split == "test" else f"{stem}_{split}{ext}")


def score_topk(topk_items: np.ndarray, targets: np.ndarray,
               ks: Sequence[int] = KS) -> dict[str, float]:
  """Recall@K / NDCG@K (one relevant item per user) + invalid_id_rate + num_users.

  cost_jax.metrics.retrieval_metrics: invalid_id_rate is the share of returned
  slots holding -1 (a decoded sequence that is no item's semantic ID, or no beam);
  it is 0 under constrained decoding whenever the catalogue has >= topk items.
  A K larger than the list length is scored on the list (Recall@40 of a top-20
  list = Recall@20).
  """
  topk_items = np.asarray(topk_items)
  targets = np.asarray(targets)
  if topk_items.ndim != 2 or topk_items.shape[0] != targets.shape[0]:
    raise ValueError(f"topk {topk_items.shape} vs targets {targets.shape}")
  out: dict[str, Any] = {k: float(v) for k, v in
                         metrics_lib.retrieval_metrics(topk_items, targets, ks=ks).items()}
  out["num_users"] = int(targets.shape[0])
  return out


def write_results(model_dir: str, split: str, metrics: Mapping[str, Any], topk_items: np.ndarray,
                  targets: np.ndarray, user_ids: np.ndarray,
                  scores: np.ndarray | None = None) -> str:
  """Writes topk/targets/user_ids(/scores).npy then metrics.json atomically; returns its path."""
  os.makedirs(model_dir, exist_ok=True)
  arrays = {"topk.npy": np.asarray(topk_items, np.int32),
            "targets.npy": np.asarray(targets, np.int32),
            "user_ids.npy": np.asarray(user_ids, np.int32)}
  if scores is not None:
    arrays["scores.npy"] = np.asarray(scores, np.float32)
  for name, arr in arrays.items():
    atomic_write_npy(result_file(model_dir, name, split), arr)
  return atomic_write_json(result_file(model_dir, "metrics.json", split), dict(metrics))
