"""Collision statistics and de-duplication of semantic IDs (host-side NumPy).

Two ways to make every item's ID unique:
  tiger_extra_token  TIGER §3.1.3 / §4.1.3: append a token; items sharing the first M codes get
                     0, 1, 2, ... (in item order); an item without collision also gets 0.
  cost_reassign      CoST preprint §4.1 ("no items share the same code"): in each group of items
                     with the same M codes, the item closest to the code keeps it; the others move
                     to the nearest free code at the last level (by the scorer's distance, for the
                     RQ models ||r_{M-1} - e||^2). If every last-level code under that prefix is
                     taken, the search goes up one level (nearest free code at level M-2, then the
                     nearest free last code under it, and so on); such items are counted in
                     `fallback_levels` of the returned info.

A `Scorer` supplies the distances used to rank candidate codes:
  ResidualScorer (RQ-VAE, residual k-means), LSHScorer (SimHash bit flips), RandomScorer.
"""

from __future__ import annotations

import collections
from typing import Any, Protocol, Sequence

import numpy as np


# --- statistics --------------------------------------------------------------------------------
def collision_stats(codes: np.ndarray) -> dict[str, int]:
  """Collisions among rows of int [N, L] codes."""
  codes = np.asarray(codes)
  n = int(codes.shape[0])
  if n == 0:
    return {"num_items": 0, "unique_ids": 0, "colliding_items": 0, "collision_groups": 0,
            "largest_group": 0, "items_to_move": 0}
  _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
  inverse = np.asarray(inverse).reshape(-1)
  sizes = counts[inverse]
  return {
      "num_items": n,
      "unique_ids": int(len(counts)),
      "colliding_items": int(np.sum(sizes > 1)),   # items whose ID is shared with another item
      "collision_groups": int(np.sum(counts > 1)),
      "largest_group": int(counts.max()),
      "items_to_move": int(n - len(counts)),
  }


def colliding_rows(codes: np.ndarray, existing: np.ndarray | None = None) -> np.ndarray:
  """Sorted rows of int [N, L] codes whose ID another row (or an `existing` ID) also has: the
  items de-duplication compares or moves."""
  codes = np.asarray(codes)
  if len(codes) == 0:
    return np.zeros(0, np.int64)
  _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
  shared = counts[np.asarray(inverse).reshape(-1)] > 1
  if existing is not None and len(existing):
    both = np.concatenate([np.asarray(existing, codes.dtype), codes])
    _, inv_all, cnt_all = np.unique(both, axis=0, return_inverse=True, return_counts=True)
    shared |= cnt_all[np.asarray(inv_all).reshape(-1)[len(existing):]] > 1
  return np.flatnonzero(shared)


def usage_per_level(codes: np.ndarray, sizes: Sequence[int]) -> list[float]:
  """Fraction of the K_l codes of each level used by at least one item."""
  codes = np.asarray(codes)
  return [float(len(np.unique(codes[:, l])) / sizes[l]) for l in range(codes.shape[1])]


def all_distinct(ids: np.ndarray) -> bool:
  ids = np.asarray(ids)
  return len(ids) == 0 or len(np.unique(ids, axis=0)) == len(ids)


# --- scorers -----------------------------------------------------------------------------------
class Scorer(Protocol):
  sizes: tuple[int, ...]

  def root(self, item: int) -> Any: ...

  def costs(self, state: Any, level: int) -> np.ndarray: ...

  def child(self, state: Any, level: int, code: int) -> Any: ...


class ResidualScorer:
  """Residual quantization: state = residual; cost of code c = ||r_l - e_l^c||^2."""

  def __init__(self, latents: np.ndarray, codebooks: Sequence[np.ndarray],
               rows: np.ndarray | None = None):
    """latents[k] is item k's, or with `rows` (sorted item indices) item rows[k]'s: a scorer that
    holds only the items de-duplication can ask for (colliding_rows)."""
    self.latents = np.asarray(latents, np.float64)
    self.rows = None if rows is None else np.asarray(rows, np.int64)
    self.codebooks = [np.asarray(c, np.float64) for c in codebooks]
    self.sizes = tuple(len(c) for c in self.codebooks)
    self._sq = [np.sum(c * c, axis=-1) for c in self.codebooks]

  def root(self, item: int) -> np.ndarray:
    if self.rows is None:
      return self.latents[item]
    k = int(np.searchsorted(self.rows, item))
    if k >= len(self.rows) or self.rows[k] != item:
      raise KeyError(f"item {item} has no latent in this scorer (not a colliding row)")
    return self.latents[k]

  def costs(self, state: np.ndarray, level: int) -> np.ndarray:
    return state @ state - 2.0 * (self.codebooks[level] @ state) + self._sq[level]

  def child(self, state: np.ndarray, level: int, code: int) -> np.ndarray:
    return state - self.codebooks[level][code]


