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
  #   a: 0 1 2 | 1 | 3      b: 0 1 | 2 | 0      c: 1 2 | 0 | 1
  return LeaveOneOut(
      user_ids=["a", "b", "c"],
      train=[np.array([0, 1, 2], np.int32), np.array([0, 1], np.int32),
             np.array([1, 2], np.int32)],
      valid_target=np.array([1, 2, 0], np.int32),
      test_target=np.array([3, 0, 1], np.int32))


def test_validation_ranks_from_the_training_parts_only():
  loo = hand_split()
  seqs = transition.visible_sequences(loo.train, loo.valid_target, "validation")
  src, dst, count = transition.transition_counts(seqs, 5)
  assert list(zip(src, dst, count)) == [(0, 1, 2), (1, 2, 2)]
  # Popularity over the training parts: 1 (3), 0 (2), 2 (2), 3, 4 (ties: lower index).
  # a ends with 2, which nothing follows: the MostPop list. b ends with 1: 2, then MostPop.
  np.testing.assert_array_equal(transition.transition_topk(seqs, 5, 5),
                                [[1, 0, 2, 3, 4], [2, 1, 0, 3, 4], [1, 0, 2, 3, 4]])


def test_test_split_sees_the_validation_items_and_breaks_ties_by_popularity(tmp_path):
  loo = hand_split()
  m = transition.evaluate(loo, 5, ks=(1, 2, 4), output_dir=str(tmp_path))
  # Test-time sequences a: 0 1 2 1, b: 0 1 2, c: 1 2 0. Transitions 0->1 x2, 1->2 x3, 2->1,
  # 2->0; popularity 1 (4), 0 (3), 2 (3). b ends with 2: 2->1 and 2->0 once each, 1 is more
  # popular -> [1, 0, 2, 3, 4]. a ends with 1 -> [2, 1, 0, 3, 4]; c ends with 0 -> [1, 0, 2, ...].
  topk = np.load(os.path.join(tmp_path, "topk.npy"))
  np.testing.assert_array_equal(topk, [[2, 1, 0, 3], [1, 0, 2, 3], [1, 0, 2, 3]])
  # Targets 3, 0, 1 at ranks 4, 2, 1.
  assert m["recall@1"] == pytest.approx(1 / 3)
  assert m["recall@2"] == pytest.approx(2 / 3)
  assert m["recall@4"] == pytest.approx(1.0)
  assert m["ndcg@4"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(3) + 1) / 3)
  assert json.load(open(os.path.join(tmp_path, "metrics.json")))["num_users"] == 3
  np.testing.assert_array_equal(np.load(os.path.join(tmp_path, "targets.npy")), [3, 0, 1])


def test_short_catalogue_and_empty_history():
  seqs = [np.array([0, 1], np.int64), np.array([], np.int64)]
  top = transition.transition_topk(seqs, 2, k=4)
  # user 0 ends with 1 (never followed): MostPop 0, 1 (a tie, lower index first); -1 pads.
  np.testing.assert_array_equal(top, [[0, 1, -1, -1], [0, 1, -1, -1]])
  with pytest.raises(ValueError, match="split"):
    transition.visible_sequences([], np.zeros(0), "train")
