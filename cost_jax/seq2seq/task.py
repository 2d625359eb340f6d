"""What a run trains on: a registered SeqIO task, or a dataset dir + tokenizer dir.

`resolve_task(config)` returns the seqio.Task (registering one on the fly for
dataset_dir/tokenizer_dir, named by cost_jax.tokenizer.config.task_name) and its `TaskInfo`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import seqio

from cost_jax.io import UserError, files_fingerprint
from cost_jax.seq2seq import seqrec_task, splits
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.tokenizer import artifact
from cost_jax.tokenizer.config import task_name


@dataclasses.dataclass
class TaskInfo:
  name: str
  dataset_dir: str | None
  tokenizer_dir: str | None
  vocab_size: int
  max_history: int | None = None  # items of history in "inputs" (cost_jax.seq2seq.seqrec_task)

  def feature_lengths(self, id_length: int) -> dict[str, int] | None:
    """T5X TASK_FEATURE_LENGTHS: inputs = 1 + max_history * L, targets = L."""
    if self.max_history is None:
      return None
    return {"inputs": 1 + self.max_history * id_length, "targets": id_length}


def _task_source(task):
  """The SeqRecSource behind `task`, or None for a foreign task."""
  try:
    return seqrec_task.task_source(task)
  except (ImportError, UserError, AttributeError):
    return None


def resolve_task(config: TrainConfig):
  """The seqio Task of `config` (registering one for dataset_dir/tokenizer_dir) + TaskInfo."""
  if config.dataset_dir and config.tokenizer_dir:
    for d, what in ((config.dataset_dir, "dataset_dir"), (config.tokenizer_dir, "tokenizer_dir")):
      if not os.path.isdir(d):
        raise UserError(f"{d}: {what} does not exist")
    name = config.task or task_name(artifact.read_method(config.tokenizer_dir),
                                    os.path.basename(os.path.normpath(config.dataset_dir)))
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
    dataset = os.path.basename(os.path.normpath(config.dataset_dir))
    max_history = config.max_history or seqrec_task.max_history_of(dataset)
    task = seqrec_task.register_task(name, os.path.abspath(config.dataset_dir),
                                     os.path.abspath(config.tokenizer_dir), max_history)
  else:
    task = splits.get_task(config.task)
  source = _task_source(task)
  ds = getattr(source, "dataset_dir", None)
  tok = getattr(source, "tokenizer_dir", None) or getattr(
      task.output_features["targets"].vocabulary, "tokenizer_dir", None)
  if config.dataset_dir:
    ds = os.path.abspath(config.dataset_dir)
  if config.tokenizer_dir:
    tok = os.path.abspath(config.tokenizer_dir)
  if tok is None:
    raise UserError(f"task '{task.name}': cannot find its tokenizer dir (targets vocabulary "
                    "has no tokenizer_dir); set TrainConfig.tokenizer_dir")
  artifact.load_layout(tok)  # the tokenizer dir exists and has its vocabulary.json
  if ds is not None and not os.path.isdir(ds):
    raise UserError(f"{ds}: dataset directory of task '{task.name}' does not exist (build it with "
                    "`python -m cost_jax.data prepare ...`)")
  vocab_size = int(task.output_features["targets"].vocabulary.vocab_size)
  max_history = getattr(source, "max_history", None)
  return task, TaskInfo(task.name, ds, tok, vocab_size, max_history)


def input_fingerprints(info: TaskInfo) -> dict[str, str]:
  """{"dataset": sha256 of its sequences, "tokenizer": sha256 of its IDs + vocabulary}."""
  out = {}
  if info.dataset_dir:
    out["dataset"] = files_fingerprint(
        [os.path.join(info.dataset_dir, "sequences.parquet")])
  if info.tokenizer_dir:
    out["tokenizer"] = files_fingerprint(
        [artifact.ids_path(info.tokenizer_dir),
         os.path.join(info.tokenizer_dir, artifact.VOCABULARY_FILE)])
  return out


def data_fingerprint(info: TaskInfo, fingerprints: dict[str, str] | None = None) -> str:
  """One key for the materialized-split cache: the sha256 of the input fingerprints (computed
  here unless the caller has them already, so each file is hashed once)."""
  fps = input_fingerprints(info) if fingerprints is None else fingerprints
  return hashlib.sha256(json.dumps(fps, sort_keys=True).encode()).hexdigest()
