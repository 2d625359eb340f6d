"""Residual quantization (RQ) as pure, jittable functions.

CoST §3.1 / TIGER §3.1.1: r_0 = z; at level l the code is c_l = argmin_k ||r_l - e_l^k||,
and r_{l+1} = r_l - e_l^{c_l}. The quantized latent is z_hat = sum_l e_l^{c_l}; gradients pass
to the encoder with the straight-through estimator z + sg(z_hat - z).

Codebooks are stored as an array [num_books, K, d]: num_books = M (one per level, TIGER) or
1 (one shared across levels, CoST §4.1). `level_codebook` picks the right one for a level.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RQOutput(NamedTuple):
  codes: jax.Array          # int32 [B, M]
  quantized: jax.Array      # [B, d]   z_hat = sum_l e_l^{c_l} (no straight-through)
  residuals: jax.Array      # [B, M, d] r_0 .. r_{M-1} (the vector quantized at each level)
  selected: jax.Array       # [B, M, d] e_l^{c_l}
  distances: jax.Array      # [B, M, K] squared distance of r_l to every code of its level


def level_codebook(codebooks: jax.Array, level: int) -> jax.Array:
  """[num_books, K, d] -> the [K, d] codebook used at `level` (shared if num_books == 1)."""
  return codebooks[min(level, codebooks.shape[0] - 1)]


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """||a_i - b_j||^2 for a [N, d], b [K, d] -> [N, K], via ||a||^2 - 2ab + ||b||^2 (one matmul)."""
  a2 = jnp.sum(a * a, axis=-1, keepdims=True)
  b2 = jnp.sum(b * b, axis=-1)
  d = a2 - 2.0 * (a @ b.T) + b2[None, :]
  return jnp.maximum(d, 0.0)


def residual_quantize(z: jax.Array, codebooks: jax.Array, num_levels: int) -> RQOutput:
  """Greedy residual quantization of z [B, d] with `num_levels` levels."""
  r = z
  codes, residuals, selected, dists = [], [], [], []
  for level in range(num_levels):
    cb = level_codebook(codebooks, level)
    d = squared_distances(r, cb)
    c = jnp.argmin(d, axis=-1).astype(jnp.int32)
    e = jnp.take(cb, c, axis=0)
    codes.append(c)
    residuals.append(r)
    selected.append(e)
    dists.append(d)
    # The next residual subtracts a stopped code: the commitment term ||r_l - sg(e_l)||^2 then
    # moves only the encoder, never the codebooks of earlier levels (standard residual VQ).
    r = r - jax.lax.stop_gradient(e)
  selected_arr = jnp.stack(selected, axis=1)
  return RQOutput(codes=jnp.stack(codes, axis=1),
                  quantized=jnp.sum(selected_arr, axis=1),
                  residuals=jnp.stack(residuals, axis=1),
                  selected=selected_arr,
                  distances=jnp.stack(dists, axis=1))


def straight_through(z: jax.Array, quantized: jax.Array) -> jax.Array:
  """Forward value `quantized`, gradient w.r.t. z is the identity."""
  return z + jax.lax.stop_gradient(quantized - z)


def rq_loss(residuals: jax.Array, selected: jax.Array, beta: float = 0.25,
            reduction: str = "sum") -> jax.Array:
  """L_rq = sum_l ||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2 (CoST eq. 3), mean over the batch.

  The first (codebook) term moves codes toward the residuals; the second (commitment) term moves
  the encoder output toward its codes. reduction "sum": squared norms summed over the latent
  dimension (the formula); "mean": averaged over it (still summed over levels).
  """
  sg = jax.lax.stop_gradient
  reduce = jnp.sum if reduction == "sum" else jnp.mean
  codebook = jnp.sum(reduce((sg(residuals) - selected) ** 2, axis=-1), axis=-1)
  commit = jnp.sum(reduce((residuals - sg(selected)) ** 2, axis=-1), axis=-1)
  return jnp.mean(codebook + beta * commit)


def code_counts(codes: jax.Array, codebook_size: int) -> jax.Array:
  """int [B, M] codes -> float32 [M, K] histogram per level."""
  return jnp.sum(jax.nn.one_hot(codes, codebook_size, dtype=jnp.float32), axis=0)


def decode_codes(codes: jax.Array, codebooks: jax.Array) -> jax.Array:
  """int [B, M] codes -> z_hat [B, d] = sum_l e_l^{c_l}."""
  out = 0.0
  for level in range(codes.shape[-1]):
    out = out + jnp.take(level_codebook(codebooks, level), codes[..., level], axis=0)
  return out
