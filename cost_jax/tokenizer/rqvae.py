"""The RQ-VAE tokenizer network in Flax (CoST §3.1 / §4.1, TIGER §3.1.1 / §4.1.3).

MLP encoder (hidden 512, 256, 128, ReLU) -> latent z of size d -> residual quantizer with M levels
of K codes -> MLP decoder (128, 256, 512, ReLU) -> reconstruction x_hat of the input size.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cost_jax.tokenizer import quantizer as rq


class MLP(nn.Module):
  """Dense layers with ReLU between them (none after the last)."""

  features: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, f in enumerate(self.features):
      x = nn.Dense(f, name=f"dense_{i}")(x)
      if i < len(self.features) - 1:
        x = nn.relu(x)
    return x


class RQVAE(nn.Module):
  """Encoder, residual quantizer (codebooks param [num_books, K, d]) and decoder."""

  input_dim: int
  latent_dim: int = 96
  hidden_dims: Sequence[int] = (512, 256, 128)
  codebook_size: int = 64
  num_levels: int = 3
  shared_codebook: bool = True

  def setup(self):
    self.encoder = MLP(tuple(self.hidden_dims) + (self.latent_dim,))
    self.decoder = MLP(tuple(reversed(tuple(self.hidden_dims))) + (self.input_dim,))
    num_books = 1 if self.shared_codebook else self.num_levels
    self.codebooks = self.param(
        "codebooks", nn.initializers.variance_scaling(1.0, "fan_in", "uniform", in_axis=-1,
                                                      out_axis=-2),
        (num_books, self.codebook_size, self.latent_dim))

  def encode(self, x: jax.Array) -> jax.Array:
    return self.encoder(x)

  def decode(self, z_q: jax.Array) -> jax.Array:
    return self.decoder(z_q)

  def quantize(self, z: jax.Array) -> rq.RQOutput:
    return rq.residual_quantize(z, self.codebooks, self.num_levels)

  def get_codebooks(self) -> jax.Array:
    return self.codebooks

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    z = self.encode(x)
    q = self.quantize(z)
    x_hat = self.decode(rq.straight_through(z, q.quantized))
    return {"z": z, "x_hat": x_hat, "codes": q.codes, "residuals": q.residuals,
            "selected": q.selected, "distances": q.distances}


def make_model(cfg, input_dim: int) -> RQVAE:
  """RQVAE from a cost_jax.tokenizer.config.TokenizerConfig."""
  return RQVAE(input_dim=input_dim, latent_dim=cfg.latent_dim, hidden_dims=tuple(cfg.hidden_dims),
               codebook_size=cfg.codebook_size, num_levels=cfg.num_levels,
               shared_codebook=cfg.shared_codebook)


def init_params(model: RQVAE, rng: jax.Array) -> dict:
  return model.init(rng, jnp.zeros((2, model.input_dim), jnp.float32))["params"]
