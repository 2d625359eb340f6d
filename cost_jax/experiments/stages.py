"""The stage functions (each stage's entry point in the other packages) and their summaries.

`StageFns` lets the tests swap in fakes; `REAL_FNS` calls the data, tokenizer, seq2seq and
baseline packages. `tokenizer_stats` normalizes a tokenizer report for the report tables.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cost_jax import data
from cost_jax.baselines import cove_sasrec, popularity, sasrec, sasrec_train, transition
from cost_jax.data import cold_start, embed
from cost_jax.experiments import capabilities as capabilities_lib
from cost_jax.data.processed import ProcessedDataset
from cost_jax.io import UserError, read_json
from cost_jax.seq2seq import trainer
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq.network import TransformerConfig
from cost_jax.tokenizer import config as tc
from cost_jax.tokenizer import fit
from cost_jax.tokenizer.cove import CoveConfig


def _real_cove_sasrec(dataset_dir: str, output: str, seed: int, ks: Sequence[int],
                      cove: Mapping[str, Any] | None = None, **cfg: Any) -> dict:
  ds = ProcessedDataset.load(dataset_dir)
  return cove_sasrec.train_and_evaluate(ds.leave_one_out(), ds.num_items, seed=seed,
                                        output_dir=output, ks=ks, cove=cove, **cfg)


def _real_cove_tokenize(dataset_dir: str, output: str, seed: int,
                        cove: Mapping[str, Any] | None = None, **cfg: Any) -> dict:
  """TIGER on COVE IDs: COVE_SASRec trained on the training split only, codes exported."""
  ds = ProcessedDataset.load(dataset_dir)
  return cove_sasrec.fit_tokenizer(ds.leave_one_out(), ds.num_items, output, seed=seed,
                                   cove=cove, **cfg)


def _real_transition(dataset_dir: str, output: str, ks: Sequence[int]) -> dict:
  ds = ProcessedDataset.load(dataset_dir)
  return transition.evaluate(ds.leave_one_out(), ds.num_items, ks=ks, output_dir=output)


def _real_cold_start_data(dataset_dir: str, output: str, fraction: float, seed: int) -> dict:
  return cold_start.make_cold_start(dataset_dir, output, fraction, seed)


def _real_cold_start_tokenize(dataset_dir: str, method: str, output: str, seed: int,
                              overrides: dict) -> dict:
  ds = ProcessedDataset.load(dataset_dir)
  unseen = cold_start.unseen_items(dataset_dir)
  return fit.fit_cold_start(ds.embeddings(), unseen, method, output, seed=seed,
                            overrides=overrides)


@dataclasses.dataclass
class StageFns:
  """Entry points of the stages; tests swap in fakes."""

  prepare: Callable[..., str]
  embed: Callable[..., str]
  tokenize: Callable[..., dict]
  train: Callable[..., dict]
  popularity: Callable[..., dict]
  sasrec: Callable[..., dict]
  cove_sasrec: Callable[..., dict]
  cove_tokenize: Callable[..., dict]
  cove_tokenize_from: Callable[..., dict] = cove_sasrec.tokenizer_from_run
  cold_start_data: Callable[..., dict] = _real_cold_start_data
  cold_start_tokenize: Callable[..., dict] = _real_cold_start_tokenize
  capabilities: Callable[..., dict] = capabilities_lib.run_studies
  transition: Callable[..., dict] = _real_transition


def _real_prepare(dataset: str, output: str, **options: Any) -> str:
  """The data stage: `options` are cost_jax.data.prepare's (+ "loader", default `dataset`)."""
  options = dict(options)
  loader = options.pop("loader", None) or dataset
  return data.prepare(loader, output=output, **options)


def _real_embed(dataset_dir: str, **kwargs) -> str:
  return embed.embed_dataset(dataset_dir, **kwargs)


def _real_tokenize(embeddings, method: str, output: str, seed: int, overrides: dict) -> dict:
  return fit.fit(embeddings, method, output, seed=seed, overrides=overrides)


def _real_train(dataset_dir: str, tokenizer_dir: str, model_dir: str, seed: int,
                task: str = "", **tiger: Any) -> dict:
  """TIGER seq2seq training + test scoring; `tiger` = TrainConfig / TransformerConfig fields.

  `task`: the SeqIO task name to register ("{method}_{dataset}" with SeqIO-safe characters;
  the trainer's default would take the method verbatim, and "rqvae+cost" is not a valid name).
  """
  metrics = trainer.train_and_evaluate(task or None, model_dir, dataset_dir=dataset_dir,
                                     tokenizer_dir=tokenizer_dir, seed=seed, **tiger)
  metrics.pop("summary", None)
  return metrics


def _real_popularity(dataset_dir: str, output: str, ks: Sequence[int]) -> dict:
  ds = ProcessedDataset.load(dataset_dir)
  return popularity.evaluate(ds.leave_one_out(), ds.num_items, ks=ks, output_dir=output)


