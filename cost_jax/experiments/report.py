"""Results report for the CoST ablation: results.md, results.csv and PNG plots.

Input: metric rows (one per method and seed, the keys of the trainer's metrics.json), optional
tokenizer statistics per method and seed (codebook usage per level, ID collisions before dedup),
stage timings and free-text notes (deviations from the papers). Output, in `output_dir`:

  results.csv          method, seed, then the metrics.json keys (one row per method and seed)
  results.md           CoST Table 2 layout (per method an NDCG row and a Recall row, columns
                       @5/@10/@20/@40, mean ± std over seeds) + "Impr." (cost over rqvae),
                       the papers' orderings checked from the numbers, timings, notes
  metrics.png          Recall@k / NDCG@k per method, bars = mean, error bars = std over seeds
  codebook_usage.png   fraction of codes used per level per method
  collisions.png       items sharing an ID before dedup, and the largest such group, per method
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from cost_jax.io import atomic_write_text
from cost_jax.results import KS
from cost_jax.experiments import plots

DEFAULT_KS = KS  # CoST Table 2 columns
METRIC_KEYS = tuple(f"recall@{k}" for k in DEFAULT_KS) + tuple(f"ndcg@{k}" for k in DEFAULT_KS) + (
    "invalid_id_rate", "num_users")

# Display names: CoST Table 2 names the ablation by its loss; TIGER Table 3 by its ID type.
METHOD_LABELS = {
    "random": "Random ID",
    "lsh": "LSH",
    "rqvae": "L_re (RQ-VAE)",
    "cost": "L_co (CoST)",
    "rqvae+cost": "L_re + L_co",
    "rqkmeans": "RQ-KMeans",
    "popularity": "MostPop",
    "transition": "Markov (item transitions)",
    "sasrec": "SASRec",
    "sasrec_bce": "SASRec (BCE)",
    "cove_sasrec": "COVE_SASRec",
    "cove": "COVE IDs",
}
ABLATION_ORDER = ("random", "lsh", "rqvae", "cost", "rqvae+cost", "rqkmeans", "cove")
BASELINE_ORDER = ("popularity", "transition", "sasrec", "sasrec_bce", "cove_sasrec")

# The papers' claims, as (better, worse, source).
PAPER_ORDERINGS = (
    ("cost", "rqvae", "CoST Table 2: L_co > L_re"),
    ("rqvae", "random", "CoST Table 2 / TIGER Table 3: L_re (RQ-VAE) > Random ID"),
    ("cost", "random", "CoST Table 2: L_co > Random ID"),
    ("rqvae", "lsh", "TIGER Table 3: RQ-VAE > LSH"),
    ("lsh", "random", "TIGER Table 3: LSH > Random ID"),
    ("cove_sasrec", "sasrec", "COVE Table 2: COVE in a host > the host alone"),
)


def label(method: str) -> str:
  return METHOD_LABELS.get(method, method)


def order_methods(methods: Iterable[str]) -> list[str]:
  """Ablation methods in the papers' order, then unknown ones, then baselines."""
  methods = list(dict.fromkeys(methods))
  known = [m for m in ABLATION_ORDER if m in methods]
  base = [m for m in BASELINE_ORDER if m in methods]
  other = [m for m in methods if m not in known and m not in base]
  return known + other + base


# --- aggregation -------------------------------------------------------------------


def summarize(rows: Sequence[Mapping], keys: Sequence[str] | None = None
              ) -> dict[str, dict[str, tuple[float, float, int]]]:
  """{method: {metric: (mean, std, n)}} over seeds; std is the sample std (ddof=1), 0 if n=1."""
  keys = list(keys) if keys is not None else metric_columns(rows)
  out: dict[str, dict[str, tuple[float, float, int]]] = {}
  for method in order_methods(r["method"] for r in rows):
    sel = [r for r in rows if r["method"] == method]
    out[method] = {}
    for k in keys:
      vals = np.array([v for v in (_as_float(r.get(k)) for r in sel) if v is not None], np.float64)
      vals = vals[~np.isnan(vals)]
      if len(vals) == 0:
        continue
      std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
      out[method][k] = (float(np.mean(vals)), std, int(len(vals)))
  return out


def _as_float(v) -> float | None:
  """A metric value as float; None for missing and non-numeric values (e.g. "split": "test")."""
  if v is None or isinstance(v, bool):
    return None
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


def improvement(new: float, old: float) -> float:
  """Relative improvement (new - old) / old; nan when old is 0."""
  return (new - old) / old if old else float("nan")


