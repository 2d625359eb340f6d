"""Peer benchmark: cost-jax's TIGER vs cornac 3.0.1's PyTorch TIGER on ML-100K, at equal CPU time.

  python tools/bench_vs_cornac.py --tokenizer_dir DIR [--cpu_seconds 600] [--output out.json]
      [--cornac_python /tmp/cornac_work/venv/bin/python] [--dataset_dir DIR] [--eval_users 0]

Both sides get the same processed split (ProcessedDataset.leave_one_out(): train on every
prefix of items[:-2], test = predict items[-1] from items[:-1], history 20), the same item
semantic IDs (DIR/semantic_ids.npy is injected into cornac's TIGER in place of its own
RQ-VAE; cornac appends its collision level, constant 0 when the IDs are already distinct)
and the TIGER size (4+4 layers, d_model 128, 6 heads x 64, MLP 1024, dropout 0.1). Each side
trains with its own default optimizer (cornac: AdamW 1e-3, batch 256; ours: TrainConfig
defaults) until `--cpu_seconds` of process CPU time (time.process_time, all threads, so the
load from other jobs on the shared cores is not charged) has gone into its training loop,
then scores the test users with trie-constrained beam search (beam 50) -> Recall/NDCG@10.

Speed figures: cornac's s/step at batch 64 (timed inside its own training loop) and its
beam-50 ms/user (its `score()` per test user); ours from tools/bench_train_step.py (batch
256 and 64) and tools/bench_decode.py (beam 50, batched), imported, at TIGER's default
4-token IDs / 81-token inputs. Without a working cornac interpreter the cornac column falls
back to the reference constants (0.77 s/step at batch 64, 61 ms/user).

The cornac side runs in cornac's interpreter as tools/cornac_worker.py IN.npz OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

CORNAC_REF_S_PER_STEP, CORNAC_REF_BATCH, CORNAC_REF_MS_PER_USER = 0.77, 64, 61.0
DEFAULT_CORNAC_PYTHON = "/tmp/cornac_work/venv/bin/python"
TOPK = 10  # the same as tools/cornac_worker.py
NUM_BEAMS = 50  # CoST §4.1 evaluates with beam >= 40; the project's decode target is at beam 50
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cornac_worker.py")


def _quiet(fn, *args, **kwargs):
  """Runs fn with its stdout sent to stderr (the tools print tables of their own)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  with contextlib.redirect_stdout(sys.stderr):
    return fn(*args, **kwargs)


def ours_speed(decode_users: int) -> dict[str, float]:
  import bench_decode as bd  # pylint: disable=g-import-not-at-top  (sibling scripts)
  import bench_train_step as bts  # pylint: disable=g-import-not-at-top
  out: dict[str, float] = {}
  for b in (256, 64):
    r = _quiet(bts.main, ["--batch", str(b), "--steps", "5"])
    out[f"b{b}_s_per_step"] = r["s_per_step_median"]
    out[f"b{b}_examples_per_s"] = r["examples_per_s"]
  r = _quiet(bd.main, ["--users", str(decode_users), "--batch", str(min(250, decode_users)),
                       "--beams", str(NUM_BEAMS), "--modes", "constrained", "--items", "1682"])
  out["decode_ms_per_user"] = float(r[(NUM_BEAMS, "constrained")])
  return out


def ours_train(dataset_dir: str, tokenizer_dir: str, model_dir: str, cpu_seconds: float,
               calib_steps: int, seed: int) -> dict[str, Any]:
  """Calibrates CPU s/step on `calib_steps` steps, then resumes to budget / (CPU s/step)."""
  from cost_jax.seq2seq import trainer as train_lib  # pylint: disable=g-import-not-at-top
  common = dict(dataset_dir=dataset_dir, tokenizer_dir=tokenizer_dir, seed=seed,
                eval_every=0, checkpoint_every=10**9, show_progress=False)
  cpu0, wall0 = time.process_time(), time.perf_counter()
  calib = train_lib.train_and_evaluate(model_dir=model_dir, num_train_steps=calib_steps,
                                       log_every=max(1, calib_steps // 4), eval_test=False,
                                       eval_at_end=False, **common)["summary"]
  cpu_per_step = calib["cpu_sec_per_step"]
  steps = max(calib_steps, int(cpu_seconds / cpu_per_step))
  print(f"[ours] calibration: {cpu_per_step:.3f} CPU-s/step -> {steps} steps for "
        f"{cpu_seconds:.0f} CPU-s", file=sys.stderr, flush=True)
  res = train_lib.train_and_evaluate(model_dir=model_dir, num_train_steps=steps,
                                     log_every=max(1, min(100, (steps - calib_steps) // 4)),
                                     eval_at_end=False, **common)
  s = res["summary"]
  return {"steps": steps, "batch_size": 256, "calib_cpu_s_per_step": cpu_per_step,
          "cpu_s_per_step": s.get("cpu_sec_per_step"),
          "train_loop_cpu_s_est": steps * (s.get("cpu_sec_per_step") or cpu_per_step),
          "total_cpu_s_incl_data_compile_eval": time.process_time() - cpu0,
          "total_wall_s": time.perf_counter() - wall0,
          "recall@10": res["recall@10"], "ndcg@10": res["ndcg@10"],
          "recall@20": res.get("recall@20"), "num_users": res.get("num_users"),
          "invalid_id_rate": res.get("invalid_id_rate")}


# --- driver -----------------------------------------------------------------------------------


def ours_on_users(model_dir: str, user_index: Sequence[int]) -> dict[str, float]:
  """Our test metrics restricted to the users cornac scored (model_dir/topk.npy etc.)."""
  from cost_jax import metrics  # pylint: disable=g-import-not-at-top
  topk = np.load(os.path.join(model_dir, "topk.npy"))
  targets = np.load(os.path.join(model_dir, "targets.npy"))
  rows = np.isin(np.load(os.path.join(model_dir, "user_ids.npy")), np.asarray(user_index))
  m = metrics.retrieval_metrics(topk[rows, :TOPK], targets[rows], ks=(5, 10))
  return {k: m[k] for k in ("recall@10", "ndcg@10", "num_users")}


def _cornac_available(python: str) -> str | None:
  """None if `python` can import cornac's TIGER and torch, else why not."""
  if not os.path.exists(python):
    return f"{python} does not exist"
  p = subprocess.run([python, "-c", "import torch, cornac; from cornac.models.tiger import TIGER; "
                      "from cornac.models.tiger.tiger import TIGERSeq2Seq"], capture_output=True, text=True)
  if p.returncode:
    return f"{python} cannot import cornac's TIGER: {p.stderr.strip().splitlines()[-1:]}"
  return None


def _ragged(seqs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
  flat = np.concatenate(seqs).astype(np.int64) if seqs else np.zeros(0, np.int64)
  return flat, offsets


def run_cornac(args, work: str) -> dict[str, Any]:
  from cost_jax.data.processed import ProcessedDataset  # pylint: disable=g-import-not-at-top
  ds = ProcessedDataset.load(args.dataset_dir)
  loo = ds.leave_one_out()
  codes = np.load(os.path.join(args.tokenizer_dir, "semantic_ids.npy"))
  hist = [np.concatenate([t, [v]]) for t, v in zip(loo.train, loo.valid_target)]
  users = np.arange(len(loo.train))
  if args.eval_users:
    users = np.random.default_rng(args.seed).choice(users, min(args.eval_users, len(users)),
                                                    replace=False)
    users.sort()
  tf, to = _ragged(loo.train)
  hf, ho = _ragged(hist)
  cfg = {"cpu_seconds": args.cpu_seconds, "batch_size": args.cornac_batch, "seed": args.seed,
         "timing_steps": args.timing_steps, "threads": args.threads, "verbose": False}
  in_path, out_path = os.path.join(work, "cornac_in.npz"), os.path.join(work, "cornac_out.json")
  np.savez(in_path, codes=codes, features=ds.embeddings(), train_flat=tf, train_offsets=to,
           hist_flat=hf, hist_offsets=ho, eval_users=users, config=json.dumps(cfg))
  t0 = time.perf_counter()
  p = subprocess.run([args.cornac_python, WORKER, in_path,
                      out_path], text=True)
  if p.returncode:
    return {"error": f"cornac worker ({args.cornac_python}) failed with exit status "
                     f"{p.returncode}; its traceback is above"}
  with open(out_path) as f:
    out = json.load(f)
  out["wall_s"] = time.perf_counter() - t0
  from cost_jax import metrics  # pylint: disable=g-import-not-at-top
  topk = np.load(out_path + ".topk.npy")
  m = metrics.retrieval_metrics(topk, loo.test_target[users], ks=(5, 10))
  out["test"] = {k: m[k] for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10",
                                   "invalid_id_rate", "num_users")}
  index_of = dict(zip(ds.sequences["user_id"].astype(str), ds.sequences["user_index"]))
  out["eval_user_index"] = [int(index_of[str(loo.user_ids[u])]) for u in users]
  return out


def _fmt(x, spec=".3f") -> str:
  return "-" if x is None else format(x, spec)


def report(res: dict[str, Any]) -> str:
  c, o = res["cornac"], res["ours"]
  c_b64 = c.get("s_per_step_b64")
  c_eps = 64 / c_b64 if c_b64 else None
  rows = [
      ("train s/step @ batch 64 (wall)", _fmt(c_b64), _fmt(o.get("b64_s_per_step"))),
      ("train s/step @ batch 256 (wall)", "-", _fmt(o.get("b256_s_per_step"))),
      ("train examples/s (best batch)", _fmt(c_eps, ".1f"),
       _fmt(o.get("b256_examples_per_s"), ".1f")),
      ("beam-50 decode ms/user", _fmt(c.get("decode_ms_per_user"), ".2f"),
       _fmt(o.get("decode_ms_per_user"), ".2f")),
      ("train CPU-s/step (budgeted run)", _fmt(c.get("train_cpu_s_per_step"), ".2f"),
       _fmt(o.get("train_cpu_s_per_step"), ".2f")),
      ("train CPU-s (budget)", _fmt(c.get("train_cpu_s"), ".0f"), _fmt(o.get("train_cpu_s"), ".0f")),
      ("train steps x batch", c.get("steps_x_batch", "-"), o.get("steps_x_batch", "-")),
      ("test Recall@10", _fmt(c.get("recall@10"), ".4f"), _fmt(o.get("recall@10"), ".4f")),
      ("test NDCG@10", _fmt(c.get("ndcg@10"), ".4f"), _fmt(o.get("ndcg@10"), ".4f")),
  ]
  lines = [f"cornac column: {c['source']}", f"{'':34s} {'cornac':>12s} {'cost-jax':>12s}"]
  lines += [f"{name:34s} {a:>12s} {b:>12s}" for name, a, b in rows]
  r = res["ratios"]
  lines.append(f"ratios: examples/s x{_fmt(r.get('examples_per_s'), '.1f')} (target >= 2), "
               f"decode per user x{_fmt(r.get('decode_per_user'), '.1f')} (target >= 10), "
               f"Recall@10 at equal CPU {_fmt(r.get('recall@10_delta'), '+.4f')} "
               f"(target > 0); examples per CPU-s x{_fmt(r.get('examples_per_cpu_s'), '.1f')}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cpu_seconds", type=float, default=600.0,
                  help="process CPU seconds of training per side")
  ap.add_argument("--cornac_python", default=DEFAULT_CORNAC_PYTHON)
  ap.add_argument("--dataset_dir", default="")
  ap.add_argument("--tokenizer_dir", default="")
  ap.add_argument("--output", default="")
  ap.add_argument("--work_dir", default="", help="scratch (model dir, hand-off files)")
  ap.add_argument("--eval_users", type=int, default=0, help="cornac test-user subsample; 0 = all")
  ap.add_argument("--cornac_batch", type=int, default=256, help="cornac's default batch size")
  ap.add_argument("--timing_steps", type=int, default=12)
  ap.add_argument("--calib_steps", type=int, default=40)
  ap.add_argument("--decode_users", type=int, default=500)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--skip", nargs="*", default=[], choices=["cornac", "ours_train", "ours_speed"])
  args = ap.parse_args(argv)
  from cost_jax import paths  # pylint: disable=g-import-not-at-top
  from cost_jax.io import UserError  # pylint: disable=g-import-not-at-top
  args.dataset_dir = args.dataset_dir or paths.dataset_dir("ml100k")
  args.tokenizer_dir = args.tokenizer_dir or paths.tokenizer_dir("ml100k", "rqvae")
  for what, d, f in (("dataset", args.dataset_dir, "sequences.parquet"),
                     ("dataset", args.dataset_dir, "embeddings.npy"),
                     ("tokenizer", args.tokenizer_dir, "semantic_ids.npy")):
    if not os.path.exists(os.path.join(d, f)):
      raise UserError(f"{os.path.join(d, f)}:1: missing {what} file (pass --{what}_dir)")
  work = args.work_dir or tempfile.mkdtemp(prefix="bench_vs_cornac_")
  os.makedirs(work, exist_ok=True)
  res: dict[str, Any] = {"cpu_seconds": args.cpu_seconds, "dataset_dir": args.dataset_dir,
                         "tokenizer_dir": args.tokenizer_dir, "load_at_start": os.getloadavg(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

  why = "skipped (--skip cornac)" if "cornac" in args.skip else _cornac_available(args.cornac_python)
  if why is None:
    raw = run_cornac(args, work)
    res["cornac_raw"] = raw
    why = raw.get("error")
  if why is None:
    res["cornac"] = {
        "source": f"measured: cornac {raw['cornac_version']}, torch {raw['torch_version']}, "
                  f"{raw['threads']} threads, our semantic IDs injected",
        "s_per_step_b64": raw["b64"].get("wall_s_per_step"),
        "cpu_s_per_step_b64": raw["b64"].get("cpu_s_per_step"),
        "decode_ms_per_user": raw["decode"]["wall_ms_per_user"],
        "train_cpu_s": raw["train"]["train_loop_cpu_s"],
        "train_cpu_s_per_step": raw["train"].get("cpu_s_per_step"),
        "train_batch": raw["train"]["batch_size"],
        "decode_cpu_ms_per_user": raw["decode"]["cpu_ms_per_user"],
        "steps_x_batch": f"{raw['train']['steps']}x{raw['train']['batch_size']}",
        "recall@10": raw["test"]["recall@10"], "ndcg@10": raw["test"]["ndcg@10"]}
  else:
    print(f"cornac side not run: {why}; using the reference constants", file=sys.stderr)
    res["cornac"] = {"source": f"reference constants ({why})",
                     "s_per_step_b64": CORNAC_REF_S_PER_STEP,
                     "decode_ms_per_user": CORNAC_REF_MS_PER_USER}
  print(f"[bench] cornac: {res['cornac']}", file=sys.stderr, flush=True)

  ours: dict[str, Any] = {}
  if "ours_train" not in args.skip:
    t = ours_train(args.dataset_dir, args.tokenizer_dir, os.path.join(work, "ours_model"),
                   args.cpu_seconds, args.calib_steps, args.seed)
    res["ours_train_raw"] = t
    ours.update({"train_cpu_s": t["train_loop_cpu_s_est"],
                 "train_cpu_s_per_step": t["cpu_s_per_step"] or t["calib_cpu_s_per_step"],
                 "train_batch": t["batch_size"],
                 "steps_x_batch": f"{t['steps']}x{t['batch_size']}",
                 "recall@10": t["recall@10"], "ndcg@10": t["ndcg@10"]})
    if res.get("cornac_raw", {}).get("eval_user_index") and args.eval_users:
      sub = ours_on_users(os.path.join(work, "ours_model"), res["cornac_raw"]["eval_user_index"])
      t["all_users"] = {"recall@10": t["recall@10"], "ndcg@10": t["ndcg@10"]}
      t["same_users_as_cornac"] = sub
      ours.update({"recall@10": sub["recall@10"], "ndcg@10": sub["ndcg@10"]})
    print(f"[bench] ours train: {t}", file=sys.stderr, flush=True)
  if "ours_speed" not in args.skip:
    ours.update(ours_speed(args.decode_users))
  res["ours"] = ours

  res["ratios"] = ratios_of(res["cornac"], ours)
  res["load_at_end"] = os.getloadavg()
  print(report(res))
  if args.output:
    out = os.path.abspath(args.output)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
      json.dump(res, f, indent=2, default=str)
    os.replace(tmp, out)
  return res


def ratios_of(c: dict[str, Any], ours: dict[str, Any]) -> dict[str, float]:
  """ours / cornac for throughput (wall and CPU), cornac / ours for decode latency."""
  ratios: dict[str, Any] = {}
  if c.get("s_per_step_b64") and ours.get("b256_examples_per_s"):
    ratios["examples_per_s"] = ours["b256_examples_per_s"] / (64 / c["s_per_step_b64"])
    ratios["examples_per_s_both_b64"] = ours["b64_examples_per_s"] / (64 / c["s_per_step_b64"])
  if c.get("decode_ms_per_user") and ours.get("decode_ms_per_user"):
    ratios["decode_per_user"] = c["decode_ms_per_user"] / ours["decode_ms_per_user"]
  if c.get("recall@10") is not None and ours.get("recall@10") is not None:
    ratios["recall@10_delta"] = ours["recall@10"] - c["recall@10"]
    ratios["recall@10_ratio"] = ours["recall@10"] / max(c["recall@10"], 1e-12)
  if c.get("train_cpu_s_per_step") and ours.get("train_cpu_s_per_step"):
    # Examples per CPU-second in the budgeted training loops: insensitive to other load.
    ratios["examples_per_cpu_s"] = ((ours["train_batch"] / ours["train_cpu_s_per_step"])
                                    / (c["train_batch"] / c["train_cpu_s_per_step"]))
  if c.get("cpu_s_per_step_b64") and ours.get("train_cpu_s_per_step"):
    ratios["examples_per_cpu_s_vs_cornac_b64"] = (
        (ours["train_batch"] / ours["train_cpu_s_per_step"]) / (64 / c["cpu_s_per_step_b64"]))
  return ratios


if __name__ == "__main__":
  from cost_jax.io import exits_cleanly  # pylint: disable=g-import-not-at-top
  exits_cleanly(main)()
