"""Benchmark the trainer's jitted TIGER train step (forward + backward + Adafactor) on this machine.

  python tools/bench_train_step.py [--batch 256] [--input_len 81] [--target_len 4] [--steps 5]

Prints s/step, examples/s, analytic model FLOPs per step (forward matmul FLOPs x 3),
achieved GFLOP/s and its share of a 320 GFLOP/s fp32 peak (2 cores x AVX-512), the
share of what a plain large matmul achieves at the same moment (a load-independent
efficiency: the machine is shared), and the ratios against cornac's PyTorch TIGER
(0.77 s/step at batch 64) and T5X (8.4 s/step at batch 256).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchlib import matmul_gflops, synthetic_batch, time_steps
from cost_jax.seq2seq import model as models
from cost_jax.seq2seq import optim
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq import network

CORNAC_S_PER_STEP, CORNAC_BATCH = 0.77, 64
T5X_S_PER_STEP, T5X_BATCH = 8.4, 256
PEAK_GFLOPS = 320.0


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--input_len", type=int, default=81)
  ap.add_argument("--target_len", type=int, default=4)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--dropout", type=float, default=0.1)
  ap.add_argument("--position_embedding", default="relative")
  ap.add_argument("--t5x", action="store_true", help="also time T5X's step (when installed)")
  args = ap.parse_args(argv)

  cfg = dataclasses.replace(network.TransformerConfig(), dropout_rate=args.dropout,
                            position_embedding=args.position_embedding,
                            max_input_len=max(81, args.input_len))
  module = network.Transformer(cfg)
  # The trainer's own step: TrainConfig's optimizer (Adafactor, TIGER §4.1.3) and schedule,
  # cost_jax.seq2seq.model.make_train_step, the state layout of the trainer.
  train_config = TrainConfig()
  tx = optim.make_optimizer(train_config)
  state = models.init_state(module, tx, {"inputs": args.input_len, "targets": args.target_len},
                            seed=0)
  params = state["params"]
  step = models.make_train_step(module, tx, optim.schedule_of(train_config))
  b, ti, tt = args.batch, args.input_len, args.target_len
  batch = jax.tree.map(jnp.asarray, synthetic_batch(b, ti, tt, cfg.vocab_size))
  state, m, compile_s, times = time_steps(step, state, batch, args.steps)
  s = float(np.median(times))
  mm = matmul_gflops()
  square = matmul_gflops(4096, 4096, 4096, reps=3)
  t5x = None
  if args.t5x and importlib.util.find_spec("t5x") is not None:
    # tools/bench_t5x.py in a child process (T5X's own trainer and partitioner) right after ours.
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench_t5x.py"),
                           f"--batch={b}", f"--input_len={ti}", f"--target_len={tt}",
                           f"--steps={args.steps}"], capture_output=True, text=True)
    found = re.search(r"^\s*s_per_step:\s*([0-9.eE+-]+)", proc.stdout, re.M)
    t5x = float(found.group(1)) if found else None
  flops = 3.0 * b * models.matmul_flops_per_example(cfg, ti, tt)
  res = {
      "params": network.param_count(params), "batch": b, "compile_plus_first_s": compile_s,
      "s_per_step_median": s, "s_per_step_min": float(min(times)), "examples_per_s": b / s,
      "gflop_per_step": flops / 1e9, "gflops": flops / s / 1e9,
      "peak_share": flops / s / 1e9 / PEAK_GFLOPS,
      "matmul_gflops_now": mm, "share_of_matmul_now": flops / s / 1e9 / mm,
      "square_4096_matmul_gflops": square, "share_of_square_matmul": flops / s / 1e9 / square,
      "t5x_s_per_step_same_run": t5x,
      "speedup_vs_t5x_same_run": (t5x / s) if t5x else None,
      "speedup_vs_cornac": (b / s) / (CORNAC_BATCH / CORNAC_S_PER_STEP),
      "speedup_vs_t5x": (b / s) / (T5X_BATCH / T5X_S_PER_STEP),
      "loss": float(m["loss"]),
  }
  for k, v in res.items():
    print(f"{k:>26}: {v:.4g}" if isinstance(v, float) else f"{k:>26}: {v}")
  print(f"bench_train_step: {s:.3f} s/step at batch {b} ({ti}+{tt} tokens), "
        f"{res['gflops']:.1f} GFLOP/s = {res['share_of_square_matmul']:.0%} of a square 4096 "
        f"matmul ({square:.1f} GFLOP/s) and {res['share_of_matmul_now']:.0%} of the [20736x128]"
        f"x[128x1024] matmul ({mm:.1f}) in the same run; "
        + (f"{res['speedup_vs_t5x_same_run']:.2f}x T5X in the same run" if t5x else
           f"T5X not run (--t5x; recorded {T5X_S_PER_STEP} s/step: "
           f"{res['speedup_vs_t5x']:.2f}x)"))
  return res


if __name__ == "__main__":
  main()
