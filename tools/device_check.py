"""Accelerator check: the TIGER train step at batch 256 and 1024, then TIGER on Beauty for N minutes.

  python tools/device_check.py [--recbole_dir ../shared/data/amazon2014-beauty] [--minutes 5]
                               [--dtype bfloat16] [--peak_tflops 989] [--small]

1. The trainer's own jitted step (cost_jax.seq2seq.model.make_train_step, TrainConfig's
   Adafactor) at TIGER's size on full-length synthetic batches of 256 and 1024: s/step,
   tokens/s (81 encoder + 4 decoder tokens per example) and MFU = analytic training FLOP/s over
   the chip's peak (--peak_tflops; by default looked up from the device kind: dense bf16 for
   H100/H200/A100/L4, the measured square-matmul rate on CPU).
2. Beauty (RecBole files, cost_jax.data.recbole) with random 4-level IDs (no embedding model
   needed), TIGER at its size with packed batches for --minutes, then validation Recall@10 on
   --eval_users users.
The last line is the summary. `--small` shrinks the model for a CPU smoke run (the test suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import bench_trainer  # noqa: E402  (a sibling script: the random-ID tokenizer writer)
import benchlib  # noqa: E402

from cost_jax import data  # noqa: E402
from cost_jax.data.processed import ProcessedDataset  # noqa: E402
from cost_jax.seq2seq import model as models  # noqa: E402
from cost_jax.seq2seq import network, optim, trainer  # noqa: E402
from cost_jax.seq2seq.config import TrainConfig  # noqa: E402

# Dense bf16 tensor-core peaks (vendor datasheets), TFLOP/s.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}
SMALL = dict(emb_dim=32, num_heads=2, head_dim=16, num_encoder_layers=1, num_decoder_layers=1,
             mlp_dim=64)


def peak_tflops(override: float | None) -> tuple[float, str]:
  if override:
    return override, "--peak_tflops"
  kind = jax.devices()[0].device_kind
  for name, peak in PEAK_BF16_TFLOPS.items():
    if name.lower() in kind.lower():
      return peak, f"{kind} dense bf16"
  return benchlib.matmul_gflops(4096, 4096, 4096, reps=3) / 1e3, f"{kind}: square matmul"


def step_bench(batch: int, cfg: network.TransformerConfig, steps: int) -> dict:
  module = network.Transformer(cfg)
  tc = TrainConfig()
  tx = optim.make_optimizer(tc)
  state = models.init_state(module, tx, {"inputs": 81, "targets": 4}, seed=0)
  step = models.make_train_step(module, tx, optim.schedule_of(tc))
  b = jax.tree.map(jnp.asarray, benchlib.synthetic_batch(batch, 81, 4, cfg.vocab_size))
  state, m, _, times = benchlib.time_steps(step, state, b, steps)
  s = float(np.median(times))
  flops = 3.0 * batch * models.matmul_flops_per_example(cfg, 81, 4)
  return {"batch": batch, "s_per_step": s, "tokens_per_s": batch * 85 / s,
          "tflops": flops / s / 1e12}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--recbole_dir", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                        "shared", "data", "amazon2014-beauty"))
  ap.add_argument("--minutes", type=float, default=5.0)
  ap.add_argument("--dtype", default=None, help="activation dtype (default: bfloat16 on GPU/TPU)")
  ap.add_argument("--peak_tflops", type=float, default=None)
  ap.add_argument("--bench_steps", type=int, default=5)
  ap.add_argument("--batches", default="256,1024")
  ap.add_argument("--eval_users", type=int, default=2000)
  ap.add_argument("--small", action="store_true", help="tiny model (CPU smoke test)")
  ap.add_argument("--work_dir", default="")
  args = ap.parse_args(argv)

  platform = jax.devices()[0].platform
  dtype = args.dtype or ("float32" if platform == "cpu" else "bfloat16")
  print(f"[device_check] {jax.device_count()} x {jax.devices()[0].device_kind} ({platform}), "
        f"activations {dtype}", flush=True)
  base = dataclasses.replace(network.TransformerConfig(), dtype=dtype, vocab_size=1100,
                             max_input_len=81, max_target_len=4, **(SMALL if args.small else {}))
  peak, peak_src = peak_tflops(args.peak_tflops)
  benches = []
  for b in (int(x) for x in args.batches.split(",") if x.strip()):
    r = step_bench(b, base, args.bench_steps)
    r["mfu"] = r["tflops"] / peak
    benches.append(r)
    print(f"[device_check] step batch {b}: {r['s_per_step'] * 1e3:.1f} ms/step, "
          f"{r['tokens_per_s']:,.0f} tokens/s, {r['tflops']:.2f} TFLOP/s, MFU {r['mfu']:.1%} "
          f"of {peak:.0f} TFLOP/s ({peak_src})", flush=True)

  work = args.work_dir or tempfile.mkdtemp(prefix="device_check_")
  ds_dir = data.prepare("recbole", os.path.join(work, "data"), recbole_dir=args.recbole_dir)
  ds = ProcessedDataset.load(ds_dir)
  tok = bench_trainer.random_tokenizer_dir(ds.num_items, os.path.join(work, "tokenizer"))
  model_kw = dict(SMALL if args.small else {}, dtype=dtype)
  t0 = time.perf_counter()
  metrics = trainer.train_and_evaluate(
      None, os.path.join(work, "model"), dataset_dir=ds_dir, tokenizer_dir=tok, seed=0,
      time_budget_min=args.minutes, eval_every=0, eval_test=False, eval_at_end=True,
      eval_num_users=args.eval_users, checkpoint_every=10**9, log_every=50, show_progress=False,
      **model_kw)
  summary = metrics.get("summary", {})
  result = {"device": jax.devices()[0].device_kind, "dtype": dtype, "peak_tflops": peak,
            "step": benches, "beauty": {
                "minutes": args.minutes, "steps": summary.get("step"),
                "examples_per_sec": summary.get("examples_per_sec"),
                "real_tokens_per_sec": summary.get("real_tokens_per_sec"),
                "valid_recall@10": metrics.get("recall@10"), "valid_ndcg@10": metrics.get("ndcg@10"),
                "eval_users": args.eval_users, "wall_s": time.perf_counter() - t0}}
  print(json.dumps(result, indent=2))
  steps_txt = "; ".join(f"batch {r['batch']}: {r['s_per_step'] * 1e3:.1f} ms/step, "
                        f"{r['tokens_per_s']:,.0f} tok/s, MFU {r['mfu']:.1%}" for r in benches)
  print(f"device_check: {result['device']} {dtype}; {steps_txt}; Beauty {args.minutes:g} min -> "
        f"step {result['beauty']['steps']}, validation Recall@10 "
        f"{result['beauty']['valid_recall@10']:.4f} ({args.eval_users} users, random IDs)")
  return result


if __name__ == "__main__":
  main()
