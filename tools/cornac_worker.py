"""The cornac side of tools/bench_vs_cornac.py: runs in cornac's own interpreter.

  CORNAC_PYTHON tools/cornac_worker.py IN.npz OUT.json

Imports only numpy, torch and cornac (3.0.1). Reads the split, the semantic IDs and the
budget from IN.npz, trains cornac's PyTorch TIGER on our IDs until the CPU-time budget is
spent, times its steps and its beam-50 `score()` per user, and writes OUT.json.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

TOPK = 10
NUM_BEAMS = 50  # CoST §4.1 evaluates with beam >= 40; the project's decode target is at beam 50



class _BudgetedIter:
  """Wraps cornac's session_seq_iter: stops yielding once the CPU budget or step cap is spent.

  Records process CPU and wall time at every batch boundary, so per-step times include
  cornac's own data preparation, forward, backward and optimizer step.
  """

  def __init__(self, inner, cpu_seconds: float, max_steps: int):
    self.inner, self.cpu_seconds, self.max_steps = inner, cpu_seconds, max_steps
    self.steps, self.examples = 0, 0
    self.cpu_marks: list[float] = []
    self.wall_marks: list[float] = []
    self.cpu0: float | None = None

  def spent(self) -> float:
    return 0.0 if self.cpu0 is None else time.process_time() - self.cpu0

  def done(self) -> bool:
    return self.spent() >= self.cpu_seconds or self.steps >= self.max_steps

  def __call__(self, *args, **kwargs):
    if self.cpu0 is None:
      self.cpu0 = time.process_time()
    for batch in self.inner(*args, **kwargs):
      self.cpu_marks.append(time.process_time())
      self.wall_marks.append(time.perf_counter())
      if self.done():
        return
      self.steps += 1
      self.examples += len(batch[2])
      yield batch


def _cornac_fit(codes: np.ndarray, feats: np.ndarray, train_seqs: list, *, batch_size: int,
                cpu_seconds: float, max_steps: int, seed: int, verbose: bool):
  """Trains cornac's TIGER on `train_seqs` (lists of item indices) with injected codes."""
  from collections import OrderedDict  # pylint: disable=g-import-not-at-top
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  from cornac.data import SequentialDataset  # pylint: disable=g-import-not-at-top
  from cornac.models.tiger import recom_tiger  # pylint: disable=g-import-not-at-top

  n = len(codes)
  iid_map = OrderedDict((str(i), i) for i in range(n))  # cornac item index == our item_index
  rows = [(f"s{u}", str(int(i)), t) for u, seq in enumerate(train_seqs)
          for t, i in enumerate(seq)]
  train_set = SequentialDataset.build(rows, fmt="SIT", global_iid_map=iid_map, seed=seed)
  train_set.item_feature = SimpleNamespace(features=feats)

  class InjectedTIGER(recom_tiger.TIGER):
    """cornac's TIGER with fixed semantic IDs instead of its own tokenizer."""

    def _tokenize(self, torch, feats_t):  # noqa: ARG002 - cornac's signature
      return codes.astype("int64")

  model = InjectedTIGER(
      rqvae_num_levels=codes.shape[1], rqvae_codebook_size=int(codes.max()) + 1,
      d_model=128, d_ff=1024, num_heads=6, d_kv=64, num_enc_layers=4, num_dec_layers=4,
      dropout=0.1, max_len=20, n_epochs=1_000_000, batch_size=batch_size, scoring="beam",
      n_beams=NUM_BEAMS, device="cpu", verbose=verbose, seed=seed)
  budget = _BudgetedIter(recom_tiger.session_seq_iter, cpu_seconds, max_steps)
  original = recom_tiger.session_seq_iter
  original_trange = recom_tiger.trange

  class trange:  # pylint: disable=invalid-name  # epochs end once the budget is spent
    def __init__(self, *args, **kwargs):
      self.bar = original_trange(*args, **kwargs)

    def __iter__(self):
      for epoch in self.bar:
        if budget.done():
          return
        yield epoch

    def __getattr__(self, name):  # set_postfix etc.
      return getattr(self.bar, name)

  recom_tiger.session_seq_iter, recom_tiger.trange = budget, trange
  try:
    model.fit(train_set)
  finally:
    recom_tiger.session_seq_iter, recom_tiger.trange = original, original_trange
  return model, budget


