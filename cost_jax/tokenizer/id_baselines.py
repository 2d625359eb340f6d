"""Baseline semantic IDs without a network, shaped like the RQ-VAE ones.

  random    TIGER §4.3.3 / CoST Table 2: each level's code uniform in {0..K-1}.
  lsh       TIGER §4.3.2 (SimHash): per level h hyperplanes w ~ N(0, I);
            c = sum_{i=1..h} 2^{i-1} 1[w_i . x > 0]; m independent levels (TIGER: h = 8, m = 4).
  rqkmeans  residual k-means: k-means on x, then on the residuals, M levels (TIGER §3.1.2 mentions
            hierarchical k-means as an alternative).

Each fitted baseline can encode new items (`codes`), gives a `scorer` for de-duplication, and
saves / loads its parameters as an .npz.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cost_jax.tokenizer import kmeans as km
from cost_jax.tokenizer import quantizer as rq
from cost_jax.tokenizer import dedup as sid


@dataclasses.dataclass
class RandomIDs:
  sizes: tuple[int, ...]
  seed: int = 0

  def codes(self, n: int, offset: int = 0) -> np.ndarray:
    """n random IDs; `offset` (items encoded before) gives new items a fresh stream."""
    rng = np.random.default_rng([self.seed, offset])
    return np.stack([rng.integers(0, k, size=n) for k in self.sizes], axis=1).astype(np.int32)

  def scorer(self, n: int) -> sid.Scorer:
    return sid.RandomScorer(self.sizes, seed=self.seed + 1)

  def arrays(self) -> dict[str, np.ndarray]:
    return {"sizes": np.asarray(self.sizes, np.int64), "seed": np.asarray(self.seed)}

  @classmethod
  def from_arrays(cls, a) -> "RandomIDs":
    return cls(tuple(int(s) for s in a["sizes"]), int(a["seed"]))


@dataclasses.dataclass
class LSH:
  hyperplanes: np.ndarray  # [m, h, D]

  @classmethod
  def fit(cls, dim: int, bits: int = 8, levels: int = 4, seed: int = 0) -> "LSH":
    rng = np.random.default_rng(seed)
    return cls(rng.standard_normal((levels, bits, dim)).astype(np.float32))

  @property
  def sizes(self) -> tuple[int, ...]:
    m, h, _ = self.hyperplanes.shape
    return (2 ** h,) * m

  def projections(self, x: np.ndarray) -> np.ndarray:
    """w . x for every level and hyperplane: [N, m, h]."""
    return np.asarray(_project(jnp.asarray(x, jnp.float32), jnp.asarray(self.hyperplanes)))

  def codes(self, x: np.ndarray) -> np.ndarray:
    p = self.projections(x)
    weights = 2 ** np.arange(p.shape[-1], dtype=np.int64)
    return ((p > 0).astype(np.int64) @ weights).astype(np.int32)

  def scorer(self, x: np.ndarray) -> sid.Scorer:
    return sid.LSHScorer(self.projections(x))

  def arrays(self) -> dict[str, np.ndarray]:
    return {"hyperplanes": self.hyperplanes}

  @classmethod
  def from_arrays(cls, a) -> "LSH":
    return cls(np.asarray(a["hyperplanes"], np.float32))


@jax.jit
def _project(x: jax.Array, w: jax.Array) -> jax.Array:
  return jnp.einsum("nd,mhd->nmh", x, w)


@dataclasses.dataclass
class ResidualKMeans:
  centroids: np.ndarray  # [M, K, D]

  @classmethod
  def fit(cls, x: np.ndarray, k: int, levels: int, seed: int = 0, iterations: int = 100
          ) -> "ResidualKMeans":
    cents, _ = km.residual_kmeans(jnp.asarray(x, jnp.float32), k, levels,
                                  jax.random.PRNGKey(seed), iterations)
    return cls(np.asarray(cents))

  @property
  def sizes(self) -> tuple[int, ...]:
    return (self.centroids.shape[1],) * self.centroids.shape[0]

  def codes(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(_rq_codes(jnp.asarray(x, jnp.float32), jnp.asarray(self.centroids)))

  def reconstruct(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(rq.decode_codes(jnp.asarray(self.codes(x)), jnp.asarray(self.centroids)))

  def scorer(self, x: np.ndarray) -> sid.Scorer:
    return sid.ResidualScorer(x, list(self.centroids))

  def arrays(self) -> dict[str, np.ndarray]:
    return {"centroids": self.centroids}

  @classmethod
  def from_arrays(cls, a) -> "ResidualKMeans":
    return cls(np.asarray(a["centroids"], np.float32))


@jax.jit
def _rq_codes(x: jax.Array, centroids: jax.Array) -> jax.Array:
  return rq.residual_quantize(x, centroids, centroids.shape[0]).codes


BASELINES = {"random": RandomIDs, "lsh": LSH, "rqkmeans": ResidualKMeans}
