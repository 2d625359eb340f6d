"""Command lines of stage 2: `python -m cost_jax.train` and `python -m cost_jax.evaluate`."""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from cost_jax import gin_cli, stop
from cost_jax.data import categories as categories_lib
from cost_jax.io import UserError, atomic_write_json, exits_cleanly
from cost_jax.results import KS
from cost_jax.seq2seq import evaluator, gin_config, studies, trainer
from cost_jax.seq2seq import registry  # noqa: F401  registers the built-in SeqIO tasks
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq.network import TransformerConfig
from cost_jax.seq2seq.studies import CapabilityConfig

TRAIN_DOC = """Trains the TIGER encoder-decoder on a SeqIO task (the built-in trainer, no T5X needed).

  python -m cost_jax.train --gin_file=gin/train/rqvae_ml100k.gin --model_dir=DIR \\
      [--gin_param="TrainConfig.num_train_steps = 2000"] [--gin.TrainConfig.seed=1]

Settings: TrainConfig (cost_jax.seq2seq.config) and TransformerConfig (cost_jax.seq2seq.layers),
whose defaults are TIGER's (§4.1.3); gin files and bindings change them. The trainer resumes from
the latest checkpoint in DIR and scores the test split at the end (DIR/metrics.json).
"""

EVALUATE_DOC = """Scores a trained model_dir with trie-constrained beam search.

  python -m cost_jax.evaluate --model_dir=DIR [--split=test] [--num_users=N]
      [--gin.TrainConfig.num_beams=100] [--gin.TrainConfig.score_over="'level'"]

The run is scored as it was trained (its config.json); gin bindings may change only the decoding:
TrainConfig.num_beams, .topk, .score_over, .eval_batch_size, and for the studies
CapabilityConfig.num_samples and .category_field.

Writes beside the checkpoints (split "test"; other splits get a `_{split}` suffix): metrics.json
(Recall/NDCG@{5,10,20,40}, invalid_id_rate, num_users, split, step, num_beams, topk), topk.npy,
targets.npy, user_ids.npy, scores.npy. A record already there is never replaced: another step,
user sample or beam count gets `_step{S}_users{N}_beams{B}_top{K}` files, the same scoring again
is left as it is (same lists) or written as `_rescore<n>` (lists that differ).

TIGER's capabilities (§4.4, §5), each instead of the plain beam search:
  --temperature 1.5 [--gin.CapabilityConfig.num_samples=200] [--gin.CapabilityConfig.category_field="'genres'"]
      top K = the first K distinct items of tempered samples; Recall@K and Entropy@K of the
      items' categories -> capabilities_temperature_<T>.json
  --cold_start_epsilon 0.1[,0.2,...]   (a model trained on a cold-start dataset dir,
      `python -m cost_jax.data cold_start`): beams over the seen items, unseen items with the
      same first L-1 tokens blended in, at most epsilon*K of them; Recall@K on the test users
      whose target is unseen -> capabilities_cold_start.json
  --invalid_ids   share of invalid IDs in the top K of unconstrained beam search, K = 1..beams
      -> capabilities_invalid_ids.json
"""


