"""SASRec-style sequential recommender in Flax: the network, its loss and a pure train step.

A baseline for context (TIGER Table 1 compares against SASRec [Kang & McAuley, ICDM'18]):
item-ID embeddings + learned position embeddings, `num_blocks` causal self-attention blocks
(pre-LayerNorm, ReLU feed-forward, dropout), a final LayerNorm, and scores as the dot product
of a position's output with the (shared) item embeddings.

Loss (`SASRecConfig.loss`):
  "softmax": full softmax cross-entropy over all items at every non-pad position (default;
             a common stronger variant, and it needs no negative sampling).
  "bce":     the SASRec paper's binary cross-entropy with one uniformly sampled negative per
             position.
Scoring (`predict_topk`) ranks all items (full ranking, no sampled negatives, history items
not filtered - as TIGER/CoST) from the last max_len items of a history. The training loop, its
data windows, resume and the run's outputs are cost_jax.baselines.sasrec_train.

Speed: the output layer scores only a batch's target positions (`target_positions`; the same
mean loss as masking all batch x max_len positions, ~5x faster on Amazon Beauty, where 7% of the
positions hold a target).

Token convention: item index i is token i + 1; 0 is padding (sequences are left-padded).

COVE_SASRec (`SASRecConfig.cove`, COVE §3.2 / Fig. 2c): the item embedding table goes through
COVE's cascaded quantizers (cost_jax.tokenizer.cove) every step, the fused table
z_c = z + α z̄ replaces the item embeddings at the input and in the output scores, and the
loss is L_rec + ω_q L_quant (eq. 7), L_quant averaged over all items. With cove=None or
α = 0 the forward pass is plain SASRec's.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cost_jax.io import UserError
from cost_jax.tokenizer.cove import Cove, CoveConfig


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
  """Hyperparameters; defaults follow SASRec §4 (ML-1M setting) unless stated."""

  num_items: int
  max_len: int = 50        # issue 5 (SASRec used 200 for ML-1M, 50 for the sparse sets)
  emb_dim: int = 64        # issue 5 (SASRec d=50)
  num_blocks: int = 2      # SASRec b=2
  num_heads: int = 1       # SASRec: single-head attention
  dropout_rate: float = 0.2  # SASRec: 0.2 on ML-1M
  learning_rate: float = 1e-3  # SASRec: Adam, lr 0.001
  batch_size: int = 128    # SASRec: 128
  num_epochs: int = 200    # SASRec trains ~200 epochs
  loss: str = "softmax"    # "softmax" (full CE) or "bce" (SASRec paper, 1 negative)
  eval_batch_size: int = 256
  # Learning curve (ours): validation Recall/NDCG@10 every this many epochs, on a fixed random
  # subset of eval_num_users users (0 = off). Written to losses.json "validation_curve".
  eval_every_epochs: int = 1
  eval_num_users: int = 1000
  # Train to the best epoch (ours, as the seq2seq trainer): the parameters of the validation
  # point with the best Recall@10 are the ones scored on test; stop after `patience` validations
  # in a row without a better one (0 = run every epoch).
  patience: int = 0
  keep_best: bool = True
  cove: CoveConfig | None = None  # COVE_SASRec when set (cost_jax.tokenizer.cove)

  def __post_init__(self):
    if isinstance(self.cove, dict):
      object.__setattr__(self, "cove", CoveConfig(**self.cove))
    if self.loss not in ("softmax", "bce"):
      raise UserError(f"sasrec.loss: must be 'softmax' or 'bce', got {self.loss!r}")
    if self.num_items < 1 or self.max_len < 1 or self.emb_dim % self.num_heads:
      raise UserError(f"sasrec: bad config {self}")


class SASRecBlock(nn.Module):
  """Pre-LN causal self-attention + ReLU feed-forward, both residual."""

  emb_dim: int
  num_heads: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x, mask, deterministic: bool):
    y = nn.LayerNorm(epsilon=1e-8)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.emb_dim, out_features=self.emb_dim,
        dropout_rate=self.dropout_rate, deterministic=deterministic)(y, y, mask=mask)
    x = x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = nn.LayerNorm(epsilon=1e-8)(x)
    y = nn.Dense(self.emb_dim)(y)
    y = nn.relu(y)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = nn.Dense(self.emb_dim)(y)
    return x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class SASRec(nn.Module):
  """tokens int[B, L] (0 = pad) -> hidden float[B, L, D]; `item_logits` scores all items."""

  config: SASRecConfig

  def setup(self):
    c = self.config
    self.item_embed = nn.Embed(c.num_items + 1, c.emb_dim,
                               embedding_init=nn.initializers.normal(stddev=c.emb_dim ** -0.5))
    self.pos_embed = nn.Embed(c.max_len, c.emb_dim,
                              embedding_init=nn.initializers.normal(stddev=0.02))
    self.blocks = [SASRecBlock(c.emb_dim, c.num_heads, c.dropout_rate) for _ in range(c.num_blocks)]
    self.final_norm = nn.LayerNorm(epsilon=1e-8)
    self.dropout = nn.Dropout(c.dropout_rate)
    if c.cove is not None:
      self.cove = Cove(c.cove)

  def item_table(self):
    """(item embeddings [num_items, D] as the model uses them, L_quant); COVE-fused if set."""
    table = self.item_embed.embedding[1:]
    if self.config.cove is None:
      return table, jnp.zeros((), jnp.float32)
    out = self.cove(table)
    return out.fused, out.loss

  def item_codes(self):
    """COVE's codes of every item, int32 [num_items, H] fine to coarse."""
    return self.cove(self.item_embed.embedding[1:]).codes

  def __call__(self, tokens, deterministic: bool = True, table=None):
    c = self.config
    length = tokens.shape[1]
    valid = (tokens > 0)
    if table is None:
      table = self.item_table()[0]
    # The (COVE-fused) table with the pad row in front; pad positions are zeroed below.
    full = jnp.concatenate([self.item_embed.embedding[:1], table], axis=0)
    emb = jnp.take(full, tokens, axis=0)
    x = emb * (c.emb_dim ** 0.5)
    x = x + self.pos_embed(jnp.arange(length))[None]
    x = self.dropout(x, deterministic=deterministic)
    x = x * valid[..., None]
    causal = nn.make_causal_mask(tokens)                       # [B, 1, L, L]
    keys = valid[:, None, None, :]                             # mask pad keys
    mask = jnp.logical_and(causal, keys)
    for block in self.blocks:
      x = block(x, mask, deterministic)
      x = x * valid[..., None]
    return self.final_norm(x)

  def item_logits(self, hidden):
    """hidden [..., D] -> logits over items [..., num_items] (pad row excluded)."""
    return hidden @ self.item_table()[0].T

  def score_last(self, tokens):
    """Logits over all items from the last position of left-padded `tokens`."""
    table = self.item_table()[0]
    return self(tokens, deterministic=True, table=table)[:, -1] @ table.T


