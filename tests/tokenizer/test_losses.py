"""Tokenizer losses against NumPy references."""

import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.tokenizer import losses


def _info_nce_numpy(x, x_hat, tau):
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  hn = x_hat / np.linalg.norm(x_hat, axis=1, keepdims=True)
  total = 0.0
  for i in range(len(x)):
    logits = np.array([xn[i] @ hn[j] / tau for j in range(len(x))])
    total += -(logits[i] - np.log(np.sum(np.exp(logits))))
  return total / len(x)


def test_info_nce_matches_numpy():
  rng = np.random.default_rng(0)
  x, x_hat = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  for tau in (0.1, 0.5, 1.0):
    got = float(losses.info_nce(jnp.asarray(x), jnp.asarray(x_hat), tau))
    assert got == pytest.approx(_info_nce_numpy(x, x_hat, tau), rel=1e-5)


def test_info_nce_hand_value():
  # x_hat_i = x_i for orthonormal x: logits = I / tau; loss = -log(e^{1/tau} / (e^{1/tau} + n-1)).
  x = np.eye(3)
  tau = 0.5
  ref = -np.log(np.exp(2.0) / (np.exp(2.0) + 2.0))
  assert float(losses.info_nce(jnp.asarray(x), jnp.asarray(x), tau)) == pytest.approx(ref, rel=1e-6)


def test_mse_is_sum_over_features_mean_over_batch():
  x = np.array([[1.0, 2.0], [0.0, 0.0]])
  h = np.array([[0.0, 0.0], [3.0, 4.0]])
  assert float(losses.mse_loss(jnp.asarray(x), jnp.asarray(h))) == pytest.approx((5 + 25) / 2)


def test_total_loss_combinations():
  rng = np.random.default_rng(1)
  x, h = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  rq = 0.7
  mse = float(np.mean(np.sum((x - h) ** 2, 1)))
  nce = _info_nce_numpy(x, h, 0.1)
  for kind, ref in (("rqvae", mse + rq), ("cost", 0.1 * nce + rq),
                    ("rqvae+cost", mse + rq + 0.1 * nce + rq)):
    loss, parts = losses.total_loss(kind, jnp.asarray(x), jnp.asarray(h), jnp.asarray(rq),
                                    alpha=0.1, tau=0.1)
    assert float(loss) == pytest.approx(ref, rel=1e-5), kind
    assert float(parts["infonce"]) == pytest.approx(nce, rel=1e-5)
  with pytest.raises(ValueError):
    losses.total_loss("nope", jnp.asarray(x), jnp.asarray(h), jnp.asarray(rq))


def test_mean_reduction_divides_by_features():
  x = np.array([[1.0, 2.0], [0.0, 0.0]])
  h = np.array([[0.0, 0.0], [3.0, 4.0]])
  assert float(losses.mse_loss(jnp.asarray(x), jnp.asarray(h), "mean")) == pytest.approx(30 / 4)
