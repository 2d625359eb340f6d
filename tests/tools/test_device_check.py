"""tools/device_check.py runs on CPU too (small model, a few seconds of training)."""

import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_device_check_runs_on_cpu(tmp_path):
  rng = np.random.default_rng(0)
  d = tmp_path / "rb"
  d.mkdir()
  with open(d / "toy.inter", "w") as f:
    f.write("user_id:token\titem_id:token\ttimestamp:float\n")
    for u in range(40):
      for t in range(int(rng.integers(4, 9))):
        f.write(f"u{u}\ti{int(rng.integers(0, 30))}\t{t}\n")
  with open(d / "toy.item", "w") as f:
    f.write("item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\titem {i}\n" for i in range(30)))
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "tools", "device_check.py"), "--small",
       "--recbole_dir", str(d), "--minutes", "0.05", "--batches", "16", "--bench_steps", "1",
       "--eval_users", "16", "--work_dir", str(tmp_path / "work")],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, COST_JAX_DATA_DIR=str(tmp_path / "data")))
  assert proc.returncode == 0, proc.stderr[-2000:]
  last = proc.stdout.strip().splitlines()[-1]
  assert last.startswith("device_check: ") and "MFU" in last and "validation Recall@10" in last
