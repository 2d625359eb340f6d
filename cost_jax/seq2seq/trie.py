"""The item trie: every valid semantic ID in token space, usable inside jit.

Dense per-level transition tables `next[node, code]` (-1 = invalid; the last level maps to
the item index), or CSR child lists where a dense level would be too large. It is a
pytree, so it can be passed into jitted functions (cost_jax.seq2seq.decoding).
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from cost_jax.io import UserError
from cost_jax.tokenizer import artifact

Array = jax.Array
DENSE_LIMIT = 16_000_000  # max entries (int32) of one dense per-level transition table
# Tries captured as constants by a T5X decode_fn are embedded in the compiled program:
# keep them O(num_items) (CSR) beyond this size.
CONSTANT_DENSE_LIMIT = 1_000_000


@flax.struct.dataclass
class ItemTrie:
  """Prefix trie of valid semantic IDs (token space), usable inside jit.

  Level l has `num_nodes[l]` nodes (prefixes of length l; level 0 = the root) and a
  transition from (node, code) where code = token - level_offsets[l] in [0, level_sizes[l]).
  For l < L-1 the target is a node of level l+1, for l = L-1 it is the item index.
  """
  dense: tuple  # per level: int32 [num_nodes[l], level_sizes[l]] or None
  csr: tuple  # per level: (start int32 [n+1], codes int32 [E], next int32 [E]) or None
  item_tokens: Array  # int32 [N, L]
  level_offsets: tuple = flax.struct.field(pytree_node=False)
  level_sizes: tuple = flax.struct.field(pytree_node=False)
  # Per level: max children of a node for CSR levels (a static loop bound), 0 if dense.
  max_children: tuple = flax.struct.field(pytree_node=False)

  @property
  def num_levels(self) -> int:
    return len(self.level_sizes)

  @property
  def num_items(self) -> int:
    return int(self.item_tokens.shape[0])

  @property
  def num_nodes(self) -> tuple[int, ...]:
    """Nodes per level (level 0 = the root)."""
    return tuple(int(d.shape[0]) if d is not None else int(c[0].shape[0]) - 1
                 for d, c in zip(self.dense, self.csr))

  @classmethod
  def from_tokens(cls, item_tokens: np.ndarray, level_offsets: Optional[Sequence[int]] = None,
                  level_sizes: Optional[Sequence[int]] = None, dense_limit: int = DENSE_LIMIT,
                  source: str = "item_tokens") -> "ItemTrie":
    """Build from int [N, L] token IDs (all rows distinct).

    level_offsets / level_sizes give each level's token range (the TokenLayout); if
    omitted they are inferred as [min, max] of each column.
    """
    toks = np.asarray(item_tokens)
    if toks.ndim != 2 or toks.shape[0] == 0 or toks.shape[1] == 0:
      raise UserError(f"{source}: expected a non-empty int array [num_items, L], got shape "
                      f"{toks.shape}")
    toks = toks.astype(np.int64)
    n, num_levels = toks.shape
    if level_offsets is None:
      level_offsets = toks.min(axis=0)
    if level_sizes is None:
      level_sizes = toks.max(axis=0) - np.asarray(level_offsets) + 1
    offs = np.asarray(level_offsets, np.int64)
    sizes = np.asarray(level_sizes, np.int64)
    if offs.shape != (num_levels,) or sizes.shape != (num_levels,):
      raise UserError(f"{source}: level_offsets/level_sizes must have {num_levels} entries")
    codes = toks - offs
    bad = (codes < 0) | (codes >= sizes)
    if bad.any():
      i, l = map(int, np.argwhere(bad)[0])
      raise UserError(f"{source}: row {i}: token {int(toks[i, l])} at level {l} is outside "
                      f"[{int(offs[l])}, {int(offs[l] + sizes[l])})")
    # Node ids per level: unique prefixes (lexicographic order).
    parent = np.zeros(n, np.int64)  # node of each item at the current level
    num_nodes = [1]
    dense, csr, max_children = [], [], []
    for l in range(num_levels):
      k = int(sizes[l])
      key = parent * k + codes[:, l]  # (parent, code) pair id, unique per child
      if l < num_levels - 1:
        uniq, child = np.unique(key, return_inverse=True)
        child = child.reshape(-1)
        target_of_uniq = np.arange(len(uniq))
      else:
        uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
        if (counts > 1).any():
          dup = int(first[np.argmax(counts > 1)])
          same = np.nonzero(key == key[dup])[0][:2]
          raise UserError(f"{source}: rows {int(same[0])} and {int(same[1])} have the same ID "
                          f"{toks[dup].tolist()} (semantic IDs must be distinct)")
        child = None
        target_of_uniq = first  # item index
      p_of = uniq // k
      c_of = uniq % k
      n_l = num_nodes[l]
      deg = np.bincount(p_of, minlength=n_l)
      if n_l * k <= dense_limit:
        max_children.append(0)
        table = np.full((n_l, k), -1, np.int32)
        table[p_of, c_of] = target_of_uniq
        dense.append(jnp.asarray(table))
        csr.append(None)
      else:
        max_children.append(int(deg.max()))
        start = np.zeros(n_l + 1, np.int64)
        start[1:] = np.cumsum(deg)
        dense.append(None)
        csr.append((jnp.asarray(start.astype(np.int32)), jnp.asarray(c_of.astype(np.int32)),
                    jnp.asarray(target_of_uniq.astype(np.int32))))
      if child is not None:
        num_nodes.append(len(uniq))
        parent = child
    return cls(dense=tuple(dense), csr=tuple(csr), item_tokens=jnp.asarray(toks, jnp.int32),
               level_offsets=tuple(int(o) for o in offs), level_sizes=tuple(int(s) for s in sizes),
               max_children=tuple(max_children))

  @classmethod
  def from_tokenizer_dir(cls, path: str, dense_limit: int = DENSE_LIMIT) -> "ItemTrie":
    """The trie of a tokenizer dir's items (cost_jax.tokenizer.artifact reads and checks it)."""
    layout, tokens = artifact.load_item_tokens(path)
    return cls.from_tokens(tokens, layout.level_offsets, layout.codebook_sizes,
                           dense_limit=dense_limit, source=artifact.ids_path(path))

  def children(self, level: int, nodes: Array) -> Array:
    """int [M] nodes of `level` (-1 = dead) -> int32 [M, level_sizes[level]] next ids, -1 invalid."""
    k = self.level_sizes[level]
    safe = jnp.maximum(nodes, 0)
    alive = (nodes >= 0)[:, None]
    if self.dense[level] is not None:
      table = self.dense[level]
      if table.shape[0] == 1:
        out = jnp.broadcast_to(table, (nodes.shape[0], k))
      else:
        out = jnp.take(table, safe, axis=0)
      return jnp.where(alive, out, -1)
    start, codes, nxt = self.csr[level]
    deg = self.max_children[level]
    s = jnp.take(start, safe)
    cnt = jnp.take(start, safe + 1) - s
    j = jnp.arange(deg)
    pos = jnp.minimum(s[:, None] + j[None, :], codes.shape[0] - 1)
    valid = (j[None, :] < cnt[:, None]) & alive
    col = jnp.where(valid, jnp.take(codes, pos), k)  # k = out of bounds -> dropped
    rows = jnp.broadcast_to(jnp.arange(nodes.shape[0])[:, None], col.shape)
    out = jnp.full((nodes.shape[0], k), -1, jnp.int32)
    return out.at[rows, col].set(jnp.take(nxt, pos), mode="drop")

  def lookup(self, tokens: Array) -> Array:
    """int [..., L] tokens -> int32 [...] item index, -1 if not a valid ID."""
    tokens = jnp.asarray(tokens)
    flat = tokens.reshape(-1, tokens.shape[-1])
    node = jnp.zeros(flat.shape[0], jnp.int32)
    for l in range(self.num_levels):
      code = flat[:, l] - self.level_offsets[l]
      ok = (code >= 0) & (code < self.level_sizes[l])
      nxt = self.children(l, node)
      node = jnp.where(ok, jnp.take_along_axis(nxt, jnp.clip(code, 0, self.level_sizes[l] - 1)
                                               [:, None], axis=1)[:, 0], -1)
    return node.reshape(tokens.shape[:-1])


@functools.lru_cache(maxsize=8)
def load_trie(tokenizer_dir: str, dense_limit: int = CONSTANT_DENSE_LIMIT) -> ItemTrie:
  """ItemTrie.from_tokenizer_dir, memoized per directory (for gin-bound decode fns)."""
  return ItemTrie.from_tokenizer_dir(tokenizer_dir, dense_limit=dense_limit)
