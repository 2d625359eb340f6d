"""k-means (Lloyd) in JAX, used to initialise codebooks and for the residual k-means baseline.

CoST preprint §3.1.1 / TIGER §3.1.1: the codebook of each level is initialised with the
centroids of k-means (100 iterations) run on the first training batch.
Empty clusters are re-seeded with the points farthest from their centroid, so all k
centroids stay in use.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cost_jax.tokenizer.quantizer import squared_distances


class KMeansResult(NamedTuple):
  centroids: jax.Array    # [k, d]
  assignments: jax.Array  # int32 [N]
  distortion: jax.Array   # mean squared distance of each point to its centroid


def init_from_points(x: jax.Array, k: int, rng: jax.Array) -> jax.Array:
  """k distinct data points as initial centroids (requires N >= k)."""
  idx = jax.random.choice(rng, x.shape[0], (k,), replace=False)
  return x[idx]


def distortion(x: jax.Array, centroids: jax.Array) -> jax.Array:
  """Mean over points of the squared distance to the nearest centroid."""
  return jnp.mean(jnp.min(squared_distances(x, centroids), axis=-1))


@functools.partial(jax.jit, static_argnames=("iterations",))
def lloyd(x: jax.Array, centroids: jax.Array, iterations: int = 100) -> KMeansResult:
  """`iterations` Lloyd steps from `centroids` [k, d] on points x [N, d]."""
  k = centroids.shape[0]

  def step(_, c):
    d = squared_distances(x, c)
    a = jnp.argmin(d, axis=-1)
    one_hot = jax.nn.one_hot(a, k, dtype=x.dtype)           # [N, k]
    counts = jnp.sum(one_hot, axis=0)                        # [k]
    sums = one_hot.T @ x                                     # [k, d]
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    # Empty clusters take the points farthest from their current centroid.
    empty = counts == 0
    point_d = jnp.min(d, axis=-1)
    far = jnp.argsort(-point_d)[: k]
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
    return jnp.where(empty[:, None], x[far[rank]], means)

  c = jax.lax.fori_loop(0, iterations, step, centroids)
  d = squared_distances(x, c)
  return KMeansResult(c, jnp.argmin(d, axis=-1).astype(jnp.int32), jnp.mean(jnp.min(d, axis=-1)))


@functools.partial(jax.jit, static_argnames=("k", "iterations"))
def kmeans(x: jax.Array, k: int, rng: jax.Array, iterations: int = 100) -> KMeansResult:
  """k-means on x [N, d] (N >= k) from k random distinct points."""
  x = jnp.asarray(x, jnp.float32)
  return lloyd(x, init_from_points(x, k, rng), iterations=iterations)


@functools.partial(jax.jit, static_argnames=("k", "num_levels", "iterations"))
def residual_kmeans(x: jax.Array, k: int, num_levels: int, rng: jax.Array,
                    iterations: int = 100) -> tuple[jax.Array, jax.Array]:
  """k-means on x, then on the residuals, `num_levels` times.

  Returns (centroids [num_levels, k, d], codes int32 [N, num_levels]).
  """
  r = jnp.asarray(x, jnp.float32)
  cents, codes = [], []
  for key in jax.random.split(rng, num_levels):
    res = kmeans(r, k, key, iterations)
    cents.append(res.centroids)
    codes.append(res.assignments)
    r = r - res.centroids[res.assignments]
  return jnp.stack(cents), jnp.stack(codes, axis=1)
