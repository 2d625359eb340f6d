"""Does packing change what the model learns? Padded, packed and bucketed training, side by side.

  python tools/bench_packing_quality.py --dataset_dir DIR --tokenizer_dir TOK \\
      [--modes off,encoder,bucket] [--seed 0] [--gin.TrainConfig.num_train_steps=1200]

Trains the TIGER model once per TrainConfig.packing mode with the same seed, the same settings
(the reproduction's cpu profile, gin/profiles/cpu.gin, then any --gin.X=v / --gin_param binding
of TrainConfig or TransformerConfig) and the same number of examples (steps x batch size), then scores the validation split
with trie-constrained beam search. Prints per mode the validation Recall@10 and NDCG@10 with
95% bootstrap intervals over users, the paired permutation p against "off", and the training
throughput; the last line is the summary. "encoder" packing trains on the padded batch's
examples (equal losses, tested); "bucket" changes which examples share a step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np


def main(argv=None) -> dict:
  from cost_jax import significance  # pylint: disable=g-import-not-at-top
  from cost_jax import gin_cli  # pylint: disable=g-import-not-at-top
  from cost_jax.experiments import profiles  # pylint: disable=g-import-not-at-top
  from cost_jax.seq2seq import evaluator, trainer  # pylint: disable=g-import-not-at-top
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--dataset_dir", required=True)
  ap.add_argument("--tokenizer_dir", required=True)
  ap.add_argument("--modes", default="off,encoder,bucket")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--output", default="", help="keep the model dirs here (default: a temp dir)")
  gin_cli.add_flags(ap, old_set_example="TrainConfig.num_train_steps=600")
  args = gin_cli.parse_args(ap, argv)
  tiger = profiles.load("cpu", args.gin_file, args.gin_param).tiger
  settings = dict(tiger, eval_test=False, eval_at_end=False, eval_every=0)
  root = args.output or tempfile.mkdtemp(prefix="packing_quality_")
  per_user, out = {}, {"settings": settings, "seed": args.seed, "modes": {}}
  for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
    model_dir = os.path.join(root, mode)
    res = trainer.train_and_evaluate(model_dir=model_dir, dataset_dir=args.dataset_dir,
                                     tokenizer_dir=args.tokenizer_dir, seed=args.seed,
                                     packing=mode, **settings)
    m = evaluator.evaluate(model_dir, "validation")
    topk = np.load(os.path.join(model_dir, "topk_validation.npy"))
    targets = np.load(os.path.join(model_dir, "targets_validation.npy"))
    per_user[mode] = significance.per_user(topk, targets, 10)
    summary = res["summary"]
    out["modes"][mode] = {
        "recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
        "recall@10_ci95": significance.bootstrap_ci(per_user[mode]["recall@10"]),
        "ndcg@10_ci95": significance.bootstrap_ci(per_user[mode]["ndcg@10"]),
        "examples_per_sec": summary.get("examples_per_sec"), "step": summary.get("step")}
    print(f"[packing_quality] {mode}: validation recall@10 {m['recall@10']:.4f} "
          f"ndcg@10 {m['ndcg@10']:.4f}", file=sys.stderr, flush=True)
  if "off" in per_user:
    for mode in per_user:
      if mode != "off":
        out["modes"][mode]["p_vs_off"] = {
            k: significance.paired_test(per_user[mode][k], per_user["off"][k])
            for k in ("recall@10", "ndcg@10")}
  print(json.dumps(out, indent=2, default=float))
  parts = []
  for mode, v in out["modes"].items():
    lo, hi = v["recall@10_ci95"]
    p = v.get("p_vs_off", {}).get("recall@10")
    parts.append(f"{mode}: R@10 {v['recall@10']:.4f} [{lo:.4f}, {hi:.4f}]"
                 + (f" p={p:.3f}" if p is not None else "")
                 + (f", {v['examples_per_sec']:.0f} ex/s" if v.get("examples_per_sec") else ""))
  print("bench_packing_quality: " + "; ".join(parts) + f" (seed {args.seed}, "
        f"{settings.get('num_train_steps')} steps, validation users {len(per_user[mode]['recall@10'])})")
  return out


if __name__ == "__main__":
  main()
