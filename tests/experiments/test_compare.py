"""cost_jax.compare: finished runs side by side, with CIs and paired tests on shared users."""

import os

import numpy as np
import pytest

from cost_jax.experiments import compare


def _run(folder, user_ids, topk, targets):
  os.makedirs(folder, exist_ok=True)
  np.save(os.path.join(folder, "user_ids.npy"), np.asarray(user_ids, np.int64))
  np.save(os.path.join(folder, "topk.npy"), np.asarray(topk, np.int64))
  np.save(os.path.join(folder, "targets.npy"), np.asarray(targets, np.int64))
  return str(folder)


def test_two_runs_with_hand_checked_means_and_differences(tmp_path, capsys):
  targets = [5, 6, 7, 8]
  # A: users 0-2 hit at rank 0 (Recall@2 .75, NDCG .75); B: user 3 at rank 1 (NDCG 1/log2(3)/4).
  a = _run(tmp_path / "a", [0, 1, 2, 3], [[5, 1], [6, 1], [7, 1], [1, 2]], targets)
  b = _run(tmp_path / "b" / "model", [3, 2, 1, 0], [[1, 8], [1, 2], [1, 2], [1, 2]],
           targets[::-1])  # another user order: matched by user id
  assert compare.main([a, b, "--metrics", "recall@2,ndcg@2", "--output",
                       str(tmp_path / "c.md")]) == 0
  out = capsys.readouterr().out
  assert "| a | 4 | 0.7500 [" in out and "| b | 4 | 0.2500 [" in out  # b: the stage above model/
  assert f"{0.25 / np.log2(3):.4f} [" in out
  assert "| a | b | +0.5000 (" in out and f"{0.75 - 0.25 / np.log2(3):+.4f} (" in out
  assert open(tmp_path / "c.md").read().strip() == out.strip()


def test_runs_on_other_users_are_compared_on_the_shared_ones(tmp_path, capsys):
  a = _run(tmp_path / "a", [0, 1, 2], [[5], [6], [1]], [5, 6, 7])
  b = _run(tmp_path / "b", [1, 2, 9], [[1], [7], [1]], [6, 7, 3])
  assert compare.main([a, b, "--names", "x,y", "--metrics", "recall@1"]) == 0
  out = capsys.readouterr().out
  # shared users 1, 2: x hits user 1, y hits user 2 -> difference 0 on them
  assert "| x | y | +0.0000 (" in out


def test_bad_runs_and_flags_are_one_line_errors(tmp_path, capsys):
  a = _run(tmp_path / "a", [0], [[5]], [5])
  os.makedirs(tmp_path / "empty")
  for argv, words in [([a, str(tmp_path / "empty")], "no test lists"),
                      ([a, str(tmp_path / "nowhere")], "no such folder"),
                      ([a], "two or more"),
                      ([a, a], "names must differ"),
                      ([a, a, "--names", "x"], "1 names for 2 runs"),
                      ([a, a, "--names", "x,y", "--metrics", "hits@3"], "not recall@K")]:
    with pytest.raises(SystemExit) as e:
      compare.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


def test_dataset_dir_adds_recall_by_popularity_and_refuses_another_dataset(tmp_path, capsys):
  import sys
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from _pipeline_fakes import synthetic_dataset  # pylint: disable=import-outside-toplevel
  from cost_jax.data.processed import ProcessedDataset  # pylint: disable=import-outside-toplevel
  ds_dir = synthetic_dataset(tmp_path / "ds")
  ds = ProcessedDataset.load(ds_dir)
  split = ds.leave_one_out()
  targets = np.asarray(split.test_target, np.int64)
  n = len(targets)
  a = _run(tmp_path / "a", np.arange(n), targets[:, None], targets)  # every user hit
  b = _run(tmp_path / "b", np.arange(n), np.full((n, 1), -1), targets)  # none
  assert compare.main([a, b, "--dataset_dir", ds_dir]) == 0
  out = capsys.readouterr().out
  assert "## Where the hits come from" in out
  row_a = next(line for line in out.splitlines() if line.startswith("| a | ") and "%" in line)
  assert set(c.strip() for c in row_a.split("|")[2:-3] if c.strip() != "-") == {"1.0000"}
  bad = _run(tmp_path / "c", [0], [[10_000]], [10_000])
  with pytest.raises(SystemExit):
    compare.main([a, bad, "--dataset_dir", ds_dir])
  assert "not the dataset these runs were scored on" in capsys.readouterr().err


def test_a_metrics_file_of_another_scoring_is_a_run(tmp_path, capsys):
  m = tmp_path / "stage" / "model"
  a = _run(m, [0, 1], [[5], [1]], [5, 6])  # the run's own test lists
  suffix = "_test_step3000_users2_beams50_top40"
  for n, v in (("user_ids", [0, 1]), ("topk", [[1], [6]]), ("targets", [5, 6])):
    np.save(m / f"{n}{suffix}.npy", np.asarray(v, np.int64))
  (m / f"metrics{suffix}.json").write_text("{}")
  assert compare.main([a, str(m / f"metrics{suffix}.json"), "--metrics", "recall@1"]) == 0
  out = capsys.readouterr().out
  # names: the stage above model/, and the same with the scoring's suffix
  assert "| stage | 2 | 0.5000 [" in out and f"| stage{suffix} | 2 | 0.5000 [" in out
  assert f"| stage | stage{suffix} | +0.0000 (" in out
  (m / "metrics_other.json").write_text("{}")
  with pytest.raises(SystemExit):
    compare.main([a, str(m / "metrics_other.json")])
  assert "not beside it" in capsys.readouterr().err
