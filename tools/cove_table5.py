"""A small COVE Table 5 (levels x codebook sizes) for COVE_SASRec, on the VALIDATION split.

  python tools/cove_table5.py --dataset_dir DIR [--sizes "50;200;200,20;500,50;200,20,5"]
                              [--seed 0] [--gin.SASRecConfig.num_epochs=100]

Trains COVE_SASRec (cost_jax.baselines.cove_sasrec) once per codebook layout on the training
part of the leave-one-out split, ranks all items from the training history and scores the
validation target (the test target is never looked at: choose the layout here, then run the
reproduction with --gin.CoveConfig.codebook_sizes="(...)"). Prints NDCG/Recall@5/10 and code usage
per level for each layout, plus plain SASRec (the host alone) as the reference row; NDCG@10 with its
bootstrap interval over validation users and a paired permutation test of each layout against the
host on the same users (Holm-adjusted over the layouts).
"""

from __future__ import annotations

import argparse
import time

from cost_jax import io as cost_io

cost_io.quiet_tensorflow_logs()  # before TensorFlow loads

import numpy as np

from cost_jax import gin_cli
from cost_jax.baselines import cove_sasrec, sasrec, sasrec_train
from cost_jax.experiments import profiles
from cost_jax.data.processed import ProcessedDataset
from cost_jax.experiments import paired
from cost_jax.results import score_topk
from cost_jax import significance
from cost_jax.tokenizer import cove


def main(argv=None) -> list[dict]:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--dataset_dir", required=True)
  ap.add_argument("--sizes", default="50;200;200,20;500,50;200,20,5",
                  help="';'-separated layouts, fine to coarse")
  ap.add_argument("--seed", type=int, default=0)
  gin_cli.add_flags(ap, old_set_example="SASRecConfig.num_epochs=100")
  args = gin_cli.parse_args(ap, argv)
  ds = ProcessedDataset.load(args.dataset_dir)
  loo = ds.leave_one_out()
  # The host's settings: the reproduction's cpu profile (gin/profiles/cpu.gin), then bindings.
  host = profiles.load("cpu", args.gin_file, args.gin_param).sasrec
  layouts = [None] + [tuple(int(x) for x in part.split(",")) for part in args.sizes.split(";")]
  rows = []
  for sizes in layouts:
    t0 = time.perf_counter()
    if sizes is None:
      config = sasrec.SASRecConfig(num_items=ds.num_items, **host)
    else:
      config = cove_sasrec.make_config(ds.num_items, {"codebook_sizes": sizes}, **host)
    params, _ = sasrec_train.train(config, loo.train, seed=args.seed,
                             progress_desc=f"table5 {sizes or 'sasrec'}")
    topk = sasrec.predict_topk(config, params, loo.train, 10)
    m = score_topk(topk, loo.valid_target, ks=(5, 10))
    per_user = significance.per_user(topk, loo.valid_target, 10)["ndcg@10"]
    row = {"sizes": sizes, **{k: m[k] for k in ("ndcg@5", "ndcg@10", "recall@5", "recall@10")},
           "ndcg@10_ci": significance.bootstrap_ci(per_user), "per_user": per_user,
           "seconds": time.perf_counter() - t0}
    if sizes is not None:  # paired against the host on the same validation users
      row["p"] = significance.paired_test(per_user, rows[0]["per_user"])
    if sizes is not None:
      row["usage"] = cove.usage(cove_sasrec.item_codes(config, params), sizes)
    rows.append(row)
    print(f"[table5] {sizes or 'SASRec (host)'}: " + " ".join(
        f"{k}={row[k]:.4f}" for k in ("ndcg@5", "ndcg@10", "recall@5", "recall@10"))
        + (f" usage={'/'.join(f'{u:.2f}' for u in row['usage'])}" if "usage" in row else ""),
        flush=True)
  # Holm over the layouts: each is compared with the host once.
  for r, p_adj in zip(rows[1:], paired.holm([r["p"] for r in rows[1:]])):
    r["p_holm"] = p_adj
  print("\n| v^1 | v^2 | v^3 | N@5 | N@10 [95% CI] | R@5 | R@10 | usage per level | p vs host "
        "(Holm) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    s = list(r["sizes"] or ())
    cells = [str(s[i]) if i < len(s) else "-" for i in range(3)]
    lo, hi = r["ndcg@10_ci"]
    print("| " + " | ".join(cells) + f" | {r['ndcg@5']:.4f} | {r['ndcg@10']:.4f} [{lo:.4f}, "
          f"{hi:.4f}] | {r['recall@5']:.4f} | {r['recall@10']:.4f} | "
          + ("/".join(f"{u:.2f}" for u in r.get("usage", [])) or "(SASRec)") + " | "
          + (f"{r['p']:.3f} ({r['p_holm']:.3f})" if "p" in r else "") + " |")
  best = max(rows[1:], key=lambda r: r["ndcg@10"]) if len(rows) > 1 else rows[0]
  print(f"cove_table5: best layout on validation NDCG@10 {best['sizes']} "
        f"({best['ndcg@10']:.4f} vs SASRec {rows[0]['ndcg@10']:.4f}), {len(loo.valid_target)} "
        f"validation users, seed {args.seed}; NDCG@10 intervals: bootstrap over validation "
        f"users; p: paired permutation test against the host, Holm-adjusted over the layouts")
  return rows


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  main()
