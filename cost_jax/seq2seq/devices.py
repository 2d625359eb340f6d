"""Where the trainer runs: the device mesh, multi-process start-up, and JAX's persistent
compilation cache."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cost_jax import paths
from cost_jax.io import UserError


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


def initialize_distributed() -> bool:
  """`jax.distributed.initialize()` when the environment asks for a multi-process run.

  Asked for by $JAX_COORDINATOR_ADDRESS (host:port of process 0, with $JAX_NUM_PROCESSES and
  $JAX_PROCESS_ID; what a CPU or GPU cluster without a scheduler needs) or by
  $COST_JAX_DISTRIBUTED=1 (JAX detects the rest itself: Cloud TPU pods, SLURM, Open MPI,
  Kubernetes). Call it before anything touches a device; returns whether it initialized.
  Idempotent within a process.
  """
  if jax.distributed.is_initialized():
    return True
  if not (os.environ.get("JAX_COORDINATOR_ADDRESS")
          or os.environ.get("COST_JAX_DISTRIBUTED", "") in ("1", "true", "True")):
    return False
  kwargs = {}
  for key, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
    value = os.environ.get(env)
    if value is not None:
      try:
        kwargs[key] = int(value)
      except ValueError:
        raise UserError(f"${env}: expected an integer, got {value!r}") from None
  jax.distributed.initialize(**kwargs)
  return True


@dataclasses.dataclass
class DeviceLayout:
  """The ('data', 'model') mesh over every device of every process.

  'model' has `num_partitions` devices (T5X's name: 1 = pure data parallelism, the default);
  'data' has the rest. Parameters are sharded over 'model' by their logical axis names
  (cost_jax.seq2seq.partitioning); batches are split over 'data'.
  """

  mesh: Any
  batch: Any  # NamedSharding: dim 0 over "data"
  replicated: Any

  @property
  def num_devices(self) -> int:
    return int(self.mesh.devices.size)

  @property
  def data_size(self) -> int:
    """Devices along 'data': what a batch must divide by."""
    return int(self.mesh.shape["data"])

  @property
  def model_size(self) -> int:
    return int(self.mesh.shape["model"])

  @classmethod
  def create(cls, num_partitions: int = 1) -> "DeviceLayout":
    devs = jax.devices()
    n = len(devs)
    if num_partitions < 1 or n % num_partitions:
      raise UserError(f"num_partitions {num_partitions} does not divide the {n} devices "
                      f"({jax.process_count()} process(es) x {jax.local_device_count()})")
    if jax.process_count() > 1 and jax.local_device_count() % num_partitions:
      raise UserError(f"num_partitions {num_partitions} must divide each process's "
                      f"{jax.local_device_count()} devices (the 'model' axis stays in one host)")
    # Process-major order: each process's devices form whole rows of the mesh, so the 'model'
    # axis never crosses hosts and every host holds a contiguous block of the batch.
    order = sorted(devs, key=lambda d: (d.process_index, d.id))
    grid = np.asarray(order, dtype=object).reshape(n // num_partitions, num_partitions)
    mesh = Mesh(grid, ("data", "model"))
    return cls(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))

  def round_batch(self, batch_size: int) -> int:
    """Smallest multiple of the 'data' axis size >= batch_size."""
    return -(-batch_size // self.data_size) * self.data_size

  def put(self, tree: Any, sharding: Any = None) -> Any:
    """A pytree of host arrays (the same global values on every process) -> global jax.Arrays.

    Each process copies only the rows its own devices hold (jax.make_array_from_callback),
    which is what makes multi-host input work; with one process this is jax.device_put.
    """
    return put(tree, sharding if sharding is not None else self.batch)


def put(tree: Any, sharding: Any) -> Any:
  """Host arrays -> global jax.Arrays placed by `sharding` (see DeviceLayout.put)."""
  if sharding is None or jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_callback(
      np.shape(x), sharding, lambda index: np.asarray(x)[index]), tree)


def to_host(x: Any) -> np.ndarray:
  """A global jax.Array -> numpy on every process (all-gathered when other hosts hold parts)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