def _real_sasrec(dataset_dir: str, output: str, seed: int, ks: Sequence[int], **cfg: Any) -> dict:
  ds = ProcessedDataset.load(dataset_dir)
  return sasrec_train.train_and_evaluate(ds.leave_one_out(), ds.num_items, seed=seed,
                                         output_dir=output, ks=ks, **cfg)


REAL_FNS = StageFns(prepare=_real_prepare, embed=_real_embed, tokenize=_real_tokenize,
                    train=_real_train, popularity=_real_popularity, sasrec=_real_sasrec,
                    cove_sasrec=_real_cove_sasrec, cove_tokenize=_real_cove_tokenize)


def validate_profile(profile) -> None:
  """Every section of a profile checked against the config it feeds, before any stage runs."""
  def check(section: str, build: Callable[[], Any]) -> None:
    try:
      build()
    except UserError as e:
      raise UserError(f"{section}: {e}") from None
    except (TypeError, ValueError) as e:
      raise UserError(f"{section}: {str(e).splitlines()[0]}") from None

  train_kw, model_kw = trainer.split_overrides(profile.tiger)
  check("TrainConfig", lambda: dataclasses.replace(
      TrainConfig(dataset_dir="-", tokenizer_dir="-"), **train_kw).validate())
  check("TransformerConfig", lambda: TransformerConfig(**model_kw))
  check("SASRecConfig", lambda: sasrec.SASRecConfig(num_items=1, **profile.sasrec))
  for row in profile.sasrec_rows:
    check(f"{row}/SASRecConfig",
          lambda row=row: sasrec.SASRecConfig(num_items=1, **profile.sasrec_settings(row)))
  check("CoveConfig", lambda: CoveConfig(**profile.cove))
  for m in profile.methods:
    if m not in tc.INTERACTION_METHODS and m in tc.METHODS:
      check(f"TokenizerConfig (tokenizer {m})", lambda m=m: tc.make_config(m, profile.tokenizer_overrides(m)))
  check("CapabilityConfig", lambda: capabilities_lib.settings(profile.capabilities))
  allowed = set(inspect.signature(embed.embed_dataset).parameters) - {"path"}
  unknown = sorted(set(profile.embed) - allowed)
  if unknown:
    raise UserError(f"Profile.embed: unknown key(s) {', '.join(unknown)} (expected some of "
                    f"{', '.join(sorted(allowed))})")


def tokenizer_stats(report: Mapping[str, Any] | None, method: str, seed: int) -> dict:
  """Normalizes a cost_jax.tokenize report to {method, seed, usage[levels], collided_items,
  largest_group, id_length, ...}; collisions are before dedup."""
  report = dict(report or {})
  out: dict[str, Any] = {"method": method, "seed": seed}
  usage = _find(report, ("usage_per_level", "codebook_usage", "usage"))
  if isinstance(usage, Mapping):
    usage = [usage[k] for k in sorted(usage)]
  if isinstance(usage, (list, tuple)):
    out["usage"] = [float(u) for u in usage if _is_number(u)]
  coll = _find(report, ("collisions_before_dedup", "collisions_before", "collisions"))
  if isinstance(coll, Mapping):
    for src, dst in (("colliding_items", "collided_items"), ("largest_group", "largest_group"),
                     ("collision_groups", "collision_groups"), ("unique_ids", "unique_ids")):
      if _is_number(coll.get(src)):
        out[dst] = coll[src]
  ids = _find(report, ("id_length", "semantic_id_length"))
  if _is_number(ids):
    out["id_length"] = int(ids)
  if _is_number(report.get("reconstruction_cosine")):
    out["reconstruction_cosine"] = float(report["reconstruction_cosine"])
  nprec = report.get("neighbor_precision")
  if isinstance(nprec, Mapping) and _is_number(nprec.get("value")):
    out["neighbor_precision"] = float(nprec["value"])
  for k in ("wall_time_s", "seconds"):
    if _is_number(report.get(k)):
      out["seconds"] = float(report[k])
      break
  return out


def _find(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
  """First of `keys` in d or in a nested dict (one level deep)."""
  for k in keys:
    if k in d:
      return d[k]
  for v in d.values():
    if isinstance(v, Mapping):
      for k in keys:
        if k in v:
          return v[k]
  return None


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt_kv(d: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v}" for k, v in d.items())


def checked_embeddings(dataset_dir: str) -> np.ndarray:
  """DIR/embeddings.npy, checked at the tokenizer stage's door: a float matrix with one row per
  item of DIR/stats.json (a short file fails here, naming it, not later in training)."""
  path = os.path.join(dataset_dir, "embeddings.npy")
  try:
    emb = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise UserError(f"{path}: cannot read ({str(e).splitlines()[0] if str(e) else e})") from None
  stats = os.path.join(dataset_dir, "stats.json")
  items = read_json(stats).get("items") if os.path.isfile(stats) else None
  if emb.ndim != 2 or (items is not None and emb.shape[0] != int(items)):
    raise UserError(f"{path}: shape {emb.shape}, expected [{items}, D]: one row per item of "
                    f"{stats}")
  return emb
