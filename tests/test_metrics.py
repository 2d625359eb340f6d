"""Recall@K / NDCG@K against hand-computed values."""

import math

import numpy as np
import pytest

from cost_jax import metrics


def test_hand_computed():
  topk = np.array([
      [7, 3, 9, 1, 2, 5],  # target 7 at rank 0
      [4, -1, 8, 6, 0, 11],  # target 6 at rank 3
      [1, 2, 3, 4, 5, 10],  # target 10 at rank 5
      [-1, -1, 2, 3, 4, 5],  # target 9 absent
  ])
  target = np.array([7, 6, 10, 9])
  m = metrics.retrieval_metrics(topk, target, ks=(1, 5, 6))
  assert m["num_users"] == 4
  assert m["recall@1"] == pytest.approx(0.25)
  assert m["recall@5"] == pytest.approx(0.5)
  assert m["recall@6"] == pytest.approx(0.75)
  assert m["ndcg@1"] == pytest.approx(0.25)
  assert m["ndcg@5"] == pytest.approx((1.0 + 1.0 / math.log2(5)) / 4)
  assert m["ndcg@6"] == pytest.approx((1.0 + 1.0 / math.log2(5) + 1.0 / math.log2(7)) / 4)
  assert m["invalid_id_rate"] == pytest.approx(3 / 24)
  assert m["invalid_id_rate@1"] == pytest.approx(1 / 4)


def test_invalid_never_matches_and_default_ks():
  m = metrics.retrieval_metrics(np.full((2, 40), -1), np.array([-1, 3]))
  assert m["recall@40"] == 0.0 and m["ndcg@5"] == 0.0 and m["invalid_id_rate"] == 1.0
  assert set(metrics.DEFAULT_KS) == {5, 10, 20, 40}
  assert all(f"{k}@{K}" in m for k in ("recall", "ndcg") for K in (5, 10, 20, 40))


def test_ranks_and_shape_checks():
  np.testing.assert_array_equal(metrics.target_ranks(np.array([[1, 2], [2, 1], [3, 4]]),
                                                     np.array([2, 2, 5])), [1, 0, 2])
  with pytest.raises(ValueError):
    metrics.retrieval_metrics(np.zeros((3, 2)), np.zeros(2))


def test_seqio_metric_fn():
  out = metrics.seqio_retrieval_metrics(
      targets=[5, {"item_index": 2}, 8], predictions=[[5, 1], [9, 2, 3], []], ks=(1, 2))
  assert out["recall@1"] == pytest.approx(1 / 3)
  assert out["recall@2"] == pytest.approx(2 / 3)
  assert out["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
  assert out["num_users"] == 3
  assert out["invalid_id_rate"] == pytest.approx(4 / 9)  # padding of the short lists


def test_target_outside_a_short_list_is_a_miss_at_every_k():
  m = metrics.retrieval_metrics(np.array([[1, 2]]), np.array([9]), ks=(2, 5, 40))
  assert m["recall@2"] == m["recall@5"] == m["recall@40"] == 0.0
  assert m["ndcg@5"] == m["ndcg@40"] == 0.0
  # A hit inside the list still counts for every k beyond the list length.
  m = metrics.retrieval_metrics(np.array([[1, 9]]), np.array([9]), ks=(1, 5))
  assert m["recall@1"] == 0.0 and m["recall@5"] == 1.0
  assert m["ndcg@5"] == pytest.approx(1.0 / np.log2(3.0))
