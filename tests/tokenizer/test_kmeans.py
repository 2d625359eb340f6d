"""k-means and the tokenizer's k-means codebook initialisation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.tokenizer import kmeans as km
from cost_jax.tokenizer import quantizer as rq
from cost_jax.tokenizer import rqvae
from cost_jax.tokenizer import config as tc
from cost_jax.tokenizer import trainer as tt


def test_lloyd_two_clusters_by_hand():
  x = jnp.asarray([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
  # From (0,1) and (1,1): the left points go to the first, the right ones to the second.
  res = km.lloyd(x, jnp.asarray([[0.0, 1.0], [1.0, 1.0]]), iterations=10)
  cents = sorted(map(tuple, np.asarray(res.centroids).round(6).tolist()))
  assert cents == [(0.0, 1.0), (10.0, 1.0)]
  assert float(res.distortion) == 1.0    # every point at distance 1 from its centroid


def test_empty_cluster_is_reseeded():
  x = jnp.asarray([[0.0], [1.0], [10.0], [11.0]])
  # Centroid 2 starts far away and gets no points: it takes the farthest point instead.
  res = km.lloyd(x, jnp.asarray([[0.5], [10.5], [100.0]]), iterations=5)
  assert len(np.unique(np.asarray(res.assignments))) == 3


def test_kmeans_beats_random_points():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(8, 6)) * 5
  x = jnp.asarray((centers[rng.integers(0, 8, 400)] + rng.normal(size=(400, 6))).astype(np.float32))
  key = jax.random.PRNGKey(0)
  init = km.init_from_points(x, 8, key)
  res = km.kmeans(x, 8, key, iterations=100)
  gaussian = jax.random.normal(jax.random.PRNGKey(1), (8, 6)) * 5
  assert float(res.distortion) < 0.5 * float(km.distortion(x, init))
  assert float(res.distortion) < 0.2 * float(km.distortion(x, gaussian))
  # Lloyd never increases the distortion.
  assert float(km.lloyd(x, init, iterations=1).distortion) >= float(res.distortion)


def test_residual_kmeans_levels_reduce_error():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(300, 4)).astype(np.float32))
  cents, codes = km.residual_kmeans(x, 8, 3, jax.random.PRNGKey(0), iterations=30)
  assert cents.shape == (3, 8, 4) and codes.shape == (300, 3)
  errs = []
  for m in range(1, 4):
    rec = rq.decode_codes(codes[:, :m], cents[:m])
    errs.append(float(jnp.mean(jnp.sum((x - rec) ** 2, -1))))
  assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("shared", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_tokenizer_kmeans_init_lowers_quantization_distortion(shared):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(128, 24)).astype(np.float32))
  cfg = dataclasses.replace(tc.TokenizerConfig(), hidden_dims=(16,), latent_dim=8,
                            codebook_size=8, num_levels=3, shared_codebook=shared,
                            kmeans_iters=20)
  model = rqvae.make_model(cfg, 24)
  params = rqvae.init_params(model, jax.random.PRNGKey(0))
  z = model.apply({"params": params}, x, method=rqvae.RQVAE.encode)

  def err(p):
    q = rq.residual_quantize(z, p["codebooks"], 3)
    return float(jnp.mean(jnp.sum((z - q.quantized) ** 2, -1)))

  init = jax.jit(lambda p, b, k: tt.kmeans_init(model, p, b, cfg, k))(
      params, x, jax.random.PRNGKey(1))
  assert init["codebooks"].shape == params["codebooks"].shape
  assert err(init) < 0.5 * err(params)
