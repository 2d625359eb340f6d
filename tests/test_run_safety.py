"""Nothing lost, nothing mixed, nothing silent: model_dir locks, fingerprints, damaged
checkpoints, divergence."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax.io import UserError  # noqa: E402
from cost_jax import checkpoints  # noqa: E402
from cost_jax.seq2seq import run_dir  # noqa: E402
from cost_jax.seq2seq import trainer as train  # noqa: E402


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("safety")
  return (toy.write_processed(str(root / "toyds")), toy.write_tokenizer(str(root / "tok")),
          str(root / "split_cache"))


def _run(toy_dirs, model_dir, dataset=None, **kw):
  ds, tok, cache = toy_dirs
  settings = dict(toy.tiny_model_overrides())
  settings.update(toy.fast_train_overrides())
  settings.update(eval_at_end=False, eval_test=False, cache_dir=cache, num_train_steps=6,
                  checkpoint_every=3, log_every=3)
  settings.update(kw)
  return train.train_and_evaluate(model_dir=str(model_dir), dataset_dir=dataset or ds,
                                  tokenizer_dir=tok, show_progress=False, **settings)


def _flip_a_byte(step_dir):
  files = sorted((os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs),
                 key=os.path.getsize)
  target = files[-1]  # the largest file: array data
  with open(target, "r+b") as f:
    f.seek(os.path.getsize(target) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0xFF]))
  return target


def test_damaged_newest_checkpoint_falls_back_with_a_message(toy_dirs, tmp_path, capsys):
  _run(toy_dirs, tmp_path / "m")
  ckdir = tmp_path / "m" / "checkpoints"
  assert sorted(int(s) for s in os.listdir(ckdir) if s.isdigit()) == [3, 6]
  assert (tmp_path / "m" / "checkpoint_sums" / "6.json").is_file()
  _flip_a_byte(ckdir / "6")
  run = run_dir.load_run(str(tmp_path / "m"))
  assert run.step == 3
  err = capsys.readouterr().err
  assert "skipping step 6" in err and "damaged: changed" in err
  with pytest.raises(UserError, match=r"checkpoint damaged"):
    run_dir.load_run(str(tmp_path / "m"), step=6)
  out = _run(toy_dirs, tmp_path / "m", num_train_steps=8)  # resumes from the intact step
  assert out["summary"]["resumed_from"] == 3 and out["summary"]["step"] == 8


def test_every_checkpoint_damaged_is_one_clear_error(toy_dirs, tmp_path):
  _run(toy_dirs, tmp_path / "m")
  for s in ("3", "6"):
    _flip_a_byte(tmp_path / "m" / "checkpoints" / s)
  with pytest.raises(UserError, match=r"no intact checkpoint \(step 6: damaged.*step 3: damaged"):
    run_dir.load_run(str(tmp_path / "m"))


def test_resume_with_other_data_is_refused_naming_it(toy_dirs, tmp_path):
  _run(toy_dirs, tmp_path / "m", num_train_steps=3)
  other = toy.write_processed(str(tmp_path / "toyds"), seed=5)  # same folder name, other users
  with pytest.raises(UserError, match=r"dataset .*toyds has other contents"):
    _run(toy_dirs, tmp_path / "m", dataset=other, num_train_steps=6)
  record = json.load(open(tmp_path / "m" / "config.json"))
  assert record["task"]["dataset_dir"] == toy_dirs[0]  # the record was not overwritten


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(toy_dirs, tmp_path, capsys):
  model = tmp_path / "m"
  model.mkdir()
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    with open(model / run_dir.LOCK_FILE, "w") as f:
      json.dump({"pid": sleeper.pid, "host": __import__("socket").gethostname()}, f)
    with pytest.raises(UserError, match=rf"in use by process {sleeper.pid}"):
      _run(toy_dirs, model, num_train_steps=3)
  finally:
    sleeper.kill()
    sleeper.wait()
  out = _run(toy_dirs, model, num_train_steps=3)  # the holder is gone: stale
  assert out["summary"]["step"] == 3
  assert "stale lock" in capsys.readouterr().err
  assert not (model / run_dir.LOCK_FILE).exists()  # released at the end


def test_divergence_stops_without_saving_nan(toy_dirs, tmp_path):
  with pytest.raises(UserError, match=r"training diverged at step \d+: .*loss = nan; stopped "
                                      r"without saving it \(no checkpoint yet\)"):
    _run(toy_dirs, tmp_path / "m", num_train_steps=6, learning_rate=1e30, checkpoint_every=3,
         log_every=1)
  assert checkpoints.Checkpointer(str(tmp_path / "m"), read_only=False).all_steps() == []
  assert not (tmp_path / "m" / run_dir.LOCK_FILE).exists()


def test_reproduce_and_tokenize_are_one_writer_per_output(tmp_path, capsys):
  """`reproduce --output D` holds D/.lock and `tokenize --output D` holds D.lock for the whole
  command: a second one on the same output is refused with the holder's pid (nothing written);
  a lock of a process that is gone is taken over."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from cost_jax.experiments import cli as reproduce_cli  # pylint: disable=import-outside-toplevel
  from cost_jax.io import LOCK_NAME  # pylint: disable=import-outside-toplevel
  from cost_jax.tokenizer import cli as tokenize_cli  # pylint: disable=import-outside-toplevel
  host = __import__("socket").gethostname()
  out = tmp_path / "repro"
  out.mkdir()
  emb = tmp_path / "e.npy"
  np.save(emb, np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (out / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": host,
                                             "command": "reproduce"}))
    with pytest.raises(SystemExit) as e:
      reproduce_cli.main(["--output", str(out), "--seeds", "0", "--methods", "random"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"in use by process {sleeper.pid}" in err and "(reproduce)" in err
    assert sorted(os.listdir(out)) == [LOCK_NAME]  # no stage started
    tok = tmp_path / "tok"
    (tmp_path / ("tok" + LOCK_NAME)).write_text(json.dumps({"pid": sleeper.pid, "host": host}))
    with pytest.raises(SystemExit):
      tokenize_cli.main(["--embeddings", str(emb), "--method", "random", "--output", str(tok),
                         "--quiet"])
    assert f"in use by process {sleeper.pid}" in capsys.readouterr().err
    assert not tok.exists()
  finally:
    sleeper.kill()
    sleeper.wait()
  # The holder is gone: its lock is stale and taken over; the command runs and releases it.
  assert tokenize_cli.main(["--embeddings", str(emb), "--method", "random", "--output", str(tok),
                            "--quiet", "--gin.TokenizerConfig.codebook_size=8"]) == 0
  assert "stale lock" in capsys.readouterr().err
  assert (tok / "semantic_ids.npy").exists() and not (tmp_path / ("tok" + LOCK_NAME)).exists()


def test_data_prepare_holds_its_output_lock_and_a_stopped_tokenize_leaves_nothing(tmp_path):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from cost_jax import data, stop  # pylint: disable=import-outside-toplevel
  from cost_jax.io import LOCK_NAME  # pylint: disable=import-outside-toplevel
  from cost_jax.tokenizer import fit as fit_lib  # pylint: disable=import-outside-toplevel
  src = tmp_path / "rb"
  src.mkdir()
  (src / "a.inter").write_text("user_id:token\titem_id:token\n" + "".join(
      f"u{u}\ti{(u + k) % 7}\n" for u in range(6) for k in range(5)))
  out = tmp_path / "ds"
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (tmp_path / ("ds" + LOCK_NAME)).write_text(json.dumps(
        {"pid": sleeper.pid, "host": __import__("socket").gethostname()}))
    with pytest.raises(UserError, match=f"in use by process {sleeper.pid}"):
      data.prepare("recbole", str(out), recbole_dir=str(src))
    assert not out.exists()
  finally:
    sleeper.kill()
    sleeper.wait()
  # A stop requested during tokenizer training: nothing written, no temporary folder left.
  emb = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
  stop.request()
  try:
    with pytest.raises(stop.Interrupted, match="after tokenizer epoch 1"):
      fit_lib.fit(emb, "cost", str(tmp_path / "tok"), overrides={"codebook_size": 4,
                                                                 "epochs": 3}, log=False)
  finally:
    stop.clear()
  assert sorted(os.listdir(tmp_path)) == sorted(["rb", "ds" + LOCK_NAME]) or \
      sorted(os.listdir(tmp_path)) == ["rb"]
