"""Cold-start retrieval with semantic IDs (TIGER §4.4.1, Figure 5), as pure numpy.

The model is trained without the unseen items and decodes IDs of seen items only (a trie
over the seen items' IDs). Each predicted ID maps to its seen item; unseen items whose ID
shares the first L-1 tokens with it (the semantic codes; the last token only tells apart
items with the same codes) become candidates too. `epsilon` caps the share of unseen items
in the top K: at most floor(epsilon * K) of them.

The rule, in the order the beams come (best first): the beam's seen item goes in, then the
unseen items that share its prefix (by item index), each while the unseen quota lasts;
an item already in the list is skipped. The list stops at K. Unfilled slots are -1.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def unseen_by_prefix(item_tokens: np.ndarray, unseen: np.ndarray) -> dict[tuple, list[int]]:
  """{first L-1 tokens: [unseen item indices, ascending]} over the unseen items."""
  tokens = np.asarray(item_tokens)
  out: dict[tuple, list[int]] = {}
  for i in np.flatnonzero(np.asarray(unseen, bool)):
    out.setdefault(tuple(tokens[i, :-1].tolist()), []).append(int(i))
  return out


def blend_unseen(seen_topk: np.ndarray, item_tokens: np.ndarray,
                 groups: Mapping[tuple, Sequence[int]], epsilon: float, k: int) -> np.ndarray:
  """Top-k lists [B, k] with unseen items blended in by the rule above.

  seen_topk int [B, W]: the decoded seen items, best first (-1 = no beam); item_tokens
  int [N, L] of every item; groups from `unseen_by_prefix`; epsilon in [0, 1].
  """
  if not 0.0 <= float(epsilon) <= 1.0:
    raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
  quota_total = int(np.floor(float(epsilon) * k + 1e-9))
  seen_topk = np.asarray(seen_topk)
  tokens = np.asarray(item_tokens)
  out = np.full((seen_topk.shape[0], k), -1, np.int64)
  for b, row in enumerate(seen_topk):
    chosen: list[int] = []
    taken: set[int] = set()
    quota = quota_total
    for item in row:
      if len(chosen) >= k:
        break
      if item < 0:
        continue
      if int(item) not in taken:
        chosen.append(int(item))
        taken.add(int(item))
      for u in groups.get(tuple(tokens[item, :-1].tolist()), ()):
        if quota <= 0 or len(chosen) >= k:
          break
        if u not in taken:
          chosen.append(u)
          taken.add(u)
          quota -= 1
    out[b, :len(chosen)] = chosen[:k]
  return out
