"""The seq2seq optimizer and its learning-rate schedule (one formula for both trainers).

  learning_rate_schedule(lr, "rsqrt", c): lr * sqrt(c / max(step, c)), i.e. constant for the
      first c steps, then inverse square root decay (TIGER §4.1.3: 0.01 for 10k steps);
      "constant": lr throughout; "wsd": lr for the first c steps, then a linear decay to 0 over
      the next d = decay_steps steps, lr * max(0, 1 - (step - c) / d) (a cooldown for a short
      run; not in TIGER, which decays over 200k steps).
  make_optimizer(config): optax Adafactor with T5X's defaults (TIGER §4.1.3 trains with T5X),
      or AdamW; optional global-norm clipping.

cost_jax.seq2seq.t5x_compat hands the same schedule to T5X.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import optax

from cost_jax.io import UserError

SCHEDULES = ("rsqrt", "constant", "wsd")
OPTIMIZERS = ("adafactor", "adamw")


def learning_rate_schedule(learning_rate: float, schedule: str, constant_steps: int,
                           decay_steps: int = 0) -> Callable[[Any], Any]:
  """step -> learning rate (jnp float32 scalar); see the module doc."""
  if schedule not in SCHEDULES:
    raise UserError(f"learning rate schedule must be one of {SCHEDULES}, got {schedule!r}")
  if learning_rate <= 0 or constant_steps < 1:
    raise UserError("learning rate schedule: need learning_rate > 0 and constant_steps >= 1")
  if schedule == "wsd" and decay_steps < 1:
    raise UserError("learning rate schedule 'wsd' needs decay_steps >= 1")
  lr, c = float(learning_rate), float(constant_steps)
  if schedule == "constant":
    return lambda step: jnp.full((), lr, jnp.float32)
  if schedule == "wsd":
    d = float(decay_steps)

    def wsd(step):
      s = jnp.asarray(step, jnp.float32)
      return lr * jnp.clip(1.0 - (s - c) / d, 0.0, 1.0)

    return wsd

  def rsqrt(step):
    s = jnp.maximum(jnp.asarray(step, jnp.float32), c)
    return lr * jnp.sqrt(c / s)

  return rsqrt


def schedule_of(config) -> Callable[[Any], Any]:
  """The schedule of a TrainConfig."""
  return learning_rate_schedule(config.learning_rate, config.lr_schedule,
                                config.lr_constant_steps, config.lr_decay_steps)


def make_optimizer(config) -> optax.GradientTransformation:
  """The optax transformation of a TrainConfig (optimizer, schedule, weight decay, clipping)."""
  schedule = schedule_of(config)
  if config.optimizer == "adafactor":
    # optax.adafactor's defaults equal T5X's Adafactor defaults (decay_rate 0.8,
    # clipping_threshold 1.0, multiply_by_parameter_scale, factored, eps 1e-30).
    tx = optax.adafactor(learning_rate=schedule)
  elif config.optimizer == "adamw":
    tx = optax.adamw(learning_rate=schedule, b1=0.9, b2=0.999, weight_decay=config.weight_decay)
  else:
    raise UserError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
  if config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx
