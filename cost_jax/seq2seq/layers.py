"""The Transformer's hyperparameters and building blocks (T5.1.1 style), in Flax linen.

TransformerConfig (TIGER §4.1.3 defaults), dropout from fast random bytes, T5 relative
position buckets, RMSNorm, fused-QKV self-attention, cross-attention with precomputed
keys/values, the MLP block, encoder and decoder layers, and the decoding-cache index.
Parameters carry logical axis names (collection "params_axes") for T5X's partitioner.
`cost_jax.seq2seq.network` assembles them into the encoder-decoder.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning

Array = jax.Array
param_with_axes = nn_partitioning.param_with_axes

NEG_BIAS = -1e9  # additive attention mask value (finite: fully masked rows stay NaN-free)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyperparameters; defaults are TIGER's seq2seq model (TIGER §4.1.3)."""
  # 3 special + 4 x 256 codes + 2000 user buckets = 3027, rounded up to 128 (cost_jax.tokenizer.layout).
  vocab_size: int = 3072
  emb_dim: int = 128  # TIGER §4.1.3: "input dimension ... 128"
  num_heads: int = 6  # TIGER §4.1.3: "6 self-attention heads"
  head_dim: int = 64  # TIGER §4.1.3: "of dimension 64"
  num_encoder_layers: int = 4  # TIGER §4.1.3: "4 layers each for the encoder and decoder"
  num_decoder_layers: int = 4
  mlp_dim: int = 1024  # TIGER §4.1.3: "The MLP ... dimension was set as 1024"
  mlp_activations: tuple[str, ...] = ("relu",)  # TIGER §4.1.3: ReLU (T5.1.1 would be gated-gelu)
  dropout_rate: float = 0.1  # TIGER §4.1.3: "We used a dropout of 0.1"
  dtype: str = "float32"
  # T5.1.1 (the T5X network TIGER used, §4.1.3) unties the output projection.
  logits_via_embedding: bool = False
  # "relative": T5 bucketed relative attention bias (T5X / TIGER); "absolute": learned.
  position_embedding: str = "relative"
  relative_attention_num_buckets: int = 32  # T5 default
  relative_attention_max_distance: int = 128  # T5 default
  max_input_len: int = 81  # 1 user token + 20 items x 4 tokens (absolute embeddings only)
  max_target_len: int = 8  # >= ID length L (absolute embeddings only)
  # Attention-probability dropout on/off (T5X applies `dropout_rate` there too).
  attention_dropout: bool = True

  def __post_init__(self):
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    if self.position_embedding not in ("relative", "absolute"):
      raise ValueError(f"position_embedding must be 'relative' or 'absolute', "
                       f"got {self.position_embedding!r}")

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)


def kernel_init(in_axis=0, out_axis=-1) -> Callable:
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                          in_axis=in_axis, out_axis=out_axis)


_ACTIVATIONS = {
    "relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "swish": jax.nn.silu,
    "linear": lambda x: x,
}


