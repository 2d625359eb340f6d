"""Per-user metrics, bootstrap intervals and the paired permutation test, by hand."""

import numpy as np
import pytest

from cost_jax import significance
from cost_jax.experiments import paired


def test_per_user_hits_and_gains_by_hand():
  topk = np.array([[4, 2, 9], [1, 5, 6], [7, 8, 3]])
  targets = np.array([2, 0, 3])
  m = significance.per_user(topk, targets, 2)
  assert m["recall@2"].tolist() == [1.0, 0.0, 0.0]  # rank 1; absent; rank 2 is outside @2
  assert m["ndcg@2"][0] == pytest.approx(1 / np.log2(3))
  # K beyond the list: a target outside the list is a miss at every K.
  m = significance.per_user(topk, targets, 10)
  assert m["recall@10"].tolist() == [1.0, 0.0, 1.0]
  assert m["ndcg@10"][2] == pytest.approx(0.5)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_users():
  rng = np.random.default_rng(0)
  small = rng.binomial(1, 0.1, size=200).astype(float)
  big = rng.binomial(1, 0.1, size=20000).astype(float)
  lo, hi = significance.bootstrap_ci(small)
  assert lo <= small.mean() <= hi
  lo2, hi2 = significance.bootstrap_ci(big)
  assert hi2 - lo2 < (hi - lo) / 5


def test_paired_test_exact_small_case_and_extremes():
  # Three users, all differences +1: of the 8 sign patterns, 2 reach |mean| = 1 -> p = 0.25.
  p = significance.paired_test(np.ones(3), np.zeros(3), num_samples=20000)
  assert p == pytest.approx(0.25, abs=0.02)
  assert significance.paired_test(np.ones(5), np.ones(5)) == 1.0
  rng = np.random.default_rng(1)
  a = rng.binomial(1, 0.3, size=2000).astype(float)
  b = a * rng.binomial(1, 0.5, size=2000)  # b loses half of a's hits
  assert significance.paired_test(a, b) < 0.001



def test_paired_test_rejects_at_its_level_under_the_null():
  # Two methods with the same per-user hit rate (the null): p < 0.05 in about 5% of 200
  # repetitions (binomial 95% range 2-16), not far more (an unpaired or one-sided test) nor
  # never (a test that cannot reject).
  rng = np.random.default_rng(3)
  rejections = 0
  for _ in range(200):
    base = rng.binomial(1, 0.3, size=300).astype(float)
    a = np.where(rng.random(300) < 0.5, base, rng.binomial(1, 0.3, size=300))
    b = np.where(rng.random(300) < 0.5, base, rng.binomial(1, 0.3, size=300))
    rejections += significance.paired_test(a, b, num_samples=2000) < 0.05
  assert 2 <= rejections <= 16, rejections


def test_holm_adjustment_by_hand():
  # Sorted p .01, .02, .04 with n = 3: .03, .04, .04 (monotone), back in input order.
  assert paired.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
  assert paired.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_significance_section_pairs_users_across_seeds():
  rng = np.random.default_rng(2)
  users = np.arange(300)
  targets = rng.integers(0, 50, size=300)
  good = np.where(rng.random((300, 1)) < 0.6, targets[:, None], 99) * np.ones((1, 10), int)
  bad = np.full((300, 10), 99)
  lists = {"sasrec": [(users, good, targets), (users[::-1], good[::-1], targets[::-1])],
           "popularity": [(users, bad, targets)]}
  md = "\n".join(paired.significance_markdown(lists, ["popularity", "sasrec"], str,
                                              [("sasrec", "popularity", "claim")]))
  assert "| sasrec | 300 |" in md
  assert "| claim | recall@10 |" in md and "holds" in md
  assert "test users only" in md and "Seed-level" not in md  # fewer than 3 seeds


def test_seeds_on_other_users_are_refused_or_said():
  users = np.arange(10)
  t = np.zeros(10, int)
  hit = np.zeros((10, 10), int)
  lists = {"a": [(users, hit, t), (users + 100, hit, t)], "b": [(users, hit, t)] * 3}
  with pytest.raises(paired.UserSetMismatch, match="run 2 of 2"):
    paired.per_user_means(lists, "recall@10")
  md = "\n".join(paired.significance_markdown(lists, ["a", "b"], str, []))
  assert "- a: 1 of 2 runs were scored on other test users" in md
  assert "| a | 10 |" in md
  assert "Seed-level view" in md and "| b | 3 |" in md
