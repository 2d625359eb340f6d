"""Gin at the edge of stage 2: the configurables, the paper constants, reading gin files.

- `TrainConfig` and `TransformerConfig` are registered with gin (without decorating them),
  so `TrainConfig.seed = 1` and `TransformerConfig.emb_dim = 64` bind them, and T5X's
  dynamic registration (`network.TransformerConfig` in gin/t5x/model.gin) finds the same class.
- Every TrainConfig default is also a gin constant `cost_jax.TrainConfig.<field>`:
  gin/setups/tiger.gin reads TIGER's schedule from there for T5X, so the paper values are
  written once, in the dataclass.
- `configs_from_gin(files, bindings)`: (TrainConfig, TransformerConfig, operative gin text),
  parsed by cost_jax.gin_cli (the flags and parser every CLI shares).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import gin

from cost_jax import gin_cli
from cost_jax.io import UserError
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq.network import TransformerConfig


def _register() -> None:
  gin_cli.register(TrainConfig, TransformerConfig)
  for f in dataclasses.fields(TrainConfig):
    try:
      gin.constant(f"cost_jax.TrainConfig.{f.name}", f.default)
    except ValueError:
      pass


_register()


def configs_from_gin(gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()):
  """(TrainConfig, TransformerConfig, operative gin text) from gin files + bindings.

  Clears the global gin config before and after, so it can be called many times.
  """
  with gin_cli.fresh():
    gin_cli.parse(gin_files, gin_bindings)
    for cls in (TrainConfig, TransformerConfig):
      gin_cli.bindings(cls)  # type-checks what was bound
    try:
      train_config = gin.get_configurable(TrainConfig)()
      model_config = gin.get_configurable(TransformerConfig)()
    except (TypeError, ValueError) as e:
      raise UserError(f"gin: {e}") from None
    operative = gin.config_str()
  return train_config, model_config, operative