def random_bytes(rng: Array, shape: Sequence[int]) -> Array:
  """uint8 random bytes of `shape` from a PRNG key.

  Drawn as packed uint32 words from XLA's Philox bit generator (seeded from `rng`) and
  bitcast to bytes: ~10x faster on CPU than `jax.random.bits(..., uint8)`, which spends
  a full threefry word per byte.
  """
  shape = tuple(int(s) for s in shape)
  n = int(np.prod(shape)) if shape else 1
  words = -(-n // 4)
  seed = jax.random.bits(rng, (4,), jnp.uint32)
  _, bits = jax.lax.rng_bit_generator(seed, (words,), dtype=jnp.uint32,
                                      algorithm=jax.lax.RandomAlgorithm.RNG_PHILOX)
  return jax.lax.bitcast_convert_type(bits, jnp.uint8).reshape(-1)[:n].reshape(shape)


def dropout(x: Array, rate: float, rng: Array, broadcast_dims: Sequence[int] = ()) -> Array:
  """Inverted dropout with 8 random bits per element.

  The drop probability is quantized to multiples of 1/256 (0.1 -> 26/256 = 0.1016);
  survivors are rescaled by the exact keep probability, so E[out] = x.
  """
  if rate <= 0.0:
    return x
  threshold = int(round(rate * 256))
  if threshold <= 0:
    return x
  if threshold >= 256:
    return jnp.zeros_like(x)
  shape = list(x.shape)
  for d in broadcast_dims:
    shape[d] = 1
  keep = random_bytes(rng, shape) >= jnp.uint8(threshold)
  scale = jnp.asarray(256.0 / (256 - threshold), x.dtype)
  return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


def relative_position_buckets(qlen: int, klen: int, bidirectional: bool, num_buckets: int,
                              max_distance: int, q_offset: int = 0) -> np.ndarray:
  """T5's log-spaced relative-position buckets, int32 [qlen, klen] (static numpy)."""
  ctx = np.arange(qlen)[:, None] + q_offset
  mem = np.arange(klen)[None, :]
  rel = mem - ctx  # key position minus query position
  n = -rel
  ret = np.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    ret += (n < 0).astype(n.dtype) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  with np.errstate(divide="ignore"):
    val_if_large = max_exact + (
        np.log(np.maximum(n, 1) / max_exact) / np.log(max_distance / max_exact)
        * (num_buckets - max_exact)).astype(n.dtype)
  val_if_large = np.minimum(val_if_large, num_buckets - 1)
  ret += np.where(is_small, n, val_if_large)
  return ret.astype(np.int32)


class RelativePositionBias(nn.Module):
  """Per-head learned bias over T5 relative-position buckets: [1, H, q, k]."""
  config: TransformerConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, qlen: int, klen: int) -> Array:
    cfg = self.config
    table = param_with_axes(
        "rel_embedding", nn.initializers.normal(0.1),
        (cfg.num_heads, cfg.relative_attention_num_buckets), jnp.float32,
        axes=("heads", "relpos_buckets"))
    buckets = relative_position_buckets(qlen, klen, self.bidirectional,
                                        cfg.relative_attention_num_buckets,
                                        cfg.relative_attention_max_distance)
    # A matmul with the static one-hot bucket matrix (its gradient is a matmul too,
    # not a scatter-add, which is slow on CPU).
    onehot = np.eye(cfg.relative_attention_num_buckets, dtype=np.float32)[buckets.reshape(-1)]
    bias = jnp.dot(table.astype(cfg.jnp_dtype), jnp.asarray(onehot.T, cfg.jnp_dtype))
    return bias.reshape(1, cfg.num_heads, qlen, klen)


class RMSNorm(nn.Module):
  """T5 layer norm: scale only, no mean subtraction, no bias."""
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = param_with_axes("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32,
                            axes=("embed",))
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(var + self.epsilon) * scale.astype(x.dtype)


def _attend(q: Array, k: Array, v: Array, bias: Optional[Array], drop: Callable) -> Array:
  """q [B, H, Tq, D], k/v [B, H, Tk, D], bias broadcastable to [B, H, Tq, Tk]."""
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, k)
  if bias is not None:
    scores = scores + bias
  probs = jax.nn.softmax(scores, axis=-1)
  probs = drop(probs)
  return jnp.einsum("bhqk,bhkd->bhqd", probs, v)


def dense(x: Array, kernel: Array) -> Array:
  """[..., E] @ kernel [E, *out] as one 2-D matmul -> [..., *out]."""
  e = x.shape[-1]
  out_shape = kernel.shape[1:]
  y = jnp.dot(x.reshape(-1, e), kernel.reshape(e, -1))
  return y.reshape(*x.shape[:-1], *out_shape)


def _merge_heads_out(o: Array, wo: Array) -> Array:
  """o [B, H, T, D] @ wo [H, D, E] -> [B, T, E]."""
  b, h, t, d = o.shape
  o = jnp.transpose(o, (0, 2, 1, 3)).reshape(b * t, h * d)
  return jnp.dot(o, wo.reshape(h * d, -1)).reshape(b, t, -1)


def _attn_dropout(module: nn.Module, deterministic: bool) -> Callable[[Array], Array]:
  cfg = module.config
  rate = cfg.dropout_rate if (cfg.attention_dropout and not deterministic) else 0.0
  if rate <= 0:
    return lambda p: p
  rng = module.make_rng("dropout")
  # One mask per (example, head, key), shared by all queries: cheap and still per example.
  return functools.partial(dropout, rate=rate, rng=rng, broadcast_dims=(2,))


