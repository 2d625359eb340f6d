"""TIGER's encoder-decoder Transformer (T5.1.1 style) in Flax linen.

Pre-norm (RMSNorm) encoder-decoder with T5 relative position biases (computed once
per stack and forward, shared by all layers), fused QKV projections and a decoding
cache in the "cache" collection. Defaults are TIGER's (§4.1.3): 4 encoder + 4 decoder
layers, d_model 128, 6 heads of 64, MLP 1024, ReLU, dropout 0.1.

The module serves both T5X's `EncoderDecoderModel` (the T5X example-network
contract: `encode`, `decode`, `__call__` with the same argument names) and this
project's own trainer / beam search. Parameters carry logical axis names through
`flax.linen.partitioning.param_with_axes` (collection "params_axes") so T5X's
partitioner can shard them.

Beyond the T5X contract, `decode` accepts two keyword-only speed-ups used by
`cost_jax.seq2seq.decoding`: `cross_kv` (encoder keys/values precomputed once per example
with `precompute_cross_kv`) and `logit_range` (compute logits for a token slice
only). When the decoder batch is a multiple of the encoder batch (beams laid out
batch-major, as T5X's `flat_batch_beam_expand` does), cross-attention groups the
beams of one example instead of requiring the encoder output to be tiled.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cost_jax.seq2seq.layers import (  # noqa: F401  TransformerConfig: part of this API
    NEG_BIAS, DecodeIndex, DecoderLayer, EncoderLayer, RelativePositionBias, RMSNorm,
    TransformerConfig, dense, dropout, kernel_init, padding_bias, param_with_axes,
    segment_bias)

Array = jax.Array


class Transformer(nn.Module):
  """Encoder-decoder with the T5X example-network contract."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.embedding = param_with_axes(
        "token_embedder", nn.initializers.normal(1.0), (cfg.vocab_size, cfg.emb_dim),
        jnp.float32, axes=("vocab", "embed"))
    if not cfg.logits_via_embedding:
      self.logits_kernel = param_with_axes(
          "logits_dense", kernel_init(0, 1), (cfg.emb_dim, cfg.vocab_size), jnp.float32,
          axes=("embed", "vocab"))
    if cfg.position_embedding == "relative":
      self.encoder_rel_bias = RelativePositionBias(cfg, bidirectional=True,
                                                   name="encoder_relpos_bias")
      self.decoder_rel_bias = RelativePositionBias(cfg, bidirectional=False,
                                                   name="decoder_relpos_bias")
    else:
      self.encoder_pos = param_with_axes(
          "encoder_position_embedder", nn.initializers.normal(0.02),
          (cfg.max_input_len, cfg.emb_dim), jnp.float32, axes=("abspos_buckets", "embed"))
      self.decoder_pos = param_with_axes(
          "decoder_position_embedder", nn.initializers.normal(0.02),
          (cfg.max_target_len, cfg.emb_dim), jnp.float32, axes=("abspos_buckets", "embed"))
    self.encoder_layers = [EncoderLayer(cfg, name=f"encoder_layer_{i}")
                           for i in range(cfg.num_encoder_layers)]
    self.encoder_norm = RMSNorm(name="encoder_norm")
    self.decoder_layers = [DecoderLayer(cfg, name=f"decoder_layer_{i}")
                           for i in range(cfg.num_decoder_layers)]
    self.decoder_norm = RMSNorm(name="decoder_norm")
    self.decoder_cache = DecodeIndex()

  # --- helpers -----------------------------------------------------------------------------
  def _embed(self, tokens: Array) -> Array:
    return jnp.take(self.embedding, tokens, axis=0).astype(self.config.jnp_dtype)

  def _dropout(self, x: Array, deterministic: bool) -> Array:
    if deterministic or self.config.dropout_rate <= 0:
      return x
    return dropout(x, self.config.dropout_rate, self.make_rng("dropout"))

  def _logits(self, y: Array, logit_range: Optional[tuple[int, int]] = None) -> Array:
    cfg = self.config
    if cfg.logits_via_embedding:
      w = self.embedding if logit_range is None else self.embedding[logit_range[0]:logit_range[1]]
      return dense(y, w.T.astype(y.dtype)) / jnp.sqrt(jnp.asarray(cfg.emb_dim, y.dtype))
    w = self.logits_kernel
    if logit_range is not None:
      w = w[:, logit_range[0]:logit_range[1]]
    return dense(y, w.astype(y.dtype))

  # --- T5X contract ------------------------------------------------------------------------
  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Optional[Array] = None,
             enable_dropout: bool = True, encoder_positions: Optional[Array] = None) -> Array:
    """[B, T] int tokens (0 = pad) -> encoded [B, T, emb_dim].

    Packed rows (several examples per row) pass `encoder_segment_ids`; attention stays
    inside a segment. Relative position biases need no positions (they depend on key minus
    query position only); absolute embeddings use `encoder_positions` when given.
    """
    cfg = self.config
    deterministic = not enable_dropout
    tokens = encoder_input_tokens.astype(jnp.int32)
    t = tokens.shape[1]
    x = self._embed(tokens)
    if encoder_segment_ids is not None:
      bias = segment_bias(encoder_segment_ids, encoder_segment_ids)
    else:
      bias = padding_bias(tokens)
    if cfg.position_embedding == "relative":
      bias = bias + self.encoder_rel_bias(t, t)
    elif encoder_positions is not None:
      x = x + jnp.take(self.encoder_pos, encoder_positions, axis=0).astype(x.dtype)
    else:
      x = x + self.encoder_pos[:t].astype(x.dtype)[None]
    x = self._dropout(x, deterministic)
    for layer in self.encoder_layers:
      x = layer(x, bias, deterministic)
    return self._dropout(self.encoder_norm(x), deterministic)

  def precompute_cross_kv(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
    """Per decoder layer (keys, values) [B, T, H, D] of the encoder output (reuse across steps)."""
    return tuple(layer.project_kv(encoded) for layer in self.decoder_layers)

  def decode(self, encoded: Optional[Array], encoder_input_tokens: Array,
             decoder_input_tokens: Array, decoder_target_tokens: Optional[Array] = None,
             encoder_segment_ids: Optional[Array] = None,
             decoder_segment_ids: Optional[Array] = None,
             decoder_positions: Optional[Array] = None, enable_dropout: bool = True,
             decode: bool = False, max_decode_length: Optional[int] = None, *,
             cross_kv: Optional[Sequence[tuple[Array, Array]]] = None,
             logit_range: Optional[tuple[int, int]] = None,
             decoder_encoder_row: Optional[Array] = None,
             decoder_encoder_segment: Optional[Array] = None,
             encoder_row_examples: Optional[Array] = None) -> Array:
    """Decoder logits [B, Td, V] (or [B, Td, stop-start] with `logit_range`).

    Encoder-only packing (cost_jax.seq2seq.packing): `decoder_encoder_row` [B] and
    `decoder_encoder_segment` [B] name the encoder row and segment of each decoder row, and
    `encoder_row_examples` [R, S] the example in each segment slot of each row (B: none);
    cross-attention reads only that row's keys/values of that segment.

    decode=True with an initialized "cache" collection runs one autoregressive step
    (decoder_input_tokens [B, 1]); with an empty cache it runs the full sequence and
    creates the cache sized by decoder_input_tokens' length (T5X's initialization call).
    """
    del max_decode_length  # decoding positions come from the cache index
    cfg = self.config
    deterministic = not enable_dropout
    tokens = decoder_input_tokens.astype(jnp.int32)
    b, t = tokens.shape
    y = self._embed(tokens)

    cache_index = self.decoder_cache() if decode else None
    step = cache_index is not None

    if step:
      # The cache length is fixed at initialization; query position = cache_index.
      max_len = self.variables["cache"]["decoder_layer_0"]["self_attention"]["cached_key"].shape[2]
      pos = jnp.arange(max_len)
      self_bias = jnp.where(pos <= cache_index, 0.0, NEG_BIAS).astype(jnp.float32)[None, None,
                                                                                     None, :]
      if cfg.position_embedding == "relative":
        full = self.decoder_rel_bias(max_len, max_len)  # [1, H, L, L]
        self_bias = self_bias + jax.lax.dynamic_slice_in_dim(full, cache_index, 1, axis=2)
      else:
        y = y + jax.lax.dynamic_slice_in_dim(self.decoder_pos, cache_index, 1,
                                             axis=0).astype(y.dtype)[None]
    else:
      causal = np.tril(np.ones((t, t), bool))
      if decoder_segment_ids is not None:
        self_bias = segment_bias(decoder_segment_ids, decoder_segment_ids)
        self_bias = self_bias + jnp.where(jnp.asarray(causal), 0.0, NEG_BIAS)[None, None]
      else:
        self_bias = jnp.where(jnp.asarray(causal), 0.0, NEG_BIAS).astype(jnp.float32)[None, None]
      if cfg.position_embedding == "relative":
        self_bias = self_bias + self.decoder_rel_bias(t, t)
      elif decoder_positions is not None:
        y = y + jnp.take(self.decoder_pos, decoder_positions, axis=0).astype(y.dtype)
      else:
        y = y + self.decoder_pos[:t].astype(y.dtype)[None]

    row_slots = None
    if decoder_encoder_row is not None and not step:
      if (encoder_segment_ids is None or decoder_encoder_segment is None
          or encoder_row_examples is None):
        raise ValueError("decoder_encoder_row needs encoder_segment_ids, "
                         "decoder_encoder_segment and encoder_row_examples")
      examples = encoder_row_examples.astype(jnp.int32)
      s = examples.shape[1]
      slot = decoder_encoder_row.astype(jnp.int32) * s + decoder_encoder_segment - 1
      row_slots = (examples, slot)
      # Slot j of a row attends to that row's segment j + 1: [R, 1, S * Tt, Tk].
      own = encoder_segment_ids[:, None, :] == jnp.arange(1, s + 1, dtype=jnp.int32)[:, None]
      own = jnp.repeat(own, t, axis=1)
      cross_bias = jnp.where(own, 0.0, NEG_BIAS).astype(jnp.float32)[:, None]
    elif encoder_segment_ids is not None and decoder_segment_ids is not None and not step:
      cross_bias = segment_bias(decoder_segment_ids, encoder_segment_ids)
    else:
      cross_bias = padding_bias(encoder_input_tokens)

    y = self._dropout(y, deterministic)
    for i, layer in enumerate(self.decoder_layers):
      y = layer(y, encoded, self_bias, cross_bias, deterministic, decode=decode,
                cache_index=cache_index, cross_kv=None if cross_kv is None else cross_kv[i],
                row_slots=row_slots)
    y = self._dropout(self.decoder_norm(y), deterministic)
    return self._logits(y, logit_range)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array] = None,
               encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None,
               encoder_positions: Optional[Array] = None,
               decoder_positions: Optional[Array] = None, enable_dropout: bool = True,
               decode: bool = False, max_decode_length: Optional[int] = None, *,
               decoder_encoder_row: Optional[Array] = None,
               decoder_encoder_segment: Optional[Array] = None,
               encoder_row_examples: Optional[Array] = None,
               encoder_narrow_rows: Sequence[tuple[Array, Array, Array]] = ()) -> Array:
    """`encoder_narrow_rows`: packed encoder rows narrower than the inputs, as (tokens,
    segment ids, positions) per width, narrowest first (cost_jax.seq2seq.packing); the
    decoder's `decoder_encoder_row` counts them before the full-width rows."""
    if encoder_narrow_rows:
      return self._call_with_narrow_rows(
          encoder_input_tokens, decoder_input_tokens, encoder_segment_ids, encoder_positions,
          decoder_segment_ids, decoder_positions, enable_dropout, decoder_encoder_row,
          decoder_encoder_segment, encoder_row_examples, encoder_narrow_rows)
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids=encoder_segment_ids,
                          enable_dropout=enable_dropout, encoder_positions=encoder_positions)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, encoder_segment_ids=encoder_segment_ids,
                       decoder_segment_ids=decoder_segment_ids,
                       decoder_positions=decoder_positions, enable_dropout=enable_dropout,
                       decode=decode, max_decode_length=max_decode_length,
                       decoder_encoder_row=decoder_encoder_row,
                       decoder_encoder_segment=decoder_encoder_segment,
                       encoder_row_examples=encoder_row_examples)


  def _call_with_narrow_rows(self, encoder_input_tokens, decoder_input_tokens,
                             encoder_segment_ids, encoder_positions, decoder_segment_ids,
                             decoder_positions, enable_dropout, decoder_encoder_row,
                             decoder_encoder_segment, encoder_row_examples,
                             narrow_rows) -> Array:
    """Encodes each row width on its own (attention costs width^2 per row), projects the
    cross-attention keys/values per width, then pads them to the full width and stacks the
    rows, so the decoder reads every example's own segment as in encoder-only packing."""
    if decoder_encoder_row is None or decoder_encoder_segment is None:
      raise ValueError("encoder_narrow_rows needs decoder_encoder_row and "
                       "decoder_encoder_segment")
    full = encoder_input_tokens.shape[1]
    parts = list(narrow_rows) + [(encoder_input_tokens, encoder_segment_ids, encoder_positions)]
    per_layer: list[list[tuple[Array, Array]]] = [[] for _ in self.decoder_layers]
    segments = []
    for tokens, seg, pos in parts:
      encoded = self.encode(tokens, encoder_segment_ids=seg, enable_dropout=enable_dropout,
                            encoder_positions=pos)
      pad = full - tokens.shape[1]
      for i, (k, v) in enumerate(self.precompute_cross_kv(encoded)):  # [R, H, W, D]
        widen = ((0, 0), (0, 0), (0, pad), (0, 0))
        per_layer[i].append((jnp.pad(k, widen), jnp.pad(v, widen)))
      segments.append(jnp.pad(seg.astype(jnp.int32), ((0, 0), (0, pad))))
    cross_kv = tuple((jnp.concatenate([k for k, _ in kv]), jnp.concatenate([v for _, v in kv]))
                     for kv in per_layer)
    return self.decode(None, encoder_input_tokens, decoder_input_tokens,
                       encoder_segment_ids=jnp.concatenate(segments),
                       decoder_segment_ids=decoder_segment_ids,
                       decoder_positions=decoder_positions, enable_dropout=enable_dropout,
                       cross_kv=cross_kv, decoder_encoder_row=decoder_encoder_row,
                       decoder_encoder_segment=decoder_encoder_segment,
                       encoder_row_examples=encoder_row_examples)


def init_variables(module: Transformer, rng: Array, input_len: int, target_len: int,
                   batch_size: int = 1) -> dict:
  """Initialize {'params', 'params_axes'} with dummy inputs of the given lengths."""
  enc = jnp.ones((batch_size, input_len), jnp.int32)
  dec = jnp.ones((batch_size, target_len), jnp.int32)
  return module.init({"params": rng, "dropout": rng}, enc, dec, dec, enable_dropout=False)


def init_params(module: Transformer, rng: Array, input_len: int, target_len: int) -> Any:
  """Just the 'params' collection.

  Jitted with XLA's backend optimizations off: the init program is dominated by one
  RNG call per parameter, whose optimized CPU compile takes ~5x longer than the run.
  """
  fn = jax.jit(lambda r: init_variables(module, r, input_len, target_len)["params"])
  try:
    compiled = fn.lower(rng).compile(compiler_options={"xla_backend_optimization_level": 0})
  except Exception:  # pylint: disable=broad-except  # option unknown to this backend
    return fn(rng)
  return compiled(rng)


def param_count(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
