"""Tests for cost_jax.popularity on a hand-made leave-one-out split (hand-checked values)."""

import json
import math
import os

import numpy as np
import pytest

from cost_jax.baselines import popularity
from cost_jax.data.processed import LeaveOneOut


def hand_split():
  # 4 items, 3 users. Training parts: item 2 x3, item 0 x2, item 1 x1, item 3 x0.
  # Validation targets add item 3 twice and item 0 once -> test-time counts
  # item 0: 3, item 1: 1, item 2: 3, item 3: 2  => ranking 0, 2 (tie -> lower index), 3, 1.
  return LeaveOneOut(
      user_ids=["a", "b", "c"],
      train=[np.array([2, 0], np.int32), np.array([2, 1], np.int32), np.array([2, 0], np.int32)],
      valid_target=np.array([3, 3, 0], np.int32),
      test_target=np.array([0, 3, 1], np.int32))


def test_counts_and_ranking():
  loo = hand_split()
  np.testing.assert_array_equal(popularity.item_counts(loo.train, 4), [2, 1, 3, 0])
  np.testing.assert_array_equal(popularity.item_counts(loo.train, 4, loo.valid_target), [3, 1, 3, 2])
  np.testing.assert_array_equal(popularity.top_items(np.array([3, 1, 3, 2]), 4), [0, 2, 3, 1])
  top = popularity.popularity_topk(loo.train, loo.valid_target, 4, k=3)
  np.testing.assert_array_equal(top, [[0, 2, 3]] * 3)
  # validation split: training counts only -> 2, 0, 1, 3
  top = popularity.popularity_topk(loo.train, loo.valid_target, 4, k=2, split="validation")
  np.testing.assert_array_equal(top, [[2, 0]] * 3)
  # k larger than the catalogue: padded with -1
  top = popularity.popularity_topk(loo.train, loo.valid_target, 4, k=6)
  np.testing.assert_array_equal(top[0], [0, 2, 3, 1, -1, -1])


def test_evaluate_exact_metrics(tmp_path):
  pytest.importorskip("cost_jax.metrics")
  loo = hand_split()
  m = popularity.evaluate(loo, 4, ks=(1, 2, 3, 4), output_dir=str(tmp_path))
  # ranking [0, 2, 3, 1]; targets 0 (rank 1), 3 (rank 3), 1 (rank 4)
  assert m["recall@1"] == pytest.approx(1 / 3)
  assert m["recall@2"] == pytest.approx(1 / 3)
  assert m["recall@3"] == pytest.approx(2 / 3)
  assert m["recall@4"] == pytest.approx(1.0)
  assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
  assert m["ndcg@4"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(5)) / 3)
  assert m["num_users"] == 3 and m["invalid_id_rate"] == 0.0
  saved = json.load(open(os.path.join(tmp_path, "metrics.json")))
  assert saved["recall@3"] == pytest.approx(2 / 3)
  np.testing.assert_array_equal(np.load(os.path.join(tmp_path, "topk.npy")), [[0, 2, 3, 1]] * 3)
  np.testing.assert_array_equal(np.load(os.path.join(tmp_path, "targets.npy")), [0, 3, 1])