def check_orderings(summary: Mapping[str, Mapping[str, tuple]], ks: Sequence[int] = DEFAULT_KS,
                    claims=PAPER_ORDERINGS) -> list[dict]:
  """For each claim whose methods both ran: per metric whether mean(better) > mean(worse)."""
  results = []
  metrics = [f"ndcg@{k}" for k in ks] + [f"recall@{k}" for k in ks]
  for better, worse, source in claims:
    if better not in summary or worse not in summary:
      continue
    per_metric, clear = {}, {}
    for m in metrics:
      if m in summary[better] and m in summary[worse]:
        (mb, sb, nb), (mw, sw, nw) = summary[better][m], summary[worse][m]
        per_metric[m] = mb > mw
        if nb > 1 and nw > 1:  # the gap exceeds the combined spread over seeds
          clear[m] = abs(mb - mw) > math.hypot(sb, sw)
    if not per_metric:
      continue
    n_held = sum(per_metric.values())
    results.append({"better": better, "worse": worse, "source": source,
                    "per_metric": per_metric, "held": n_held, "total": len(per_metric),
                    "clear": clear,
                    "clear_held": sum(1 for m, ok in per_metric.items() if ok and clear.get(m)),
                    "clear_failed": sum(1 for m, ok in per_metric.items()
                                        if not ok and clear.get(m)),
                    "verdict": ("held" if n_held == len(per_metric) else
                                "did not hold" if n_held == 0 else "partly held")})
  return results


def metric_columns(rows: Sequence[Mapping]) -> list[str]:
  """The metrics.json keys present in rows: known keys first (in METRIC_KEYS order), then others."""
  present = []
  for r in rows:
    for k in r:
      if k not in ("method", "seed") and k not in present:
        present.append(k)
  return [k for k in METRIC_KEYS if k in present] + [k for k in present if k not in METRIC_KEYS]


# --- tables ------------------------------------------------------------------------


def _cell(stat: tuple | None, with_std: bool) -> str:
  if stat is None:
    return "-"
  mean, std, n = stat
  return f"{mean:.4f} ± {std:.4f}" if with_std and n > 1 else f"{mean:.4f}"


def _pct(x: float) -> str:
  return "n/a" if x != x or math.isinf(x) else f"{100 * x:+.2f}%"


def table2_markdown(summary: Mapping[str, Mapping[str, tuple]], ks: Sequence[int] = DEFAULT_KS,
                    methods: Sequence[str] | None = None, with_std: bool = True,
                    impr: tuple[str, str] | None = ("cost", "rqvae")) -> str:
  """CoST Table 2 layout: per method an NDCG row and a Recall row; @k columns; Impr. row."""
  methods = list(methods) if methods is not None else list(summary)
  header = "| Methods | Metrics | " + " | ".join(f"@{k}" for k in ks) + " |"
  lines = [header, "|" + "---|" * (len(ks) + 2)]
  for method in methods:
    stats = summary.get(method, {})
    seeds = max((s[2] for s in stats.values()), default=0)
    name = f"{label(method)} (n={seeds})" if seeds else label(method)
    for i, metric in enumerate(("ndcg", "recall")):
      cells = [_cell(stats.get(f"{metric}@{k}"), with_std) for k in ks]
      lines.append(f"| {name if i == 0 else ''} | {'NDCG' if metric == 'ndcg' else 'Recall'} | "
                   + " | ".join(cells) + " |")
  if impr is not None and impr[0] in summary and impr[1] in summary:
    new, old = summary[impr[0]], summary[impr[1]]
    for i, metric in enumerate(("ndcg", "recall")):
      cells = []
      for k in ks:
        key = f"{metric}@{k}"
        cells.append(_pct(improvement(new[key][0], old[key][0])) if key in new and key in old
                     else "-")
      lines.append(f"| {'Impr.' if i == 0 else ''} | {'NDCG' if metric == 'ndcg' else 'Recall'} | "
                   + " | ".join(cells) + " |")
  return "\n".join(lines)


def rows_to_csv(rows: Sequence[Mapping]) -> str:
  """method, seed, then the metrics.json keys; one row per method and seed."""
  cols = ["method", "seed"] + metric_columns(rows)
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
  w.writeheader()
  key = lambda r: (order_methods([x["method"] for x in rows]).index(r["method"]), int(r["seed"]))
  for r in sorted(rows, key=key):
    w.writerow({c: r.get(c, "") for c in cols})
  return buf.getvalue()


def orderings_markdown(checks: Sequence[dict]) -> str:
  if not checks:
    return "(no pair of methods of the papers' orderings ran)"
  lines = ["| Claim (paper) | Here | Metrics where it held | Gap > 1 std (held / reversed) |",
           "|---|---|---|---|"]
  for c in checks:
    failed = [m for m, ok in c["per_metric"].items() if not ok]
    detail = f"{c['held']}/{c['total']}" + (f" (not: {', '.join(failed)})" if failed else "")
    clear = (f"{c['clear_held']} / {c['clear_failed']}" if c["clear"] else
             "n/a (needs >= 2 seeds)")
    lines.append(f"| {label(c['better'])} > {label(c['worse'])} ({c['source']}) | "
                 f"**{c['verdict']}** | {detail} | {clear} |")
  return "\n".join(lines)


