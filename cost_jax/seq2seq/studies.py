"""TIGER's capability studies (§4.4, §5) on a trained model_dir: the one implementation that
`python -m cost_jax.evaluate --invalid_ids | --temperature T | --cold_start_epsilon E` and the
reproduction's `capabilities` stage (cost_jax.experiments.capabilities) both call.

  invalid_id_study   Figure 6: invalid-ID share of unconstrained beam search in the top K,
                     K = 1..num_beams, beside the trie-constrained search's 0.
  diversity_study    Tables 4-5: Recall@K beside Entropy@K of the items' categories, for beam
                     search, temperature sampling and uniformly drawn items.
  cold_start_study   Figure 5: Recall@K (K = 1..10) on the users whose target is unseen, under
                     the ε rule at each K (cost_jax.seq2seq.cold_start), beside Semantic_KNN,
                     with 95% bootstrap intervals and a paired test at Recall@10.

The decode passes are cost_jax.seq2seq.capabilities; the unseen items come from the cold-start
dataset's stats.json (cost_jax.data.cold_start.unseen_items).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from cost_jax import metrics as metrics_lib
from cost_jax import significance
from cost_jax.baselines import semantic_knn
from cost_jax.data import cold_start as cold_start_data
from cost_jax.data.processed import ProcessedDataset
from cost_jax.io import UserError
from cost_jax.results import KS
from cost_jax.seq2seq import capabilities, cold_start, run_dir, splits
from cost_jax.seq2seq.config import TrainConfig

COLD_START_KS = tuple(range(1, 11))  # TIGER Figure 5: Recall@K, K = 1..10
DIVERSITY_KS = (10, 20, 50)  # TIGER Table 5: Entropy@10/20/50
STUDIES = ("cold_start", "diversity", "invalid_ids")


@dataclasses.dataclass(frozen=True)
class CapabilityConfig:
  """The capability studies' settings (gin: `CapabilityConfig.<field> = value`)."""

  studies: tuple[str, ...] = ()  # some of STUDIES; none by default
  method: str = "rqvae"  # whose TIGER model the invalid-ID and diversity studies read
  cold_start_fraction: float = 0.05  # TIGER §4.4.1
  epsilons: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)  # TIGER Fig. 5b; 5a uses 0.1
  # Tokens an unseen item must share with a decoded ID: 0 = L-1 (TIGER §4.4.1); 2 = the
  # first two codes, a wider neighbourhood (ours, to show how the rule depends on it).
  cold_start_prefixes: tuple[int, ...] = (0, 2)
  temperatures: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)  # TIGER Table 5: 1.0, 1.5, 2.0
  num_samples: int = 200  # tempered samples per user; the top K is the first K distinct
  category_field: str = ""  # "" = genres/categories/... when the items have one
  num_beams: int = TrainConfig.num_beams  # TIGER Fig. 6: K up to the beam width
  num_users: int = 0  # 0 = every test user


def load(model_dir: str, split: str, num_users: int | None):
  """(run, arrays of `split`, subsampled to `num_users` with the run's seed; None = all)."""
  run = run_dir.load_run(model_dir)
  arrays = splits.eval_subset(run.split_arrays(split), num_users or None,
                                      run.train_config.seed)
  return run, arrays


def dataset_dir_of(run: Any) -> str:
  d = (run.record.get("task") or {}).get("dataset_dir") or run.train_config.dataset_dir
  if not d or not os.path.isdir(d):
    raise UserError(f"{run.model_dir}: its dataset dir is not known or gone ({d!r}); the "
                    "capability studies read the items and the cold-start split from it")
  return d


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


def invalid_id_study(run: Any, arrays: Any, num_beams: int, batch_size: int = 64) -> dict:
  curve = capabilities.invalid_id_curve(run, arrays.encoder_input_tokens, num_beams,
                                        batch_size=batch_size)
  free = curve.pop("unconstrained_lists")
  curve.pop("constrained_lists")
  return {"num_users": int(len(arrays)), "num_items": int(len(run.item_tokens)), **curve,
          "unconstrained_recall": {k: v for k, v in metrics_lib.retrieval_metrics(
              free, arrays.item_index, [x for x in KS if x <= free.shape[1]]).items()
              if k.startswith("recall@")}}


