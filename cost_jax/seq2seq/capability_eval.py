"""`python -m cost_jax.evaluate --temperature / --cold_start_epsilon / --invalid_ids`: TIGER's
capabilities (§4.4, §5) scored on a trained model_dir, written as capabilities_*.json beside
its metrics.json (cost_jax.seq2seq.capabilities does the decoding)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from cost_jax import metrics as metrics_lib
from cost_jax.data import categories as categories_lib
from cost_jax.data import cold_start as cold_start_data
from cost_jax.io import UserError, atomic_write_json
from cost_jax.results import KS
from cost_jax.seq2seq import capabilities, input_pipeline, run_dir
from cost_jax.seq2seq import cold_start as cold_start_lib

COLD_START_KS = tuple(range(1, 11))  # TIGER Figure 5: Recall@K, K = 1..10
DIVERSITY_KS = (10, 20, 50)  # TIGER Table 5: Entropy@10/20/50


def _load(model_dir: str, split: str, num_users: int | None):
  run = run_dir.load_run(model_dir)
  arrays = input_pipeline.eval_subset(run.split_arrays(split), num_users, run.train_config.seed)
  return run, arrays


def dataset_dir_of(run: Any) -> str:
  d = (run.record.get("task") or {}).get("dataset_dir") or run.train_config.dataset_dir
  if not d or not os.path.isdir(d):
    raise UserError(f"{run.model_dir}: its dataset dir is not known or gone ({d!r}); the "
                    "capability studies read the items and the cold-start split from it")
  return d


def _write(model_dir: str, name: str, out: dict) -> dict:
  atomic_write_json(os.path.join(model_dir, name), out)
  return out


def diversity_metrics(lists: np.ndarray, targets: np.ndarray,
                      categories: Sequence[Sequence[int]] | None,
                      ks: Sequence[int] = DIVERSITY_KS,
                      entropy_lists: np.ndarray | None = None) -> dict[str, float]:
  """Recall@K (and NDCG@K) of `lists` plus mean Entropy@K of the categories of the first K
  entries of `entropy_lists` (default `lists`; sampling passes its draws, repeats kept, so
  that every Entropy@K is over exactly K items)."""
  m = metrics_lib.retrieval_metrics(lists, targets, ks)
  out = {k: v for k, v in m.items() if k.startswith(("recall@", "ndcg@"))}
  if categories is not None:
    ent = lists if entropy_lists is None else entropy_lists
    for k in ks:
      out[f"entropy@{k}"] = float(metrics_lib.category_entropy_at_k(ent, categories, k).mean())
  return out


def temperature(model_dir: str, split: str, temp: float, *, num_samples: int = 200,
                topk: int | None = None, category_field: str = "", num_users: int | None = None,
                batch_size: int | None = None, seed: int = 0) -> dict:
  run, arrays = _load(model_dir, split, num_users)
  k = int(topk or max(DIVERSITY_KS))
  ks = sorted({x for x in DIVERSITY_KS + tuple(KS) if x <= k})
  cats, field = None, None
  try:
    cats, _, field = categories_lib.item_categories(dataset_dir_of(run), category_field)
  except UserError:
    if category_field:
      raise
  lists, draws = capabilities.sampled_lists(run, arrays.encoder_input_tokens, temp, k,
                                            num_samples, seed=seed, batch_size=batch_size or 64)
  out = {"temperature": temp, "num_samples": num_samples, "split": split,
         "num_users": int(len(arrays)), "category_field": field,
         **diversity_metrics(lists, arrays.item_index, cats, ks, entropy_lists=draws)}
  return _write(model_dir, f"capabilities_temperature_{temp:g}.json", out)


def cold_start_recall(lists: dict[tuple[int, float], dict[int, np.ndarray]],
                      targets: np.ndarray) -> dict[str, dict[str, float]]:
  """{"<epsilon>" (L-1 prefix) or "<epsilon>@prefix<p>": {"recall@k": ...}}, each K scored on
  its own list (cost_jax.seq2seq.cold_start.blend_unseen_per_k)."""
  full = max(p for p, _ in lists)
  return {(f"{e:g}" if p == full else f"{e:g}@prefix{p}"): cold_start_lib.recall_by_k(
      per_k, targets) for (p, e), per_k in lists.items()}


def cold_start(model_dir: str, split: str, epsilons: Sequence[float], *,
               num_beams: int | None = None, num_users: int | None = None,
               batch_size: int | None = None) -> dict:
  run, arrays = _load(model_dir, split, num_users)
  unseen = cold_start_data.unseen_items(dataset_dir_of(run))
  if unseen is None:
    raise UserError(f"{dataset_dir_of(run)}: not a cold-start dataset (no 'cold_start' in "
                    "stats.json); make one with `python -m cost_jax.data cold_start DIR` and "
                    "train on it")
  cases = np.isin(arrays.item_index, unseen)
  if not cases.any():
    raise UserError(f"{model_dir}: no {split} user has an unseen target item")
  tokens = arrays.encoder_input_tokens[cases]
  lists = capabilities.cold_start_lists(run, tokens, unseen, epsilons, COLD_START_KS,
                                        num_beams=num_beams or run.train_config.num_beams,
                                        batch_size=batch_size or 64)
  out = {"split": split, "cold_start_users": int(cases.sum()), "num_users": int(len(arrays)),
         "num_unseen_items": int(len(unseen)),
         "recall": cold_start_recall(lists, arrays.item_index[cases])}
  return _write(model_dir, "capabilities_cold_start.json", out)


def invalid_ids(model_dir: str, split: str, *, num_beams: int | None = None,
                num_users: int | None = None, batch_size: int | None = None) -> dict:
  run, arrays = _load(model_dir, split, num_users)
  curve = capabilities.invalid_id_curve(run, arrays.encoder_input_tokens,
                                        num_beams or run.train_config.num_beams,
                                        batch_size=batch_size or 64)
  free = curve.pop("unconstrained_lists")
  curve.pop("constrained_lists")
  out = {"split": split, "num_users": int(len(arrays)), **curve,
         "unconstrained_recall": {k: v for k, v in metrics_lib.retrieval_metrics(
             free, arrays.item_index, [x for x in KS if x <= free.shape[1]]).items()
             if k.startswith("recall@")}}
  return _write(model_dir, "capabilities_invalid_ids.json", out)
