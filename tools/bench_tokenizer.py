"""Tokenizer benchmarks (not a test).

  python tools/bench_tokenizer.py speed [--items 100000 --steps 200]
      steps/s and items/s of the `cost` and `tiger` presets' train step at their batch sizes on
      random 768-d items. Compile time is excluded (a warm-up call compiles first) and printed
      separately. Two drivers: the lax.scan epoch used by training, and a Python loop over the
      jitted train_step.
  python tools/bench_tokenizer.py acceptance [--items 20000 --clusters 200 --method cost]
      the issue's acceptance check: clustered 768-d items (Gaussian clusters on the unit sphere +
      noise) -> cost_jax.tokenizer.fit.fit; prints distinct IDs, per-level usage, wall time.
  python tools/bench_tokenizer.py remedy [...]  acceptance data with dead_code_remedy on / off.
  python tools/bench_tokenizer.py catalogue [--items 2000000 --dim 768 --file F --epochs 1]
      a catalogue larger than this machine should hold: clustered items written chunk by chunk
      to a float32 .npy (6 GB at the defaults; kept at --file for the next run), then the `tiger`
      preset fitted on it, streamed from the memory map (stream_above_gb=0), in a child
      process; prints training and total items/s and the child's peak RSS (target < 4 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from cost_jax import gin_cli
from cost_jax.tokenizer import rqvae
from cost_jax.tokenizer import fit
from cost_jax.tokenizer import config as tc
from cost_jax.tokenizer import trainer as tt


def clustered_items(n: int = 20000, dim: int = 768, clusters: int = 200, noise: float = 0.02,
                    seed: int = 0) -> np.ndarray:
  """Gaussian clusters around random unit vectors, isotropic noise, rows L2-normalised."""
  rng = np.random.default_rng(seed)
  c = rng.standard_normal((clusters, dim))
  c /= np.linalg.norm(c, axis=1, keepdims=True)
  x = c[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_speed(preset: str, items: int, steps: int, dim: int = 768) -> dict:
  cfg = tc.make_config("cost" if preset == "cost" else "rqvae", {"preset": preset})
  x = jnp.asarray(np.random.default_rng(0).standard_normal((items, dim)).astype(np.float32))
  model = rqvae.make_model(cfg, dim)
  params = rqvae.init_params(model, jax.random.PRNGKey(0))
  tx = tt.make_optimizer(cfg)
  opt_state = tx.init(params)
  b = cfg.batch_size
  rng = np.random.default_rng(0)
  perm = jnp.asarray(rng.integers(0, items, (steps, b)), jnp.int32)
  out = {"preset": preset, "batch_size": b, "steps": steps, "items": items,
         "device": str(jax.devices()[0].platform)}

  # 1) lax.scan epoch (what training uses), remedy included.
  epoch = tt.make_train_epoch(model, tx, cfg)
  counts = jnp.zeros((cfg.num_levels, cfg.codebook_size))
  t0 = time.perf_counter()
  params, opt_state, counts, m = epoch(params, opt_state, counts, x, perm,
                                       jax.random.split(jax.random.PRNGKey(1), steps), 0, 10 ** 9)
  jax.block_until_ready(m)
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  params, opt_state, counts, m = epoch(params, opt_state, counts, x, perm,
                                       jax.random.split(jax.random.PRNGKey(2), steps), steps,
                                       10 ** 9)
  jax.block_until_ready(m)
  dt = time.perf_counter() - t0
  out["scan_steps_per_s"] = steps / dt
  out["scan_items_per_s"] = steps * b / dt
  out["scan_compile_plus_first_run_s"] = first

  # 2) Python loop over the jitted train_step.
  step = tt.make_train_step(model, tx, cfg)
  key = jax.random.PRNGKey(3)
  params, opt_state, m = step(params, opt_state, x[perm[0]], key)   # compile
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for s in range(steps):
    params, opt_state, m = step(params, opt_state, jnp.take(x, perm[s], axis=0), key)
  jax.block_until_ready(m)
  dt = time.perf_counter() - t0
  out["loop_steps_per_s"] = steps / dt
  out["loop_items_per_s"] = steps * b / dt
  return out


def run_acceptance(args, overrides: dict, tag: str) -> dict:
  x = clustered_items(args.items, args.dim, args.clusters, args.noise, args.seed)
  with tempfile.TemporaryDirectory() as d:
    t0 = time.perf_counter()
    rep = fit.fit(x, args.method, os.path.join(d, "out"), seed=args.seed, overrides=overrides)
    wall = time.perf_counter() - t0
  summary = {
      "tag": tag, "method": args.method, "items": args.items, "clusters": args.clusters,
      "all_distinct": rep["all_distinct"], "usage_per_level": rep["usage_per_level"],
      "usage_per_level_after_dedup": rep["usage_per_level_after_dedup"],
      "collisions_before_dedup": rep["collisions_before_dedup"],
      "dedup": {k: rep["dedup"].get(k) for k in ("reassigned", "fallback_items", "time_s")},
      "reconstruction_cosine": rep["reconstruction_cosine"],
      "neighbor_precision": (rep["neighbor_precision"] or {}).get("value"),
      "reseeded_codes": rep.get("dead_code_remedy", {}).get("reseeded_codes"),
      "epochs": rep["config"]["epochs"], "learning_rate": rep["config"]["learning_rate"],
      "shared_codebook": rep["config"]["shared_codebook"],
      "train_time_s": rep.get("training", {}).get("train_time_s"), "wall_time_s": round(wall, 1)}
  print(json.dumps(summary), flush=True)
  return summary


def write_catalogue(path: str, n: int, dim: int, clusters: int, noise: float, seed: int,
                    chunk: int = 100_000) -> None:
  """clustered_items' distribution, written in chunks to a float32 .npy (never all in memory)."""
  rng = np.random.default_rng(seed)
  c = rng.standard_normal((clusters, dim))
  c /= np.linalg.norm(c, axis=1, keepdims=True)
  out = np.lib.format.open_memmap(path + ".tmp", mode="w+", dtype=np.float32, shape=(n, dim))
  t0 = time.perf_counter()
  for s in range(0, n, chunk):
    m = min(chunk, n - s)
    x = c[rng.integers(0, clusters, m)] + noise * rng.standard_normal((m, dim))
    out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    print(f"[catalogue] wrote {s + m:,}/{n:,} rows ({(s + m) / (time.perf_counter() - t0):,.0f} "
          "rows/s)", end="\r", file=sys.stderr, flush=True)
  del out
  os.replace(path + ".tmp", path)
  print(file=sys.stderr)


