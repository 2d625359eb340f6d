"""`python -m cost_jax.compare RUN_A RUN_B [...]`: any finished runs side by side, with 95% CIs
over test users and paired tests, as the reproduction's report judges its own rows.

An ablation run in its own output folder (another training setting, e.g. `history_crop`) is
not in the report of the run it is measured against; this puts the two on the same footing:

  python -m cost_jax.compare /runs/beauty_rqvae/stages/train-rqvae-s0-607f25c5c189 \\
      /runs/beauty_crop/stages/train-rqvae-s0-044243015112 --names full,crop \\
      --dataset_dir /runs/beauty_rqvae/stages/data-e974984a8550/dataset

A run is a folder holding the test lists every model writes (user_ids.npy, topk.npy,
targets.npy): a trained model_dir, a reproduction stage, or a baseline's stage; or one of the
metrics_<split>_step<S>_... .json files `python -m cost_jax.evaluate` writes for another
checkpoint, split or user sample (its lists lie beside it with the same suffix). Runs scored on
different test users are compared on the users they share. With --dataset_dir (the processed
dataset the runs were trained on) Recall@10 by the test target's popularity is added, and by
whether the user's last transition occurs in training, the seen ones by how many training steps
leave the user's last item (cost_jax.experiments.breakdown).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

from cost_jax.data.processed import ProcessedDataset
from cost_jax.experiments import breakdown, paired
from cost_jax.io import UserError, atomic_write_text, exits_cleanly


def run_name(path: str) -> str:
  """A run's default name: its folder, or the stage above a `model` folder; for a metrics file,
  that name and the file's suffix."""
  path = os.path.normpath(os.path.abspath(path))
  base = os.path.basename(path)
  if os.path.isfile(path):
    return f"{run_name(os.path.dirname(path))}{base[len('metrics'):-len('.json')]}"
  return os.path.basename(os.path.dirname(path)) if base == "model" else base


def read_scoring(path: str) -> tuple | None:
  """(user_ids, topk, targets) of a `metrics*.json` file's scoring: `python -m cost_jax.evaluate`
  writes metrics_<split>_step<S>_users<N>_... .json with topk_<same suffix>.npy etc. beside it."""
  folder, base = os.path.split(os.path.abspath(path))
  suffix = base[len("metrics"):-len(".json")]
  files = [os.path.join(folder, f"{n}{suffix}.npy") for n in ("user_ids", "topk", "targets")]
  if not all(os.path.isfile(f) for f in files):
    return None
  try:
    return tuple(np.load(f, allow_pickle=False) for f in files)
  except (OSError, ValueError):
    return None


def load_runs(paths: Sequence[str], names: Sequence[str]) -> dict[str, list[tuple]]:
  """name -> [(user_ids, topk, targets)] of each run; a folder without test lists is refused.
  A run may also be one scoring's metrics*.json file (another step, split or user sample)."""
  lists = {}
  for path, name in zip(paths, names):
    base = os.path.basename(path)
    if os.path.isfile(path) and base.startswith("metrics") and base.endswith(".json"):
      got = read_scoring(path)
      if got is None:
        raise UserError(f"{path}: its lists (user_ids, topk, targets with the same suffix) are "
                        "not beside it")
      lists[name] = [got]
      continue
    if not os.path.isdir(path):
      raise UserError(f"{path}: no such folder")
    got = paired.read_lists(path)
    if got is None:
      raise UserError(f"{path}: no test lists (user_ids.npy, topk.npy, targets.npy) in it or "
                      "in its model/ folder; is the run finished and scored on the test split?")
    lists[name] = [got]
  return lists


def markdown(lists: dict[str, list[tuple]], metrics: Sequence[str],
             dataset_dir: str | None = None) -> str:
  order = list(lists)
  md = paired.significance_markdown(lists, order, str, orderings=(), metrics=metrics)
  if dataset_dir:
    try:
      ds = ProcessedDataset.load(dataset_dir)
    except (OSError, ValueError) as e:
      raise UserError(f"--dataset_dir {dataset_dir}: {e}") from None
    split = ds.leave_one_out()
    counts = breakdown.train_counts(split.train, ds.num_items)
    top = max((int(t.max()) for runs in lists.values() for _, _, t in runs), default=-1)
    if top >= len(counts):
      raise UserError(f"--dataset_dir {dataset_dir}: {ds.num_items} items, but a run's test "
                      f"targets go up to item {top}: not the dataset these runs were scored on")
    seen = breakdown.seen_by_user(split)
    md += breakdown.markdown(lists, counts, order, seen=seen)
    md += breakdown.seen_steps_markdown(lists, order, seen, breakdown.steps_out_by_user(split))
  return "\n".join(md)


def build_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog="python -m cost_jax.compare", description=__doc__.split(
      "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("runs", nargs="+", metavar="RUN",
                  help="a finished run's folder (model_dir or stage) or a metrics*.json of "
                       "`cost_jax.evaluate`; two or more")
  ap.add_argument("--names", help="comma-separated names, one per run (default: the folders')")
  ap.add_argument("--metrics", default="recall@10,ndcg@10",
                  help="comma-separated metric@k (default recall@10,ndcg@10)")
  ap.add_argument("--dataset_dir", "--dataset-dir", dest="dataset_dir",
                  help="the processed dataset of the runs: adds Recall@10 by target popularity")
  ap.add_argument("--output", help="also write the markdown to this file")
  return ap


@exits_cleanly
def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if len(args.runs) < 2:
    raise UserError("give two or more runs to compare")
  names = [n.strip() for n in args.names.split(",")] if args.names else \
      [run_name(p) for p in args.runs]
  if len(names) != len(args.runs):
    raise UserError(f"--names: {len(names)} names for {len(args.runs)} runs")
  if len(set(names)) != len(names):
    raise UserError(f"--names: the names must differ ({', '.join(names)}); give --names")
  metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
  for m in metrics:
    kind, _, k = m.partition("@")
    if kind not in ("recall", "ndcg") or not k.isdigit() or int(k) < 1:
      raise UserError(f"--metrics: {m!r} is not recall@K or ndcg@K")
  text = markdown(load_runs(args.runs, names), metrics, args.dataset_dir)
  print(text)
  if args.output:
    atomic_write_text(args.output, text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
