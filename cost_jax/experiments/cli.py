"""`python -m cost_jax.reproduce`: the CoST ablation (CoST RecSys'24 Table 2) + baselines.

  python -m cost_jax.reproduce --profile cpu --output results/ml100k

Profiles (--profile, gin/profiles/<name>.gin): "cpu" (small model, few steps; ~1 h on 2 cores),
"tiger-cpu" (TIGER's Table 1 and 3 on 2 cores, each run to its best validation checkpoint) and
"paper" (TIGER size and steps, tokenizer presets as the papers; for a GPU/TPU). Any value is a gin
binding on top: --gin.TrainConfig.num_train_steps=500, --gin.TokenizerConfig.epochs=20,
--gin.cost/TokenizerConfig.tau=0.5, --gin.SASRecConfig.num_epochs=50, --gin.Profile.seeds="(0,1)"
(or --gin_file F, --gin_param "X.f = v"). See cost_jax.experiments.pipeline for the stages.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Sequence

from cost_jax import gin_cli, stop
from cost_jax.experiments import profiles
from cost_jax.experiments.pipeline import Pipeline
from cost_jax.experiments.profiles import Profile
from cost_jax.experiments.stage_cache import StageResult, config_hash
from cost_jax.experiments.stages import REAL_FNS, StageFns
from cost_jax.data import recbole_dataset_name
from cost_jax.io import LOCK_NAME, DirLock, UserError, exits_cleanly, read_json
from cost_jax.tokenizer.config import ABLATION_METHODS


def build_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(
      prog="python -m cost_jax.reproduce",
      description="Reproduce the CoST ablation (random / LSH / L_re / L_co / L_re+L_co) with "
                  "TIGER on MovieLens-100K, plus MostPop, item-transition (Markov) and SASRec baselines.")
  ap.add_argument("--profile", default="cpu",
                  help=f"gin/profiles/<name>.gin, one of {', '.join(profiles.names())}")
  ap.add_argument("--output", default="results/ml100k", help="output dir (report + stage cache)")
  ap.add_argument("--seeds", help="comma-separated seeds (default: the profile's, cpu: 0,1,2)")
  ap.add_argument("--methods", help=f"comma-separated subset of {','.join(ABLATION_METHODS)}")
  ap.add_argument("--baselines",
                  help=f"comma-separated subset of {','.join(profiles.BASELINES)} ('' = none)")
  ap.add_argument("--dataset", help="dataset name: ml100k (default), or any name with "
                  "--recbole_dir (e.g. beauty for ../shared/data/amazon2014-beauty)")
  ap.add_argument("--recbole_dir", "--recbole-dir", dest="recbole_dir",
                  help="prepare the data from RecBole atomic files in this folder "
                       "(cost_jax.data.recbole); text fields: --gin.Profile.data=\"{'text_fields': 'title,brand'}\"")
  ap.add_argument("--dataset_dir", "--dataset-dir", dest="dataset_dir",
                  help="use this processed dataset dir instead of preparing Profile.dataset")
  ap.add_argument("--capabilities", help="TIGER's capability studies, comma-separated: "
                  "cold_start (§4.4.1), diversity (§4.4.2), invalid_ids (§5); settings with "
                  "--gin.CapabilityConfig.X=V (epsilons, temperatures, category_field, method)")
  gin_cli.add_flags(ap, old_set_example="TrainConfig.num_train_steps=500")
  ap.add_argument("--reuse_stages_from", "--reuse-stages-from", dest="reuse_stages_from",
                  action="append", default=[], metavar="OUTPUT",
                  help="another output folder (repeatable): a stage that finished there with "
                       "the same config is linked in, not run again (e.g. an ablation sharing "
                       "the data, embedding and tokenizer stages of an earlier run)")
  ap.add_argument("--list", action="store_true", help="print the stage plan and exit")
  ap.add_argument("--report_only", "--report-only", dest="report_only", action="store_true",
                  help="rewrite the report from finished stages; run nothing")
  ap.add_argument("--time_budget_min", "--time-budget-min", dest="time_budget_min", type=float,
                  help="start no new stage after this many minutes; report what finished")
  ap.add_argument("--fail_fast", "--fail-fast", dest="fail_fast", action="store_true",
                  help="stop at the first failing stage (default: keep going, report the rest)")
  return ap


def profile_from_args(args: argparse.Namespace) -> Profile:
  profile = profiles.load(args.profile, args.gin_file, args.gin_param)
  changes: dict[str, Any] = {}
  try:
    if args.seeds is not None:
      changes["seeds"] = tuple(int(s) for s in args.seeds.split(",") if s.strip())
  except ValueError:
    raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
  if args.methods is not None:
    changes["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
  if args.baselines is not None:
    changes["baselines"] = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
  if args.capabilities is not None:
    changes["capabilities"] = {**dict(profile.capabilities), "studies": tuple(
        c.strip() for c in args.capabilities.split(",") if c.strip())}
  if args.recbole_dir:
    changes["dataset"] = args.dataset or recbole_dataset_name(args.recbole_dir)
    changes["data"] = {**dict(profile.data), "loader": "recbole", "recbole_dir":
                       os.path.abspath(os.path.expanduser(args.recbole_dir))}
  elif args.dataset:
    changes["dataset"] = args.dataset
  elif args.dataset_dir:
    # A processed folder names itself (its stats.json "name"), never the profile's default.
    changes["dataset"] = processed_dataset_name(args.dataset_dir)
  return dataclasses.replace(profile, **changes)


def processed_dataset_name(dataset_dir: str) -> str:
  """The name a processed dataset folder gives itself (stats.json), else the folder's name."""
  stats = os.path.join(dataset_dir, "stats.json")
  try:
    name = read_json(stats).get("name") if os.path.isfile(stats) else None
  except UserError:
    name = None
  return str(name or os.path.basename(os.path.normpath(os.path.abspath(dataset_dir))))


