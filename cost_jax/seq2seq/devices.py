"""Where the trainer runs: the device mesh and JAX's persistent compilation cache."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cost_jax import paths


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache unless the user configured one.

  $COST_JAX_COMPILATION_CACHE: a directory, or "0" to disable; default
  cost_jax.paths.data_root()/jax_cache. A resumed or repeated run then skips
  recompiling the train step, init and beam search.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  where = os.environ.get("COST_JAX_COMPILATION_CACHE", "")
  if where == "0":
    return None
  where = where or os.path.join(paths.data_root(), "jax_cache")
  try:
    os.makedirs(where, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return where


@dataclasses.dataclass
class DeviceLayout:
  """A 1-D data-parallel mesh over the local devices."""

  mesh: Any
  batch: Any  # NamedSharding: dim 0 over "data"
  replicated: Any

  @property
  def num_devices(self) -> int:
    return int(self.mesh.devices.size)

  @classmethod
  def create(cls) -> "DeviceLayout":
    mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
    return cls(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))

  def round_batch(self, batch_size: int) -> int:
    """Smallest multiple of the device count >= batch_size."""
    return -(-batch_size // self.num_devices) * self.num_devices
