"""The setup and deviation lines of the reproduction's report, read from what actually ran.

The seq2seq settings come from the first finished training stage's model_dir/config.json (the
operative TrainConfig and TransformerConfig of that run), not from a copy of the profile.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shlex
import sys
from typing import Any, Mapping, Sequence

import pandas as pd

from cost_jax.baselines import sasrec
from cost_jax.data import processed
from cost_jax.data.recbole import TITLE_NAMES
from cost_jax.experiments import published
from cost_jax.experiments.stages import _fmt_kv
from cost_jax.io import UserError, read_json, sha256_file
from cost_jax.seq2seq.config import TrainConfig, plain
from cost_jax.seq2seq.network import TransformerConfig
from cost_jax.tokenizer.config import INTERACTION_METHODS, make_config


def operative_tiger(pipe) -> dict[str, Any]:
  """TrainConfig + TransformerConfig fields of the first finished run (model/config.json), or,
  before any run finished, the dataclass defaults with the profile's changes."""
  for st in pipe.stages:
    res = pipe.results.get(st.name)
    if st.kind != "train" or res is None or res.status not in ("ran", "cached"):
      continue
    path = os.path.join(res.path, "model", "config.json")
    if os.path.isfile(path):
      try:
        record = read_json(path)
      except UserError:
        continue
      return {**record.get("train", {}), **record.get("model", {})}
  return {**plain(TrainConfig()), **plain(TransformerConfig()), **dict(pipe.profile.tiger)}


def _run_settings(pipe) -> dict[str, Any]:
  paths = ("task", "dataset_dir", "tokenizer_dir", "cache_dir")
  return {k: v for k, v in operative_tiger(pipe).items() if k not in paths}


def shell_arg(arg: str) -> str:
  """`arg` as a shell reads it back: bare when safe, in double quotes when it holds single
  quotes (gin strings: --gin.X="'adamw'"), else in single quotes ('' for an empty one)."""
  if arg and all(c.isalnum() or c in "-_./=:,@+%" for c in arg):
    return arg
  if "'" in arg and not any(c in arg for c in '"$`\\!'):
    return f'"{arg}"'
  return shlex.quote(arg)


def setup_lines(pipe) -> list[str]:
  p = pipe.profile
  command = " ".join(["python -m cost_jax.reproduce", *map(shell_arg, sys.argv[1:])])
  lines = [f"Command: `{command}`",
           f"Profile `{p.name}`: {p.description}.",
           f"Methods: {', '.join(p.methods) or 'none'}; "
           f"baselines: {', '.join(p.baselines) or 'none'}; "
           f"seeds: {', '.join(map(str, p.seeds))} (the same for every method; a seed drives "
           "the tokenizer and the seq2seq model).",
           f"Seq2seq model and schedule as run: {_fmt_kv(_run_settings(pipe))}.",
           f"Tokenizer overrides: {_fmt_kv({k: v for k, v in p.tokenizer.items()})}.",
           f"SASRec: {_fmt_kv(p.sasrec) or 'defaults'} (see cost_jax/baselines/sasrec.py).",
           f"Machine: {platform.machine()}, {os.cpu_count()} CPUs visible, Python "
           f"{platform.python_version()}; finished "
           f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}."]
  data = pipe.results.get("data")
  if data is not None and isinstance(data.value, dict):
    s = data.value
    lines.append(f"Data: {s.get('users', '?')} users, {s.get('items', '?')} items, "
                 f"{s.get('interactions', '?')} interactions (stats.json).")
  return lines + provenance_lines(pipe)


PROVENANCE_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "tensorflow-cpu", "seqio",
                       "torch", "sentence-transformers", "transformers")


def _sha256(path: str) -> str | None:
  return sha256_file(path)[:16] if os.path.isfile(path) else None


