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


class UserSetMismatch(ValueError):
  """Seeds of one method scored on different test users: they cannot be averaged per user."""


def per_user_means(lists: Mapping[str, Sequence[tuple]], metric: str
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """method -> (sorted user ids, per-user `metric` averaged over its seeds).

  Raises UserSetMismatch when a method's seeds were scored on different users (never drops a
  seed silently)."""
  k = int(metric.split("@")[1])
  out = {}
  for method, runs in lists.items():
    by_user = []
    users = None
    for seed_pos, (user_ids, topk, targets) in enumerate(runs):
      order = np.argsort(user_ids, kind="stable")
      u = np.asarray(user_ids)[order]
      if users is not None and not np.array_equal(users, u):
        raise UserSetMismatch(
            f"{method}: run {seed_pos + 1} of {len(runs)} was scored on {len(u)} other test users "
            f"than run 1 ({len(users)}); per-user means over seeds need the same users")
      users = u
      by_user.append(significance.per_user(topk[order], targets[order], k)[metric])
    if by_user:
      out[method] = (users, significance.mean_over_seeds(by_user))
  return out


def seed_means(lists: Mapping[str, Sequence[tuple]], metric: str) -> dict[str, list[float]]:
  """method -> `metric` of each of its runs (seeds), in run order."""
  k = int(metric.split("@")[1])
  return {m: [float(significance.per_user(topk, targets, k)[metric].mean())
              for _, topk, targets in runs] for m, runs in lists.items()}


def holm(pvalues: Sequence[float]) -> list[float]:
  """Holm-Bonferroni adjusted p-values (family-wise error over the tests given), in input order."""
  p = np.asarray(pvalues, np.float64)
  n = len(p)
  order = np.argsort(p, kind="stable")
  adjusted = np.empty(n)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (n - rank) * p[i]))
    adjusted[i] = running
  return adjusted.tolist()


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
  notes = []
  try:
    means = {m: per_user_means(lists, m) for m in metrics}
  except UserSetMismatch:
    # Said, not hidden: each method keeps only its runs scored on its first run's users.
    kept = {}
    for m in methods:
      first = np.sort(np.asarray(lists[m][0][0]))
      same = [r for r in lists[m] if np.array_equal(np.sort(np.asarray(r[0])), first)]
      if len(same) < len(lists[m]):
        notes.append(f"- {label(m)}: {len(lists[m]) - len(same)} of {len(lists[m])} runs were "
                     "scored on other test users and are left out of this section.")
      kept[m] = same
    lists = {**lists, **kept}
    means = {m: per_user_means(lists, m) for m in metrics}
  md = ["## Confidence intervals and paired tests (over test users)", "",
        "Each user's hit (Recall) and gain (NDCG) is averaged over the method's seeds; the "
        "interval is the 95% bootstrap percentile interval of the mean over users (2,000 "
        "resamples). It covers the sampling of test users only, not the variation between "
        "training seeds (see the seed-level table where a method has 3 or more seeds). p: "
        "two-sided paired permutation test (10,000 sign flips) on the users both methods "
        f"scored, uncorrected in the pair table. The papers' orderings are judged at {ALPHA} "
        "after Holm's correction over all of them (family-wise error).", "", *notes,
        *([""] if notes else []),
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
  rows = []
  for better, worse, source in orderings:
    if better not in methods or worse not in methods:
      continue
    for metric in metrics:
      key = (better, worse, metric) if (better, worse, metric) in tests else (worse, better, metric)
      diff, p = tests[key]
      rows.append((source, metric, diff if key[0] == better else -diff, p))
  if rows:
    adjusted = holm([r[3] for r in rows])
    claims = []
    for (source, metric, diff, p), p_adj in zip(rows, adjusted):
      verdict = ("holds" if diff > 0 and p_adj < ALPHA else
                 "reversed" if diff < 0 and p_adj < ALPHA else "not significant")
      claims.append(f"| {source} | {metric} | {diff:+.4f} | {p:.3g} | {p_adj:.3g} | {verdict} |")
    md += ["", f"Papers' orderings at p < {ALPHA} after Holm's correction over the "
           f"{len(rows)} tests below:", "",
           "| Claim | Metric | better - worse | p | p (Holm) | Verdict |",
           "|---|---|---|---|---|---|"] + claims
  many = [m for m in methods if len(lists[m]) >= 3]
  if many:
    md += ["", "Seed-level view (methods with 3 or more seeds): each run's mean over all its "
           "test users; mean ± sample standard deviation over the runs.", "",
           "| Method | runs | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    per_seed = {metric: seed_means({m: lists[m] for m in many}, metric) for metric in metrics}
    for m in many:
      cells = []
      for metric in metrics:
        v = np.asarray(per_seed[metric][m])
        cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f} (" +
                     ", ".join(f"{x:.4f}" for x in v) + ")")
      md.append(f"| {label(m)} | {len(lists[m])} | " + " | ".join(cells) + " |")
  return md + [""]
