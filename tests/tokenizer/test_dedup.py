"""Collision statistics and both de-duplication modes on data built to collide."""

import numpy as np
import pytest

from cost_jax.tokenizer import dedup as sid


def test_collision_stats_by_hand():
  codes = np.array([[0, 0], [0, 0], [1, 2], [0, 0], [1, 2], [3, 3]])
  assert sid.collision_stats(codes) == {
      "num_items": 6, "unique_ids": 3, "colliding_items": 5, "collision_groups": 2,
      "largest_group": 3, "items_to_move": 3}
  assert sid.usage_per_level(codes, [4, 4]) == [0.75, 0.75]


def test_tiger_extra_token():
  codes = np.array([[0, 0], [0, 0], [1, 2], [0, 0]])
  ids, info = sid.tiger_extra_token(codes)
  np.testing.assert_array_equal(ids, [[0, 0, 0], [0, 0, 1], [1, 2, 0], [0, 0, 2]])
  assert ids.dtype == np.int32 and info["extra_token_size"] == 3
  # New items continue the counts of IDs given out before.
  new, _ = sid.tiger_extra_token(np.array([[0, 0], [3, 3]]), existing=ids)
  np.testing.assert_array_equal(new, [[0, 0, 3], [3, 3, 0]])


# Two-level residual codebooks and four items; three of them quantize to (0, 0).
CB0 = np.array([[0.0, 0.0], [10.0, 0.0]])
Z = np.array([[0.1, 0.0], [0.2, 0.0], [0.05, 0.05], [10.0, 0.0]])


def test_cost_reassign_nearest_free_last_code_by_hand():
  cb1 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
  scorer = sid.ResidualScorer(Z, [CB0, cb1])
  codes = np.array([[0, 0], [0, 0], [0, 0], [1, 0]])
  ids, info = sid.cost_reassign(codes, scorer)
  # Keeper: item 2 (||r1 - e|| = 0.005, the smallest). Item 0, r1 = (0.1, 0): (1,0) at 0.81.
  # Item 1, r1 = (0.2, 0): (1,0) is taken now, next (0,1) at 1.04.
  np.testing.assert_array_equal(ids, [[0, 1], [0, 2], [0, 0], [1, 0]])
  assert info["reassigned"] == 2 and info["fallback_items"] == 0
  assert sid.all_distinct(ids)


def test_cost_reassign_falls_back_a_level_when_prefix_is_full():
  cb1 = np.array([[0.0, 0.0], [1.0, 0.0]])
  scorer = sid.ResidualScorer(Z, [CB0, cb1])
  codes = np.array([[0, 0], [0, 0], [0, 0], [1, 0]])
  ids, info = sid.cost_reassign(codes, scorer)
  # Prefix (0,) has 2 slots for 3 items: item 1 goes up to level 0 -> code 1, then the free
  # last code under (1,) is 1.
  np.testing.assert_array_equal(ids, [[0, 1], [1, 1], [0, 0], [1, 0]])
  assert info["fallback_levels"] == {"level_0": 1}
  with pytest.raises(ValueError, match="do not fit"):
    sid.cost_reassign(np.zeros((5, 2), int), scorer)


def test_cost_reassign_against_existing_ids():
  cb1 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
  scorer = sid.ResidualScorer(Z[:1], [CB0, cb1])
  ids, _ = sid.cost_reassign(np.array([[0, 0]]), scorer, existing=np.array([[0, 0]]))
  np.testing.assert_array_equal(ids, [[0, 1]])


@pytest.mark.parametrize("mode", ["cost_reassign", "tiger_extra_token"])
def test_heavy_collisions_become_distinct(mode):
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 3, size=(400, 3))        # 27 possible IDs for 400 items
  codes[:50] = [2, 2, 2]                            # one big group
  stats = sid.collision_stats(codes)
  assert stats["largest_group"] >= 50
  scorer = sid.RandomScorer([8, 8, 8], seed=0)
  ids, info = sid.deduplicate(mode, codes, scorer)
  assert sid.all_distinct(ids)
  if mode == "cost_reassign":
    assert ids.shape == (400, 3)
    assert info["reassigned"] == stats["items_to_move"]
    # Items whose raw ID was unique keep it.
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    solo = counts[inv.reshape(-1)] == 1
    np.testing.assert_array_equal(ids[solo], codes[solo])
  else:
    assert ids.shape == (400, 4)
    np.testing.assert_array_equal(ids[:, :3], codes)
    assert ids[:, 3].max() + 1 == stats["largest_group"]


def test_lsh_scorer_prefers_cheapest_bit_flip():
  # One level of 2 bits: projections (+0.1, +5.0) -> code 0b11 = 3; flipping bit 0 costs 0.1.
  scorer = sid.LSHScorer(np.array([[[0.1, 5.0]]]))
  np.testing.assert_allclose(scorer.costs(0, 0), [5.1, 5.0, 0.1, 0.0])
