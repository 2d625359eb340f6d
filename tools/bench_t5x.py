"""Benchmark TIGER's train step through the real T5X (when installed) vs our own step.

  python tools/bench_t5x.py [--batch 256] [--input_len 81] [--target_len 4] [--steps 5]
                            [--optimizer adafactor|adamw] [--ours]

Builds t5x.models.EncoderDecoderModel around cost_jax.seq2seq.network.Transformer with the
TIGER config (gin/models/tiger.gin values = TransformerConfig defaults; vocabulary
3 + 4 x 256 codes + 2000 user buckets -> 3072), T5X's PjitPartitioner, TrainStateInitializer
and Trainer, then times `Trainer._partitioned_train_step` (the jitted T5X train step:
forward, backward, optimizer update, metrics) on a fixed random batch. Prints s/step,
the ratio to the reference 8.4 s/step (T5X at batch 256) and, with --ours, the ratio to
our own step (tools/bench_train_step.py, run in the same process).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchlib import synthetic_batch

REFERENCE_T5X_S_PER_STEP = 8.4  # reference T5X TIGER step at batch 256 (tools/bench_train_step.py)


def build_trainer(batch: int, input_len: int, target_len: int, optimizer_name: str):
  import jax
  from t5x import models, partitioning, trainer as trainer_lib, utils

  from cost_jax.seq2seq import network
  from cost_jax.seq2seq import t5x_compat
  from cost_jax.tokenizer.layout import TokenLayout
  from cost_jax.seq2seq.vocabulary import SemanticIDVocabulary

  vocab = SemanticIDVocabulary(layout=TokenLayout((256, 256, 256, 256)))  # TIGER §4.1.3
  cfg = network.TransformerConfig(vocab_size=vocab.vocab_size)  # TIGER defaults
  schedule = t5x_compat.learning_rate_schedule(0.01, "rsqrt", 10_000, 0)  # TIGER §4.1.3
  model = models.EncoderDecoderModel(
      module=network.Transformer(cfg), input_vocabulary=vocab, output_vocabulary=vocab,
      optimizer_def=t5x_compat.optimizer(optimizer_name, schedule))
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.standard_logical_axis_rules())
  shapes = {"encoder_input_tokens": (batch, input_len)}
  shapes.update({k: (batch, target_len) for k in (
      "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")})
  types = {k: np.int32 for k in shapes}
  init = utils.TrainStateInitializer(model.optimizer_def, model.get_initial_variables, shapes,
                                     partitioner, types)
  state = init.from_scratch(jax.random.PRNGKey(0))
  trainer = trainer_lib.Trainer(model, state, partitioner, eval_names=[], summary_dir=None,
                                train_state_axes=init.train_state_axes, rng=jax.random.PRNGKey(1),
                                learning_rate_fn=schedule, num_microbatches=None)
  return trainer, cfg


def time_t5x_step(batch: int, input_len: int, target_len: int, steps: int,
                  optimizer_name: str) -> dict:
  import jax
  trainer, cfg = build_trainer(batch, input_len, target_len, optimizer_name)
  data = synthetic_batch(batch, input_len, target_len, cfg.vocab_size)
  step = trainer._partitioned_train_step  # pylint: disable=protected-access
  state = trainer.train_state
  t0 = time.perf_counter()
  state, metrics = step(state, data)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return {"compile_plus_first_s": compile_s, "s_per_step": float(np.median(times)),
          "s_per_step_min": float(min(times))}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=256)  # TIGER §4.1.3
  ap.add_argument("--input_len", type=int, default=81)  # 1 user + 20 items x 4 tokens
  ap.add_argument("--target_len", type=int, default=4)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--optimizer", default="adafactor", choices=("adafactor", "adamw"))
  ap.add_argument("--ours", action="store_true", help="also time tools/bench_train_step.py")
  args = ap.parse_args(argv)
  try:
    import t5x  # noqa: F401  pylint: disable=unused-import
  except ImportError:
    print("t5x is not installed; see README 'Running with T5X'", file=sys.stderr)
    return {}
  res = time_t5x_step(args.batch, args.input_len, args.target_len, args.steps, args.optimizer)
  res["batch"] = args.batch
  res["ratio_to_reference_8.4s"] = res["s_per_step"] / REFERENCE_T5X_S_PER_STEP
  if args.ours:
    import bench_train_step  # pylint: disable=g-import-not-at-top  (a sibling script)
    ours = bench_train_step.main([f"--batch={args.batch}", f"--input_len={args.input_len}",
                                  f"--target_len={args.target_len}", f"--steps={args.steps}"])
    res["ours_s_per_step"] = ours["s_per_step_median"]
    res["t5x_over_ours"] = res["s_per_step"] / ours["s_per_step_median"]
  print("T5X train step (t5x.trainer.Trainer, TIGER config):")
  for k, v in res.items():
    print(f"{k:>24}: {v:.4g}" if isinstance(v, float) else f"{k:>24}: {v}")
  return res


if __name__ == "__main__":
  main()
