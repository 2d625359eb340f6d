"""The reproduction's `capabilities` stage (TIGER §4.4 and §5): settings, tables, PNGs and a
results.md section around the studies of cost_jax.seq2seq.studies (the evaluate CLI runs the same).

  invalid_ids  Figure 6: the share of invalid IDs in the top K of unconstrained beam search,
               K = 1..num_beams, beside the constrained search's 0 (the method's TIGER model).
  diversity    Tables 4-5: temperature sampling of the top K; Recall@K beside Entropy@K of the
               items' ground-truth categories, with the beam-search row for reference.
  cold_start   Figure 5: a TIGER model and tokenizer trained without 5% of the test items;
               Recall@K (K = 1..10) on the test users whose target is unseen, for several
               epsilon, against Semantic_KNN (cost_jax.baselines.semantic_knn); 95% bootstrap
               intervals and a paired permutation test at Recall@10.

`run_studies` is the body of the pipeline's `capabilities-s<seed>` stage; `markdown` and the
plots read its capabilities.json.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from cost_jax.data import categories as categories_lib
from cost_jax.experiments import plots
from cost_jax.io import UserError, atomic_write_json, copy_file, read_json
from cost_jax.metrics import category_entropy_at_k
from cost_jax.seq2seq import studies
from cost_jax.seq2seq.studies import CapabilityConfig

STUDIES = studies.STUDIES
RESULT_FILE = "capabilities.json"
PLOTS = {"invalid_ids": "capabilities_invalid_ids.png", "diversity": "capabilities_diversity.png",
         "cold_start": "capabilities_cold_start.png"}

DEFAULTS: dict[str, Any] = dataclasses.asdict(CapabilityConfig())


def settings(section: Mapping[str, Any]) -> dict[str, Any]:
  """The defaults updated by the profile's section, checked."""
  unknown = sorted(set(section) - set(DEFAULTS))
  if unknown:
    raise UserError(f"unknown key(s) {', '.join(unknown)} (expected some of "
                    f"{', '.join(DEFAULTS)})")
  out = {**DEFAULTS, **dict(section)}
  studies = out["studies"]
  if isinstance(studies, str):
    studies = tuple(s.strip() for s in studies.split(",") if s.strip())
  bad = sorted(set(studies) - set(STUDIES))
  if bad:
    raise UserError(f"unknown stud(ies) {', '.join(bad)} (expected some of {', '.join(STUDIES)})")
  out["studies"] = tuple(s for s in STUDIES if s in studies)
  for key in ("epsilons", "temperatures"):
    v = out[key]
    out[key] = tuple(float(x) for x in ((v,) if isinstance(v, (int, float)) else v))
  v = out["cold_start_prefixes"]
  out["cold_start_prefixes"] = tuple(int(x) for x in ((v,) if isinstance(v, int) else v))
  if any(p < 0 for p in out["cold_start_prefixes"]):
    raise UserError(f"cold_start_prefixes must be >= 0, got {out['cold_start_prefixes']}")
  if any(not 0.0 <= e <= 1.0 for e in out["epsilons"]):
    raise UserError(f"epsilons must be in [0, 1], got {out['epsilons']}")
  if any(t < 0 for t in out["temperatures"]):
    raise UserError(f"temperatures must be >= 0, got {out['temperatures']}")
  if not 0.0 < float(out["cold_start_fraction"]) < 1.0:
    raise UserError(f"cold_start_fraction must be in (0, 1), got {out['cold_start_fraction']}")
  for key in ("num_samples", "num_beams"):
    if int(out[key]) < 1:
      raise UserError(f"{key} must be >= 1, got {out[key]}")
  return out


def invalid_id_study(model_dir: str, cfg: Mapping[str, Any]) -> dict:
  run, arrays = studies.load(model_dir, "test", cfg["num_users"])
  return studies.invalid_id_study(run, arrays, int(cfg["num_beams"]))


def diversity_study(model_dir: str, dataset_dir: str, cfg: Mapping[str, Any], seed: int) -> dict:
  run, arrays = studies.load(model_dir, "test", cfg["num_users"])
  cats, names, field = categories_lib.item_categories(dataset_dir, cfg["category_field"])
  ks = studies.DIVERSITY_KS
  rows = studies.diversity_study(run, arrays, cats, cfg["temperatures"], int(cfg["num_samples"]),
                                 seed=seed, ks=ks, beam_row_beams=int(cfg["num_beams"]),
                                 uniform_row=True)
  target_entropy = float(category_entropy_at_k(arrays.item_index[:, None], cats, 1).mean())
  return {"num_users": int(len(arrays)), "category_field": field, "num_categories": len(names),
          "num_samples": int(cfg["num_samples"]), "ks": list(ks), "rows": rows,
          "single_item_entropy": target_entropy}