def _step_times(budget: _BudgetedIter, skip: int = 2) -> dict[str, float]:
  cpu = np.diff(budget.cpu_marks)[skip:]
  wall = np.diff(budget.wall_marks)[skip:]
  if not len(cpu):
    return {}
  return {"cpu_s_per_step": float(np.median(cpu)), "wall_s_per_step": float(np.median(wall))}


def cornac_worker(in_path: str, out_path: str) -> None:
  """Everything cornac-side: b64 step timing, budgeted training, beam-50 test scoring."""
  import torch  # pylint: disable=g-import-not-at-top
  import cornac  # pylint: disable=g-import-not-at-top

  z = np.load(in_path)
  cfg = json.loads(str(z["config"]))
  torch.set_num_threads(cfg["threads"])
  codes, feats = z["codes"], z["features"].astype("float32")
  train_seqs = np.split(z["train_flat"], z["train_offsets"][1:-1])
  hist_seqs = np.split(z["hist_flat"], z["hist_offsets"][1:-1])
  out: dict[str, Any] = {"cornac_version": cornac.__version__, "torch_version": torch.__version__,
                         "threads": torch.get_num_threads()}
  log = lambda msg: print(f"[cornac] {msg}", file=sys.stderr, flush=True)

  # 1. s/step at batch 64 (a short separate run; steps 0-1 dropped as warm-up).
  _, b = _cornac_fit(codes, feats, train_seqs, batch_size=64, cpu_seconds=float("inf"),
                     max_steps=cfg["timing_steps"], seed=cfg["seed"], verbose=False)
  t64 = _step_times(b)
  out["b64"] = {"steps": b.steps, **t64}
  log(f"batch 64: {t64}")

  # 2. Budgeted training at cornac's default batch.
  cpu0, wall0 = time.process_time(), time.perf_counter()
  model, b = _cornac_fit(codes, feats, train_seqs, batch_size=cfg["batch_size"],
                         cpu_seconds=cfg["cpu_seconds"], max_steps=10**12, seed=cfg["seed"],
                         verbose=cfg["verbose"])
  out["train"] = {"batch_size": cfg["batch_size"], "steps": b.steps, "examples": b.examples,
                  "train_loop_cpu_s": b.spent(), "fit_cpu_s": time.process_time() - cpu0,
                  "fit_wall_s": time.perf_counter() - wall0, **_step_times(b),
                  "level_sizes": [int(x) for x in model.level_sizes]}
  log(f"trained {b.steps} steps ({b.examples} examples) in {b.spent():.0f} CPU-s")

  # 3. Test scoring: cornac's own score() (beam search over its prefix trie), one user at a time.
  users = z["eval_users"]
  topk = np.full((len(users), TOPK), -1, np.int64)
  cpu0, wall0 = time.process_time(), time.perf_counter()
  for r, u in enumerate(users):
    scores = model.score(int(u), [int(i) for i in hist_seqs[u]])
    order = np.argsort(-scores, kind="stable")[:TOPK]
    valid = scores[order] > -1e9
    topk[r, :valid.sum()] = order[valid]
    if r and r % 100 == 0:
      log(f"scored {r}/{len(users)} users")
  cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
  out["decode"] = {"users": int(len(users)), "num_beams": NUM_BEAMS,
                   "wall_ms_per_user": 1000 * wall_s / max(len(users), 1),
                   "cpu_ms_per_user": 1000 * cpu_s / max(len(users), 1)}
  np.save(out_path + ".topk.npy", topk)
  with open(out_path, "w") as f:
    json.dump(out, f, indent=2)


# --- our side ---------------------------------------------------------------------------------


if __name__ == "__main__":
  cornac_worker(*sys.argv[1:3])