def tokenizer_table_markdown(stats: Sequence[Mapping]) -> str:
  """Per method: mean codebook usage per level, colliding items and largest group (before dedup)."""
  if not stats:
    return "(no tokenizer statistics)"
  by_method = _group_stats(stats)
  lines = ["| Method | seeds | codebook usage per level (mean) | items in collisions before dedup "
           "| largest group | ID length | neighbour precision | reconstruction cosine |",
           "|---|---|---|---|---|---|---|---|"]
  for method, st in by_method.items():
    usage = " / ".join(f"{u:.2f}" for u in st["usage_mean"])
    extra = " | ".join("-" if v != v else f"{v:.3f}" for v in (st["nprec_mean"], st["cos_mean"]))
    lines.append(f"| {label(method)} | {st['n']} | {usage} | {_count(st['collided_mean'])} | "
                 f"{_count(st['largest_mean'])} | {st['id_length']} | {extra} |")
  return "\n".join(lines)


def _count(v: float) -> str:
  """A count, or a mean of counts over seeds: 1194, 1194.3, - (none)."""
  if v != v:
    return "-"
  return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _group_stats(stats: Sequence[Mapping]) -> dict[str, dict]:
  out = {}
  for method in order_methods(s["method"] for s in stats):
    sel = [s for s in stats if s["method"] == method]
    levels = max(len(s.get("usage", [])) for s in sel)
    usage = np.full((len(sel), levels), np.nan)
    for i, s in enumerate(sel):
      u = s.get("usage", [])
      usage[i, :len(u)] = u
    collided = np.array([s.get("collided_items", np.nan) for s in sel], np.float64)
    largest = np.array([s.get("largest_group", np.nan) for s in sel], np.float64)
    out[method] = {
        "n": len(sel),
        "usage_mean": np.nanmean(usage, axis=0) if levels else np.zeros(0),
        "usage_std": np.nanstd(usage, axis=0) if levels else np.zeros(0),
        "collided_mean": float(np.nanmean(collided)) if np.isfinite(collided).any() else float("nan"),
        "collided_std": float(np.nanstd(collided)) if np.isfinite(collided).any() else 0.0,
        "largest_mean": float(np.nanmean(largest)) if np.isfinite(largest).any() else float("nan"),
        "largest_std": float(np.nanstd(largest)) if np.isfinite(largest).any() else 0.0,
        "id_length": sel[0].get("id_length", "?"),
        "nprec_mean": _nanmean([s.get("neighbor_precision") for s in sel]),
        "cos_mean": _nanmean([s.get("reconstruction_cosine") for s in sel]),
    }
  return out


def _nanmean(values) -> float:
  vals = [float(v) for v in values if _as_float(v) is not None]
  return float(np.mean(vals)) if vals else float("nan")


def timings_markdown(timings: Sequence[Mapping]) -> str:
  """Stage, status (ran / cached), wall time and CPU time (as measured when the stage ran)."""
  if not timings:
    return "(no timings)"
  lines = ["| Stage | Status | Wall time | CPU time |", "|---|---|---|---|"]
  now = 0.0
  for t in timings:
    sec = float(t.get("seconds") or 0.0)
    cpu = t.get("cpu_seconds")
    now += sec if t.get("status") == "ran" else 0.0
    lines.append(f"| {t['stage']} | {t.get('status', '?')} | {_fmt_seconds(sec)} | "
                 f"{_fmt_seconds(float(cpu)) if cpu is not None else 'n/a'} |")
  measured = sum(float(t.get("seconds") or 0.0) for t in timings)
  cpus = [float(t["cpu_seconds"]) for t in timings if t.get("cpu_seconds") is not None]
  cpu_total = _fmt_seconds(sum(cpus)) + ("" if len(cpus) == len(timings) else
                                         f" ({len(cpus)}/{len(timings)} stages recorded)")
  lines.append(f"| **all stages** (as measured when each ran) | | **{_fmt_seconds(measured)}** | "
               f"**{cpu_total}** |")
  lines.append(f"| **this invocation** (stages that ran now) | | **{_fmt_seconds(now)}** | |")
  return "\n".join(lines)


def _fmt_seconds(s: float) -> str:
  m, sec = divmod(int(round(s)), 60)
  h, m = divmod(m, 60)
  return f"{h}:{m:02d}:{sec:02d}"


# --- the report ----------------------------------------------------------------------


STOP_REASONS = {"patience": "no better validation for `patience` validations",
                "time_budget": "its time budget", "num_train_steps": "its step budget",
                "num_epochs": "its epoch budget"}