def cold_start_study(model_dir: str, dataset_dir: str, cfg: Mapping[str, Any]) -> dict:
  run, arrays = studies.load(model_dir, "test", cfg["num_users"])
  return studies.cold_start_study(run, arrays, dataset_dir, cfg["epsilons"],
                                  int(cfg["num_beams"]), prefix_lens=cfg["cold_start_prefixes"])


def run_studies(output: str, cfg: Mapping[str, Any], *, model_dir: str | None,
                dataset_dir: str | None, cold_model_dir: str | None,
                cold_dataset_dir: str | None, seed: int) -> dict:
  """Runs the configured studies; writes capabilities.json and one PNG per study in `output`."""
  os.makedirs(output, exist_ok=True)
  res: dict[str, Any] = {"settings": {k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in cfg.items()}, "seed": seed}
  if "invalid_ids" in cfg["studies"] and model_dir:
    res["invalid_ids"] = invalid_id_study(model_dir, cfg)
  if "diversity" in cfg["studies"] and model_dir:
    res["diversity"] = diversity_study(model_dir, dataset_dir, cfg, seed)
  if "cold_start" in cfg["studies"] and cold_model_dir:
    res["cold_start"] = cold_start_study(cold_model_dir, cold_dataset_dir, cfg)
  atomic_write_json(os.path.join(output, RESULT_FILE), res)
  plot_all(res, output)
  return res


# .. report ......................................................................................
def plot_all(res: Mapping[str, Any], output: str) -> list[str]:
  plt = plots.pyplot()
  written = []
  if "invalid_ids" in res:  # Figure 6's layout: % invalid IDs against K
    r = res["invalid_ids"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(r["k"], 100 * np.asarray(r["unconstrained"]), marker="o", ms=3,
            label="beam search, unconstrained")
    ax.plot(r["k"], 100 * np.asarray(r["constrained"]), ls="--", label="trie-constrained")
    ax.set_xlabel("K (top-K retrieved)")
    ax.set_ylabel("% invalid IDs in the top K")
    ax.set_title(f"Invalid IDs ({r['num_users']} test users)")
    ax.legend()
    fig.tight_layout()
    plots.savefig(fig, os.path.join(output, PLOTS["invalid_ids"]))
    plt.close(fig)
    written.append(PLOTS["invalid_ids"])
  if "diversity" in res:  # Table 5 as a figure: Entropy@K and Recall@K against temperature
    r = res["diversity"]
    rows = [x for x in r["rows"] if x["temperature"] is not None]
    uniform = next((x for x in r["rows"] if x["decoding"] == "uniform random items"), None)
    temps = [x["temperature"] for x in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for k in r["ks"]:
      axes[0].plot(temps, [x[f"entropy@{k}"] for x in rows], marker="o", label=f"Entropy@{k}")
      axes[1].plot(temps, [x[f"recall@{k}"] for x in rows], marker="o", label=f"Recall@{k}")
    beam = next(x for x in r["rows"] if x["decoding"] == "beam search")
    for i, key in enumerate(("entropy", "recall")):
      for k in r["ks"]:
        axes[i].axhline(beam[f"{key}@{k}"], ls=":", lw=0.8, color="gray")
        if uniform is not None and key == "entropy":
          axes[i].axhline(uniform[f"{key}@{k}"], ls="--", lw=0.8, color="black")
      axes[i].set_xlabel("temperature T")
      axes[i].legend(fontsize=8)
    axes[0].set_ylabel(f"entropy of '{r['category_field']}' (nats)")
    axes[1].set_ylabel("Recall@K")
    fig.suptitle("Diversity by temperature sampling (dotted: beam search; dashed: uniform "
                 "random items)")
    fig.tight_layout()
    plots.savefig(fig, os.path.join(output, PLOTS["diversity"]))
    plt.close(fig)
    written.append(PLOTS["diversity"])
  if "cold_start" in res:  # Figure 5a's layout: Recall@K against K
    r = res["cold_start"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    tiger = [n for n in r["recall"] if n != "Semantic_KNN"]
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(tiger), 1)))
    for name, vals in r["recall"].items():
      if name == "Semantic_KNN":
        ax.plot(r["ks"], vals, color="black", ls="--", marker="s", ms=3, label=name)
      else:
        ax.plot(r["ks"], vals, color=colors[tiger.index(name)], marker="o", ms=3, label=name,
                ls=":" if "prefix" in name else "-")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (cold-start test users)")
    ax.set_title(f"Cold start: {r['cold_start_users']} users, {r['num_unseen_items']} unseen items")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plots.savefig(fig, os.path.join(output, PLOTS["cold_start"]))
    plt.close(fig)
    written.append(PLOTS["cold_start"])
  return written


