"""The built-in trainer's settings and the model config helpers.

`TrainConfig` holds the trainer's settings; its defaults are TIGER's schedule (§4.1.3), the
one place they are written (gin/setups/tiger.gin hands them to T5X as macros, see
cost_jax.seq2seq.t5x_compat.paper_setup). The model's hyperparameters are
`cost_jax.seq2seq.layers.TransformerConfig`, whose defaults are TIGER's model (§4.1.3).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from cost_jax import results
from cost_jax.io import UserError
from cost_jax.seq2seq import decoding, optim
from cost_jax.seq2seq.network import TransformerConfig

PACKING_MODES = ("encoder", "bucket", "off")
# Validation metrics a run can select its best checkpoint by (cost_jax.metrics keys).
SELECT_METRICS = results.METRIC_KEYS[:-2]  # recall@K, ndcg@K (not invalid_id_rate, num_users)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Trainer settings (gin: `TrainConfig.<field> = ...`). Model settings live in the model gin."""

  # What to train on: a registered SeqIO task name ({method}_{dataset}), or a
  # processed dataset dir + tokenizer dir (then a task is registered on the fly,
  # named `task` or "{method}_{dataset}").
  task: str = ""
  dataset_dir: str = ""
  tokenizer_dir: str = ""
  batch_size: int = 256  # TIGER §4.1.3 (CoST RecSys'24 §4.1: 512)
  num_train_steps: int = 200_000  # TIGER §4.1.3 (Beauty, Sports; 100k for Toys)
  # Optimizer: T5X's default Adafactor (TIGER §4.1.3 trains with T5X): factored
  # second moments, decay 0.8, update clipping 1.0, parameter-scaled steps.
  # "adamw" = optax.adamw(b1=0.9, b2=0.999) with `weight_decay`.
  optimizer: str = "adafactor"
  learning_rate: float = 0.01  # TIGER §4.1.3 (CoST RecSys'24 §4.1: 1e-3)
  # "rsqrt": lr * sqrt(c / max(step, c)) with c = lr_constant_steps, i.e. constant
  # for the first 10k steps then inverse square root decay (TIGER §4.1.3);
  # "constant": lr throughout; "wsd": constant for lr_constant_steps, then linear to 0 over
  # lr_decay_steps (not in TIGER; a cooldown for a short run, cost_jax.seq2seq.optim).
  lr_schedule: str = "rsqrt"
  lr_constant_steps: int = 10_000  # TIGER §4.1.3
  lr_decay_steps: int = 0  # "wsd" only
  weight_decay: float = 0.0
  grad_clip_norm: float = 0.0  # global-norm clipping; 0 = off (Adafactor clips updates itself)
  seed: int = 0  # params init, dropout and data order
  log_every: int = 100
  eval_every: int = 5_000  # validation Recall/NDCG every N steps; 0 = never during training
  eval_at_end: bool = True  # validation Recall/NDCG after the last step -> metrics_validation.json
  eval_num_users: int = 0  # validation user subsample for speed; 0 = all users
  eval_batch_size: int = 64
  num_beams: int = 50  # >= 40 = max K of Recall@40 (CoST §4.1); TIGER Fig. 6 shows K <= 20
  # The beam-scoring rule of every decoding path (cost_jax.seq2seq.decoding.SCORE_RULES); the
  # T5X decode_fn takes the same default (gin: t5x_compat.constrained_decode_fn.score_over).
  score_over: str = decoding.DEFAULT_SCORE_OVER
  topk: int = 40
  checkpoint_every: int = 1_000
  keep_checkpoints: int = 3
  eval_test: bool = True  # score the test split at the end -> metrics.json
  cache_dir: str = ""  # materialized splits; "" = model_dir/cache
  # Items of history per example when the task is registered here from
  # dataset_dir/tokenizer_dir; 0 = seqrec_task.MAX_HISTORY of the dataset
  # (TIGER §4.1.1: 20). A registered task keeps its own.
  max_history: int = 0
  # Training batches (not part of any paper; a speed-up, see cost_jax.seq2seq.packing).
  # "encoder": the step's batch_size examples (the padded batch's) are packed several per
  # encoder row (loss identical to padded rows); "bucket": length-bucketed batches
  # (batching.BucketBatcher: each batch holds examples of similar length, padded to its
  # bucket's width; fewer tokens, but batches are length-homogeneous); "off": one example per
  # row, padded to the full input length.
  packing: str = "encoder"
  pack_row_multiple: int = 8  # packed row counts are rounded up to this (few compiled shapes)
  # At most this many examples share a packed row ("encoder" packing). Cross-attention runs
  # once per row over its segment slots, so its cost grows with this cap; on Amazon Beauty 8
  # costs 3% more rows than no cap (16) and makes cross-attention 2.5x cheaper.
  pack_max_segments: int = 8
  # Probability that a training example's history is cut to a uniformly drawn suffix of 1..n of
  # its n items (cost_jax.seq2seq.batching.crop_histories), redrawn every step. 0 = TIGER's full
  # histories (§4.1.1); 1 = every history length of a target equally often, as training on all
  # contiguous sub-sequences does (the GRID reproduction of TIGER). Not part of any paper.
  history_crop: float = 0.0
  # Row widths besides the full input length T. "encoder" packing: narrower packed rows
  # ("auto" = about T/4 and T/2, each where at least a quarter of the examples fit:
  # packing.auto_widths), whose self-attention costs width^2 instead of T^2; every distinct
  # (rows per width) compiles, so "" means "none" there. "bucket": the bucket widths ("auto" =
  # "" = the example lengths at the 30/50/65/80/90% quantiles:
  # batching.auto_bucket_widths). Or widths in tokens such as "21,41".
  pack_widths: str = ""
  # Devices along the mesh's 'model' axis (T5X's PjitPartitioner.num_partitions): parameters
  # and optimizer state are split over them by their logical axis names
  # (cost_jax.seq2seq.partitioning); the 'data' axis takes the remaining devices. 1 = data
  # parallel, parameters replicated. Not part of any paper.
  num_partitions: int = 1
  # Stop after this many minutes of training (checkpoint, then the usual evaluation); 0 = none.
  time_budget_min: float = 0.0
  # Train to the best checkpoint (not in TIGER's text, which trains a fixed 200k steps; what
  # every public reproduction does): every validation (eval_every, on the fixed eval_num_users
  # sample) that improves `select_metric` by more than `select_min_delta` saves the state to
  # model_dir/best_checkpoint; after `patience` validations in a row without one the run stops
  # (0 = never stop early); the test split is scored from the best state (`test_from_best`).
  select_metric: str = "recall@10"
  select_min_delta: float = 0.0
  patience: int = 0
  test_from_best: bool = True

  def validate(self) -> None:
    checks = [
        (self.batch_size >= 1, "batch_size must be >= 1"),
        (self.num_train_steps >= 0, "num_train_steps must be >= 0"),
        (self.optimizer in ("adafactor", "adamw"), "optimizer must be 'adafactor' or 'adamw'"),
        (self.lr_schedule in optim.SCHEDULES, f"lr_schedule must be one of {optim.SCHEDULES}"),
        (self.lr_schedule != "wsd" or self.lr_decay_steps >= 1,
         "lr_schedule 'wsd' needs lr_decay_steps >= 1"),
        (self.learning_rate > 0, "learning_rate must be > 0"),
        (self.lr_constant_steps >= 1, "lr_constant_steps must be >= 1"),
        (self.log_every >= 1, "log_every must be >= 1"),
        (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
        (self.num_beams >= self.topk >= 1, "need num_beams >= topk >= 1"),
        (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
        (self.packing in PACKING_MODES, f"packing must be one of {PACKING_MODES}"),
        (self.pack_row_multiple >= 1, "pack_row_multiple must be >= 1"),
        (self.pack_max_segments >= 1, "pack_max_segments must be >= 1"),
        (0.0 <= self.history_crop <= 1.0, "history_crop must be in [0, 1]"),
        (self.history_crop == 0.0 or self.packing != "bucket",
         "history_crop needs packing 'encoder' or 'off'"),
        (self.pack_widths in ("", "auto", "none") or all(
            w.strip().isdigit() and int(w) > 0 for w in self.pack_widths.split(",")),
         "pack_widths must be 'auto', 'none' or positive widths such as '21,41'"),
        (self.time_budget_min >= 0, "time_budget_min must be >= 0"),
        (self.patience >= 0, "patience must be >= 0"),
        (self.select_min_delta >= 0, "select_min_delta must be >= 0"),
        (self.select_metric in SELECT_METRICS,
         f"select_metric must be one of {SELECT_METRICS}"),
        (self.patience == 0 or self.eval_every > 0, "patience needs eval_every > 0"),
        (self.num_partitions >= 1, "num_partitions must be >= 1"),
        (self.score_over in decoding.SCORE_RULES,
         f"score_over must be one of {decoding.SCORE_RULES}"),
        (bool(self.task) or bool(self.dataset_dir and self.tokenizer_dir),
         "set TrainConfig.task (a SeqIO task name) or both dataset_dir and tokenizer_dir"),
    ]
    for ok, msg in checks:
      if not ok:
        raise UserError(f"TrainConfig: {msg} (got {self})")


def plain(obj: Any) -> Any:
  """dataclass/tuple -> JSON-able."""
  if dataclasses.is_dataclass(obj):
    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
  if isinstance(obj, (list, tuple)):
    return [plain(v) for v in obj]
  if isinstance(obj, (np.integer, np.floating)):
    return obj.item()
  return obj


def model_config_from_dict(d: Mapping[str, Any], source: str = "config.json"):
  """A TransformerConfig from a run record's "model" dict (defaults for missing fields)."""
  cls = TransformerConfig
  fields = {f.name: f for f in dataclasses.fields(cls)}
  kwargs = {}
  for k, v in d.items():
    if k not in fields:
      raise UserError(f"{source}: model field '{k}' is not a TransformerConfig field")
    kwargs[k] = tuple(v) if isinstance(v, list) else v
  return TransformerConfig(**kwargs)


def finalize_model_config(model_config, vocab_size: int, lengths: Mapping[str, int]):
  """Sets vocab_size (from the tokenizer) and max lengths (from the data) on the model config."""
  names = {f.name for f in dataclasses.fields(model_config)}
  updates: dict[str, Any] = {"vocab_size": int(vocab_size)}
  if "max_input_len" in names:
    updates["max_input_len"] = max(int(lengths["inputs"]), int(model_config.max_input_len or 0))
  if "max_target_len" in names:
    updates["max_target_len"] = max(int(lengths["targets"]), int(model_config.max_target_len or 0))
  return dataclasses.replace(model_config, **updates)
