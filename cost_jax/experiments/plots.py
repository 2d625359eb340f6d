"""The report's plots: matplotlib on the file-only Agg backend, every PNG written atomically.

Each function takes data already summarized (experiments.report) and a path; method names go
through the `label` function the caller passes.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from cost_jax.io import atomic_write


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (every plot of the report goes to a PNG)."""
  matplotlib.use("Agg")  # files only: no display needed
  return plt


def plot_metrics(summary: Mapping[str, Mapping[str, tuple]], path: str, ks: Sequence[int],
                 label: Callable[[str], str] = str) -> None:
  """Two panels (Recall@k, NDCG@k): grouped bars per method, error bars = std over seeds."""
  plt = pyplot()
  methods = list(summary)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  x = np.arange(len(ks))
  for ax, metric in zip(axes, ("recall", "ndcg")):
    for i, m in enumerate(methods):
      stats = [summary[m].get(f"{metric}@{k}", (np.nan, 0.0, 0)) for k in ks]
      grouped_bar(ax, x, i, len(methods), [s[0] for s in stats], [s[1] for s in stats],
                   label(m))
    ax.set_xticks(x, [f"@{k}" for k in ks])
    ax.set_title("Recall@k" if metric == "recall" else "NDCG@k")
    ax.grid(axis="y", alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle("Test metrics per method (mean ± std over seeds)")
  fig.tight_layout()
  savefig(fig, path)
  plt.close(fig)


def grouped_bar(ax, x, i: int, n: int, heights, errors, label_text: str) -> None:
  """Bar series i of n side by side around each x position (total group width 0.8)."""
  width = 0.8 / max(n, 1)
  ax.bar(x + (i - (n - 1) / 2) * width, heights, width, yerr=errors, capsize=2, label=label_text)


def plot_codebook_usage(grouped: Mapping[str, Mapping], path: str,
                        label: Callable[[str], str] = str) -> None:
  """Fraction of codes used per level (bars = methods), mean ± std over seeds; `grouped` is
  report._group_stats of the tokenizer reports."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(8, 4.5))
  levels = max((len(g["usage_mean"]) for g in grouped.values()), default=0)
  x = np.arange(levels)
  for i, (m, g) in enumerate(grouped.items()):
    mean = np.full(levels, np.nan)
    std = np.zeros(levels)
    mean[:len(g["usage_mean"])] = g["usage_mean"]
    std[:len(g["usage_std"])] = g["usage_std"]
    grouped_bar(ax, x, i, len(grouped), mean, std, label(m))
  ax.set_xticks(x, [f"level {l + 1}" for l in range(levels)])
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("fraction of codebook entries used")
  ax.set_title("Codebook usage per level")
  ax.grid(axis="y", alpha=0.3)
  if grouped:
    ax.legend(fontsize=8)
  fig.tight_layout()
  savefig(fig, path)
  plt.close(fig)


def plot_collisions(grouped: Mapping[str, Mapping], path: str,
                    label: Callable[[str], str] = str) -> None:
  """Per method: items sharing their ID with another item before dedup, and the largest group."""
  plt = pyplot()
  methods = list(grouped)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
  x = np.arange(len(methods))
  for ax, key, title in ((axes[0], "collided", "items in collisions (before dedup)"),
                         (axes[1], "largest", "largest group sharing one ID")):
    ax.bar(x, [grouped[m][f"{key}_mean"] for m in methods],
           yerr=[grouped[m][f"{key}_std"] for m in methods], capsize=3,
           color=[f"C{i}" for i in range(len(methods))])
    ax.set_xticks(x, [label(m) for m in methods], rotation=20, fontsize=8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle("Semantic-ID collisions per method (mean ± std over seeds)")
  fig.tight_layout()
  savefig(fig, path)
  plt.close(fig)


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping]], path: str) -> bool:
  """Validation Recall@10 against training progress: TIGER runs by step, SASRec-style runs by
  epoch (two panels). `curves`: {run label: [{"step" or "epoch", "recall@10"}, ...]}."""
  by_step = {k: v for k, v in curves.items() if v and "step" in v[0]}
  by_epoch = {k: v for k, v in curves.items() if v and "epoch" in v[0]}
  panels = [(x, c) for x, c in (("step", by_step), ("epoch", by_epoch)) if c]
  if not panels:
    return False
  plt = pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
  for ax, (unit, group) in zip(axes[0], panels):
    for name, points in sorted(group.items()):
      line, = ax.plot([p[unit] for p in points], [p["recall@10"] for p in points], marker="o",
                      ms=3, label=name)
      best = [p for p in points if p.get("best")]
      if best:  # the scored checkpoint
        ax.plot([best[0][unit]], [best[0]["recall@10"]], marker="*", ms=12,
                color=line.get_color(), linestyle="none")
    ax.set_xlabel(f"training {unit}")
    ax.set_ylabel("validation Recall@10")
    ax.set_title("TIGER" if unit == "step" else "SASRec-style baselines")
    ax.legend(fontsize=7)
  fig.tight_layout()
  savefig(fig, path)
  plt.close(fig)
  return True


def savefig(fig, path: str) -> None:
  """Writes a PNG atomically (cost_jax.io.atomic_write)."""
  atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