def diversity_study(run: Any, arrays: Any, categories: Sequence[Sequence[int]] | None,
                    temperatures: Sequence[float], num_samples: int, *, seed: int,
                    ks: Sequence[int] = DIVERSITY_KS, beam_row_beams: int = 0,
                    uniform_row: bool = False, batch_size: int = 64) -> list[dict]:
  """One row per decoding: beam search (when beam_row_beams > 0), sampling at each temperature,
  and K items drawn uniformly from the catalogue (`uniform_row`, the entropy of an unguided
  list). Each row holds diversity_metrics at `ks`."""
  k = max(ks)
  rows = []
  if beam_row_beams:
    beams = capabilities.beam_lists(run, arrays.encoder_input_tokens, max(k, beam_row_beams),
                                    batch_size=batch_size, desc="beams")[:, :k]
    rows.append({"decoding": "beam search", "temperature": None,
                 **diversity_metrics(beams, arrays.item_index, categories, ks)})
  for t in temperatures:
    lists, draws = capabilities.sampled_lists(run, arrays.encoder_input_tokens, t, k,
                                              num_samples, seed=seed, batch_size=batch_size)
    rows.append({"decoding": "sampling", "temperature": float(t),
                 **diversity_metrics(lists, arrays.item_index, categories, ks,
                                     entropy_lists=draws)})
  if uniform_row and categories is not None:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD1]))
    uniform = np.full((len(arrays), k), -1, np.int64)
    n_pick = min(k, len(categories))
    for u in range(len(arrays)):
      uniform[u, :n_pick] = rng.choice(len(categories), size=n_pick, replace=False)
    rows.append({"decoding": "uniform random items", "temperature": None,
                 **diversity_metrics(uniform, arrays.item_index, categories, ks)})
  return rows


def cold_start_study(run: Any, arrays: Any, dataset_dir: str, epsilons: Sequence[float],
                     num_beams: int, prefix_lens: Sequence[int] = (0,),
                     batch_size: int = 64) -> dict:
  """Recall@1..10 of TIGER under each (ε, prefix) and of Semantic_KNN on the users of `arrays`
  whose target is an unseen item of the cold-start dataset `dataset_dir`."""
  unseen = cold_start_data.unseen_items(dataset_dir)
  if unseen is None or not unseen.size:
    raise UserError(f"{dataset_dir}: not a cold-start dataset (no 'cold_start' in stats.json); "
                    "make one with `python -m cost_jax.data cold_start DIR` and train on it")
  cases = np.isin(arrays.item_index, unseen)
  if not cases.any():
    raise UserError(f"{dataset_dir}: no user of this split has an unseen target item")
  targets = arrays.item_index[cases]
  ks = COLD_START_KS
  lists = capabilities.cold_start_lists(run, arrays.encoder_input_tokens[cases], unseen,
                                        epsilons, ks, num_beams, batch_size=batch_size,
                                        prefix_lens=prefix_lens)
  id_len = run.item_tokens.shape[1]
  methods = {(f"TIGER (epsilon={e:g})" if p == id_len - 1 else
              f"TIGER (epsilon={e:g}, prefix {p})"): per_k for (p, e), per_k in sorted(
                  lists.items(), key=lambda x: (-x[0][0], x[0][1]))}
  # Semantic_KNN over the same users' histories (training part + validation item), where the
  # dataset has item embeddings.
  ds = ProcessedDataset.load(dataset_dir)
  ref = "Semantic_KNN"
  if os.path.isfile(os.path.join(ds.path, "embeddings.npy")):
    loo = ds.leave_one_out()
    by_user = {int(u): np.concatenate([t, [v]]) for u, t, v in zip(loo.user_index, loo.train,
                                                                    loo.valid_target)}
    histories = [by_user[int(u)] for u in arrays.user_index[cases]]
    knn_list = semantic_knn.semantic_knn_topk(histories, ds.embeddings(), max(ks))
    methods[ref] = {k: knn_list[:, :k] for k in ks}  # a ranking: its top K is a prefix
  mask = np.zeros(len(run.item_tokens), bool)
  mask[unseen] = True
  seen_prefixes = {tuple(t) for t in run.item_tokens[~mask, :id_len - 1].tolist()}
  out: dict[str, Any] = {"cold_start_users": int(cases.sum()), "num_users": int(len(arrays)),
                         "num_unseen_items": int(unseen.size), "id_length": int(id_len),
                         "unseen_sharing_a_seen_prefix": int(sum(
                             tuple(t) in seen_prefixes
                             for t in run.item_tokens[mask, :id_len - 1].tolist())),
                         "ks": list(ks), "recall": {},
                         "recall@10_ci95": {}, "unseen_share@10": {}}
  hits10 = {}
  for name, per_k in methods.items():
    out["recall"][name] = [cold_start.recall_by_k({k: per_k[k]}, targets)[f"recall@{k}"]
                           for k in ks]
    hits10[name] = (per_k[10] == targets[:, None]).any(axis=1).astype(np.float64)
    out["recall@10_ci95"][name] = list(significance.bootstrap_ci(hits10[name]))
    out["unseen_share@10"][name] = float(np.isin(per_k[10], unseen).mean())
  if ref in hits10:
    out["paired_p@10_vs_semantic_knn"] = {
        name: significance.paired_test(h, hits10[ref]) for name, h in hits10.items()
        if name != ref}
  return out
