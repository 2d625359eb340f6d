"""Cold-start retrieval with semantic IDs (TIGER §4.4.1, Figure 5), as pure numpy.

The model is trained without the unseen items, but every item has an ID (the tokenizer
encodes the unseen ones after training on the seen ones), and the beam search runs over the
trie of all IDs. A decoded ID retrieves its seen item; unseen items whose ID shares the
decoded ID's first L-1 tokens (the semantic codes; the last token only tells apart items with
the same codes) become candidates too, the decoded item itself when it is unseen. `epsilon`
caps the share of unseen items in the top K: at most floor(epsilon * K) of them.

The rule, in beam order (best first): a seen beam item goes in; then the unseen items that
share the beam's prefix (by item index) go in while the unseen quota lasts; an item already
in the list is skipped; the list stops at K; unfilled slots are -1. With epsilon = 0 the list
is the seen beam items in order. `prefix_len` (default L-1, TIGER's rule) widens or narrows
the neighbourhood an unseen item must share.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def prefix_length(id_length: int, prefix_len: int = 0) -> int:
  """The shared-prefix length: `prefix_len` tokens, or L-1 (TIGER's rule) when it is 0."""
  p = int(prefix_len) or int(id_length) - 1
  if not 1 <= p <= int(id_length):
    raise ValueError(f"prefix length must be in [1, {id_length}], got {prefix_len}")
  return p


def unseen_by_prefix(item_tokens: np.ndarray, unseen: np.ndarray,
                     prefix_len: int = 0) -> dict[tuple, list[int]]:
  """{first p tokens: [unseen item indices, ascending]} over the unseen items, p =
  prefix_length(L, prefix_len) (L-1 by default)."""
  tokens = np.asarray(item_tokens)
  p = prefix_length(tokens.shape[1], prefix_len)
  out: dict[tuple, list[int]] = {}
  for i in np.flatnonzero(np.asarray(unseen, bool)):
    out.setdefault(tuple(tokens[i, :p].tolist()), []).append(int(i))
  return out


def blend_unseen(beam_items: np.ndarray, item_tokens: np.ndarray, unseen: np.ndarray,
                 groups: Mapping[tuple, Sequence[int]], epsilon: float, k: int,
                 prefix_len: int = 0) -> np.ndarray:
  """Top-k lists [B, k] by the rule above.

  beam_items int [B, W]: the decoded items, best first (-1 = no beam); item_tokens int
  [N, L] of every item; unseen bool [N]; groups from `unseen_by_prefix` with the same
  `prefix_len`; epsilon in [0, 1].
  """
  if not 0.0 <= float(epsilon) <= 1.0:
    raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
  quota_total = int(np.floor(float(epsilon) * k + 1e-9))
  beam_items = np.asarray(beam_items)
  tokens = np.asarray(item_tokens)
  p = prefix_length(tokens.shape[1], prefix_len)
  unseen = np.asarray(unseen, bool)
  out = np.full((beam_items.shape[0], k), -1, np.int64)
  for b, row in enumerate(beam_items):
    chosen: list[int] = []
    taken: set[int] = set()
    quota = quota_total
    for item in row:
      if len(chosen) >= k:
        break
      if item < 0:
        continue
      if not unseen[item] and int(item) not in taken:
        chosen.append(int(item))
        taken.add(int(item))
      for u in groups.get(tuple(tokens[item, :p].tolist()), ()):
        if quota <= 0 or len(chosen) >= k:
          break
        if u not in taken:
          chosen.append(u)
          taken.add(u)
          quota -= 1
    out[b, :len(chosen)] = chosen[:k]
  return out


def blend_unseen_per_k(beam_items: np.ndarray, item_tokens: np.ndarray, unseen: np.ndarray,
                       groups: Mapping[tuple, Sequence[int]], epsilon: float,
                       ks: Sequence[int], prefix_len: int = 0) -> dict[int, np.ndarray]:
  """{K: top-K lists [B, K]}, each built by the rule under its own quota floor(epsilon * K)
  (a top-K list is not a prefix of a longer one: at epsilon 0.1 the top 9 hold no unseen
  item, the top 10 may hold one)."""
  return {int(k): blend_unseen(beam_items, item_tokens, unseen, groups, epsilon, int(k),
                               prefix_len) for k in ks}


def recall_by_k(lists: Mapping[int, np.ndarray], targets: np.ndarray) -> dict[str, float]:
  """{"recall@K": share of rows whose K-list holds its target} for per-K lists."""
  targets = np.asarray(targets)
  return {f"recall@{k}": float(np.mean((np.asarray(l)[:, :k] == targets[:, None]).any(axis=1)))
          for k, l in sorted(lists.items())}

