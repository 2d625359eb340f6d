"""Tests for cost_jax.baselines.transition on a hand-made leave-one-out split (hand-checked)."""

import json
import math
import os

import numpy as np
import pytest

from cost_jax.baselines import transition
from cost_jax.data.processed import LeaveOneOut


def hand_split():
  # 5 items, 3 users (train part | validation item | test item):
  #   a: 0 1 2 1 | 3 | 2      b: 0 1 2 0 | 2 | 4      c: 1 2 | 0 | 1
  # Training transitions: 0->1 x2, 1->2 x3, 2->1 x1, 2->0 x1. Training popularity: 1 (4),
  # 0 (3), 2 (3), 3 (0), 4 (0) -> MostPop 1, 0, 2, 3, 4 (ties: lower index).
  return LeaveOneOut(
      user_ids=["a", "b", "c"],
      train=[np.array([0, 1, 2, 1], np.int32), np.array([0, 1, 2, 0], np.int32),
             np.array([1, 2], np.int32)],
      valid_target=np.array([3, 2, 0], np.int32),
      test_target=np.array([2, 4, 1], np.int32))


def test_the_table_counts_consecutive_training_items():
  loo = hand_split()
  src, dst, count = transition.transition_counts(loo.train, 5)
  assert list(zip(src, dst, count)) == [(0, 1, 2), (1, 2, 3), (2, 0, 1), (2, 1, 1)]


def test_validation_ranks_the_successors_of_the_last_training_item(tmp_path):
  loo = hand_split()
  m = transition.evaluate(loo, 5, ks=(1, 3, 5), split="validation", output_dir=str(tmp_path))
  # a ends with 1 -> 2, then MostPop. b ends with 0 -> 1, then MostPop. c ends with 2: 2->1 and
  # 2->0 once each, 1 is more popular -> 1, 0.
  np.testing.assert_array_equal(np.load(os.path.join(tmp_path, "topk_validation.npy")),
                                [[2, 1, 0, 3, 4], [1, 0, 2, 3, 4], [1, 0, 2, 3, 4]])
  # Targets 3, 2, 0 at ranks 4, 3, 2.
  assert m["recall@1"] == 0.0 and m["recall@3"] == pytest.approx(2 / 3)
  assert m["ndcg@5"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(4) + 1 / math.log2(3)) / 3)


def test_test_split_starts_from_the_validation_item_and_never_counts_it(tmp_path):
  loo = hand_split()
  m = transition.evaluate(loo, 5, ks=(1, 3, 5), output_dir=str(tmp_path))
  # The latest items are the validation items 3, 2, 0. Nothing follows 3: MostPop. 2: 1 before 0
  # (had the validation steps 1->3, 0->2 and 2->0 been counted, 0 would lead). 0: 1.
  np.testing.assert_array_equal(np.load(os.path.join(tmp_path, "topk.npy")),
                                [[1, 0, 2, 3, 4], [1, 0, 2, 3, 4], [1, 0, 2, 3, 4]])
  # Targets 2, 4, 1 at ranks 3, 5, 1.
  assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@3"] == pytest.approx(2 / 3)
  assert m["recall@5"] == pytest.approx(1.0)
  assert m["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(6) + 1) / 3)
  assert json.load(open(os.path.join(tmp_path, "metrics.json")))["num_users"] == 3
  np.testing.assert_array_equal(np.load(os.path.join(tmp_path, "targets.npy")), [2, 4, 1])


def test_short_catalogue_and_no_latest_item():
  top = transition.transition_topk([np.array([0, 1])], np.array([1, -1]), 2, k=4)
  # 1 is never followed and -1 has no successors: MostPop 0, 1 (a tie: lower index); -1 pads.
  np.testing.assert_array_equal(top, [[0, 1, -1, -1], [0, 1, -1, -1]])
  np.testing.assert_array_equal(
      transition.latest_items([np.array([4, 5]), np.array([], np.int32)], np.array([7, 8]),
                              "validation"), [5, -1])
  with pytest.raises(ValueError, match="split"):
    transition.latest_items([], np.zeros(0), "train")
