"""tools/cove_table5.py: every layout scored on the validation split, with its interval and a
paired test against the host on the same users."""

import os
import sys

import pytest

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _TESTS)
sys.path.insert(0, os.path.join(os.path.dirname(_TESTS), "tools"))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position
import cove_table5  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax.data.processed import ProcessedDataset  # noqa: E402


def test_table5_rows_intervals_and_paired_tests(tmp_path, capsys):
  d = toy.write_processed(str(tmp_path / "toyds"))
  rows = cove_table5.main(["--dataset_dir", d, "--sizes", "8,3",
                           "--gin.SASRecConfig.num_epochs=2", "--gin.SASRecConfig.max_len=8",
                           "--gin.SASRecConfig.emb_dim=16",
                           "--gin.SASRecConfig.num_blocks=1", "--gin.SASRecConfig.batch_size=16"])
  assert [r["sizes"] for r in rows] == [None, (8, 3)]
  loo = ProcessedDataset.load(d).leave_one_out()
  for r in rows:
    # The per-user values are the validation split's (never the test target's), and the
    # row's NDCG@10 is their mean, inside its bootstrap interval.
    assert r["per_user"].shape == loo.valid_target.shape
    assert r["ndcg@10"] == pytest.approx(r["per_user"].mean())
    lo, hi = r["ndcg@10_ci"]
    assert lo <= r["ndcg@10"] <= hi
  assert "p" not in rows[0] and all(0 < r["p"] <= 1 for r in rows[1:])
  assert rows[1]["p_holm"] == rows[1]["p"]  # one comparison: Holm changes nothing
  assert len(rows[1]["usage"]) == 2
  out = capsys.readouterr().out
  assert "| 8 | 3 | - |" in out and "p vs host (Holm)" in out
  assert f"{len(loo.valid_target)} validation users" in out
