"""Tests for the evaluator (cost_jax.evaluate): metrics, result files, CLI."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax import results  # noqa: E402
from cost_jax.seq2seq import cli, evaluator  # noqa: E402
from cost_jax.seq2seq import trainer as train  # noqa: E402
from cost_jax.io import UserError  # noqa: E402

CONTRACT_KEYS = {"recall@5", "recall@10", "recall@20", "recall@40", "ndcg@5", "ndcg@10",
                 "ndcg@20", "ndcg@40", "invalid_id_rate", "num_users"}


def test_score_topk_hand_checked():
  topk = np.asarray([[7, 2, 9], [4, 5, 6], [1, -1, 8]], np.int32)
  targets = np.asarray([2, 0, 8], np.int32)
  m = results.score_topk(topk, targets, ks=(1, 3))
  assert m["recall@1"] == 0.0
  assert m["recall@3"] == pytest.approx(2 / 3)
  # One relevant item: DCG = 1 / log2(rank + 1), ideal DCG = 1.
  assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)
  assert m["invalid_id_rate"] == pytest.approx(1 / 9)
  assert m["num_users"] == 3


def test_write_results_files_rescore(tmp_path):
  rng = np.random.default_rng(0)
  topk = np.stack([rng.permutation(100)[:40] for _ in range(7)]).astype(np.int32)
  targets = topk[np.arange(7), [0, 3, 9, 15, 30, 39, 0]].copy()
  targets[-1] = 1000  # not retrieved
  m = results.score_topk(topk, targets)
  assert CONTRACT_KEYS <= set(m)
  assert m["recall@5"] == pytest.approx(2 / 7) and m["recall@40"] == pytest.approx(6 / 7)
  path = results.write_results(str(tmp_path), "test", m, topk, targets, np.arange(7) + 10)
  assert path == str(tmp_path / "metrics.json")
  loaded = json.load(open(path))
  assert loaded == pytest.approx(m)
  assert np.load(tmp_path / "topk.npy").dtype == np.int32
  again = results.score_topk(np.load(tmp_path / "topk.npy"), np.load(tmp_path / "targets.npy"))
  assert again == pytest.approx(m)
  np.testing.assert_array_equal(np.load(tmp_path / "user_ids.npy"), np.arange(7) + 10)
  results.write_results(str(tmp_path), "validation", m, topk, targets, np.arange(7))
  assert os.path.exists(tmp_path / "metrics_validation.json")
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("evaltoy")
  os.environ.setdefault("COST_JAX_COMPILATION_CACHE", str(root / "jax_cache"))
  ds, tok = toy.write_processed(str(root / "toyds")), toy.write_tokenizer(str(root / "tok"))
  settings = dict(toy.tiny_model_overrides(), **toy.fast_train_overrides(num_train_steps=60))
  out = train.train_and_evaluate(model_dir=str(root / "m"), dataset_dir=ds, tokenizer_dir=tok,
                                 eval_at_end=False, eval_test=True, show_progress=False,
                                 **settings)
  return str(root / "m"), out


def test_train_writes_contract_files(trained_dir):
  model_dir, out = trained_dir
  m = json.load(open(os.path.join(model_dir, "metrics.json")))
  assert CONTRACT_KEYS <= set(m)
  assert m["num_users"] == 60 and m["split"] == "test" and m["step"] == 60
  assert m["invalid_id_rate"] == 0.0  # constrained decoding
  topk = np.load(os.path.join(model_dir, "topk.npy"))
  targets = np.load(os.path.join(model_dir, "targets.npy"))
  assert topk.dtype == np.int32 and topk.shape == (60, 10)
  assert targets.dtype == np.int32 and targets.shape == (60,)
  assert ((topk >= 0) & (topk < toy.NUM_ITEMS)).all()
  assert all(len(set(row)) == len(row) for row in topk)  # distinct items per user
  rescored = results.score_topk(topk, targets)
  assert {k: rescored[k] for k in CONTRACT_KEYS} == pytest.approx({k: m[k] for k in CONTRACT_KEYS})
  assert out["recall@10"] == pytest.approx(m["recall@10"])


def test_evaluate_cli_rescores_checkpoint(trained_dir, capsys):
  model_dir, _ = trained_dir
  before = json.load(open(os.path.join(model_dir, "metrics.json")))
  assert cli.evaluate_main(["--model_dir", model_dir]) == 0
  after = json.load(open(os.path.join(model_dir, "metrics.json")))
  scores = [k for k in before if k.startswith(("recall@", "ndcg@"))] + ["invalid_id_rate"]
  # Same checkpoint, same beams: the same ranking (training also recorded how it stopped).
  assert {k: after[k] for k in scores} == pytest.approx({k: before[k] for k in scores})
  assert after["step"] == before["step"] and after["num_users"] == before["num_users"]
  printed = json.loads(capsys.readouterr().out)
  assert printed["recall@10"] == pytest.approx(before["recall@10"])
  m = evaluator.evaluate(model_dir, "validation", num_users=20)  # same shapes: no recompile
  assert m["num_users"] == 20 and m["num_beams"] == 10 and m["split"] == "validation"
  assert np.load(os.path.join(model_dir, "topk_validation.npy")).shape == (20, 10)


def test_evaluate_keeps_the_runs_own_record_of_another_scoring(trained_dir, capsys):
  model_dir, _ = trained_dir
  record_path = os.path.join(model_dir, "metrics_validation.json")
  first = evaluator.evaluate(model_dir, "validation", num_users=20)
  record = open(record_path).read()
  assert record_path in capsys.readouterr().err  # written, or already there from another test
  # All users is another scoring than the 20 on disk: that record stays, byte for byte.
  every = evaluator.evaluate(model_dir, "validation")
  assert open(record_path).read() == record
  name = "validation_step60_users60_beams10_top10"
  other = os.path.join(model_dir, f"metrics_{name}.json")
  assert f"[evaluate] wrote {other}" in capsys.readouterr().err
  assert json.load(open(other))["num_users"] == 60 == every["num_users"]
  assert np.load(os.path.join(model_dir, f"topk_{name}.npy")).shape == (60, 10)
  # The same scoring again gives the same lists: the record is left as it is, byte for byte.
  topk_path = os.path.join(model_dir, "topk_validation.npy")
  stamp = os.stat(topk_path).st_mtime_ns
  again = evaluator.evaluate(model_dir, "validation", num_users=20)
  assert "holds the same lists: left as it is" in capsys.readouterr().err
  assert again["recall@10"] == pytest.approx(first["recall@10"])
  assert open(record_path).read() == record and os.stat(topk_path).st_mtime_ns == stamp
  # Lists that differ from the record's (here: the record's lists edited) get their own name,
  # and the record stays as it was.
  edited = np.load(topk_path)[:, ::-1].copy()
  np.save(topk_path, edited)
  evaluator.evaluate(model_dir, "validation", num_users=20)
  rescored = os.path.join(model_dir, "metrics_validation_rescore1.json")
  assert f"[evaluate] wrote {rescored}" in capsys.readouterr().err
  assert open(record_path).read() == record
  np.testing.assert_array_equal(np.load(topk_path), edited)
  assert not np.array_equal(np.load(os.path.join(model_dir, "topk_validation_rescore1.npy")),
                            edited)
  evaluator.evaluate(model_dir, "validation", num_users=20)  # and again: the next free name
  assert os.path.isfile(os.path.join(model_dir, "metrics_validation_rescore2.json"))


def test_evaluate_bad_input(tmp_path, capsys):
  with pytest.raises(UserError, match="config.json: missing"):
    evaluator.evaluate(str(tmp_path))
  with pytest.raises(SystemExit) as e:
    cli.evaluate_main(["--model_dir", str(tmp_path / "nothing")])
  assert e.value.code == 2
  assert capsys.readouterr().err.startswith("error: ")
