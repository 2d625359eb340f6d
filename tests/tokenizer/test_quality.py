"""cost_jax.tokenizer.quality: reconstruction cosine, neighbour precision and its tie count by hand."""

import numpy as np
import pytest

from cost_jax.tokenizer import quality


def test_reconstruction_cosine_by_hand():
  x = np.array([[1.0, 0.0], [0.0, 1.0]])
  x_hat = np.array([[1.0, 1.0], [0.0, 2.0]])
  assert quality.reconstruction_cosine(x, x_hat) == pytest.approx((1 / np.sqrt(2) + 1) / 2)


def test_neighbor_precision_by_hand():
  # Points 0, 1, 3, 7 on a line; k = 1. Input neighbours: 0->1, 1->0, 3->1, 7->3.
  x = np.array([[0.0], [1.0], [3.0], [7.0]])
  assert quality.neighbor_precision(x, x, k=1)["value"] == 1.0
  # Item 1 reconstructed at 5: by ||x_i - x_hat_j||, 0's nearest is item 2 (miss), 1's is 0
  # (hit), 2's is 1 (|3 - 5| = 2, hit), 3's is 1 (|7 - 5| = 2, miss): 2 of 4.
  x_hat = np.array([[0.0], [5.0], [3.0], [7.0]])
  out = quality.neighbor_precision(x, x_hat, k=1)
  assert out["value"] == 0.5 and out["k"] == 1 and out["sample_size"] == 4
  # k is capped at n - 1.
  assert quality.neighbor_precision(x, x_hat, k=10)["k"] == 3


def test_exact_ties_go_to_the_lower_index_and_only_near_ties_are_counted():
  # Items 1 and 2 are both at distance 1 from item 0 (an exact tie): index 1 wins, in both
  # rankings, so the precision is 1 and no tie can move.
  x = np.array([[0.0], [1.0], [-1.0], [10.0]])
  assert quality.neighbor_precision(x, x, k=1)["value"] == 1.0
  assert quality.boundary_ties(x, x, k=1) == 0
  # Now item 2 sits a hair further than item 1 from 0: a near tie at item 0's k-th distance.
  x_hat = x.copy()
  x_hat[2, 0] = -1.0 - 1e-6
  assert quality.boundary_ties(x, x_hat, k=1, rtol=1e-4) == 1
  assert quality.boundary_ties(x, x_hat, k=1, rtol=1e-9) == 0
