"""Orbax checkpoints of a trainer's state: save every N steps, keep the last k, resume.

Shared by the seq2seq trainer (state {"params", "opt_state", "step", "dropout_rng"}, one step
per `checkpoint_every` steps) and SASRec / COVE_SASRec (one step per epoch). Orbax writes each
step to a temporary directory and renames it when complete, so a process killed
mid-save (kill -9) leaves the previous checkpoints intact and the partial one is
ignored (and cleaned up) on the next start.

Verification: once a step is on disk, the sha256 of each of its files goes to
model_dir/checkpoint_sums/<step>.json. `restore_latest` checks a step against its sums before
restoring it and falls back to the newest intact step, saying which step was skipped and why
(damage is reported as damage: a changed, missing or unreadable file; a model mismatch only
when the files are intact but their shapes do not fit).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from cost_jax.io import UserError, atomic_write_json, read_json_or, sha256_tree

CHECKPOINT_SUBDIR = "checkpoints"
SUMS_SUBDIR = "checkpoint_sums"
# The best validation state (TrainConfig.select_metric), one step kept, sums beside it.
BEST_SUBDIR = "best_checkpoint"


def checkpoint_dir(model_dir: str, subdir: str = CHECKPOINT_SUBDIR) -> str:
  return os.path.join(os.path.abspath(model_dir), subdir)


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with sharding) of a pytree of arrays, for a typed restore."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """A thin wrapper over ocp.CheckpointManager for one model_dir."""

  def __init__(self, model_dir: str, keep: int | None = 3, read_only: bool = False,
               async_save: bool = True, subdir: str = CHECKPOINT_SUBDIR):
    self.directory = checkpoint_dir(model_dir, subdir)
    if read_only and not os.path.isdir(self.directory):
      raise UserError(f"{self.directory}: no checkpoints (train a model into this model_dir first)")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self.sums_dir = os.path.join(os.path.dirname(self.directory), SUMS_SUBDIR if
                                 subdir == CHECKPOINT_SUBDIR else f"{subdir}_sums")
    self._pending: list[int] = []

  def all_steps(self) -> list[int]:
    return sorted(int(s) for s in self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any) -> bool:
    """Saves `state` as step `step` (asynchronously); False when that step exists."""
    with self._writing(step):
      self._record_sums()
      if step in self.all_steps():
        return False
      saved = bool(self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True))
    if saved:
      self._pending.append(int(step))
    return saved

  @contextlib.contextmanager
  def _writing(self, step: int | None):
    """A failed write (a full disk, a read-only mount, a vanished folder), here or in an
    earlier asynchronous save that finishes here, is one UserError naming the folder and the
    intact step to resume from, not Orbax's traceback."""
    try:
      yield
    except (UserError, KeyboardInterrupt):
      raise
    except Exception as e:  # pylint: disable=broad-except
      cause, seen = e, set()
      while cause is not None and id(cause) not in seen:  # the OS error behind Orbax's wrappers
        seen.add(id(cause))
        if isinstance(cause, OSError):
          break
        cause = cause.__cause__ or cause.__context__
      reason = (cause.strerror if isinstance(cause, OSError) and cause.strerror else
                (str(e).splitlines()[0][:200] if str(e) else type(e).__name__))
      intact = [s for s in self._intact_steps() if step is None or s != step]
      raise UserError(f"{self.directory}: cannot write checkpoint"
                      + (f" step {step}" if step is not None else "") + f" ({reason}); "
                      + (f"step {intact[-1]} is intact and a rerun resumes from it"
                         if intact else "no earlier checkpoint to resume from")) from None

  def _intact_steps(self) -> list[int]:
    try:
      return [s for s in self.all_steps() if self.verify(s) is None]
    except Exception:  # pylint: disable=broad-except
      return []

  # --- verification ------------------------------------------------------------------------
  def _sums_path(self, step: int) -> str:
    return os.path.join(self.sums_dir, f"{int(step)}.json")

  def _record_sums(self) -> None:
    """Checksums of the steps saved so far (waits for an unfinished async save); written by
    process 0 alone in a multi-process run."""
    if not self._pending:
      return
    self._manager.wait_until_finished()
    if jax.process_index() > 0:
      self._pending = []
      return
    for step in self._pending:
      d = os.path.join(self.directory, str(step))
      if os.path.isdir(d):
        os.makedirs(self.sums_dir, exist_ok=True)
        atomic_write_json(self._sums_path(step), {"step": step, "files": sha256_tree(d)})
    self._pending = []
    known = set(self.all_steps())
    if os.path.isdir(self.sums_dir):  # sums of steps Orbax has dropped (max_to_keep)
      for name in os.listdir(self.sums_dir):
        stem = name[:-len(".json")]
        if name.endswith(".json") and stem.isdigit() and int(stem) not in known:
          os.remove(os.path.join(self.sums_dir, name))

  def verify(self, step: int) -> str | None:
    """None when step's files match their recorded sums (or none were recorded), else why not."""
    path = self._sums_path(step)
    if not os.path.isfile(path):
      return None
    record = read_json_or(path)
    want = record.get("files") if isinstance(record, dict) else None
    if not isinstance(want, dict):
      return f"its checksum file {path} is unreadable"
    d = os.path.join(self.directory, str(step))
    got = sha256_tree(d) if os.path.isdir(d) else {}
    missing = sorted(set(want) - set(got))
    changed = sorted(k for k in want if k in got and got[k] != want[k])
    if missing or changed:
      parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
          [f"changed {', '.join(changed[:3])}"] if changed else [])
      return "damaged: " + "; ".join(parts)
    return None

  def restore_latest(self, target: Any, log: Callable[[str], None] | None = None
                     ) -> tuple[Any, int | None]:
    """(state, step) of the newest intact step, or (target, None) when there is none at all.

    Damaged steps are skipped with a message; if every step is damaged, a UserError lists them.
    """
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    steps = self.all_steps()
    if not steps:
      return target, None
    problems = []
    for step in reversed(steps):
      why = self.verify(step)
      if why is None:
        try:
          return self.restore(target, step), step
        except UserError as e:
          if "does not match" in str(e) and not problems:
            raise  # intact files of another model: not damage, do not fall back silently
          why = str(e)
      problems.append(f"step {step}: {why}")
      log(f"[checkpoints] skipping step {step} of {self.directory}: {why}")
    raise UserError(f"{self.directory}: no intact checkpoint ({'; '.join(problems)}); move the "
                    "checkpoints away to start over")

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores into the structure, shapes, dtypes and shardings of `target`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f"{self.directory}: no checkpoints to restore")
    if step not in self.all_steps():
      raise UserError(f"{self.directory}: no checkpoint for step {step} "
                      f"(have {self.all_steps()})")
    why = self.verify(step)
    if why is not None:
      raise UserError(f"{self.directory}/{step}: checkpoint {why}")
    try:
      return self._manager.restore(int(step), args=ocp.args.StandardRestore(abstract_like(target)))
    except (ValueError, KeyError, TypeError) as e:
      first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
      if any(w in first.lower() for w in ("shape", "structure", "tree", "dtype", "mismatch")):
        raise UserError(f"{self.directory}/{step}: checkpoint does not match this model/optimizer "
                        f"({first})") from None
      raise UserError(f"{self.directory}/{step}: checkpoint is damaged or unreadable "
                      f"({first})") from None
    except Exception as e:  # pylint: disable=broad-except  # tensorstore / OS errors
      first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
      raise UserError(f"{self.directory}/{step}: checkpoint is damaged or unreadable "
                      f"({first})") from None

  def wait(self) -> None:
    with self._writing(self._pending[-1] if self._pending else None):
      self._manager.wait_until_finished()
      self._record_sums()

  def close(self) -> None:
    with self._writing(self._pending[-1] if self._pending else None):
      self._manager.wait_until_finished()
      self._record_sums()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