def parse_train_args(argv: Sequence[str] | None):
  p = argparse.ArgumentParser(prog="python -m cost_jax.train", description=TRAIN_DOC,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  gin_cli.add_flags(p, old_set_example="TrainConfig.num_train_steps=2000")
  p.add_argument("--model_dir", required=True, help="checkpoints, summaries, metrics.json")
  p.add_argument("--no_eval_test", action="store_true", help="skip scoring the test split")
  args = gin_cli.parse_args(p, argv, set_spelling=_train_set_spelling)
  if args.no_eval_test:
    args.gin_param.append("TrainConfig.eval_test = False")
  return args


def _train_set_spelling(key: str, value: str) -> str | None:
  field = key.split(".")[-1]
  for cls in (TrainConfig, TransformerConfig):
    if field in gin_cli.field_names(cls):
      return f"{cls.__name__}.{field} = {value}"
  return None


@exits_cleanly
def _train(argv: Sequence[str] | None) -> int:
  args = parse_train_args(argv)
  train_config, model_config, operative = gin_config.configs_from_gin(args.gin_file,
                                                                     args.gin_param)
  # SIGTERM (preemption, `kill`) and SIGINT stop the loop at the next step boundary, where the
  # state is saved; the exit code is 128 + the signal (cost_jax.stop).
  with stop.handling():
    summary = trainer.train(train_config, args.model_dir, model_config, operative_gin=operative)
  print(json.dumps({k: summary.get(k) for k in ("step", "resumed_from", "steps_per_sec",
                                                 "examples_per_sec", "cpu_sec_per_step", "test",
                                                 "validation")}, indent=2, default=float))
  return 0


def train_main(argv: Sequence[str] | None = None) -> int:
  return _train(argv)


# What `evaluate` may change of a trained run (gin bindings; the rest is the run's own record).
EVAL_FIELDS = {TrainConfig: ("num_beams", "topk", "score_over", "eval_batch_size"),
               CapabilityConfig: ("num_samples", "category_field")}
# The flags these bindings replaced -> their gin spelling.
_OLD_EVAL_FLAGS = {"num_beams": "TrainConfig.num_beams", "topk": "TrainConfig.topk",
                   "score_over": "TrainConfig.score_over",
                   "batch_size": "TrainConfig.eval_batch_size",
                   "num_samples": "CapabilityConfig.num_samples",
                   "category_field": "CapabilityConfig.category_field"}


def evaluate_main(argv: Sequence[str] | None = None) -> int:
  return _evaluate_main(argv)


@exits_cleanly
def _evaluate_main(argv: Sequence[str] | None) -> int:
  p = argparse.ArgumentParser(prog="python -m cost_jax.evaluate", description=EVALUATE_DOC,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model_dir", required=True)
  p.add_argument("--split", default="test", choices=("test", "validation", "train"))
  p.add_argument("--num_users", type=int, default=None, help="random user subsample (default all)")
  p.add_argument("--step", type=int, default=None,
                 help="checkpoint step (default: the one the run scored on test, i.e. its best "
                      "validation checkpoint when it kept one, else the latest)")
  p.add_argument("--allow_changed_inputs", action="store_true",
                 help="score although the dataset or tokenizer the run was trained on changed "
                      "on disk since (said in the output); by default such a run is refused")
  p.add_argument("--temperature", type=float, default=None,
                 help="TIGER §4.4.2: temperature sampling instead of beam search")
  p.add_argument("--cold_start_epsilon", default=None,
                 help="TIGER §4.4.1: comma-separated epsilons (max share of unseen items in "
                      "the top K)")
  p.add_argument("--invalid_ids", action="store_true",
                 help="TIGER §5: invalid-ID share of unconstrained beam search against K")
  gin_cli.add_flags(p, old_set_example="TrainConfig.num_beams=100")
  for flag in _OLD_EVAL_FLAGS:
    p.add_argument(f"--{flag}", default=None, help=argparse.SUPPRESS)
  args = gin_cli.parse_args(p, argv)
  for flag, field in _OLD_EVAL_FLAGS.items():
    value = getattr(args, flag)
    if value is not None:
      cls, name = field.split(".")
      shown = repr(value) if name in ("score_over", "category_field") else value
      raise UserError(f"--{flag} {value}: the flag is gone; evaluation settings are gin bindings "
                      f"now: --gin.{field}={shown}")
  gin_cli.register(CapabilityConfig)
  with gin_cli.fresh():
    gin_cli.parse(args.gin_file, args.gin_param)
    bound = {cls: gin_cli.bindings(cls) for cls in (TrainConfig, TransformerConfig,
                                                    CapabilityConfig)}
  for cls, values in bound.items():
    extra = sorted(set(values) - set(EVAL_FIELDS.get(cls, ())))
    if extra:
      allowed = ", ".join(f"{c.__name__}.{f}" for c, fs in EVAL_FIELDS.items() for f in fs)
      raise UserError(f"{cls.__name__}.{extra[0]}: evaluate scores the run as it was trained; "
                      f"it takes only {allowed}")
  run_values = bound[TrainConfig]
  args.num_beams = run_values.get("num_beams")
  args.topk = run_values.get("topk")
  args.score_over = run_values.get("score_over")
  args.batch_size = run_values.get("eval_batch_size")
  caps = bound[CapabilityConfig]
  args.num_samples = caps.get("num_samples", CapabilityConfig.num_samples)
  args.category_field = caps.get("category_field", CapabilityConfig.category_field)
  if sum(x is not None and x is not False for x in (args.temperature, args.cold_start_epsilon,
                                                    args.invalid_ids or None)) > 1:
    p.error("use one of --temperature, --cold_start_epsilon, --invalid_ids at a time")
  if args.temperature is not None or args.cold_start_epsilon is not None or args.invalid_ids:
    return _capability(args)
  return _evaluate(args)


def _capability(args: argparse.Namespace) -> int:
  if args.num_samples < 1:
    raise UserError(f"CapabilityConfig.num_samples: must be >= 1, got {args.num_samples}")
  if args.temperature is not None and args.temperature < 0:
    raise UserError(f"--temperature: must be >= 0, got {args.temperature}")
  eps = None
  if args.cold_start_epsilon is not None:
    try:
      eps = [float(e) for e in args.cold_start_epsilon.split(",") if e.strip()]
    except ValueError:
      raise UserError(f"--cold_start_epsilon {args.cold_start_epsilon!r}: expected "
                      "comma-separated numbers in [0, 1]") from None
    if not eps or any(not 0.0 <= e <= 1.0 for e in eps):
      raise UserError(f"--cold_start_epsilon {args.cold_start_epsilon!r}: every epsilon must "
                      "be in [0, 1]")
  run, arrays = studies.load(args.model_dir, args.split, args.num_users)
  batch = args.batch_size or 64
  num_beams = args.num_beams or run.train_config.num_beams
  head = {"split": args.split}
  if args.temperature is not None:
    k = int(args.topk or max(studies.DIVERSITY_KS))
    ks = sorted({x for x in studies.DIVERSITY_KS + tuple(KS) if x <= k})
    cats, field = None, None
    try:
      cats, _, field = categories_lib.item_categories(studies.dataset_dir_of(run),
                                                      args.category_field)
    except UserError:
      if args.category_field:
        raise
    (row,) = studies.diversity_study(run, arrays, cats, [args.temperature], args.num_samples,
                                     seed=0, ks=ks, batch_size=batch)
    out = {"temperature": args.temperature, "num_samples": args.num_samples, **head,
           "num_users": int(len(arrays)), "category_field": field,
           **{k: v for k, v in row.items() if k not in ("decoding", "temperature")}}
    name = f"capabilities_temperature_{args.temperature:g}.json"
  elif eps is not None:
    out = {**head, **studies.cold_start_study(run, arrays, studies.dataset_dir_of(run), eps,
                                              num_beams, batch_size=batch)}
    name = "capabilities_cold_start.json"
  else:
    out = {**head, **studies.invalid_id_study(run, arrays, num_beams, batch_size=batch)}
    name = "capabilities_invalid_ids.json"
  atomic_write_json(os.path.join(args.model_dir, name), out)
  print(json.dumps(out, indent=2))
  return 0


def _evaluate(args: argparse.Namespace) -> int:
  for flag, name in (("num_beams", "TrainConfig.num_beams"), ("topk", "TrainConfig.topk"),
                     ("batch_size", "TrainConfig.eval_batch_size"), ("num_users", "--num_users")):
    value = getattr(args, flag)
    if value is not None and value < 1:
      raise UserError(f"{name}: must be >= 1, got {value}")
  if args.step is not None and args.step < 0:
    raise UserError(f"--step: must be >= 0, got {args.step}")
  metrics = evaluator.evaluate(args.model_dir, args.split, num_beams=args.num_beams, topk=args.topk,
                     batch_size=args.batch_size, num_users=args.num_users, step=args.step,
                     score_over=args.score_over, allow_changed_inputs=args.allow_changed_inputs)
  print(json.dumps(metrics, indent=2))
  return 0
