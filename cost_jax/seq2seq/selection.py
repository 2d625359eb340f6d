"""Choosing the checkpoint a run is scored with: the best point of its validation curve.

Pure functions of the curve (a list of {"step", metric: value, ...}), so the choice and the
patience counter are derived from `validation_curve.json` and survive a resume.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

# What a run records (metrics.json) of how it chose the checkpoint it scored.
SELECTION_KEYS = ("final_step", "stop_reason", "select_metric", "best_step", "num_validations")


def best_of_curve(curve: Sequence[Mapping[str, Any]], metric: str, min_delta: float = 0.0
                  ) -> dict[str, Any] | None:
  """The validation point a run keeps: the first that beats every earlier kept one by more than
  `min_delta` on `metric`, scanning in step order (so ties keep the earlier step)."""
  best = None
  for point in curve:
    if metric not in point:
      continue
    if best is None or point[metric] > best[metric] + min_delta:
      best = dict(point)
  return best


def evals_since_best(curve: Sequence[Mapping[str, Any]], best: Mapping[str, Any] | None) -> int:
  """Validations after the kept one (the patience counter; derived, so it survives a resume)."""
  if best is None:
    return len(curve)
  return sum(1 for point in curve if point["step"] > best["step"])