class SelfAttention(nn.Module):
  """Multi-head self-attention, fused QKV kernel [E, 3, H, D], optional decode cache.

  Cache layout: cached_key / cached_value [B, H, max_len, D] (batch first, as T5X's
  beam-expansion helpers expect).
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array, bias: Optional[Array], deterministic: bool,
               decode: bool = False, cache_index: Optional[Array] = None) -> Array:
    cfg = self.config
    dt = cfg.jnp_dtype
    e, h, d = cfg.emb_dim, cfg.num_heads, cfg.head_dim
    wqkv = param_with_axes("qkv_kernel", kernel_init(0, (1, 2, 3)), (e, 3, h, d), jnp.float32,
                           axes=("embed", None, "heads", "kv"))
    wo = param_with_axes("out_kernel", kernel_init((0, 1), 2), (h, d, e), jnp.float32,
                         axes=("heads", "kv", "embed"))
    b, t = x.shape[0], x.shape[1]
    qkv = jnp.transpose(dense(x, wqkv.astype(dt)), (2, 0, 3, 1, 4))  # [3, B, H, T, D]
    q = qkv[0] * jnp.asarray(1.0 / np.sqrt(d), dt)
    k, v = qkv[1], qkv[2]

    if decode:
      initialized = self.has_variable("cache", "cached_key")
      cached_k = self.variable("cache", "cached_key", jnp.zeros, (b, h, t, d), dt)
      cached_v = self.variable("cache", "cached_value", jnp.zeros, (b, h, t, d), dt)
      if initialized:
        if t != 1:
          raise ValueError(f"decode=True expects a single token per step, got length {t}")
        zero = jnp.zeros((), jnp.int32)
        k = jax.lax.dynamic_update_slice(cached_k.value, k, (zero, zero, cache_index, zero))
        v = jax.lax.dynamic_update_slice(cached_v.value, v, (zero, zero, cache_index, zero))
        cached_k.value = k
        cached_v.value = v

    out = _attend(q, k, v, bias, _attn_dropout(self, deterministic))
    return _merge_heads_out(out, wo.astype(dt))


class CrossAttention(nn.Module):
  """Decoder-to-encoder attention. Query kernel [E, H, D], fused KV kernel [E, 2, H, D]."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    e, h, d = cfg.emb_dim, cfg.num_heads, cfg.head_dim
    self.q_kernel = param_with_axes("q_kernel", kernel_init(0, (1, 2)), (e, h, d), jnp.float32,
                                    axes=("embed", "heads", "kv"))
    self.kv_kernel = param_with_axes("kv_kernel", kernel_init(0, (1, 2, 3)), (e, 2, h, d),
                                     jnp.float32, axes=("embed", None, "heads", "kv"))
    self.out_kernel = param_with_axes("out_kernel", kernel_init((0, 1), 2), (h, d, e),
                                      jnp.float32, axes=("heads", "kv", "embed"))

  def project_kv(self, encoded: Array) -> tuple[Array, Array]:
    """encoded [B, T, E] -> keys, values [B, H, T, D]."""
    dt = self.config.jnp_dtype
    kv = jnp.transpose(dense(encoded, self.kv_kernel.astype(dt)), (2, 0, 3, 1, 4))
    return kv[0], kv[1]

  def __call__(self, x: Array, encoded: Optional[Array], bias: Optional[Array],
               deterministic: bool, kv: Optional[tuple[Array, Array]] = None,
               row_slots: Optional[tuple[Array, Array]] = None) -> Array:
    """`row_slots` (encoder-only packing): (examples [R, S], slot [B]). The queries of
    example b move to slot[b] = row * S + segment - 1 of its packed encoder row, attention
    runs once per row on the row's own keys/values ([R, H, S*Tq, Tk], `bias` masks each slot
    to its segment), and the outputs move back. Gathering the keys/values per example
    instead ([B, H, Tk, D]) costs ~10% of a packed training step on CPU."""
    cfg = self.config
    dt = cfg.jnp_dtype
    d = cfg.head_dim
    q = dense(x, self.q_kernel.astype(dt)) * jnp.asarray(1.0 / np.sqrt(d), dt)  # [B, T, H, D]
    k, v = kv if kv is not None else self.project_kv(encoded)
    bq, tq, h = q.shape[0], q.shape[1], q.shape[2]
    if row_slots is not None:
      examples, slot = row_slots
      r, s = examples.shape
      # Slot -> its example's queries (index B: an empty slot, zero queries).
      q = jnp.concatenate([q, jnp.zeros((1,) + q.shape[1:], q.dtype)])
      q = jnp.take(q, examples.reshape(-1), axis=0).reshape(r, s * tq, h, d)
      out = _attend(jnp.transpose(q, (0, 2, 1, 3)), k, v, bias,
                    _attn_dropout(self, deterministic))  # [R, H, S*Tq, D]
      out = jnp.transpose(out, (0, 2, 1, 3)).reshape(r * s, tq * h * d)
      out = jnp.take(out, slot, axis=0).reshape(bq * tq, h * d)
      return jnp.dot(out, self.out_kernel.astype(dt).reshape(h * d, -1)).reshape(bq, tq, -1)
    bk = k.shape[0]
    group = bq // bk
    if group * bk != bq:
      raise ValueError(f"decoder batch {bq} is not a multiple of encoder batch {bk}")
    # Beams of one example (batch-major) share its encoder keys/values: fold them into
    # the query axis instead of tiling the encoder output.
    q = jnp.transpose(q.reshape(bk, group * tq, h, d), (0, 2, 1, 3))  # [Bk, H, G*Tq, D]
    if bias is not None and bias.shape[0] == bq and group > 1:
      raise ValueError("per-query cross-attention masks need decoder batch == encoder batch")
    out = _attend(q, k, v, bias, _attn_dropout(self, deterministic))  # [Bk, H, G*Tq, D]
    out = jnp.transpose(out, (0, 2, 1, 3)).reshape(bq * tq, h * d)
    return jnp.dot(out, self.out_kernel.astype(dt).reshape(h * d, -1)).reshape(bq, tq, -1)


