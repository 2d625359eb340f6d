"""What the benchmarks share (tools/ scripts import it as a sibling: `import benchlib`).

  synthetic_batch   a full-length TIGER training batch of random tokens (the trainer's features)
  matmul_gflops     what a plain fp32 matmul achieves right now (the machine is shared)
  time_steps        compile time and per-step times of a jitted train step on one batch
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

TARGET_TOKEN_HIGH = 1027  # target tokens drawn from [3, 1027): the first level ranges of TIGER


def synthetic_batch(batch: int, input_len: int, target_len: int, vocab_size: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Random tokens in the encoder-decoder feature layout (cost_jax.seq2seq.splits):
  every position real, decoder inputs = targets shifted right, loss weights 1."""
  rng = np.random.default_rng(seed)
  targets = rng.integers(3, min(TARGET_TOKEN_HIGH, vocab_size), size=(batch, target_len)
                         ).astype(np.int32)
  return {
      "encoder_input_tokens": rng.integers(3, vocab_size, size=(batch, input_len)).astype(np.int32),
      "decoder_target_tokens": targets,
      "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32), targets[:, :-1]], 1),
      "decoder_loss_weights": np.ones((batch, target_len), np.float32),
  }


def matmul_gflops(m: int = 20736, k: int = 128, n: int = 1024, reps: int = 5) -> float:
  """GFLOP/s of a plain fp32 [m,k]x[k,n] matmul now (best of `reps`)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jnp.ones((m, k), jnp.float32)
  w = jnp.ones((k, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(f(x, w))
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(x, w))
    best = min(best, time.perf_counter() - t0)
  return 2.0 * m * k * n / best / 1e9


def time_steps(step: Callable, state: Any, batch: Any, steps: int) -> tuple[Any, Any, float, list]:
  """(state, last metrics, compile + first step seconds, per-step seconds) of `steps` calls."""
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return state, m, compile_s, times