# --- pure loss / step functions ------------------------------------------------


def target_positions(targets: np.ndarray, multiple: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """The flat indices of a batch's non-pad targets, padded to a multiple of `multiple`.

  targets int[B, L] (0 = no target) -> (int32[P], float32[P] weights: 1 for a real target, 0
  for the padding, which points at position 0). P = count rounded up to the multiple (capped
  at B·L), so a handful of shapes compile. On a sparse dataset most of a left-padded window is
  padding (Beauty: ~4 targets per 50 positions), and the output layer then scores only the
  targets instead of every position against every item.
  """
  flat = np.flatnonzero(np.asarray(targets).reshape(-1) > 0)
  size = max(1, min(targets.size, -(-max(len(flat), 1) // multiple) * multiple))
  idx = np.zeros(size, np.int32)
  idx[:len(flat)] = flat
  weights = np.zeros(size, np.float32)
  weights[:len(flat)] = 1.0
  return idx, weights


def sequence_loss(item_table, hidden, targets, rng, loss: str, positions=None):
  """Mean loss over non-pad target positions.

  item_table float[N, D] (item embeddings, no pad row); hidden float[B, L, D];
  targets int[B, L] tokens (item index + 1; 0 = no target). `positions` (from
  `target_positions`) restricts the output layer to those flat positions; the mean is the same
  (up to float summation order), at the cost of the targets only.
  """
  num_items = item_table.shape[0]
  if positions is not None:
    idx, weights = positions
    hidden = hidden.reshape(-1, hidden.shape[-1])[idx]
    targets = targets.reshape(-1)[idx]
    weights = weights * (targets > 0)
  else:
    weights = (targets > 0).astype(jnp.float32)
  labels = jnp.maximum(targets - 1, 0)  # item index
  if loss == "softmax":
    logits = hidden @ item_table.T                               # [..., N]
    per_pos = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  else:  # "bce": one uniform negative != positive (SASRec §3.5)
    shift = jax.random.randint(rng, labels.shape, 1, max(num_items, 2))
    negatives = (labels + shift) % num_items
    pos = jnp.sum(hidden * item_table[labels], axis=-1)
    neg = jnp.sum(hidden * item_table[negatives], axis=-1)
    per_pos = -jax.nn.log_sigmoid(pos) - jax.nn.log_sigmoid(-neg)
  return jnp.sum(per_pos * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_train_step(model: SASRec, tx: optax.GradientTransformation):
  """Returns a jitted (params, opt_state, inputs, targets, rng, positions) -> (params,
  opt_state, loss); `positions` = `target_positions(targets)` (one compile per size)."""
  config = model.config

  def loss_fn(params, inputs, targets, rng, positions):
    drop_rng, neg_rng = jax.random.split(rng)

    def run(module, toks):
      table, quant_loss = module.item_table()
      hidden = module(toks, deterministic=False, table=table)
      loss = sequence_loss(table, hidden, targets, neg_rng, config.loss, positions)
      if config.cove is not None:  # COVE eq. 7: L_rec + ω_q L_quant
        loss = loss + config.cove.omega_q * quant_loss
      return loss

    return nn.apply(run, model)({"params": params}, inputs, rngs={"dropout": drop_rng})

  @jax.jit
  def train_step(params, opt_state, inputs, targets, rng, positions):
    loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets, rng, positions)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return train_step


# --- data -----------------------------------------------------------------------


def left_pad(seqs: Sequence[np.ndarray], length: int) -> np.ndarray:
  """Last `length` item indices of each sequence as tokens (index + 1), left-padded with 0."""
  out = np.zeros((len(seqs), length), np.int32)
  for i, s in enumerate(seqs):
    s = np.asarray(s, np.int64)[-length:]
    if len(s):
      out[i, length - len(s):] = s + 1
  return out


# --- scoring --------------------------------------------------------------------


def init_params(model: SASRec, seed: int):
  dummy = jnp.ones((1, model.config.max_len), jnp.int32)
  return model.init(jax.random.PRNGKey(seed), dummy)["params"]


def predict_topk(config: SASRecConfig, params, histories: Sequence[np.ndarray], k: int
                 ) -> np.ndarray:
  """int32 [U, k] item indices ranked over all items from each history's last max_len items."""
  model = SASRec(config)
  k = min(k, config.num_items)

  @jax.jit
  def topk_fn(p, toks):
    logits = model.apply({"params": p}, toks, method=SASRec.score_last)
    return jax.lax.top_k(logits, k)[1]

  tokens = left_pad(histories, config.max_len)
  out = []
  bs = config.eval_batch_size
  for b in range(0, len(tokens), bs):
    chunk = tokens[b:b + bs]
    n = len(chunk)
    if n < bs:  # pad to a fixed shape (one compile)
      chunk = np.concatenate([chunk, np.zeros((bs - n, chunk.shape[1]), np.int32)])
    out.append(np.asarray(topk_fn(params, chunk))[:n])
  return np.concatenate(out).astype(np.int32) if out else np.zeros((0, k), np.int32)
