"""COVE_SASRec (COVE §3.2, Fig. 2c) and COVE's codes as semantic IDs for TIGER.

  * `train_and_evaluate`: SASRec (cost_jax.baselines.sasrec) with its item embeddings passed
    through COVE (cost_jax.tokenizer.cove), trained with L_rec + ω_q L_quant (eq. 7) and
    scored on the same leave-one-out test split, ranking all items, as every other method.
    Writes SASRec's outputs plus cove.json (code usage per level) and cove_codes.npy.
  * `fit_tokenizer` (beyond the paper): trains COVE_SASRec on the training part of the
    leave-one-out split only, then writes its learned item codes, coarse to fine, as a
    tokenizer dir (cost_jax.tokenizer.artifact) made unique with TIGER's extra token, so that
    TIGER trains on collaborative IDs learned from interactions alone (method "cove").

The host is the project's SASRec with the same settings as the SASRec row it is compared
against (paired by seed); COVE's own host models were BERT4Rec and FANS (§4.2).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from cost_jax.baselines import sasrec, sasrec_train
from cost_jax.io import StagedDir, UserError, atomic_write_json, atomic_write_npy, read_json
from cost_jax.tokenizer import artifact, dedup
from cost_jax.tokenizer import cove as cove_lib
from cost_jax.tokenizer.cove import CoveConfig

CODES_FILE = "cove_codes.npy"
REPORT_FILE = "cove.json"


def make_config(num_items: int, cove: Mapping[str, Any] | CoveConfig | None = None,
                **sasrec_overrides: Any) -> sasrec.SASRecConfig:
  cove_cfg = cove if isinstance(cove, CoveConfig) else CoveConfig(**dict(cove or {}))
  return sasrec.SASRecConfig(num_items=num_items, cove=cove_cfg, **sasrec_overrides)


def item_codes(config: sasrec.SASRecConfig, params: Any) -> np.ndarray:
  """int32 [num_items, H]: every item's COVE codes, fine to coarse."""
  model = sasrec.SASRec(config)
  codes = jax.jit(lambda p: model.apply({"params": p}, method=sasrec.SASRec.item_codes))(params)
  return np.asarray(codes, np.int32)


def code_report(codes: np.ndarray, config: sasrec.SASRecConfig) -> dict:
  sizes = config.cove.codebook_sizes
  return {"codebook_sizes": list(sizes), "usage_per_level": cove_lib.usage(codes, sizes),
          "used_codes_per_level": [int(len(np.unique(codes[:, i]))) for i in range(len(sizes))],
          "collisions": dedup.collision_stats(codes), "cove": dataclasses.asdict(config.cove)}


def train_and_evaluate(loo, num_items: int, seed: int = 0, output_dir: str | None = None,
                       ks: Sequence[int] = sasrec_train.DEFAULT_KS,
                       cove: Mapping[str, Any] | None = None, **sasrec_overrides: Any) -> dict:
  """COVE_SASRec on `loo`: the test metrics (+ cove_usage_per_level); with `output_dir`, its
  files and per-epoch checkpoints (a rerun into the same folder resumes)."""
  config = make_config(num_items, cove, **sasrec_overrides)
  result, params, topk, losses, train_s, curve = sasrec_train.fit_and_score(
      loo, config, seed, ks, checkpoint_dir=output_dir)
  codes = item_codes(config, params)
  report = code_report(codes, config)
  result = dict(result, cove_usage_per_level=report["usage_per_level"])
  if output_dir is not None:
    sasrec_train.write_outputs(output_dir, config, loo, result, topk, losses, train_s, seed, curve)
    atomic_write_npy(os.path.join(output_dir, CODES_FILE), codes)
    atomic_write_json(os.path.join(output_dir, REPORT_FILE), report)
  return result


def write_tokenizer(codes_fine_to_coarse: np.ndarray, sizes: Sequence[int], output: str,
                    report: Mapping[str, Any]) -> dict:
  """COVE codes -> a tokenizer dir: coarse to fine (a trie's first token is the coarsest
  category), then TIGER's extra token for items sharing all H codes."""
  codes = np.asarray(codes_fine_to_coarse)[:, ::-1]
  coarse_sizes = tuple(int(v) for v in sizes)[::-1]
  ids, info = dedup.deduplicate("tiger_extra_token", codes)
  layout = artifact.layout_for(ids, coarse_sizes, "tiger_extra_token")
  full = {**dict(report), "method": "cove", "codebook_sizes": list(coarse_sizes),
          "order": "coarse to fine (COVE's last level first)",
          "usage_per_level": dedup.usage_per_level(codes, coarse_sizes),
          "collisions_before_dedup": dedup.collision_stats(codes), "dedup": info,
          "id_length": int(ids.shape[1]), "all_distinct": dedup.all_distinct(ids)}
  with StagedDir(output, kind=artifact.OUTPUT_KIND, legacy=artifact.FILES) as staged:
    artifact.write_ids(staged.path, ids, layout, method="cove", dedup="tiger_extra_token")
    artifact.write_json(staged.path, artifact.CONFIG_FILE,
                        {"method": "cove", "num_items": int(len(ids)),
                         "cove": full.get("cove"), "host": full.get("host")})
    artifact.write_json(staged.path, artifact.REPORT_FILE, full)
    staged.commit()
  return full


def fit_tokenizer(loo, num_items: int, output: str, seed: int = 0,
                  cove: Mapping[str, Any] | None = None, **sasrec_overrides: Any) -> dict:
  """Trains COVE_SASRec on loo.train (no validation or test item seen) and writes its codes
  as a tokenizer dir. Returns the tokenizer report."""
  if num_items < 1:
    raise UserError("cove tokenizer: the dataset has no items")
  config = make_config(num_items, cove, **sasrec_overrides)
  t0 = time.perf_counter()
  params, losses = sasrec_train.train(config, loo.train, seed=seed, progress_desc="cove tokenizer")
  codes = item_codes(config, params)
  report = code_report(codes, config)
  report.update(host={k: v for k, v in dataclasses.asdict(config).items() if k != "cove"},
                seed=seed, final_loss=losses[-1] if losses else None,
                wall_time_s=round(time.perf_counter() - t0, 2), num_items=int(num_items))
  return write_tokenizer(codes, config.cove.codebook_sizes, output, report)


def tokenizer_from_run(run_dir: str, output: str) -> dict:
  """The tokenizer dir of a finished `train_and_evaluate` output (its cove_codes.npy): the same
  COVE_SASRec as `fit_tokenizer` trains (training part only, same seed and settings), so the
  reproduction trains it once for both the COVE_SASRec row and TIGER on COVE IDs."""
  codes_file, report_file = (os.path.join(run_dir, f) for f in (CODES_FILE, REPORT_FILE))
  for f in (codes_file, report_file):
    if not os.path.isfile(f):
      raise UserError(f"{f}: missing (not a finished COVE_SASRec output dir)")
  codes = np.load(codes_file)
  report = read_json(report_file)
  cfg = read_json(os.path.join(run_dir, "config.json"))
  report.update(host={k: v for k, v in cfg.items() if k != "cove"}, from_run=run_dir,
                num_items=int(len(codes)))
  return write_tokenizer(codes, report["codebook_sizes"], output, report)
