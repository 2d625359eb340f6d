"""TIGER's new capabilities on a trained model_dir (TIGER §4.4 and §5), as evaluation passes.

- `invalid_id_curve`: unconstrained beam search (beams limited only to each level's code
  range); the share of invalid IDs among the first K results, for K = 1..num_beams
  (Figure 6), beside the trie-constrained search, whose share is 0 by construction.
- `sampled_lists`: temperature sampling (§4.4.2): S IDs drawn per user, token by token from
  softmax(logp / T) over the trie; a user's top K is the first K distinct items in the order
  drawn (Recall@K); Entropy@K (cost_jax.metrics.category_entropy_at_k) reads the first K draws,
  repeats counted, so it is always over exactly K items (Table 5).
- `cold_start_lists`: beam search over the trie of every item's ID, then the ε rule of
  cost_jax.seq2seq.cold_start at each K under its own quota floor(ε·K) (Figure 5).

Everything decodes in fixed-size batches with the run's batch sharding, like the evaluator.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from cost_jax.progress import Progress
from cost_jax.seq2seq import cold_start, decoding, evaluator
from cost_jax.seq2seq.trie import ItemTrie


def _trie(run: Any, items: np.ndarray | None = None) -> ItemTrie:
  layout = run.record.get("layout", {})
  tokens = run.item_tokens if items is None else run.item_tokens[items]
  return ItemTrie.from_tokens(np.asarray(tokens, np.int32), layout.get("level_offsets"),
                              layout.get("codebook_sizes"))


def beam_lists(run: Any, encoder_tokens: np.ndarray, num_beams: int, *, constrained: bool = True,
               items: np.ndarray | None = None, batch_size: int = 64,
               desc: str = "decode") -> np.ndarray:
  """int [U, num_beams] item indices, best first (-1 = invalid ID or no beam). `items`: decode
  only among these items (a trie over their IDs); the result is in global item indices."""
  trie = _trie(run, items)
  score_over = run.train_config.score_over

  def predict(params, x):
    return decoding.predict_topk(run.module, params, x, trie, num_beams, num_beams,
                                 constrained=constrained, score_over=score_over)

  out, _ = evaluator.predict_arrays(predict, run.params, encoder_tokens,
                                    run.round_batch(batch_size), sharding=run.batch_sharding,
                                    desc=desc)
  if items is not None:
    out = np.where(out >= 0, np.asarray(items)[np.maximum(out, 0)], -1)
  return out


def invalid_share_by_k(lists: np.ndarray) -> np.ndarray:
  """float [W]: the share of -1 entries among the first K of each list, K = 1..W."""
  bad = np.asarray(lists) < 0
  return np.cumsum(bad.mean(axis=0)) / np.arange(1, bad.shape[1] + 1)


def invalid_id_curve(run: Any, encoder_tokens: np.ndarray, num_beams: int,
                     batch_size: int = 64) -> dict[str, list[float]]:
  """{"k": 1..W, "unconstrained": share of invalid IDs in the top K, "constrained": same}."""
  free = beam_lists(run, encoder_tokens, num_beams, constrained=False, batch_size=batch_size,
                    desc="beams, unconstrained")
  trie = beam_lists(run, encoder_tokens, num_beams, constrained=True, batch_size=batch_size,
                    desc="beams, constrained")
  # A constrained list is -1 only where the catalogue has fewer IDs than beams ("no beam").
  return {"k": list(range(1, num_beams + 1)),
          "unconstrained": invalid_share_by_k(free).tolist(),
          "constrained": invalid_share_by_k(trie).tolist(),
          "unconstrained_lists": free, "constrained_lists": trie}


def first_distinct(samples: np.ndarray, k: int) -> np.ndarray:
  """int [U, k]: per row, the first k distinct non-negative entries in order (-1 pads)."""
  samples = np.asarray(samples)
  out = np.full((samples.shape[0], k), -1, np.int64)
  for r, row in enumerate(samples):
    seen: dict[int, None] = {}
    for v in row.tolist():
      if v >= 0 and v not in seen:
        seen[v] = None
        if len(seen) == k:
          break
    out[r, :len(seen)] = list(seen)
  return out


def sampled_lists(run: Any, encoder_tokens: np.ndarray, temperature: float, k: int,
                  num_samples: int, seed: int = 0, batch_size: int = 64
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(distinct, draws): int [U, k] the first k distinct items of `num_samples` tempered samples
  per user (-1 pads when fewer than k distinct items were drawn: Recall@K reads these), and
  int [U, k] the first k draws, repeats kept (always k items: Entropy@K reads these, so a
  sampler that repeats itself at low temperature scores a low entropy over exactly K items)."""
  trie = _trie(run)
  n = len(encoder_tokens)
  batch_size = run.round_batch(batch_size)
  num_batches = -(-n // batch_size)
  progress = Progress(num_batches, desc=f"sample T={temperature:g}", unit="batches",
                      items_per_step=batch_size, items_name="users")
  key = jax.random.PRNGKey(seed)
  parts, draws = [], []
  for b in range(num_batches):
    rows = np.arange(b * batch_size, (b + 1) * batch_size)
    rows = np.where(rows < n, rows, rows % n)
    x = jax.device_put(encoder_tokens[rows], run.batch_sharding)
    items, _, _ = decoding.sample_items(run.module, run.params, x, trie, num_samples,
                                        jax.random.fold_in(key, b), temperature=temperature,
                                        score_over=run.train_config.score_over,
                                        sort_by_score=False)
    items = np.asarray(items)
    parts.append(first_distinct(items, k))
    draws.append(items[:, :k])
    progress.update(b + 1)
  return np.concatenate(parts)[:n], np.concatenate(draws)[:n]


def cold_start_lists(run: Any, encoder_tokens: np.ndarray, unseen: np.ndarray,
                     epsilons: Sequence[float], ks: Sequence[int], num_beams: int,
                     batch_size: int = 64, prefix_lens: Sequence[int] = (0,)
                     ) -> dict[tuple[int, float], dict[int, np.ndarray]]:
  """{(prefix length, epsilon): {K: int [U, K]}}: beams over the trie of every item's ID (seen
  and unseen), then the ε rule at each K under its own quota floor(ε·K)
  (cost_jax.seq2seq.cold_start; prefix length 0 = L-1, TIGER's)."""
  mask = np.zeros(len(run.item_tokens), bool)
  mask[np.asarray(unseen, np.int64)] = True
  beams = beam_lists(run, encoder_tokens, num_beams, batch_size=batch_size, desc="beams")
  out = {}
  for p in prefix_lens:
    p = cold_start.prefix_length(run.item_tokens.shape[1], p)
    groups = cold_start.unseen_by_prefix(run.item_tokens, mask, p)
    for e in epsilons:
      out[(p, float(e))] = cold_start.blend_unseen_per_k(beams, run.item_tokens, mask, groups,
                                                         e, ks, p)
  return out
