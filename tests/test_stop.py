"""Cooperative stops (cost_jax.stop): a signal sets a flag, loops stop at a safe point, the
trainer saves the state it holds, and the exit code says which signal stopped it."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax import stop  # noqa: E402
from cost_jax.io import exits_cleanly  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_first_signal_sets_the_flag_second_raises_at_once():
  with stop.handling():
    assert stop.requested() is None
    stop.check("nowhere")  # no request: nothing happens
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested() == signal.SIGTERM  # recorded, nothing raised
    with pytest.raises(stop.Interrupted, match="stopped by SIGTERM at step 7") as e:
      stop.check("at step 7")
    assert e.value.exit_code == 143 and isinstance(e.value, KeyboardInterrupt)
    with pytest.raises(stop.Interrupted, match="at once by a second SIGTERM") as e:
      os.kill(os.getpid(), signal.SIGTERM)  # a second signal: at once, still exit 143
    assert e.value.exit_code == 143
  stop.clear()


def test_exits_cleanly_maps_a_stop_to_128_plus_the_signal(capsys):
  @exits_cleanly
  def main():
    raise stop.Interrupted("stopped by SIGINT at step 3", signal.SIGINT)

  with pytest.raises(SystemExit) as e:
    main()
  assert e.value.code == 130
  assert capsys.readouterr().err.strip() == "interrupted: stopped by SIGINT at step 3"


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("stoptoy")
  return (toy.write_processed(str(root / "toyds")), toy.write_tokenizer(str(root / "tok")))


def _train_cmd(toy_dirs, model_dir, steps=3000):
  ds, tok = toy_dirs
  fast = toy.fast_train_overrides(num_train_steps=steps, checkpoint_every=1000, log_every=50)
  bindings = [f"TrainConfig.{k} = {v!r}" for k, v in fast.items()]
  bindings += [f"TransformerConfig.{k} = {v!r}" for k, v in toy.tiny_model_overrides().items()]
  bindings += [f"TrainConfig.dataset_dir = {ds!r}", f"TrainConfig.tokenizer_dir = {tok!r}",
               "TrainConfig.eval_at_end = False", "TrainConfig.eval_test = False"]
  cmd = [sys.executable, "-m", "cost_jax.train", f"--model_dir={model_dir}"]
  for b in bindings:
    cmd += ["--gin_param", b]
  return cmd


def _sigterm_once(toy_dirs, model_dir, delay_s: float) -> tuple[int, str, list[int]]:
  """Starts a run, waits for its first step line, then `delay_s`, sends SIGTERM; returns
  (exit code, stderr, checkpoint steps on disk)."""
  proc = subprocess.Popen(_train_cmd(toy_dirs, model_dir), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:  # wait until the loop runs
    lines.append(line)
    if re.search(r"\[train\]\s+\d+/\d+ steps", line):  # a progress line: steps are running
      break
  time.sleep(delay_s)
  proc.send_signal(signal.SIGTERM)
  _, rest = proc.communicate(timeout=300)
  ckpts = os.path.join(model_dir, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(ckpts) if s.isdigit()) if os.path.isdir(ckpts) else []
  return proc.returncode, "".join(lines) + rest, steps


def _check_stop(code, err, steps):
  if code == 0:
    pytest.skip("the run finished before the signal")
  assert code == 143, err[-2000:]
  saved = re.search(r"interrupted: saved step (\d+)", err)
  assert saved, err[-2000:]
  assert steps and steps[-1] == int(saved.group(1))  # a checkpoint at the step it stopped
  assert "Traceback" not in err and "Exception ignored" not in err
  assert err.rstrip().splitlines()[-1].startswith("interrupted: stopped by SIGTERM at step ")


def test_sigterm_saves_the_step_it_stopped_at_and_resumes(toy_dirs, tmp_path):
  code, err, steps = _sigterm_once(toy_dirs, str(tmp_path / "m"), 0.5)
  _check_stop(code, err, steps)
  again = subprocess.run(_train_cmd(toy_dirs, str(tmp_path / "m"), steps=steps[-1] + 20),
                         cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
  assert f"resumed from {tmp_path / 'm'}/checkpoints/{steps[-1]}" in again.stderr


@pytest.mark.slow
def test_sigterm_at_random_moments_always_saves(toy_dirs, tmp_path):
  """20 runs, SIGTERM at a random moment of the loop: every one saves its step, exits 143."""
  rng = random.Random(0)
  outcomes = []
  for i in range(20):
    code, err, steps = _sigterm_once(toy_dirs, str(tmp_path / f"m{i}"), rng.uniform(0.0, 3.0))
    _check_stop(code, err, steps)
    outcomes.append(steps[-1])
  print(f"20/20 SIGTERMs saved their step: {outcomes}")


def test_another_model_in_a_model_dir_is_one_line_on_train(toy_dirs, tmp_path):
  """`train` into a model_dir that holds another model's checkpoints: one error line, exit 2, no
  tracebacks at interpreter exit (the checkpoint manager is closed before the error)."""
  cmd = _train_cmd(toy_dirs, str(tmp_path / "m"), steps=3)
  # As a user runs it: without the suite's TF_CPP_MIN_LOG_LEVEL / CUDA_VISIBLE_DEVICES.
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert first.returncode == 0, first.stderr[-2000:]
  # No error-level log line that is not an error (TensorFlow's "failed call to cuInit" on CPU).
  assert not re.search(r"^E\d{4} ", first.stderr, re.M), first.stderr[-2000:]
  other = [c.replace("TransformerConfig.emb_dim = 32", "TransformerConfig.emb_dim = 48")
           for c in cmd]
  assert other != cmd
  again = subprocess.run(other, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 2
  assert "model.emb_dim: 32 -> 48" in again.stderr
  assert "Traceback" not in again.stderr and "Event loop is closed" not in again.stderr
