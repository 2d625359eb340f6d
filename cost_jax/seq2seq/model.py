"""Pure training / evaluation functions for the TIGER encoder-decoder.

No gin and no I/O here: the trainer (cost_jax.seq2seq.trainer) builds the module and the
optax optimizer (cost_jax.seq2seq.optim) from its configuration and calls these functions;
the tests and tools/bench_train_step.py run the same `make_train_step`.

Batch layout (T5X's EncDecFeatureConverter): encoder_input_tokens [B, Ti],
decoder_input_tokens [B, Tt] (targets shifted right, 0 first), decoder_target_tokens
[B, Tt], optional decoder_loss_weights [B, Tt] (default: target != 0).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from cost_jax.seq2seq import network, packing

Array = jax.Array
Batch = Mapping[str, Array]


def cross_entropy_loss(logits: Array, targets: Array, weights: Optional[Array] = None,
                       label_smoothing: float = 0.0, z_loss: float = 0.0) -> tuple[Array, Array]:
  """Weighted mean token cross-entropy (+ optional z-loss) over [..., V] logits.

  Returns (loss, z_loss_part): both are sums over tokens divided by sum(weights);
  `loss` already includes the z-loss term z_loss * logsumexp(logits)^2.
  With label_smoothing eps the target distribution is (1-eps) on the target plus
  eps/V uniformly; the constant entropy of that distribution is subtracted so the
  minimum is 0.
  """
  logits = logits.astype(jnp.float32)
  v = logits.shape[-1]
  if weights is None:
    weights = (targets > 0).astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  nll = lse - target_logit
  if label_smoothing > 0.0:
    eps = label_smoothing
    smooth = lse - jnp.mean(logits, axis=-1)  # cross-entropy against the uniform distribution
    nll = (1.0 - eps) * nll + eps * smooth
    p_t, q = 1.0 - eps + eps / v, eps / v  # the smoothed target distribution
    nll = nll + (p_t * jnp.log(p_t) + (v - 1) * q * jnp.log(q))  # minus its entropy
  zl = z_loss * jnp.square(lse) if z_loss > 0.0 else jnp.zeros_like(lse)
  denom = jnp.maximum(jnp.sum(weights), 1e-8)
  z_part = jnp.sum(zl * weights) / denom
  loss = jnp.sum((nll + zl) * weights) / denom
  return loss, z_part


def compute_metrics(logits: Array, targets: Array, weights: Array, loss: Array,
                    z_loss: Array) -> dict[str, Array]:
  """Token accuracy (weighted) and sequence accuracy (every weighted token right)."""
  weights = weights.astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(weights), 1e-8)
  token_acc = jnp.sum(correct * weights) / denom
  seq_ok = jnp.all((correct > 0) | (weights == 0), axis=-1)
  has_tokens = jnp.any(weights > 0, axis=-1)
  seq_acc = jnp.sum(seq_ok & has_tokens) / jnp.maximum(jnp.sum(has_tokens), 1)
  return {"loss": loss, "z_loss": z_loss, "token_accuracy": token_acc,
          "sequence_accuracy": seq_acc.astype(jnp.float32), "num_tokens": jnp.sum(weights)}


def _weights(batch: Batch) -> Array:
  w = batch.get("decoder_loss_weights")
  if w is None:
    w = batch["decoder_target_tokens"] > 0
  return w.astype(jnp.float32)


def _forward(module: network.Transformer, params: Any, batch: Batch, enable_dropout: bool,
             dropout_rng: Optional[Array]) -> Array:
  rngs = {"dropout": dropout_rng} if enable_dropout else None
  return module.apply(
      {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
      batch["decoder_target_tokens"],
      encoder_segment_ids=batch.get("encoder_segment_ids"),
      decoder_segment_ids=batch.get("decoder_segment_ids"),
      encoder_positions=batch.get("encoder_positions"),
      decoder_positions=batch.get("decoder_positions"),
      decoder_encoder_row=batch.get("decoder_encoder_row"),
      decoder_encoder_segment=batch.get("decoder_encoder_segment"),
      encoder_row_examples=batch.get("encoder_row_examples"),
      encoder_narrow_rows=packing.narrow_rows(batch),
      enable_dropout=enable_dropout, rngs=rngs)


def loss_fn(params: Any, batch: Batch, dropout_rng: Optional[Array], *,
            module: network.Transformer, label_smoothing: float = 0.0,
            z_loss: float = 0.0) -> tuple[Array, dict[str, Array]]:
  """(loss, metrics) of one batch; dropout on iff dropout_rng is not None."""
  logits = _forward(module, params, batch, dropout_rng is not None, dropout_rng)
  targets = batch["decoder_target_tokens"]
  weights = _weights(batch)
  loss, zl = cross_entropy_loss(logits, targets, weights, label_smoothing, z_loss)
  return loss, compute_metrics(logits, targets, weights, loss, zl)


# --- the train state and the one train step ------------------------------------------------
# The state is a plain pytree {"params", "opt_state", "step", "dropout_rng"}: Orbax saves it
# as is, and the dropout key of step s is fold_in(dropout_rng, s), a function of (seed, s).
State = dict


def _init_fn(module: network.Transformer, tx: optax.GradientTransformation,
             lengths: Mapping[str, int]) -> Callable[[Array], State]:
  def init_fn(rng):
    enc = jnp.ones((1, int(lengths["inputs"])), jnp.int32)
    dec = jnp.ones((1, int(lengths["targets"])), jnp.int32)
    variables = module.init({"params": rng, "dropout": rng}, enc, dec, dec, enable_dropout=False)
    params = flax.core.meta.unbox(variables["params"])
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
            "dropout_rng": jax.random.fold_in(rng, 0x0D0)}

  return init_fn


def init_state(module: network.Transformer, tx: optax.GradientTransformation,
               lengths: Mapping[str, int], seed: int, sharding: Any = None) -> State:
  """The initial state for inputs of `lengths` ({"inputs", "targets"}), placed by `sharding`
  (one sharding, or a pytree of them like the state: cost_jax.seq2seq.partitioning)."""
  return jax.jit(_init_fn(module, tx, lengths), out_shardings=sharding)(
      jax.random.PRNGKey(seed))


def abstract_state(module: network.Transformer, tx: optax.GradientTransformation,
                   lengths: Mapping[str, int]) -> State:
  """ShapeDtypeStructs of the state (nothing computed)."""
  return jax.eval_shape(_init_fn(module, tx, lengths), jax.random.PRNGKey(0))


def train_step(state: State, batch: Batch, *, module: network.Transformer,
               tx: optax.GradientTransformation, schedule: Callable[[Array], Array],
               label_smoothing: float = 0.0, z_loss: float = 0.0) -> tuple[State, dict]:
  """One optimizer step (pure): (state, batch) -> (state, scalar metrics)."""
  rng = jax.random.fold_in(state["dropout_rng"], state["step"])
  grad_fn = jax.value_and_grad(
      lambda p: loss_fn(p, batch, rng, module=module, label_smoothing=label_smoothing,
                        z_loss=z_loss), has_aux=True)
  (loss, metrics), grads = grad_fn(state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  out = {k: v for k, v in dict(metrics or {}).items() if getattr(v, "ndim", 1) == 0}
  out.update(loss=loss, learning_rate=schedule(state["step"]), grad_norm=optax.global_norm(grads))
  return {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
          "dropout_rng": state["dropout_rng"]}, out


def make_train_step(module: network.Transformer, tx: optax.GradientTransformation,
                    schedule: Callable[[Array], Array], *, state_sharding: Any = None,
                    batch_sharding: Any = None) -> Callable[[State, Batch], tuple[State, dict]]:
  """jit(train_step) with the state donated: the step the trainer and the benchmarks run.

  state_sharding: one sharding or a pytree like the state; batch_sharding: one sharding
  (dim 0 over 'data') for every batch array. The metrics come back replicated.
  """
  step = functools.partial(train_step, module=module, tx=tx, schedule=schedule)
  if state_sharding is None and batch_sharding is None:
    return jax.jit(step, donate_argnums=(0,))
  mesh = (batch_sharding if batch_sharding is not None else state_sharding).mesh
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(step, in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))


def make_eval_step(module: network.Transformer, *, label_smoothing: float = 0.0
                   ) -> Callable[[Any, Batch], dict]:
  """Pure eval_step(params, batch) -> metrics (no dropout)."""

  def eval_step(params: Any, batch: Batch) -> dict:
    _, metrics = loss_fn(params, batch, None, module=module, label_smoothing=label_smoothing)
    return metrics

  return eval_step


def matmul_flops_per_example(config: network.TransformerConfig, input_len: int,
                             target_len: int) -> float:
  """Analytic forward matmul FLOPs (2 x MACs) for one example; training ~= 3x this."""
  e, h, d, m, v = (config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim,
                   config.vocab_size)
  hd = h * d
  n_mlp_in = len(config.mlp_activations)
  mlp = e * m * n_mlp_in + m * e
  ti, tt = input_len, target_len
  enc_layer = ti * (e * 3 * hd + hd * e + mlp) + 2 * ti * ti * hd
  dec_layer = (tt * (e * 3 * hd + hd * e + e * hd + hd * e + mlp) + ti * e * 2 * hd
               + 2 * tt * tt * hd + 2 * tt * ti * hd)
  logits = tt * e * v
  macs = config.num_encoder_layers * enc_layer + config.num_decoder_layers * dec_layer + logits
  return 2.0 * macs