def peak_rss_gb() -> float:
  """This process's own peak resident set (VmHWM of /proc/self/status; ru_maxrss would also
  count what a forked parent held before exec)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 2**20
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _fit_child(path: str, output: str, overrides: dict, queue) -> None:
  report = fit.fit(path, "rqvae", output, seed=0, overrides=overrides)
  out = {k: report[k] for k in ("num_items", "streamed", "usage_per_level",
                                "collisions_before_dedup", "reconstruction_cosine",
                                "wall_time_s", "training", "dedup")}
  queue.put(dict(out, peak_rss_gb=peak_rss_gb()))


def run_catalogue(args, overrides: dict) -> dict:
  import multiprocessing
  path = args.file or os.path.join(tempfile.gettempdir(),
                                   f"catalogue_{args.items}x{args.dim}.npy")
  if not (os.path.isfile(path) and np.load(path, mmap_mode="r").shape == (args.items, args.dim)):
    write_catalogue(path, args.items, args.dim, args.clusters, args.noise, args.seed)
  gb = os.path.getsize(path) / 1e9
  settings = dict({"preset": "tiger", "epochs": args.epochs, "stream_above_gb": 0}, **overrides)
  ctx = multiprocessing.get_context("spawn")
  queue = ctx.Queue()
  with tempfile.TemporaryDirectory() as tmp:
    child = ctx.Process(target=_fit_child, args=(path, os.path.join(tmp, "tok"), settings, queue))
    t0 = time.perf_counter()
    child.start()
    report = queue.get()
    child.join()
    wall = time.perf_counter() - t0
  if child.exitcode:
    raise SystemExit(f"fit failed (exit {child.exitcode})")
  peak_gb = report["peak_rss_gb"]
  train = report["training"]
  train_items_s = args.epochs * args.items / max(train["train_time_s"], 1e-9)
  out = {"items": args.items, "dim": args.dim, "file_gb": round(gb, 2),
         "streamed": report["streamed"], "epochs": args.epochs,
         "train_items_per_s": round(train_items_s), "train_time_s": train["train_time_s"],
         "fit_wall_s": report["wall_time_s"], "process_wall_s": round(wall, 1),
         "items_per_s_end_to_end": round(args.items / wall),
         "peak_rss_gb": round(peak_gb, 2), "usage_per_level": report["usage_per_level"],
         "collisions_before_dedup": report["collisions_before_dedup"]["items_to_move"],
         "reconstruction_cosine": report["reconstruction_cosine"]}
  print(json.dumps(out))
  print(f"summary: {args.items:,} x {args.dim} float32 ({gb:.1f} GB) streamed: training "
        f"{train_items_s:,.0f} items/s, {args.items / wall:,.0f} items/s end to end "
        f"({wall:.0f} s), peak RSS {peak_gb:.2f} GB (target < 4)")
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("mode", choices=("speed", "acceptance", "remedy", "catalogue"))
  p.add_argument("--file", default="", help="catalogue: the .npy to write / reuse")
  p.add_argument("--epochs", type=int, default=1, help="catalogue: tokenizer epochs")
  p.add_argument("--items", type=int, default=None)
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--presets", default="cost,tiger")
  p.add_argument("--dim", type=int, default=768)
  p.add_argument("--clusters", type=int, default=200)
  p.add_argument("--noise", type=float, default=0.02)
  p.add_argument("--method", default="cost")
  p.add_argument("--seed", type=int, default=0)
  gin_cli.add_flags(p, old_set_example="TokenizerConfig.codebook_size=128")
  args = gin_cli.parse_args(p, argv)
  if args.mode == "speed":
    items = args.items or 100_000
    for preset in args.presets.split(","):
      print(json.dumps(bench_speed(preset, items, args.steps, args.dim)), flush=True)
    return 0
  gin_cli.register(tc.TokenizerConfig)
  with gin_cli.fresh():
    gin_cli.parse(args.gin_file, args.gin_param)
    overrides = gin_cli.bindings(tc.TokenizerConfig)
  if args.mode == "catalogue":
    args.items = args.items or 2_000_000
    run_catalogue(args, overrides)
    return 0
  args.items = args.items or 20_000
  if args.mode == "acceptance":
    run_acceptance(args, overrides, "acceptance")
  else:
    for remedy in (True, False):
      run_acceptance(args, dict(overrides, dead_code_remedy=remedy), f"dead_code_remedy={remedy}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