class LSHScorer:
  """SimHash: cost of code c = sum of |w_i . x| over the bits where c differs from x's bits."""

  def __init__(self, projections: np.ndarray):
    self.proj = np.asarray(projections, np.float64)        # [N, m, h]
    m, h = self.proj.shape[1:]
    self.sizes = (2 ** h,) * m
    self.bits = ((np.arange(2 ** h)[:, None] >> np.arange(h)[None, :]) & 1).astype(bool)  # [K, h]

  def root(self, item: int) -> int:
    return item

  def costs(self, state: int, level: int) -> np.ndarray:
    p = self.proj[state, level]
    return ((self.bits != (p > 0)[None, :]) * np.abs(p)[None, :]).sum(-1)

  def child(self, state: int, level: int, code: int) -> int:
    return state


class RandomScorer:
  """Random candidate order (for random IDs)."""

  def __init__(self, sizes: Sequence[int], seed: int = 0):
    self.sizes = tuple(int(s) for s in sizes)
    self.rng = np.random.default_rng(seed)

  def root(self, item: int) -> int:
    return item

  def costs(self, state: int, level: int) -> np.ndarray:
    return self.rng.random(self.sizes[level])

  def child(self, state: int, level: int, code: int) -> int:
    return state


# --- de-duplication ----------------------------------------------------------------------------
def tiger_extra_token(codes: np.ndarray, existing: np.ndarray | None = None
                      ) -> tuple[np.ndarray, dict[str, Any]]:
  """int [N, M] -> int32 [N, M+1]; the extra token counts items per M-code prefix.

  With `existing` (int [E, M+1], IDs already given out), new items continue each prefix's count.
  """
  codes = np.asarray(codes, np.int64)
  n = len(codes)
  old = np.zeros((0, codes.shape[1] + 1), np.int64) if existing is None else np.asarray(
      existing, np.int64)
  # Vectorized (millions of items): group ids over the existing prefixes and the new codes;
  # a new item's token = the group's next free count + its rank among the group's new items
  # (in item order).
  keys = np.concatenate([old[:, :-1], codes]) if len(old) else codes
  if n == 0:
    return np.zeros((0, codes.shape[1] + 1), np.int32), {
        "dedup": "tiger_extra_token", "extra_token_max": 0, "extra_token_size": 1}
  _, group = np.unique(keys, axis=0, return_inverse=True)
  group = np.asarray(group).reshape(-1)
  base = np.zeros(int(group.max()) + 1, np.int64)
  if len(old):
    np.maximum.at(base, group[:len(old)], old[:, -1] + 1)
  new_group = group[len(old):]
  order = np.argsort(new_group, kind="stable")
  sorted_group = new_group[order]
  run_start = np.ones(n, bool)
  run_start[1:] = sorted_group[1:] != sorted_group[:-1]
  first = np.maximum.accumulate(np.where(run_start, np.arange(n), 0))
  extra = np.empty(n, np.int64)
  extra[order] = np.arange(n) - first
  extra += base[new_group]
  ids = np.concatenate([codes, extra[:, None]], axis=1).astype(np.int32)
  return ids, {"dedup": "tiger_extra_token", "extra_token_max": int(extra.max()) if len(extra)
               else 0, "extra_token_size": int(extra.max()) + 1 if len(extra) else 1}