@exits_cleanly
def main(argv: Sequence[str] | None = None, fns: StageFns = REAL_FNS) -> int:
  args = gin_cli.parse_args(build_parser(), argv, set_spelling=profiles.set_spelling)
  profile = profile_from_args(args)
  for other in args.reuse_stages_from:
    if not os.path.isdir(os.path.join(other, "stages")):
      raise UserError(f"--reuse_stages_from {other}: not an output folder (no stages/ in it)")
  pipe = Pipeline(profile, args.output, fns=fns, dataset_dir=args.dataset_dir,
                  reuse_from=args.reuse_stages_from)
  if args.list:
    pipe.print_plan()
    return 0
  if args.report_only:
    for st in pipe.stages:
      marker = pipe.cache.adopt(st.name, st.config)
      if marker is not None:
        pipe.results[st.name] = StageResult(st.name, pipe.cache.path(st.name, st.config),
                                            config_hash(st.config), "cached",
                                            float(marker.get("seconds", 0.0)),
                                            cpu_seconds=marker.get("cpu_seconds"),
                                            value=marker.get("result"))
    if pipe.write_report(partial=len(pipe.results) < len(pipe.stages)) is None:
      raise UserError(f"{args.output}: no finished stage with metrics to report")
    return 0
  # SIGTERM / SIGINT: the running stage stops at its next safe point (the trainer saves its
  # state; the stage resumes on the next run), and no later stage starts (cost_jax.stop).
  # One reproduction per output folder: a second one is refused with the holder's pid.
  with DirLock(os.path.join(args.output, LOCK_NAME), "reproduce"), stop.handling():
    results = pipe.run(keep_going=not args.fail_fast,
                       time_budget_s=None if args.time_budget_min is None
                       else 60.0 * args.time_budget_min)
  failed = [r.name for r in results if r.status in ("failed", "blocked")]
  not_run = len(pipe.stages) - len(results)
  if failed or not_run:
    print(f"reproduce: {len(failed)} stage(s) did not finish"
          + (f": {', '.join(failed)}" if failed else "")
          + (f"; {not_run} not started (time budget)" if not_run else ""), file=sys.stderr)
    return 1
  return 0
