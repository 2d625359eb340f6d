"""XLA:CPU options side by side on the trainer's TIGER step (tools/bench_train_step.py).

  python tools/bench_xla_flags.py [--batch 256] [--input_len 81] [--steps 3] [--rounds 2]
                                  [--flags "--xla_cpu_use_onednn=true;--xla_cpu_use_xnnpack=true"]

Each variant runs tools/bench_train_step.py in its own process with XLA_FLAGS set, variants
alternating round by round so they share the machine's load. Prints each variant's best
s/step and its ratio to the default, then one summary line.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

DEFAULT_FLAGS = ("--xla_cpu_use_onednn=true", "--xla_cpu_use_xnnpack=true",
                 "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
                 "--xla_cpu_enable_fast_math=true", "--xla_cpu_prefer_vector_width=512",
                 "--xla_cpu_multi_thread_eigen=false")


def run_variant(flags: str, args) -> float | None:
  env = dict(os.environ, XLA_FLAGS=flags)
  cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "bench_train_step.py"),
         "--batch", str(args.batch), "--input_len", str(args.input_len), "--steps", str(args.steps)]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
  m = re.search(r"s_per_step_median:\s*([0-9.eE+-]+)", proc.stdout)
  return float(m.group(1)) if m else None


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--input_len", type=int, default=81)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--flags", default=";".join(DEFAULT_FLAGS), help="';'-separated variants")
  args = ap.parse_args(argv)
  variants = [""] + [f for f in args.flags.split(";") if f.strip()]
  best: dict[str, float] = {}
  for r in range(args.rounds):
    for v in variants:
      s = run_variant(v, args)
      label = v or "default"
      print(f"[bench_xla_flags] round {r} {label}: {s if s is not None else 'failed'} s/step",
            flush=True)
      if s is not None:
        best[label] = min(best.get(label, float("inf")), s)
  base = best.get("default")
  for label, s in best.items():
    print(f"  {label:72s} {s:.3f} s/step" + (f"  {base / s:.2f}x default" if base else ""))
  top = min(best, key=best.get) if best else None
  print(f"bench_xla_flags: fastest {top} at {best.get(top, float('nan')):.3f} s/step"
        + (f", {base / best[top]:.2f}x the default's {base:.3f}" if base and top else "")
        + f" (batch {args.batch}, {args.input_len} input tokens, best of {args.rounds} rounds)")
  return best


if __name__ == "__main__":
  main()
