"""The report's significance section: 95% CIs over test users and paired tests per pair.

Reads each finished stage's test lists (topk.npy, targets.npy, user_ids.npy, written by
cost_jax.results for every model), averages each user's hit / gain over the seeds of a
method, and compares methods on the users they share (cost_jax.significance).
"""

from __future__ import annotations

import itertools
import os
from typing import Mapping, Sequence

import numpy as np

from cost_jax import significance

ALPHA = 0.05  # an ordering "holds" only at p < 0.05


def read_lists(stage_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """(user_ids, topk, targets) of a stage's test split, or None."""
  for sub in ("", "model"):
    d = os.path.join(stage_dir, sub)
    files = [os.path.join(d, f) for f in ("user_ids.npy", "topk.npy", "targets.npy")]
    if all(os.path.isfile(f) for f in files):
      try:
        return tuple(np.load(f, allow_pickle=False) for f in files)  # type: ignore[return-value]
      except (OSError, ValueError):
        return None
  return None


def per_user_means(lists: Mapping[str, Sequence[tuple]], metric: str
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """method -> (sorted user ids, per-user `metric` averaged over its seeds)."""
  k = int(metric.split("@")[1])
  out = {}
  for method, runs in lists.items():
    by_user = []
    users = None
    for user_ids, topk, targets in runs:
      order = np.argsort(user_ids, kind="stable")
      u = np.asarray(user_ids)[order]
      if users is not None and not np.array_equal(users, u):
        continue  # a seed scored on other users cannot be averaged per user
      users = u
      by_user.append(significance.per_user(topk[order], targets[order], k)[metric])
    if by_user:
      out[method] = (users, significance.mean_over_seeds(by_user))
  return out


def _common(a, b):
  users, ia, ib = np.intersect1d(a[0], b[0], return_indices=True)
  return users, a[1][ia], b[1][ib]


def significance_markdown(lists: Mapping[str, Sequence[tuple]], order: Sequence[str],
                          label, orderings: Sequence[tuple[str, str, str]],
                          metrics: Sequence[str] = ("recall@10", "ndcg@10")) -> list[str]:
  """Markdown lines: a CI table and a paired-test table over every pair of methods."""
  methods = [m for m in order if m in lists]
  if not methods:
    return []
  means = {m: per_user_means(lists, m) for m in metrics}
  md = ["## Confidence intervals and paired tests (over test users)", "",
        "Each user's hit (Recall) and gain (NDCG) is averaged over the method's seeds; the "
        "interval is the 95% bootstrap percentile interval of the mean over users (2,000 "
        "resamples). p: two-sided paired permutation test (10,000 sign flips) on the users "
        f"both methods scored. An ordering holds only at p < {ALPHA}.", "",
        "| Method | users | " + " | ".join(f"{m} [95% CI]" for m in metrics) + " |",
        "|---|---|" + "---|" * len(metrics)]
  for m in methods:
    cells = []
    for metric in metrics:
      users, v = means[metric][m]
      lo, hi = significance.bootstrap_ci(v)
      cells.append(f"{v.mean():.4f} [{lo:.4f}, {hi:.4f}]")
    md.append(f"| {label(m)} | {len(means[metrics[0]][m][0])} | " + " | ".join(cells) + " |")
  md += ["", "| A | B | " + " | ".join(f"{m}: A - B (p)" for m in metrics) + " |",
         "|---|---|" + "---|" * len(metrics)]
  tests = {}
  for a, b in itertools.combinations(methods, 2):
    cells = []
    for metric in metrics:
      _, va, vb = _common(means[metric][a], means[metric][b])
      p = significance.paired_test(va, vb)
      tests[(a, b, metric)] = (float(va.mean() - vb.mean()), p)
      cells.append(f"{va.mean() - vb.mean():+.4f} ({p:.3g})")
    md.append(f"| {label(a)} | {label(b)} | " + " | ".join(cells) + " |")
  claims = []
  for better, worse, source in orderings:
    if better not in methods or worse not in methods:
      continue
    for metric in metrics:
      key = (better, worse, metric) if (better, worse, metric) in tests else (worse, better, metric)
      diff, p = tests[key]
      diff = diff if key[0] == better else -diff
      verdict = ("holds" if diff > 0 and p < ALPHA else "reversed" if diff < 0 and p < ALPHA
                 else "not significant")
      claims.append(f"| {source} | {metric} | {diff:+.4f} | {p:.3g} | {verdict} |")
  if claims:
    md += ["", f"Papers' orderings at p < {ALPHA}:", "",
           "| Claim | Metric | better - worse | p | Verdict |", "|---|---|---|---|---|"] + claims
  return md + [""]
