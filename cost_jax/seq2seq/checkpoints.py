"""Orbax checkpoints of the trainer state: save every N steps, keep the last k, resume.

The state is a plain pytree {"params", "opt_state", "step", "dropout_rng"}. Orbax writes each
step to a temporary directory and renames it when complete, so a process killed
mid-save (kill -9) leaves the previous checkpoints intact and the partial one is
ignored (and cleaned up) on the next start.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from cost_jax.io import UserError

CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_dir(model_dir: str) -> str:
  return os.path.join(os.path.abspath(model_dir), CHECKPOINT_SUBDIR)


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with sharding) of a pytree of arrays, for a typed restore."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """A thin wrapper over ocp.CheckpointManager for one model_dir."""

  def __init__(self, model_dir: str, keep: int | None = 3, read_only: bool = False,
               async_save: bool = True):
    self.directory = checkpoint_dir(model_dir)
    if read_only and not os.path.isdir(self.directory):
      raise UserError(f"{self.directory}: no checkpoints (train a model into this model_dir first)")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(int(s) for s in self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any) -> bool:
    """Saves `state` as step `step` (asynchronously); False when that step exists."""
    if step in self.all_steps():
      return False
    return bool(self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True))

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores into the structure, shapes, dtypes and shardings of `target`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f"{self.directory}: no checkpoints to restore")
    if step not in self.all_steps():
      raise UserError(f"{self.directory}: no checkpoint for step {step} "
                      f"(have {self.all_steps()})")
    try:
      return self._manager.restore(int(step), args=ocp.args.StandardRestore(abstract_like(target)))
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f"{self.directory}/{step}: checkpoint does not match this model/optimizer "
                      f"({str(e).splitlines()[0][:300]})") from None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
