"""Gin at the edge of stage 2: the configurables, the paper constants, reading gin files.

- `TrainConfig` and `TransformerConfig` are registered with gin (without decorating them),
  so `TrainConfig.seed = 1` and `TransformerConfig.emb_dim = 64` bind them, and T5X's
  dynamic registration (`network.TransformerConfig` in gin/t5x/model.gin) finds the same class.
- Every TrainConfig default is also a gin constant `cost_jax.TrainConfig.<field>`:
  gin/setups/tiger.gin reads TIGER's schedule from there for T5X, so the paper values are
  written once, in the dataclass.
- `configs_from_gin(files, bindings)`: (TrainConfig, TransformerConfig, operative gin text).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Sequence

import gin

from cost_jax.io import UserError
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq.network import TransformerConfig


def _register() -> None:
  for cls in (TrainConfig, TransformerConfig):
    try:
      gin.register(cls, module=cls.__module__)
    except ValueError:  # registered already (a module reload)
      pass
  for f in dataclasses.fields(TrainConfig):
    try:
      gin.constant(f"cost_jax.TrainConfig.{f.name}", f.default)
    except ValueError:
      pass


_register()


@contextlib.contextmanager
def _fresh_gin():
  """Clears gin before and after, so repeated calls in one process do not leak bindings."""
  with gin.unlock_config():
    gin.clear_config()
  try:
    yield
  finally:
    with gin.unlock_config():
      gin.clear_config()


def _repo_gin_dirs() -> list[str]:
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  dirs = []
  for d in (os.getcwd(), root, os.path.join(root, "gin")):
    if os.path.isdir(d) and d not in dirs:
      dirs.append(d)
  return dirs


class _DropGinPathNoise(logging.Filter):
  """gin logs 'Path not found' for every search-path miss before a hit; hide those."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith("Path not found")


def _resolve_gin_file(f: str) -> str:
  for d in [""] + _repo_gin_dirs():
    p = os.path.join(d, f) if d else f
    if os.path.isfile(p):
      return os.path.abspath(p)
  raise UserError(f"{f}: gin file not found (searched {', '.join(_repo_gin_dirs())})")


def configs_from_gin(gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()):
  """(TrainConfig, TransformerConfig, operative gin text) from gin files + bindings.

  Clears the global gin config before and after, so it can be called many times.
  """
  files = [_resolve_gin_file(f) for f in gin_files]
  noise = _DropGinPathNoise()
  logging.getLogger().addFilter(noise)
  try:
    with _fresh_gin():
      for d in _repo_gin_dirs():
        gin.add_config_file_search_path(d)
      try:
        gin.parse_config_files_and_bindings(files, list(gin_bindings), finalize_config=False)
      except (ValueError, SyntaxError, IOError, KeyError, ImportError, RuntimeError) as e:
        msg = " ".join(str(e).split("\n")[:3]) if str(e) else type(e).__name__
        raise UserError(f"gin: {msg}") from None
      try:
        train_config = gin.get_configurable(TrainConfig)()
        model_config = gin.get_configurable(TransformerConfig)()
      except (TypeError, ValueError) as e:
        raise UserError(f"gin: {e}") from None
      operative = gin.config_str()
  finally:
    logging.getLogger().removeFilter(noise)
  return train_config, model_config, operative