class MlpBlock(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    cfg = self.config
    dt = cfg.jnp_dtype
    acts = cfg.mlp_activations
    if len(acts) == 1:
      wi = param_with_axes("wi", kernel_init(0, 1), (cfg.emb_dim, cfg.mlp_dim), jnp.float32,
                           axes=("embed", "mlp"))
      hidden = _ACTIVATIONS[acts[0]](dense(x, wi.astype(dt)))
    else:  # gated (T5.1.1-style) variant: product of the activations' branches
      wi = param_with_axes("wi", kernel_init(0, (1, 2)), (cfg.emb_dim, len(acts), cfg.mlp_dim),
                           jnp.float32, axes=("embed", None, "mlp"))
      hs = dense(x, wi.astype(dt))
      hidden = _ACTIVATIONS[acts[0]](hs[:, :, 0])
      for i, a in enumerate(acts[1:], start=1):
        hidden = hidden * _ACTIVATIONS[a](hs[:, :, i])
    if not deterministic and cfg.dropout_rate > 0:
      hidden = dropout(hidden, cfg.dropout_rate, self.make_rng("dropout"))
    wo = param_with_axes("wo", kernel_init(0, 1), (cfg.mlp_dim, cfg.emb_dim), jnp.float32,
                         axes=("mlp", "embed"))
    return dense(hidden, wo.astype(dt))


def _residual_dropout(module: nn.Module, deterministic: bool) -> Callable[[Array], Array]:
  rate = module.config.dropout_rate
  if deterministic or rate <= 0:
    return lambda y: y
  return lambda y: dropout(y, rate, module.make_rng("dropout"))


class EncoderLayer(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    drop = _residual_dropout(self, deterministic)
    h = SelfAttention(cfg, name="attention")(RMSNorm(name="pre_attention_layer_norm")(x), bias,
                                             deterministic)
    x = x + drop(h)
    h = MlpBlock(cfg, name="mlp")(RMSNorm(name="pre_mlp_layer_norm")(x), deterministic)
    return x + drop(h)


class DecoderLayer(nn.Module):
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.pre_self_attention_layer_norm = RMSNorm()
    self.self_attention = SelfAttention(cfg)
    self.pre_cross_attention_layer_norm = RMSNorm()
    self.encoder_decoder_attention = CrossAttention(cfg)
    self.pre_mlp_layer_norm = RMSNorm()
    self.mlp = MlpBlock(cfg)

  def project_kv(self, encoded: Array) -> tuple[Array, Array]:
    return self.encoder_decoder_attention.project_kv(encoded)

  def __call__(self, x: Array, encoded: Optional[Array], self_bias: Optional[Array],
               cross_bias: Optional[Array], deterministic: bool, decode: bool = False,
               cache_index: Optional[Array] = None,
               cross_kv: Optional[tuple[Array, Array]] = None,
               row_slots: Optional[tuple[Array, Array]] = None) -> Array:
    drop = _residual_dropout(self, deterministic)
    h = self.self_attention(self.pre_self_attention_layer_norm(x), self_bias, deterministic,
                            decode=decode, cache_index=cache_index)
    x = x + drop(h)
    h = self.encoder_decoder_attention(self.pre_cross_attention_layer_norm(x), encoded,
                                       cross_bias, deterministic, kv=cross_kv,
                                       row_slots=row_slots)
    x = x + drop(h)
    h = self.mlp(self.pre_mlp_layer_norm(x), deterministic)
    return x + drop(h)


def padding_bias(key_tokens: Array) -> Array:
  """[B, Tk] tokens -> additive key-padding bias [B, 1, 1, Tk]."""
  return jnp.where(key_tokens > 0, 0.0, NEG_BIAS).astype(jnp.float32)[:, None, None, :]


def segment_bias(q_seg: Array, k_seg: Array) -> Array:
  """Packed examples: attend only within the same (non-zero) segment. [B, 1, Tq, Tk]."""
  ok = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] > 0)
  return jnp.where(ok, 0.0, NEG_BIAS).astype(jnp.float32)[:, None]


class DecodeIndex(nn.Module):
  """Holds the decoder's scalar `cache_index` (the position of the next decoded token)."""

  @nn.compact
  def __call__(self) -> Optional[Array]:
    initialized = self.has_variable("cache", "cache_index")
    var = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return None
    idx = var.value
    var.value = idx + 1
    return idx
