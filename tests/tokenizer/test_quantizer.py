"""Residual quantizer: hand-checked codes and residuals, L_rq and its straight-through gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.tokenizer import quantizer as rq

# Level-0 and level-1 codebooks (2-D), and three points; codes/residuals worked out by hand:
#   z1 = (2.4, 0.1):  level 0 -> code 1 (2,0), r1 = (0.4, 0.1); level 1 -> code 0 (0.5,0),
#                     r2 = (-0.1, 0.1); z_hat = (2.5, 0)
#   z2 = (-0.3, 2.6): level 0 -> code 2 (0,2), r1 = (-0.3, 0.6); level 1 -> code 1 (0,0.5),
#                     r2 = (-0.3, 0.1); z_hat = (0, 2.5)
#   z3 = (-0.6, 0.2): level 0 -> code 0 (0,0), r1 = (-0.6, 0.2); level 1 -> code 2 (-0.5,0),
#                     r2 = (-0.1, 0.2); z_hat = (-0.5, 0)
CB = np.array([[[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]],
               [[0.5, 0.0], [0.0, 0.5], [-0.5, 0.0]]], np.float32)
Z = np.array([[2.4, 0.1], [-0.3, 2.6], [-0.6, 0.2]], np.float32)


def test_two_level_quantization_by_hand():
  out = rq.residual_quantize(jnp.asarray(Z), jnp.asarray(CB), 2)
  np.testing.assert_array_equal(out.codes, [[1, 0], [2, 1], [0, 2]])
  np.testing.assert_allclose(out.residuals[:, 0], Z, atol=1e-6)
  np.testing.assert_allclose(out.residuals[:, 1], [[0.4, 0.1], [-0.3, 0.6], [-0.6, 0.2]], atol=1e-6)
  np.testing.assert_allclose(out.quantized, [[2.5, 0.0], [0.0, 2.5], [-0.5, 0.0]], atol=1e-6)
  np.testing.assert_allclose(Z - out.quantized, [[-0.1, 0.1], [-0.3, 0.1], [-0.1, 0.2]], atol=1e-6)
  # distances of z1 to the level-0 codes: 5.77, 0.17, 9.37
  np.testing.assert_allclose(out.distances[0, 0], [5.77, 0.17, 9.37], atol=1e-5)
  np.testing.assert_allclose(rq.decode_codes(out.codes, jnp.asarray(CB)), out.quantized, atol=1e-6)


def test_shared_codebook_uses_the_same_codes_at_every_level():
  shared = jnp.asarray(CB[:1])
  out = rq.residual_quantize(jnp.asarray(Z[:1]), shared, 3)
  # z1: (2.4,0.1) -> 1 (2,0); r=(0.4,0.1) -> 0 (0,0); r=(0.4,0.1) -> 0 again.
  np.testing.assert_array_equal(out.codes, [[1, 0, 0]])
  np.testing.assert_allclose(out.residuals[0, 2], [0.4, 0.1], atol=1e-6)


def test_squared_distances_match_brute_force():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
  ref = ((a[:, None] - b[None]) ** 2).sum(-1)
  np.testing.assert_allclose(rq.squared_distances(jnp.asarray(a), jnp.asarray(b)), ref, atol=1e-5)


def test_rq_loss_value_by_hand():
  out = rq.residual_quantize(jnp.asarray(Z), jnp.asarray(CB), 2)
  # per item sum_l ||r_l - e_l||^2: 0.17 + 0.02, 0.45 + 0.10, 0.40 + 0.05; mean 1.19/3; x (1 + beta)
  loss = rq.rq_loss(out.residuals, out.selected, beta=0.25)
  assert float(loss) == pytest.approx(1.19 / 3 * 1.25, abs=1e-6)


def _loss_from(z, cb, beta=0.25):
  out = rq.residual_quantize(z, cb, 2)
  return rq.rq_loss(out.residuals, out.selected, beta)


def test_rq_loss_gradients():
  beta = 0.25
  gz, gcb = jax.grad(_loss_from, argnums=(0, 1))(jnp.asarray(Z), jnp.asarray(CB), beta)
  codes = np.array([[1, 0], [2, 1], [0, 2]])
  b = len(Z)
  # Reference: r_l - e_l per item and level (hand-derived residual errors).
  r = np.stack([Z, Z - CB[0][codes[:, 0]]], 1)
  e = np.stack([CB[0][codes[:, 0]], CB[1][codes[:, 1]]], 1)
  err = r - e                                            # [B, 2, d]
  # Encoder side: only the commitment term, d/dz = 2 beta sum_l (r_l - e_l) / B.
  np.testing.assert_allclose(gz, 2 * beta * err.sum(1) / b, atol=1e-6)
  # Codebook side: only the codebook term -2 (r_l - e_l) / B on the selected code of level l;
  # r_1 = z - sg(e_0), so the level-1 commitment term does not reach the level-0 code.
  ref = np.zeros_like(CB)
  for i in range(b):
    ref[0, codes[i, 0]] += -2 * err[i, 0] / b
    ref[1, codes[i, 1]] += -2 * err[i, 1] / b
  np.testing.assert_allclose(gcb, ref, atol=1e-6)


def test_straight_through_gradient_is_identity():
  z = jnp.asarray(Z)
  w = jnp.asarray(np.arange(6, dtype=np.float32).reshape(3, 2))

  def f(z):
    q = rq.residual_quantize(z, jnp.asarray(CB), 2).quantized
    return jnp.sum(rq.straight_through(z, q) * w)

  np.testing.assert_allclose(jax.grad(f)(z), w)
  q = rq.residual_quantize(z, jnp.asarray(CB), 2).quantized
  np.testing.assert_allclose(rq.straight_through(z, q), q, atol=1e-6)


def test_code_counts():
  counts = rq.code_counts(jnp.asarray([[1, 0], [2, 1], [1, 2]]), 3)
  np.testing.assert_array_equal(counts, [[0, 2, 1], [1, 1, 1]])


def test_rq_loss_mean_reduction():
  out = rq.residual_quantize(jnp.asarray(Z), jnp.asarray(CB), 2)
  # averaged over the 2 latent features instead of summed
  loss = rq.rq_loss(out.residuals, out.selected, beta=0.25, reduction="mean")
  assert float(loss) == pytest.approx(1.19 / 3 * 1.25 / 2, abs=1e-6)


def test_rq_loss_gradients_stop_at_earlier_levels_codes():
  """Hand computation: z = 1, level-0 code 0.6, level-1 code 0.3, beta = 1, sum reduction.

  r0 = 1, e0 = 0.6, r1 = r0 - sg(e0) = 0.4, e1 = 0.3.
  dL/de0 = -2 (r0 - e0) = -0.8 (codebook term only; the level-1 commitment term must not reach it)
  dL/de1 = -2 (r1 - e1) = -0.2
  dL/dz  = 2 (r0 - e0) + 2 (r1 - e1) = 1.0 (commitment at both levels)
  """
  books = jnp.array([[[0.6], [5.0]], [[0.3], [-5.0]]])

  def loss(z, books):
    out = rq.residual_quantize(z, books, 2)
    return rq.rq_loss(out.residuals, out.selected, beta=1.0, reduction="sum")

  gz, gb = jax.grad(loss, argnums=(0, 1))(jnp.array([[1.0]]), books)
  np.testing.assert_allclose(np.asarray(gb)[:, :, 0], [[-0.8, 0.0], [-0.2, 0.0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(gz), [[1.0]], atol=1e-6)