class _Occupancy:
  """Used IDs and per-prefix counts, to find free codes quickly."""

  def __init__(self, sizes: Sequence[int]):
    self.sizes = tuple(sizes)
    self.used: set[tuple] = set()
    self.count: dict[tuple, int] = collections.defaultdict(int)
    cap = [1] * (len(sizes) + 1)
    for l in range(len(sizes) - 1, -1, -1):
      cap[l] = cap[l + 1] * sizes[l]
    self.capacity = cap      # capacity[len(prefix)] = number of IDs under a prefix

  def add(self, key: tuple) -> None:
    self.used.add(key)
    for l in range(len(key)):
      self.count[key[:l]] += 1

  def full(self, prefix: tuple) -> bool:
    if len(prefix) == len(self.sizes):
      return prefix in self.used
    return self.count[prefix] >= self.capacity[len(prefix)]


def _complete(occ: _Occupancy, scorer: Scorer, prefix: tuple, state: Any, level: int) -> tuple:
  """Nearest free full ID under a non-full prefix (greedy depth-first by scorer distance)."""
  costs = scorer.costs(state, level)
  for c in np.argsort(costs, kind="stable"):
    key = prefix + (int(c),)
    if occ.full(key):
      continue
    if level == len(occ.sizes) - 1:
      return key
    return _complete(occ, scorer, key, scorer.child(state, level, int(c)), level + 1)
  raise AssertionError("non-full prefix without a free code")


def cost_reassign(codes: np.ndarray, scorer: Scorer, existing: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
  """int [N, M] raw codes -> int32 [N, M] distinct IDs (also distinct from `existing`)."""
  codes = np.asarray(codes, np.int64)
  n, m = codes.shape
  sizes = tuple(scorer.sizes)
  capacity = int(np.prod([float(s) for s in sizes]))
  num_existing = 0 if existing is None else len(existing)
  if n + num_existing > capacity:
    raise ValueError(f"{n + num_existing} items do not fit in {capacity} distinct IDs "
                     f"(codebook sizes {list(sizes)}); use dedup=tiger_extra_token")
  occ = _Occupancy(sizes)
  if existing is not None:
    for row in np.asarray(existing):
      occ.add(tuple(int(v) for v in row))
  # Keepers: in every group of equal codes, the item nearest to its own last-level code
  # (unless an existing item holds the ID already).
  groups: dict[tuple, list[int]] = collections.defaultdict(list)
  for i, row in enumerate(codes):
    groups[tuple(int(v) for v in row)].append(i)
  ids = codes.copy()
  movers: list[int] = []
  for key, members in groups.items():
    if occ.full(key):
      movers.extend(members)
      continue
    if len(members) > 1:
      own = []
      for i in members:
        state = scorer.root(i)
        for l in range(m - 1):
          state = scorer.child(state, l, key[l])
        own.append(scorer.costs(state, m - 1)[key[-1]])
      keep = members[int(np.argmin(own))]
      movers.extend(i for i in members if i != keep)
    occ.add(key)
  fallback = collections.Counter()
  for i in sorted(movers):
    key = tuple(int(v) for v in codes[i])
    states = [scorer.root(i)]
    for l in range(m - 1):
      states.append(scorer.child(states[-1], l, key[l]))
    for start in range(m - 1, -1, -1):   # last level first, then go up
      prefix = key[:start]
      if not occ.full(prefix):
        new = _complete(occ, scorer, prefix, states[start], start)
        break
    else:
      raise AssertionError("no free ID although capacity suffices")
    if start < m - 1:
      fallback[f"level_{start}"] += 1
    occ.add(new)
    ids[i] = new
  info = {"dedup": "cost_reassign", "reassigned": len(movers),
          "fallback_levels": dict(fallback),
          "fallback_items": int(sum(fallback.values()))}
  return ids.astype(np.int32), info


def deduplicate(mode: str, codes: np.ndarray, scorer: Scorer | None = None,
                existing: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
  """Dispatches on mode: cost_reassign | tiger_extra_token | none."""
  if mode == "tiger_extra_token":
    return tiger_extra_token(codes, existing)
  if mode == "cost_reassign":
    if scorer is None:
      raise ValueError("cost_reassign needs a scorer")
    return cost_reassign(codes, scorer, existing)
  if mode == "none":
    return np.asarray(codes, np.int32), {"dedup": "none"}
  raise ValueError(f"unknown dedup mode {mode!r}")
