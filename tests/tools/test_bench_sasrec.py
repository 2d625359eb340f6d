"""tools/bench_sasrec.py runs both forms of SASRec's step on the same batches (not a timing test)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools"))
import bench_sasrec  # noqa: E402  pylint: disable=wrong-import-position


def test_bench_sasrec_small(capsys):
  out = bench_sasrec.main(["--num_items", "40", "--users", "30", "--mean_len", "4",
                           "--batch", "8", "--max_len", "6", "--steps", "2", "--rounds", "1"])
  # 8 users x 6 positions; mean window ~2-3 targets: a real share, packed to one 256-slot shape
  # capped at 48 (the batch's positions).
  assert 0.0 < out["target_share"] < 1.0 and out["packed_sizes"] == [48]
  assert out["dense_s_per_step"] > 0 and out["packed_s_per_step"] > 0
  assert "speedup" in capsys.readouterr().out
