"""COVE: co-evolving cascaded vector quantization of ID embeddings (COVE §3), pure Flax.

H quantizers with codebooks of v^1 > v^2 > ... entries (fine to coarse, §3.1). Quantizer i
reads the output of quantizer i-1 (eq. 2: z^(0) = z, z^(i-1) = z_q^(i-1)) and returns its
nearest code by squared L2 (eq. 1) as z_q^(i) = e + z^(i-1) - sg(z^(i-1)): the value is the
code e, the gradient w.r.t. z^(i-1) is the identity (eq. 5's straight-through estimator), and
the gradient w.r.t. e is the identity too, so the recommendation loss trains the codebooks
(§3.2, Fig. 1) besides L_quant's codebook term. The codes are average-pooled (eq. 3) and
added back with a weighted residual (eq. 4):

  z̄ = (1/H) Σ_i z_q^(i),      z_c = z + α z̄

The quantization loss (eq. 6), summed over levels and averaged over the entities:

  L_quant = Σ_i ‖sg(z^(i-1)) − z_q^(i)‖² + β Σ_i ‖z^(i-1) − sg(z_q^(i))‖²

Codebooks and embeddings both start random and co-evolve with the host model's loss
(§3.2); a host adds ω_q · L_quant to its recommendation loss (eq. 7). NOT IMPLEMENTED: the
"codebook classification loss" weighted by ω_c in §4.6 (Table 5, Fig. 4): §3 never defines it
(no equation, target or classifier), so no faithful reading exists; L_seq here is eq. 7. To plug COVE into any
Flax model: create `Cove(CoveConfig(...))` in the host's setup, pass the entity embedding
table (or a batch of embeddings) through it, use `out.fused` where the embeddings were used,
and add `config.omega_q * out.loss` to the loss (cost_jax.baselines.sasrec does this).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cost_jax.io import UserError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CoveConfig:
  """COVE's settings; defaults are the paper's."""

  # Entries per level, fine to coarse (§3.1: v^i > v^j for i < j). Table 5 ranges over 10 to
  # 8,000 entries and 1 to 3 levels; (500, 50) is its best two-level setting on Goodreads
  # (§4.6), (500, 10) on Zhihu.
  codebook_sizes: tuple[int, ...] = (500, 50)
  alpha: float = 1.0    # residual weight of the pooled codes, eq. 4 (Table 5 fixes 1.0)
  beta: float = 1.0     # commitment cost, eq. 6 (Table 5 fixes 1.0; §4.6: 1.0 Zhihu, 0.5 Goodreads)
  omega_q: float = 1.0  # weight of L_quant in the host's loss, eq. 7 (Table 5 fixes 1.0)
  init_scale: float = 1.0  # codebooks start N(0, (init_scale / sqrt(d))^2): random (§3.2)

  def __post_init__(self):
    sizes = tuple(int(v) for v in self.codebook_sizes)
    object.__setattr__(self, "codebook_sizes", sizes)
    if not sizes or any(v < 1 for v in sizes):
      raise UserError(f"cove.codebook_sizes: need one or more positive sizes, got {sizes}")
    if any(a <= b for a, b in zip(sizes, sizes[1:])):
      raise UserError(f"cove.codebook_sizes: must shrink fine to coarse (COVE §3.1: v^i > v^j "
                      f"for i < j), got {sizes}")
    for name in ("alpha", "beta", "omega_q"):
      if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
        raise UserError(f"cove.{name}: must be a finite number >= 0, got {getattr(self, name)}")


class CoveOutput(NamedTuple):
  fused: Array           # z_c = z + α z̄, [..., d]
  codes: Array           # int32 [..., H], fine to coarse
  quantized: Array       # z_q^(i), [..., H, d] (straight-through)
  loss: Array            # L_quant, eq. 6, mean over entities (scalar)


def nearest_code(z: Array, codebook: Array) -> Array:
  """eq. 1: argmin_i ‖z − e_i‖² for z [..., d], codebook [k, d] -> int32 [...]."""
  d2 = (jnp.sum(z * z, axis=-1, keepdims=True) - 2.0 * z @ codebook.T
        + jnp.sum(codebook * codebook, axis=-1))
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def cascade(z: Array, codebooks: tuple[Array, ...], alpha: float, beta: float) -> CoveOutput:
  """The whole COVE forward (eqs. 1-6) as a pure function of z and the codebooks."""
  prev = z
  codes, quantized, loss = [], [], jnp.zeros((), jnp.float32)
  for codebook in codebooks:
    idx = nearest_code(jax.lax.stop_gradient(prev), codebook)
    e = jnp.take(codebook, idx, axis=0)
    # eq. 6, per entity: codebook term pulls e to sg(z^(i-1)); commitment pulls z^(i-1) to sg(e).
    vq = jnp.sum(jnp.square(jax.lax.stop_gradient(prev) - e), axis=-1)
    commit = jnp.sum(jnp.square(prev - jax.lax.stop_gradient(e)), axis=-1)
    loss = loss + jnp.mean(vq + beta * commit)
    # Forward value e; backward: identity to z^(i-1) (eq. 5's straight-through) AND to the
    # selected code e, so that L_rec reaches the codebooks through z̄ and z_c (eqs. 3-4): §3.2
    # has codebooks and entity embeddings "jointly optimized through an external
    # recommendation task". (prev + sg(e - prev) would give e no L_rec gradient at all.)
    zq = e + prev - jax.lax.stop_gradient(prev)
    codes.append(idx)
    quantized.append(zq)
    prev = zq  # eq. 2: the next quantizer reads this one's output
  q = jnp.stack(quantized, axis=-2)
  pooled = jnp.mean(q, axis=-2)  # eq. 3
  return CoveOutput(fused=z + alpha * pooled, codes=jnp.stack(codes, axis=-1), quantized=q,
                    loss=loss)


class Cove(nn.Module):
  """Cascaded codebooks as Flax params ("codebook_0", ... fine to coarse)."""

  config: CoveConfig

  @nn.compact
  def __call__(self, z: Array) -> CoveOutput:
    d = z.shape[-1]
    std = self.config.init_scale / np.sqrt(d)
    books = tuple(self.param(f"codebook_{i}", nn.initializers.normal(std), (v, d), jnp.float32)
                  for i, v in enumerate(self.config.codebook_sizes))
    return cascade(z, books, self.config.alpha, self.config.beta)


def usage(codes: np.ndarray, sizes: tuple[int, ...]) -> list[float]:
  """Share of each level's entries used by at least one entity (COVE's code usage)."""
  codes = np.asarray(codes)
  return [float(len(np.unique(codes[:, i]))) / float(v) for i, v in enumerate(sizes)]