def provenance_lines(pipe) -> list[str]:
  """What a rerun on another machine must match to give the same numbers: package versions,
  the XLA thread setting, and the sha256 (first 16 hex digits) of the embeddings and of every
  tokenizer's IDs. Comparing these between two machines finds the first stage that differs."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  versions = []
  for name in PROVENANCE_PACKAGES:
    try:
      versions.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
      continue
  lines = [f"Provenance: {', '.join(versions)}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
           f"{os.cpu_count()} CPUs."]
  hashes = []
  for st in pipe.stages:
    r = pipe.results.get(st.name)
    if r is None or r.status not in ("ran", "cached"):
      continue
    if st.kind == "embed":
      h = _sha256(os.path.join(r.path, "dataset", "embeddings.npy"))
      if h:
        hashes.append(f"embeddings.npy {h}")
    elif st.kind in ("tokenize", "cold_start_tokenize"):
      h = _sha256(os.path.join(r.path, "tokenizer", "semantic_ids.npy"))
      if h:
        hashes.append(f"{st.name} IDs {h}")
  if hashes:
    lines.append("Hashes (sha256, 16 hex digits; equal hashes = equal inputs to the next "
                 "stage): " + "; ".join(hashes) + ".")
  return lines

def deviation_notes(pipe, rows: Sequence[Mapping]) -> list[str]:
  """Deviations from the papers, from the operative config of the runs (operative_tiger)."""
  p, t = pipe.profile, operative_tiger(pipe)
  emb = pipe.results.get("embed")
  emb_model = (emb.value or {}).get("embeddings", {}).get("model") if emb and isinstance(
      emb.value, dict) else None
  emb_model = emb_model or p.embed.get("model", "?")
  tiger_cut = p.dataset.lower() in published.datasets()
  dataset = ("MovieLens-100K (item text: the CoST prompt with genres as category, title and "
             "release year)" if p.dataset == "ml100k" else p.dataset)
  if pipe.external_dataset:
    dataset += f", from {pipe.external_dataset}"
  coverage = _text_coverage(pipe)
  notes = [
      (f"Dataset: {dataset}, one of TIGER's Amazon-2014 cuts (TIGER §4.1.1, Table 2)." if tiger_cut
       else f"Dataset: {dataset} instead of MIND / Amazon Office (CoST §4.1) or Amazon "
       "Beauty/Sports/Toys (TIGER §4.1.1)."),
  ] + _coverage_notes(coverage, tiger_cut, p.dataset) + [
      f"Text encoder: {emb_model} instead of Sentence-T5 (768-d; CoST §4.1, TIGER §4.1.3).",
      f"Seq2seq model: {t.get('num_encoder_layers')}+{t.get('num_decoder_layers')} layers, "
      f"d_model {t.get('emb_dim')}, {t.get('num_heads')} heads x {t.get('head_dim')}, MLP "
      f"{t.get('mlp_dim')} (TIGER §4.1.3: 4+4, 128, 6 x 64, 1024).",
      f"Training: {t.get('num_train_steps')} steps, batch {t.get('batch_size')}, lr "
      f"{t.get('learning_rate')} ({_schedule_desc(t)}; {t.get('optimizer', 'adafactor')}) "
      "(TIGER §4.1.3: 200k steps, batch 256, lr 0.01 for 10k steps; CoST §4.1: batch 512, "
      "lr 0.001).",
  ] + tokenizer_notes(p) + [
      f"Seeds: {len(p.seeds)} ({', '.join(map(str, p.seeds))}); the papers report single runs "
      "without spread.",
      f"Decoding: trie-constrained beam search, {t.get('num_beams')} beams, top-{max(p.ks)}; "
      "metrics over all items (full ranking), no history filtering; leave-one-out test split "
      f"(history = train + validation item, the last {t.get('max_history') or 20} items; "
      "TIGER §4.1.1: 20).",
      "Baselines: MostPop counts training + validation interactions; the Markov chain counts "
      "the item transitions of the training parts (from the user's last item: the last training "
      "item for validation, the validation item for test); SASRec-style model "
      f"({_sasrec_desc(pipe)}) ranks all items, same split and metric function."
      + ("" if tiger_cut else " TIGER Table 1's SASRec numbers are on Amazon, not comparable "
         "in value."),
  ]
  if len(p.seeds) < 3:
    notes.append(f"Only {len(p.seeds)} seed(s): spreads are not meaningful.")
  for m in list(p.methods) + [b for b in p.baselines if b in ("sasrec", "sasrec_bce")]:
    done = sorted({r["seed"] for r in rows if r["method"] == m})
    if done != sorted(p.seeds):
      notes.append(f"{m}: results for seed(s) {done or 'none'} of {list(p.seeds)} so far; its "
                   "mean/std cover only those.")
  missing = [s.name for s in pipe.stages if pipe.results.get(s.name) is not None and
             pipe.results[s.name].status in ("failed", "blocked")]
  if missing:
    notes.append(f"Stages that did not finish: {', '.join(missing)}.")
  pending = [s.name for s in pipe.stages if s.name not in pipe.results]
  if pending:
    notes.append(f"Stages not run yet: {len(pending)} ({', '.join(pending[:8])}"
                 f"{', ...' if len(pending) > 8 else ''}).")
  return notes

def _schedule_desc(t: Mapping[str, Any]) -> str:
  """The learning-rate schedule as run (cost_jax.seq2seq.optim)."""
  kind = t.get("lr_schedule", "rsqrt")
  if kind == "constant":
    return "constant"
  if kind == "wsd":
    return (f"constant for {t.get('lr_constant_steps')} steps, then linear to 0 over "
            f"{t.get('lr_decay_steps')} (wsd)")
  return f"{t.get('lr_constant_steps')} constant steps, then inverse sqrt"


def text_coverage(dataset_dir: str) -> tuple[int, dict[str, int]]:
  """(items, {raw text field: items with a non-empty value}) of a processed dataset dir."""
  items = pd.read_parquet(os.path.join(dataset_dir, processed.ITEMS_FILE))
  fields = [c for c in items.columns if c not in ("item_index", "item_id", "text")]
  return len(items), {c: int(items[c].fillna("").astype(str).str.strip().str.len().gt(0).sum())
                      for c in fields}


def _text_coverage(pipe) -> tuple[int, dict[str, int]] | None:
  res = pipe.results.get("data")
  if res is None or res.status not in ("ran", "cached"):
    return None
  try:
    return text_coverage(pipe.dataset_path("data"))
  except (OSError, ValueError, KeyError):
    return None


def _coverage_notes(coverage, tiger_cut: bool, name: str) -> list[str]:
  """Which item-text fields the embeddings read and how many items have each; on one of
  TIGER's cuts, a warning when fewer than 90% of the items have a title (TIGER embedded every
  item's title, price, brand and category, §4.1.3), e.g. the Sports files with titles for 26%."""
  if not coverage:
    return []
  n, fields = coverage
  if not fields:
    return []
  out = ["Item text fields (items with a value): " + ", ".join(
      f"{f} {c:,} of {n:,} ({c / max(n, 1):.0%})" for f, c in fields.items()) + "."]
  titles = [c for f, c in fields.items() if f.lower() in TITLE_NAMES]
  if tiger_cut and (not titles or max(titles) < 0.9 * n):
    share = f"{max(titles) / max(n, 1):.0%} of the items" if titles else "no item"
    out.append(f"NOT COMPARABLE with TIGER's {name} row: a title for {share} (TIGER embedded "
               "title, price, brand and category of every item, §4.1.3).")
  return out


