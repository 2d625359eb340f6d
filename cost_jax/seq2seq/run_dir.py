"""A trained model_dir: its config.json record (checked on resume) and loading it back.

  model_dir/config.json       the run's TrainConfig, TransformerConfig, task and layout
  model_dir/item_tokens.npy   every item's semantic ID in token space (the trie)
  model_dir/config.gin        the operative gin config (when run from gin)
  model_dir/checkpoints/      Orbax checkpoints (cost_jax.seq2seq.checkpoints)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from cost_jax.io import UserError, atomic_write_json, read_json
from cost_jax.seq2seq import checkpoints, input_pipeline, model, network, optim
from cost_jax.seq2seq.config import TrainConfig, model_config_from_dict
from cost_jax.seq2seq.devices import DeviceLayout
from cost_jax.seq2seq.task import data_fingerprint, resolve_task

CONFIG_FILE = "config.json"
OPERATIVE_GIN_FILE = "config.gin"
ITEM_TOKENS_FILE = "item_tokens.npy"
CONFIG_FORMAT = "cost_jax.train/v1"

# Fields that change the training trajectory: a resumed run must match them.
TRAJECTORY_FIELDS = ("batch_size", "optimizer", "learning_rate", "lr_schedule",
                     "lr_constant_steps", "weight_decay", "grad_clip_norm", "seed")


def write_or_check_config(model_dir: str, record: dict, has_checkpoint: bool) -> None:
  path = os.path.join(model_dir, CONFIG_FILE)
  if has_checkpoint and os.path.exists(path):
    old = read_json(path)
    diffs = []
    if old.get("model") != record["model"]:
      keys = sorted(set(old.get("model", {})) | set(record["model"]))
      diffs += [f"model.{k}: {old.get('model', {}).get(k)!r} -> {record['model'].get(k)!r}"
                for k in keys if old.get("model", {}).get(k) != record["model"].get(k)]
    for k in TRAJECTORY_FIELDS:
      if old.get("train", {}).get(k) != record["train"].get(k):
        diffs.append(f"TrainConfig.{k}: {old.get('train', {}).get(k)!r} -> {record['train'][k]!r}")
    if old.get("task", {}).get("name") != record["task"]["name"]:
      diffs.append(f"task: {old.get('task', {}).get('name')!r} -> {record['task']['name']!r}")
    if diffs:
      raise UserError(f"{path}: model_dir holds checkpoints of a different run; resuming would mix "
                      f"them ({'; '.join(diffs)}). Use a new --model_dir.")
  atomic_write_json(path, record)


@dataclasses.dataclass
class Run:
  """A trained model_dir loaded for evaluation (see `load_run`)."""

  model_dir: str
  record: dict
  train_config: TrainConfig
  model_config: Any
  module: Any
  params: Any
  step: int
  item_tokens: np.ndarray
  layout: DeviceLayout

  @property
  def batch_sharding(self):
    return self.layout.batch

  def round_batch(self, batch_size: int) -> int:
    return self.layout.round_batch(batch_size)

  def split_arrays(self, split: str) -> input_pipeline.ExampleArrays:
    config = self.train_config
    task, info = resolve_task(config)
    lengths = self.record["feature_lengths"]
    return input_pipeline.cached_split(task, split, cache_dir(config, self.model_dir),
                                       data_fingerprint(info), lengths)


def cache_dir(config: TrainConfig, model_dir: str) -> str:
  return config.cache_dir or os.path.join(model_dir, "cache")


def load_run(model_dir: str, step: int | None = None) -> Run:
  """Reads DIR/config.json + item_tokens.npy and restores the params of a checkpoint."""
  model_dir = os.path.abspath(model_dir)
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{path}: missing (not a cost_jax.train model_dir)")
  record = read_json(path)
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  train_config = TrainConfig(**{k: v for k, v in record.get("train", {}).items() if k in fields})
  task = record.get("task", {})
  # The run's own task dirs, so a task registered on the fly resolves again.
  train_config = dataclasses.replace(
      train_config, task=task.get("name", train_config.task),
      dataset_dir=task.get("dataset_dir") or train_config.dataset_dir,
      tokenizer_dir=task.get("tokenizer_dir") or train_config.tokenizer_dir)
  if not isinstance(record.get("model"), dict):
    raise UserError(f"{path}: no \"model\" section (not a cost_jax.train model_dir)")
  model_config = model_config_from_dict(record["model"], path)
  module = network.Transformer(model_config)
  tokens_path = os.path.join(model_dir, ITEM_TOKENS_FILE)
  try:
    item_tokens = np.load(tokens_path)
  except OSError:
    raise UserError(f"{tokens_path}: missing (not a cost_jax.train model_dir)") from None
  layout = DeviceLayout.create()
  tx = optim.make_optimizer(train_config)
  lengths = record["feature_lengths"]
  abstract = jax.eval_shape(
      lambda: model.init_state(module, tx, lengths, train_config.seed, layout.replicated))
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=layout.replicated), abstract)
  with checkpoints.Checkpointer(model_dir, read_only=True) as ckpt:
    if ckpt.latest_step() is None:
      raise UserError(f"{ckpt.directory}: no checkpoints (train a model into {model_dir} first)")
    state = ckpt.restore(abstract, step)
  return Run(model_dir, record, train_config, model_config, module, state["params"],
             int(state["step"]), item_tokens, layout)
