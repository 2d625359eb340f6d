"""Tokenizer training losses (CoST §3.1.1-3.1.2, TIGER §3.1.1).

  rqvae       L_re = L_mse + L_rq                               (CoST eq. 1)
  cost        L_co = alpha * L_cl + L_rq                        (CoST eq. 5)
  rqvae+cost  L_re + L_co = L_mse + alpha * L_cl + 2 * L_rq      (the literal sum of eq. 1 and 5)

L_mse = ||x - x_hat||^2 summed over features, mean over the batch (CoST eq. 2).
L_cl is InfoNCE (CoST eq. 4): item i's input x_i must pick its own reconstruction x_hat_i
among all reconstructions of the batch, logits = cos(x_i, x_hat_j) / tau.
L_rq is in cost_jax.quantizer.rq_loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("rqvae", "cost", "rqvae+cost")


def mse_loss(x: jax.Array, x_hat: jax.Array, reduction: str = "sum") -> jax.Array:
  """||x - x_hat||^2 summed ("sum") or averaged ("mean") over features, mean over the batch."""
  reduce = jnp.sum if reduction == "sum" else jnp.mean
  return jnp.mean(reduce((x - x_hat) ** 2, axis=-1))


def l2_normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def info_nce(x: jax.Array, x_hat: jax.Array, tau: float = 0.1) -> jax.Array:
  """Mean over i of -log softmax_j(cos(x_i, x_hat_j) / tau)[i]."""
  logits = (l2_normalize(x) @ l2_normalize(x_hat).T) / tau
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.diagonal(log_probs))


def total_loss(kind: str, x: jax.Array, x_hat: jax.Array, l_rq: jax.Array, *, alpha: float = 0.1,
               tau: float = 0.1, reduction: str = "sum"
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The selected objective and its parts (for logging)."""
  l_mse = mse_loss(x, x_hat, reduction)
  l_cl = info_nce(x, x_hat, tau)
  if kind == "rqvae":
    loss = l_mse + l_rq
  elif kind == "cost":
    loss = alpha * l_cl + l_rq
  elif kind == "rqvae+cost":
    loss = (l_mse + l_rq) + (alpha * l_cl + l_rq)
  else:
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
  return loss, {"loss": loss, "mse": l_mse, "infonce": l_cl, "rq": l_rq}