_DEDUP = {"tiger_extra_token": "a 4th token tells apart items that share an ID (TIGER §3.1.3)",
          "cost_reassign": "colliding items move to free last-level codes (CoST)",
          "none": "items may share an ID"}


def tokenizer_notes(profile) -> list[str]:
  """One line per ID method of the profile, from the TokenizerConfig it actually ran with
  (preset + the profile's overrides), then the epochs of the neural ones against the papers'."""
  lines, epochs, shapes = [], {}, {}
  for m in profile.methods:
    if m in INTERACTION_METHODS:
      continue  # COVE's codes come from SASRec's training (CoveConfig), not a TokenizerConfig
    c = make_config(m, profile.tokenizer_overrides(m))
    if m == "lsh":
      what = (f"{c.lsh_levels} levels x {c.lsh_bits} hyperplanes ({2 ** c.lsh_bits} codes a "
              "level; TIGER §4.3.2: 4 x 8)")
    elif m == "random":
      what = (f"{c.num_levels} levels x {c.codebook_size} codes drawn at random (TIGER "
              "Table 3: 4 x 255)")
    elif m == "rqkmeans":
      what = (f"residual k-means, {c.num_levels} levels x {c.codebook_size} codes, "
              f"{c.kmeans_iters} iterations")
    else:
      shapes[m] = (c.latent_dim, c.num_levels, c.codebook_size, c.shared_codebook)
      epochs[m] = c.epochs
      books = "one shared codebook" if c.shared_codebook else "a codebook per level"
      what = (f"preset `{c.preset}`: latent {c.latent_dim}, {c.num_levels} levels x "
              f"{c.codebook_size} codes ({books}), {c.optimizer} lr {c.learning_rate:g}, "
              f"batch {c.batch_size}, {c.epochs} epochs")
    lines.append(f"IDs of {m}: {what}; {_DEDUP.get(c.dedup, c.dedup)}.")
  if epochs:
    lines.append("Tokenizer epochs: " + ", ".join(f"{m} {e}" for m, e in epochs.items())
                 + " (CoST Fig. 3: 20/50/100 epochs; TIGER §4.1.3: 20k epochs).")
  if len(shapes) > 1 and len(set(shapes.values())) == 1:
    lines.append(f"{', '.join(shapes)} share one architecture, so only the loss differs between "
                 "them.")
  return lines


def _sasrec_desc(pipe) -> str:
  fields = {f.name: f.default for f in dataclasses.fields(sasrec.SASRecConfig)
            if f.default is not dataclasses.MISSING}
  fields.update(pipe.profile.sasrec)
  return (f"{fields['num_blocks']} blocks, d {fields['emb_dim']}, max len {fields['max_len']}, "
          f"{fields['num_epochs']} epochs, loss {fields['loss']}"
          + (" = full softmax cross-entropy over all items" if fields["loss"] == "softmax"
             else " = BCE with one sampled negative (SASRec paper)")
          + ("; the SASRec (BCE) row: the same with BCE and one sampled negative per position "
             "(SASRec paper's loss, the setting of the SASRec row TIGER quotes)"
             + "".join(f", {k} {v}" for k, v in pipe.profile.sasrec_rows.get("sasrec_bce", {})
                       .items())
             if "sasrec_bce" in pipe.profile.baselines else ""))
