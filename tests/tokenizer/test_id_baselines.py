"""Baselines: LSH (SimHash) against a NumPy reimplementation, random IDs, residual k-means."""

import numpy as np

from cost_jax.tokenizer import id_baselines as baselines


def _simhash_numpy(x, seed, bits, levels):
  # TIGER §4.3.2: w ~ N(0, I); c = sum_{i=1..h} 2^{i-1} 1[w_i . x > 0], m independent levels.
  w = np.random.default_rng(seed).standard_normal((levels, bits, x.shape[1])).astype(np.float32)
  codes = np.zeros((len(x), levels), np.int64)
  for l in range(levels):
    for i in range(bits):
      codes[:, l] += (2 ** i) * (x @ w[l, i] > 0)
  return codes


def test_lsh_matches_numpy_and_is_deterministic():
  x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
  a = baselines.LSH.fit(16, bits=8, levels=4, seed=3)
  b = baselines.LSH.fit(16, bits=8, levels=4, seed=3)
  c = baselines.LSH.fit(16, bits=8, levels=4, seed=4)
  np.testing.assert_array_equal(a.hyperplanes, b.hyperplanes)
  codes = a.codes(x)
  np.testing.assert_array_equal(codes, b.codes(x))
  assert not np.array_equal(codes, c.codes(x))
  np.testing.assert_array_equal(codes, _simhash_numpy(x, 3, 8, 4))
  assert codes.shape == (50, 4) and codes.min() >= 0 and codes.max() < 256
  assert a.sizes == (256,) * 4


def test_lsh_hand_example():
  lsh = baselines.LSH(np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32))   # 1 level, 2 bits
  x = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], np.float32)
  np.testing.assert_array_equal(lsh.codes(x)[:, 0], [3, 1, 2, 0])


def test_random_ids():
  r = baselines.RandomIDs((64, 64, 64), seed=1)
  a, b = r.codes(1000), r.codes(1000)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (1000, 3) and a.min() >= 0 and a.max() < 64
  # roughly uniform: every code of every level used for 1000 items
  assert all(len(np.unique(a[:, l])) == 64 for l in range(3))
  assert not np.array_equal(r.codes(1000, offset=1000), a)


def test_residual_kmeans_roundtrip(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 8)).astype(np.float32)
  m = baselines.ResidualKMeans.fit(x, k=8, levels=2, seed=0, iterations=20)
  codes = m.codes(x)
  assert codes.shape == (200, 2) and codes.max() < 8
  np.savez(tmp_path / "b.npz", **m.arrays())
  with np.load(tmp_path / "b.npz") as a:
    m2 = baselines.ResidualKMeans.from_arrays(a)
  np.testing.assert_array_equal(m2.codes(x), codes)
  rec = m.reconstruct(x)
  assert np.mean(np.sum((x - rec) ** 2, 1)) < np.mean(np.sum(x ** 2, 1))