def write_report(output_dir: str, rows: Sequence[Mapping], *,
                 tokenizer_stats: Sequence[Mapping] = (), timings: Sequence[Mapping] = (),
                 title: str = "CoST ablation", notes: Sequence[str] = (),
                 setup: Sequence[str] = (), ks: Sequence[int] = DEFAULT_KS,
                 sections: Sequence[str] = (),
                 curves: Mapping[str, Sequence[Mapping]] | None = None) -> dict[str, str]:
  """Writes results.md, results.csv and the PNGs; returns {name: path}.

  `sections`: extra markdown lines placed after the orderings (e.g. the paired tests)."""
  os.makedirs(output_dir, exist_ok=True)
  paths = {name: os.path.join(output_dir, name) for name in (
      "results.md", "results.csv", "metrics.png", "codebook_usage.png", "collisions.png")}
  summary = summarize(rows)
  ablation = [m for m in summary if m not in BASELINE_ORDER]
  baselines = [m for m in summary if m in BASELINE_ORDER]
  checks = check_orderings(summary, ks)

  md = [f"# {title}", ""]
  if setup:
    md += ["## Setup", ""] + [f"- {s}" for s in setup] + [""]
  md += ["## Results (test split, leave-one-out, full ranking over all items)", ""]
  if ablation:
    md += ["CoST Table 2 layout: mean ± std (sample std, ddof=1) over seeds; n = number of seeds. "
           "Impr. = relative improvement of L_co (CoST) over L_re (RQ-VAE), from the means.", "",
           table2_markdown(summary, ks, ablation), ""]
  if baselines:
    md += ["### Baselines for context", "",
           f"{', '.join(label(b) for b in baselines)}: scored with the same metric function on the "
           "same split (same layout).", "",
           table2_markdown(summary, ks, baselines, impr=None), ""]
  num_users = max((_as_float(r.get("num_users")) or 0 for r in rows), default=0)
  md += ["## Do the papers' orderings hold here?", "",
         "Computed from the means above, per metric (NDCG and Recall @5/@10/@20/@40). The last "
         "column counts the metrics where the gap between the two means is larger than their "
         "combined std over seeds (sqrt(std_a^2 + std_b^2)), in the claimed direction / reversed."
         + (f" One test user moves a Recall by 1/{int(num_users)} = {1 / num_users:.2g}."
            if num_users else ""), "", orderings_markdown(checks), ""]
  md += list(sections)
  md += ["## Semantic IDs", "", tokenizer_table_markdown(tokenizer_stats), ""]
  md += ["## Plots", "", "![metrics](metrics.png)", "", "![codebook usage](codebook_usage.png)", "",
         "![collisions](collisions.png)", ""]
  if curves and plots.plot_learning_curves(curves, os.path.join(output_dir, "learning_curves.png")):
    paths["learning_curves.png"] = os.path.join(output_dir, "learning_curves.png")
    def at(p):
      return f"step {p['step']}" if "step" in p else f"epoch {p['epoch']}"

    lines = []
    for k, v in sorted(curves.items()):
      if not v:
        continue
      best = next((p for p in v if p.get("best")), None)
      last = v[-1]
      lines.append(f"| {k} | " + (f"{best['recall@10']:.4f} at {at(best)}" if best else "-")
                   + f" | {last['recall@10']:.4f} at {at(last)} | "
                   + STOP_REASONS.get(last.get("stop_reason", ""), last.get("stop_reason", "-"))
                   + " |")
    md += ["### Learning curves", "",
           "Validation Recall@10 during training (TIGER: every `eval_every` steps on the same "
           "`eval_num_users` validation users; SASRec-style: every epoch on 1,000 users). Each "
           "run's test row is scored from its best validation point (starred in the plot).", "",
           "| run | best (scored) | last | stopped by |", "|---|---|---|---|", *lines, "",
           "![learning curves](learning_curves.png)", ""]
  md += ["## Wall time per stage", "",
         "Wall time depends on the machine's load when the stage ran; CPU time (all threads of "
         "the process) does not, and CPU time / number of cores is a lower bound of the wall "
         "time on an idle machine.", "", timings_markdown(timings), ""]
  if notes:
    md += ["## Deviations from the papers and notes", ""] + [f"- {n}" for n in notes] + [""]
  md += ["## Per-seed values", "", "See results.csv (one row per method and seed).", ""]

  atomic_write_text(paths["results.md"], "\n".join(md))
  atomic_write_text(paths["results.csv"], rows_to_csv(rows))
  plots.plot_metrics(summary, paths["metrics.png"], ks, label)
  grouped = _group_stats(tokenizer_stats)
  plots.plot_codebook_usage(grouped, paths["codebook_usage.png"], label)
  plots.plot_collisions(grouped, paths["collisions.png"], label)
  return paths


def write_text(path: str, text: str) -> None:
  atomic_write_text(path, text)

