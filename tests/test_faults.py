"""One-line errors for faults: a full disk, read-only outputs, damaged files, bad arguments."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax import io as cio  # noqa: E402
from cost_jax.data.processed import ProcessedDataset  # noqa: E402
from cost_jax.io import UserError  # noqa: E402
from cost_jax.seq2seq import run_dir  # noqa: E402
from cost_jax.tokenizer import fit  # noqa: E402


def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
  target = tmp_path / "report.json"
  target.write_text('{"old": true}')

  def no_space(_f):
    raise OSError(errno.ENOSPC, "No space left on device")

  with pytest.raises(UserError, match=r"report.json: cannot write \(No space left on device\)"):
    cio.atomic_write(str(target), no_space)
  assert json.loads(target.read_text()) == {"old": True}
  assert os.listdir(tmp_path) == ["report.json"]  # no temp file left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_is_one_line(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  try:
    with pytest.raises(UserError, match="cannot write"):
      cio.atomic_write_text(str(ro / "x.txt"), "x")
  finally:
    ro.chmod(0o700)


def test_oserror_anywhere_in_a_cli_is_one_line(capsys):
  @cio.exits_cleanly
  def main():
    raise OSError(errno.EROFS, "Read-only file system", "/mnt/out/model")

  with pytest.raises(SystemExit) as e:
    main()
  assert e.value.code == 1
  assert capsys.readouterr().err.strip() == (
      "error: /mnt/out/model: Read-only file system (earlier outputs were left as they were)")


def test_damaged_dataset_files_name_the_file(tmp_path):
  ds = toy.write_processed(str(tmp_path / "ds"))
  stats = os.path.join(ds, "stats.json")
  good = open(stats).read()
  open(stats, "w").write(good[:20])
  with pytest.raises(UserError, match=r"stats.json: line 1: not valid JSON"):
    ProcessedDataset.load(ds)
  open(stats, "w").write(good)
  seqs = os.path.join(ds, "sequences.parquet")
  data = open(seqs, "rb").read()
  open(seqs, "wb").write(data[:len(data) // 2])
  with pytest.raises(UserError, match=r"sequences.parquet: cannot read"):
    ProcessedDataset.load(ds)


def test_tokenizer_rejects_bad_settings_and_contradictions(tmp_path):
  emb = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
  with pytest.raises(UserError, match=r"hidden_dims must all be >= 1"):
    fit.fit(emb, "cost", str(tmp_path / "a"), overrides={"hidden_dims": (0,)}, log=False)
  with pytest.raises(UserError, match=r"TokenizerConfig.hidden_dims expects"):
    fit.fit(emb, "cost", str(tmp_path / "a"), overrides={"hidden_dims": "(0,)"}, log=False)
  with pytest.raises(UserError, match=r"tau must be > 0"):
    fit.fit(emb, "cost", str(tmp_path / "a"), overrides={"tau": 0}, log=False)
  with pytest.raises(UserError, match=r"--method cost and TokenizerConfig.loss='rqvae' contradict"):
    fit.fit(emb, "cost", str(tmp_path / "a"), overrides={"loss": "rqvae"}, log=False)
  assert not (tmp_path / "a").exists()


def _cli(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)


def test_cli_argument_faults_are_one_line(tmp_path):
  a_file = tmp_path / "model"
  a_file.write_text("x")
  proc = _cli("cost_jax.evaluate", "--model_dir", str(tmp_path / "nope"), "--num_users", "-3")
  assert proc.returncode == 2 and "--num_users: must be >= 1" in proc.stderr
  proc = _cli("cost_jax.evaluate", "--model_dir", str(a_file))
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  emb = tmp_path / "e.npy"
  np.save(emb, np.zeros((4, 3), np.float32))
  proc = _cli("cost_jax.tokenize", "--embeddings", str(emb), "--output", str(tmp_path / "o"),
              "--from_checkpoint", str(tmp_path), "--gin.TokenizerConfig.epochs=3")
  assert proc.returncode == 2 and "--from_checkpoint uses the trained tokenizer" in proc.stderr
  for p in (proc,):
    assert "Traceback" not in p.stderr


def test_model_dir_that_is_a_file_and_config_without_model(tmp_path):
  from cost_jax.seq2seq import trainer  # pylint: disable=import-outside-toplevel
  from cost_jax.seq2seq.config import TrainConfig  # pylint: disable=import-outside-toplevel
  a_file = tmp_path / "m"
  a_file.write_text("x")
  with pytest.raises(UserError, match="model_dir exists and is not a directory"):
    trainer.train(TrainConfig(dataset_dir="d", tokenizer_dir="t"), str(a_file))
  d = tmp_path / "run"
  d.mkdir()
  (d / "config.json").write_text(json.dumps({"train": {}}))
  with pytest.raises(UserError, match=r'no "model" section'):
    run_dir.load_run(str(d))


def test_read_only_mount_simulated_is_one_line(tmp_path, monkeypatch):
  def read_only(*_a, **_k):
    raise OSError(errno.EROFS, "Read-only file system")

  monkeypatch.setattr(cio.tempfile, "mkstemp", read_only)
  with pytest.raises(UserError, match=r"x.txt: cannot write \(Read-only file system\)"):
    cio.atomic_write_text(str(tmp_path / "x.txt"), "x")


def test_decode_too_big_for_memory_is_refused_up_front():
  from cost_jax.seq2seq import evaluator  # pylint: disable=import-outside-toplevel
  from cost_jax.seq2seq.network import TransformerConfig  # pylint: disable=import-outside-toplevel
  cfg = TransformerConfig(vocab_size=1000)
  # TIGER's decoder: 4 layers x 2 x 6 heads x 64 = 3,072 floats per position, 81 + 4 positions,
  # + 2 x 1,000 logits + 128 x 81 encoder floats per beam.
  per_beam = 3072 * 85 + 2000 + 128 * 81
  assert evaluator.decode_memory_bytes(cfg, 64, 50, 81, 4) == 4 * 64 * 50 * per_beam
  evaluator.check_decode_fits(cfg, 64, 50, 81, 4, "here")  # ~3.5 GB: fits
  with pytest.raises(UserError, match=r"here: a beam search of 100000 beams over batches of 64 "
                                      r"needs at least [\d.]+ GiB.*lower TrainConfig.num_beams"):
    evaluator.check_decode_fits(cfg, 64, 100_000, 81, 4, "here")


def test_full_disk_at_a_checkpoint_is_one_line_naming_the_intact_step(tmp_path):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from cost_jax import checkpoints  # pylint: disable=import-outside-toplevel
  ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3, async_save=False)
  state = {"w": jnp.ones((3,)), "step": jnp.asarray(1)}
  assert ckpt.save(1, state)
  ckpt.wait()

  def full_disk(*args, **kwargs):
    try:
      raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as e:  # Orbax wraps the OS error in its own
      raise ValueError("tensorstore write failed: see the cause") from e

  ckpt._manager.save = full_disk  # pylint: disable=protected-access
  with pytest.raises(UserError, match=r"checkpoints: cannot write checkpoint step 2 \(No space "
                                      r"left on device\); step 1 is intact and a rerun resumes"):
    ckpt.save(2, state)
  assert ckpt.all_steps() == [1]
