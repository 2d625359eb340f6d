"""Per-epoch checkpoints of an epoch-based trainer (SASRec, COVE_SASRec): save, resume, refuse.

Arrays (params, optimizer state, rng, best params) go to Orbax (`cost_jax.checkpoints`); the
rest of the loop's state (numpy rng, losses, curve, best, patience counter, seconds) to one JSON
per kept epoch, written before its arrays.
"""

from __future__ import annotations

import json
import os

from cost_jax.checkpoints import Checkpointer
from cost_jax.io import UserError, atomic_write_json, json_default, read_json_or

# The config fields a resumed run may change: they stop the run or size evaluation batches, but do
# not change its trajectory up to the epoch it resumes from.
RESUMABLE_CHANGES = ("num_epochs", "patience", "eval_batch_size")
STATE_SUBDIR = "train_state"  # next to checkpoints/: one JSON per kept epoch (rngs, curve, best)


def run_record(config: dict, seed: int) -> dict:
  """What a resumed run must share with the saved one: the config (less RESUMABLE_CHANGES), seed."""
  cfg = {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}
  return json.loads(json.dumps({"config": cfg, "seed": seed}, default=json_default))


class EpochCheckpoints:
  """SASRec's per-epoch state: Orbax arrays (params, optimizer, rng, best params) in
  `checkpoint_dir/checkpoints`, the rest (numpy rng, losses, curve, best, stale, seconds) in
  `checkpoint_dir/train_state/<epoch>.json`, written before its arrays, so the newest intact
  Orbax epoch always has its record. The last `keep` epochs are kept."""

  def __init__(self, checkpoint_dir: str, record: dict, keep: int = 1):
    self.ckpt = Checkpointer(checkpoint_dir, keep=keep, async_save=False)
    self.state_dir = os.path.join(checkpoint_dir, STATE_SUBDIR)
    self.record = record

  def save(self, epoch: int, arrays: dict, meta: dict) -> None:
    os.makedirs(self.state_dir, exist_ok=True)
    atomic_write_json(os.path.join(self.state_dir, f"{epoch}.json"), {**self.record, **meta})
    self.ckpt.save(epoch, arrays)
    kept = {str(e) for e in self.ckpt.all_steps()}
    for name in os.listdir(self.state_dir):
      if name.endswith(".json") and name[:-5].isdigit() and name[:-5] not in kept:
        os.remove(os.path.join(self.state_dir, name))

  def restore(self, arrays: dict, where: str) -> tuple[dict, dict, int] | None:
    """(arrays, meta, epoch) of the newest intact epoch, or None when there is none."""
    if not self.ckpt.all_steps():
      return None
    arrays, epoch = self.ckpt.restore_latest(arrays)
    path = os.path.join(self.state_dir, f"{epoch}.json")
    meta = read_json_or(path)
    if not isinstance(meta, dict):
      raise UserError(f"{path}: missing or unreadable (the record of checkpoint epoch {epoch}); "
                      f"move {self.ckpt.directory} away to start {where} over")
    theirs = {k: meta.get(k) for k in self.record}
    if theirs != self.record:
      diff = sorted(k for k in self.record["config"]
                    if (meta.get("config") or {}).get(k) != self.record["config"][k])
      raise UserError(f"{self.ckpt.directory}: checkpoints of another {where} run ("
                      + (f"config differs in {', '.join(diff)}" if diff else
                         f"seed {meta.get('seed')} != {self.record['seed']}")
                      + "); use another output folder or move them away")
    return arrays, meta, epoch