def markdown(res: Mapping[str, Any]) -> list[str]:
  """The `capabilities` section of results.md."""
  md = ["## Capabilities (TIGER §4.4, §5)", ""]
  if "cold_start" in res:
    r = res["cold_start"]
    md += ["### Cold-start retrieval (TIGER §4.4.1, Figure 5)", "",
           f"{r['num_unseen_items']} unseen items (removed from all training data); "
           f"{r['cold_start_users']} test users whose target is unseen, of {r['num_users']}; "
           f"{r.get('unseen_sharing_a_seen_prefix', '?')} unseen items share their first "
           f"{r.get('id_length', 0) - 1} tokens with a seen item. TIGER decodes IDs over every "
           "item's ID; a decoded ID brings in the unseen items sharing its first L-1 tokens "
           "('prefix p': its first p tokens), at most epsilon*K of them. Recall@K, with the 95% "
           "bootstrap interval of Recall@10 and the paired permutation p against Semantic_KNN.",
           "",
           "| method | " + " | ".join(f"R@{k}" for k in r["ks"]) + " | R@10 95% CI | "
           "unseen share @10 | p vs KNN |",
           "|---|" + "---|" * (len(r["ks"]) + 3)]
    for name, vals in r["recall"].items():
      lo, hi = r["recall@10_ci95"][name]
      p = r["paired_p@10_vs_semantic_knn"].get(name)
      md.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in vals)
                + f" | [{lo:.4f}, {hi:.4f}] | {r['unseen_share@10'][name]:.2f} | "
                + ("-" if p is None else f"{p:.4f}") + " |")
    md += ["", f"![cold start]({PLOTS['cold_start']})", ""]
  if "diversity" in res:
    r = res["diversity"]
    ks = r["ks"]
    md += ["### Diversity by temperature (TIGER §4.4.2, Table 5)", "",
           f"Entropy@K (nats) of the ground-truth '{r['category_field']}' of the top K "
           f"({r['num_categories']} categories; an item with several splits its weight), beside "
           f"Recall@K; {r['num_users']} test users, {r['num_samples']} samples per user, the top K"
           " = the first K distinct items drawn.", "",
           "| decoding | T | " + " | ".join(f"Entropy@{k}" for k in ks) + " | "
           + " | ".join(f"Recall@{k}" for k in ks) + " |",
           "|---|---|" + "---|" * (2 * len(ks))]
    for x in r["rows"]:
      t = "-" if x["temperature"] is None else f"{x['temperature']:g}"
      md.append(f"| {x['decoding']} | {t} | " + " | ".join(f"{x[f'entropy@{k}']:.2f}" for k in ks)
                + " | " + " | ".join(f"{x[f'recall@{k}']:.4f}" for k in ks) + " |")
    md += ["", "TIGER Table 5 (Beauty): T = 1.0: 0.76 / 1.14 / 1.70; T = 1.5: 1.14 / 1.52 / 2.06;"
           " T = 2.0: 1.38 / 1.76 / 2.28 (Entropy@10/20/50).", "",
           f"![diversity]({PLOTS['diversity']})", ""]
  if "invalid_ids" in res:
    r = res["invalid_ids"]
    pick = [k for k in (1, 5, 10, 20, 40, 50) if k <= len(r["k"])]
    md += ["### Invalid IDs (TIGER §5, Figure 6)", "",
           f"Share of invalid IDs in the top K of beam search with {len(r['k'])} beams, "
           f"{r['num_users']} test users, {r['num_items']} items.", "",
           "| search | " + " | ".join(f"K={k}" for k in pick) + " |",
           "|---|" + "---|" * len(pick)]
    for key, name in (("unconstrained", "unconstrained"), ("constrained", "trie-constrained")):
      md.append(f"| {name} | " + " | ".join(f"{100 * r[key][k - 1]:.2f}%" for k in pick) + " |")
    md += ["", "TIGER Figure 6 (Beauty): about 2% invalid in the top 20 (unconstrained).", "",
           f"![invalid IDs]({PLOTS['invalid_ids']})", ""]
  return md


def read_results(stage_dir: str) -> dict | None:
  path = os.path.join(stage_dir, RESULT_FILE)
  if not os.path.isfile(path):
    return None
  return read_json(path)


def copy_plots(stage_dir: str, output: str) -> None:
  for name in PLOTS.values():
    src = os.path.join(stage_dir, name)
    if os.path.isfile(src):
      copy_file(src, os.path.join(output, name))


def studies_need_main_model(studies: Sequence[str]) -> bool:
  return any(s in studies for s in ("diversity", "invalid_ids"))
