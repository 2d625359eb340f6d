"""Tests for the built-in trainer (cost_jax.train) and its input pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax.seq2seq import batching, splits# noqa: E402
from cost_jax.seq2seq import cli, evaluator, gin_config, optim, run_dir, selection, validation  # noqa: E402
from cost_jax.seq2seq import trainer as train  # noqa: E402
from cost_jax.seq2seq.config import TrainConfig  # noqa: E402
from cost_jax.io import UserError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("toy")
  os.environ.setdefault("COST_JAX_COMPILATION_CACHE", str(root / "jax_cache"))
  return (toy.write_processed(str(root / "toyds")), toy.write_tokenizer(str(root / "tok")))


def _run(toy_dirs, model_dir, **kw):
  ds, tok = toy_dirs
  settings = dict(toy.tiny_model_overrides())
  settings.update(toy.fast_train_overrides())
  settings.update(eval_at_end=False, eval_test=False)
  # Share the materialized splits between runs (keyed by task, lengths and file hashes).
  settings.update(cache_dir=os.path.join(os.path.dirname(ds), "split_cache"))
  settings.update(kw)
  return train.train_and_evaluate(model_dir=str(model_dir), dataset_dir=ds, tokenizer_dir=tok,
                                  show_progress=False, **settings)


def _params(model_dir):
  return jax.tree.map(np.asarray, run_dir.load_run(str(model_dir)).params)


# --- pure pieces ---------------------------------------------------------------------


def test_tiger_learning_rate_schedule():
  fn = optim.schedule_of(TrainConfig())  # TIGER §4.1.3 defaults
  got = [float(fn(s)) for s in (0, 1, 9_999, 10_000, 40_000, 90_000)]
  np.testing.assert_allclose(got, [0.01, 0.01, 0.01, 0.01, 0.005, 0.01 / 3], rtol=1e-6)
  const = optim.schedule_of(TrainConfig(learning_rate=1e-3, lr_schedule="constant"))
  assert float(const(123_456)) == pytest.approx(1e-3)


def test_batcher_is_a_function_of_seed_and_step():
  n = 10
  arrays = splits.ExampleArrays(
      **splits.encdec_features(np.arange(n)[:, None] + 3, np.arange(n)[:, None] + 3),
      item_index=np.arange(n, dtype=np.int32), user_index=np.arange(n, dtype=np.int32))
  b = batching.EpochBatcher(arrays, batch_size=4, seed=7)
  stream = np.concatenate([b.indices(s) for s in range(5)])  # 20 positions = 2 epochs
  assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
  assert not np.array_equal(stream[:10], stream[10:])  # a new permutation per epoch
  # Step 3 straddles epochs 1 and 2; asking out of order or from a fresh batcher agrees.
  fresh = batching.EpochBatcher(arrays, batch_size=4, seed=7)
  np.testing.assert_array_equal(fresh.indices(3), stream[12:16])
  assert not np.array_equal(batching.EpochBatcher(arrays, 4, seed=8).indices(0), b.indices(0))
  batch = b.batch(1)
  np.testing.assert_array_equal(batch["encoder_input_tokens"][:, 0], b.indices(1) + 3)
  # Batch larger than the data: wraps over several epochs, still a pure function.
  big = batching.EpochBatcher(arrays, batch_size=25, seed=1)
  assert np.bincount(big.indices(0), minlength=n).min() >= 2


def test_features_match_seqio_converter(toy_dirs):
  from cost_jax.seq2seq import seqrec_task  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  ds, tok = toy_dirs
  task = seqrec_task.register_task("toy_features_test", ds, tok, max_history=20)
  lengths = {"inputs": 41, "targets": 2}
  arrays = splits.materialize_split(task, "train", lengths)
  # 60 users with 5..9 items -> sum(len - 3) train examples (prefixes t >= 1 of items[:-2]).
  assert len(arrays) == 244 and arrays.feature_lengths == lengths
  converted = seqio.EncDecFeatureConverter(pack=False)(
      task.get_dataset(lengths, split="train", shuffle=False), lengths)
  ref = list(converted.take(7).as_numpy_iterator())
  for k in splits.TOKEN_FEATURES:
    np.testing.assert_array_equal(np.stack([r[k] for r in ref]), getattr(arrays, k)[:7], err_msg=k)
  # Target = the successor of the last history item (the toy rule), in token space.
  np.testing.assert_array_equal(arrays.decoder_target_tokens[0],
                                [3 + arrays.item_index[0] // 6, 3 + 4 + arrays.item_index[0] % 6])


def test_split_cache_is_reused_and_keyed(toy_dirs, tmp_path):
  from cost_jax.seq2seq import seqrec_task  # pylint: disable=g-import-not-at-top
  ds, tok = toy_dirs
  task = seqrec_task.register_task("toy_cache_test", ds, tok, max_history=20)
  a = splits.cached_split(task, "validation", str(tmp_path), "fp1")
  b = splits.cached_split(task, "validation", str(tmp_path), "fp1")
  splits.cached_split(task, "validation", str(tmp_path), "fp2")
  assert len(os.listdir(tmp_path)) == 2
  np.testing.assert_array_equal(a.encoder_input_tokens, b.encoder_input_tokens)
  assert len(a) == 60


def test_gin_bindings_do_not_leak_between_calls():
  cfg, model, _ = gin_config.configs_from_gin([], ["TrainConfig.seed = 3",
                                              "TransformerConfig.emb_dim = 32"])
  assert cfg.seed == 3 and model.emb_dim == 32
  cfg, model, _ = gin_config.configs_from_gin([], [])
  assert cfg.seed == 0 and model.emb_dim == 128
  args = cli.parse_train_args(["--model_dir=/x", "--gin.TrainConfig.seed=5", "--no_eval_test"])
  assert args.gin_param == ["TrainConfig.seed = 5", "TrainConfig.eval_test = False"]
  with pytest.raises(UserError, match="foo"):
    gin_config.configs_from_gin([], ["TrainConfig.foo = 1"])


def test_repo_gins_give_the_paper_settings():
  cfg, model, _ = gin_config.configs_from_gin(["gin/train/tiger_ml100k.gin"], [])
  assert (cfg.batch_size, cfg.learning_rate, cfg.lr_schedule, cfg.optimizer) == (
      256, 0.01, "rsqrt", "adafactor")  # TIGER §4.1.3
  assert (model.num_encoder_layers, model.emb_dim, model.mlp_dim) == (4, 128, 1024)
  assert cfg.num_beams >= cfg.topk
  cfg, _, _ = gin_config.configs_from_gin(["gin/train/cost_ml100k.gin"], [])
  assert (cfg.batch_size, cfg.learning_rate) == (512, 1e-3)  # CoST §4.1


def test_t5x_setup_macros_are_the_trainconfig_defaults():
  """gin/setups/tiger.gin hands T5X TIGER's schedule as macros: each must equal the TrainConfig
  default it names (the one place the value is written)."""
  import gin  # pylint: disable=import-outside-toplevel
  from cost_jax import gin_cli  # pylint: disable=import-outside-toplevel
  macros = {"BATCH_SIZE": "batch_size", "OPTIMIZER_NAME": "optimizer",
            "LEARNING_RATE": "learning_rate", "LR_SCHEDULE": "lr_schedule",
            "LR_CONSTANT_STEPS": "lr_constant_steps", "LR_DECAY_STEPS": "lr_decay_steps",
            "WEIGHT_DECAY": "weight_decay", "NUM_BEAMS": "num_beams"}
  default = TrainConfig()
  with gin_cli.fresh():
    gin_cli.parse(["gin/setups/tiger.gin"])
    for macro, field in macros.items():
      value = gin.query_parameter(f"%{macro}")
      if isinstance(value, gin.config.ConfigurableReference):  # names a TrainConfig constant
        value = value.scoped_configurable_fn()
      assert value == getattr(default, field), macro
  text = open(os.path.join(REPO, "gin", "setups", "tiger.gin")).read()
  assert set(macros) <= set(re.findall(r"^([A-Z_]+) =", text, re.M))


# --- training ------------------------------------------------------------------------


def test_resume_gives_identical_params(toy_dirs, tmp_path):
  """N steps in one go == k steps, stop, restart from the checkpoint, go on to N."""
  common = dict(num_train_steps=16, checkpoint_every=5, keep_checkpoints=2, dropout_rate=0.1)
  _run(toy_dirs, tmp_path / "a", **common)
  _run(toy_dirs, tmp_path / "b", **{**common, "num_train_steps": 7})
  steps = sorted(int(s) for s in os.listdir(tmp_path / "b" / "checkpoints") if s.isdigit())
  assert steps == [5, 7]  # every 5 steps + the last, keep 2
  out = _run(toy_dirs, tmp_path / "b", **common)
  assert out["summary"]["resumed_from"] == 7 and out["summary"]["step"] == 16
  pa, pb = _params(tmp_path / "a"), _params(tmp_path / "b")
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(x, y)
  # Not vacuous: the parameters did move after the restart.
  p15 = jax.tree.map(np.asarray, run_dir.load_run(str(tmp_path / "a"), step=15).params)
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(p15), jax.tree.leaves(pa)))
  record = json.load(open(tmp_path / "b" / "config.json"))
  assert record["feature_lengths"] == {"inputs": 41, "targets": 2}
  assert record["model"]["vocab_size"] == 128 and record["train"]["seed"] == 0


def test_the_loop_keeps_one_step_queued(toy_dirs, tmp_path, monkeypatch):
  """Dispatch is asynchronous: the loop waits for step s-1's metrics after dispatching step s,
  so progress counts finished steps and a stop signal is seen within a step or two (a large
  batch once queued every step up to the next checkpoint, minutes of silence)."""
  waited = []
  real = jax.block_until_ready

  def spy(x):
    if isinstance(x, dict) and "loss" in x:
      waited.append(x)
    return real(x)

  monkeypatch.setattr(train.jax, "block_until_ready", spy)
  _run(toy_dirs, tmp_path / "m", num_train_steps=7, checkpoint_every=100, log_every=100)
  assert len(waited) == 6  # steps 1..6 waited for, behind steps 2..7
  assert len({id(m) for m in waited}) == 6


def test_tiny_model_learns_the_toy_rule(toy_dirs, tmp_path):
  """Loss falls and validation Recall@5 rises well above chance (5/24) on next = f(last)."""
  kw = dict(num_train_steps=0, eval_at_end=True, num_beams=10, topk=10)
  before = _run(toy_dirs, tmp_path / "m", **kw)
  after = _run(toy_dirs, tmp_path / "m", **{**kw, "num_train_steps": 150, "eval_every": 50})
  # The learning curve: one point per validation step, the end of run not counted twice, and
  # the resumed run keeps the point of step 0.
  curve = json.load(open(tmp_path / "m" / validation.VALIDATION_CURVE_FILE))["curve"]
  assert [c["step"] for c in curve] == [0, 50, 100, 150]
  assert curve[-1]["recall@10"] == pytest.approx(after["summary"]["validation"]["recall@10"])
  s = after["summary"]
  assert s["train"]["loss"] < 0.5 * np.log(24)
  assert before["recall@5"] < 0.5
  assert after["recall@5"] >= 0.8, after
  assert after["invalid_id_rate"] == 0.0
  assert os.path.exists(tmp_path / "m" / "metrics_validation.json")
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "m"))


def test_best_of_curve_and_patience_counter():
  curve = [{"step": 10, "recall@10": 0.1}, {"step": 20, "recall@10": 0.3},
           {"step": 30, "recall@10": 0.3}, {"step": 40, "recall@10": 0.31}]
  assert selection.best_of_curve(curve, "recall@10")["step"] == 40
  assert selection.best_of_curve(curve, "recall@10", min_delta=0.05)["step"] == 20  # ties keep 20
  assert selection.evals_since_best(curve, selection.best_of_curve(curve, "recall@10", 0.05)) == 2
  assert selection.best_of_curve([], "recall@10") is None
  assert selection.evals_since_best(curve, None) == 4


def test_early_stop_scores_the_best_checkpoint(toy_dirs, tmp_path):
  """No validation can beat the first by 1.0: patience 1 stops at the second, and the test split
  is scored with the parameters of the first (those of a run that stopped there)."""
  kw = dict(num_train_steps=40, eval_every=10, eval_at_end=True, eval_test=True,
            checkpoint_every=10)
  out = _run(toy_dirs, tmp_path / "early", **kw, patience=1, select_min_delta=1.0)
  s = out["summary"]
  assert (s["best_step"], s["final_step"], s["stop_reason"]) == (10, 20, "patience")
  assert out["step"] == 10 and out["stop_reason"] == "patience"
  curve = json.load(open(tmp_path / "early" / validation.VALIDATION_CURVE_FILE))
  assert [c["step"] for c in curve["curve"]] == [10, 20] and curve["best"]["step"] == 10
  valid = json.load(open(tmp_path / "early" / "metrics_validation.json"))
  assert valid["step"] == 10 and valid["recall@10"] == curve["curve"][0]["recall@10"]
  ref = _run(toy_dirs, tmp_path / "ref", **{**kw, "num_train_steps": 10})
  assert ref["step"] == 10
  for k in ("recall@5", "recall@10", "ndcg@10", "recall@40"):
    assert out[k] == pytest.approx(ref[k], abs=1e-9), k
  steps = sorted(int(d) for d in os.listdir(tmp_path / "early" / "best_checkpoint") if d.isdigit())
  assert steps == [10]
  # Re-scoring the run keeps its record of how the checkpoint was chosen.
  evaluator.evaluate(str(tmp_path / "early"))
  again = json.load(open(tmp_path / "early" / "metrics.json"))
  assert (again["step"], again["best_step"], again["stop_reason"]) == (10, 10, "patience")


def test_evaluate_refuses_changed_inputs_and_needs_no_tokenizer_folder(tmp_path, capsys):
  """A model_dir records the sha256 of its dataset and tokenizer; evaluate compares them
  before any work and refuses a changed one (or says so under --allow_changed_inputs); it scores
  with its own copy of the tokenizer, so the tokenizer folder may be rebuilt or moved."""
  ds = toy.write_processed(str(tmp_path / "ds"))
  tok = toy.write_tokenizer(str(tmp_path / "tok"))
  model_dir = str(tmp_path / "m")
  _run((ds, tok), model_dir, num_train_steps=5, eval_test=True,
       cache_dir=str(tmp_path / "cache"))
  # Beams and list slots beyond the catalogue (24 items) are capped, not allocated.
  assert cli.evaluate_main(["--model_dir", model_dir, "--gin.TrainConfig.num_beams=100000",
                            "--gin.TrainConfig.topk=100000", "--split", "validation"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert (out["num_beams"], out["topk"]) == (24, 24)
  # Only the decoding can change at evaluation; the old flags answer with the new spelling.
  for argv, msg in ((["--gin.TrainConfig.learning_rate=0.1"], "only TrainConfig.num_beams"),
                    (["--num_beams", "20"], "--gin.TrainConfig.num_beams=20"),
                    (["--score_over", "level"], "--gin.TrainConfig.score_over='level'")):
    with pytest.raises(SystemExit) as e:
      cli.evaluate_main(["--model_dir", model_dir] + argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err
  assert cli.evaluate_main(["--model_dir", model_dir]) == 0
  capsys.readouterr()
  before = json.load(open(os.path.join(model_dir, "metrics.json")))
  toy.write_processed(ds, seed=7)  # another dataset's sequences, same place
  with pytest.raises(SystemExit) as e:
    cli.evaluate_main(["--model_dir", model_dir])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "dataset" in err and ds in err and "--allow_changed" in err
  assert json.load(open(os.path.join(model_dir, "metrics.json"))) == before  # untouched
  assert cli.evaluate_main(["--model_dir", model_dir, "--allow_changed_inputs"]) == 0
  assert "warning:" in capsys.readouterr().err
  toy.write_processed(ds)  # the original contents: accepted again
  capsys.readouterr()
  # The run scores with its own copy of the tokenizer (model_dir/tokenizer): the tokenizer
  # folder rebuilt in place, or moved away, changes nothing ...
  ids = np.load(os.path.join(tok, "semantic_ids.npy"))
  np.save(os.path.join(tok, "semantic_ids.npy"), ids[::-1].copy())
  assert cli.evaluate_main(["--model_dir", model_dir]) == 0
  assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(before))
  os.rename(tok, str(tmp_path / "tok_moved"))
  assert cli.evaluate_main(["--model_dir", model_dir]) == 0
  assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(before))
  # ... and its own copy is checked like any input.
  own = os.path.join(model_dir, "tokenizer", "semantic_ids.npy")
  np.save(own, np.load(own)[::-1].copy())
  with pytest.raises(UserError, match="tokenizer .* has other contents"):
    evaluator.evaluate(model_dir)


# --- bad input -----------------------------------------------------------------------


def test_repeated_semantic_ids_are_refused_before_training(toy_dirs, tmp_path):
  ds, _ = toy_dirs
  tok = toy.write_tokenizer(str(tmp_path / "tok"))
  ids = np.load(os.path.join(tok, "semantic_ids.npy"))
  ids[9] = ids[4]
  np.save(os.path.join(tok, "semantic_ids.npy"), ids)
  with pytest.raises(UserError, match=r"semantic_ids\.npy: items 4 and 9 share the semantic ID"):
    _run((ds, tok), tmp_path / "m", num_train_steps=5)
  assert not (tmp_path / "m" / "checkpoints").exists()  # refused before any step


def test_missing_tokenizer_dir_is_a_user_error(toy_dirs, tmp_path):
  ds, _ = toy_dirs
  with pytest.raises(UserError, match="tokenizer_dir does not exist"):
    train.train_and_evaluate(model_dir=str(tmp_path / "m"), dataset_dir=ds,
                             tokenizer_dir=str(tmp_path / "nope"), show_progress=False)
  empty = tmp_path / "emptytok"
  empty.mkdir()
  with pytest.raises(UserError, match="emptytok/vocabulary.json: missing"):
    train.train_and_evaluate(model_dir=str(tmp_path / "m"), dataset_dir=ds,
                             tokenizer_dir=str(empty), show_progress=False)


def test_missing_task_files_are_a_user_error(toy_dirs, tmp_path):
  _, tok = toy_dirs
  broken = tmp_path / "ds"
  broken.mkdir()
  (broken / "stats.json").write_text("{}")
  with pytest.raises(UserError, match="items.parquet"):
    _run((str(broken), tok), tmp_path / "m")
  with pytest.raises(UserError, match="not a registered SeqIO task"):
    train.train_and_evaluate("no_such_task_xyz", str(tmp_path / "m2"), show_progress=False)
  with pytest.raises(UserError, match="unknown setting 'bogus'"):
    _run(toy_dirs, tmp_path / "m3", bogus=1)


def test_resuming_with_another_model_is_refused(toy_dirs, tmp_path):
  _run(toy_dirs, tmp_path / "m", num_train_steps=2, checkpoint_every=2)
  with pytest.raises(UserError, match="model.emb_dim"):
    _run(toy_dirs, tmp_path / "m", num_train_steps=4, emb_dim=16)


def test_resuming_with_another_history_crop_is_refused(toy_dirs, tmp_path):
  _run(toy_dirs, tmp_path / "m", num_train_steps=2, checkpoint_every=2)
  with pytest.raises(UserError, match=r"TrainConfig.history_crop: 0.0 -> 0.5"):
    _run(toy_dirs, tmp_path / "m", num_train_steps=4, history_crop=0.5)
  # A record from before the field existed holds its default (0.0): it resumes as before.
  path = os.path.join(tmp_path / "m", run_dir.CONFIG_FILE)
  record = json.load(open(path))
  del record["train"]["history_crop"]
  json.dump(record, open(path, "w"))
  _run(toy_dirs, tmp_path / "m", num_train_steps=4)


def test_cli_bad_input_exits_2_without_traceback(toy_dirs, tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.train_main(["--model_dir", str(tmp_path / "m"), "--gin.TrainConfig.dataset_dir='/nonexistent'",
                "--gin.TrainConfig.tokenizer_dir='/nonexistent2'"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "Traceback" not in err


@pytest.mark.slow
def test_two_devices_match_one(toy_dirs, tmp_path):
  """Data parallelism over 2 forced host devices gives the same training as 1 device."""
  ds, tok = toy_dirs
  script = textwrap.dedent(f"""
      import json, sys
      sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
      import jax, _trainer_toy as toy
      from cost_jax.seq2seq import trainer as train
      kw = dict(toy.tiny_model_overrides(), **toy.fast_train_overrides(num_train_steps=20))
      out = train.train_and_evaluate(model_dir=sys.argv[1], dataset_dir={ds!r},
          tokenizer_dir={tok!r}, eval_at_end=False, eval_test=False, show_progress=False, **kw)
      print(json.dumps({{"devices": jax.local_device_count(),
                        "loss": out["summary"]["train"]["loss"]}}))
  """)
  results = []
  for n in (1, 2):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"m{n}")], env=env,
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    results.append(json.loads(p.stdout.strip().splitlines()[-1]))
  assert [r["devices"] for r in results] == [1, 2]
  assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-4)
  p1, p2 = _params(tmp_path / "m1"), _params(tmp_path / "m2")
  for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(x, y, atol=1e-4)  # reduction order differs across devices


@pytest.mark.slow
def test_cli_kill_9_and_resume_matches_uninterrupted(toy_dirs, tmp_path):
  """`python -m cost_jax.train` killed with SIGKILL mid-run, restarted: same final params."""
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  ds, tok = toy_dirs
  steps = 1500
  model = toy.tiny_model_overrides()
  fast = toy.fast_train_overrides(num_train_steps=steps, checkpoint_every=50, log_every=50)
  bindings = [f"TrainConfig.{k} = {v!r}" for k, v in fast.items()]
  bindings += [f"TransformerConfig.{k} = {v!r}" for k, v in model.items()]
  bindings += [f"TrainConfig.dataset_dir = {ds!r}", f"TrainConfig.tokenizer_dir = {tok!r}",
               "TrainConfig.eval_at_end = False", "TrainConfig.eval_test = False"]
  cmd = [sys.executable, "-m", "cost_jax.train", f"--model_dir={tmp_path / 'killed'}"]
  for b in bindings:
    cmd += ["--gin_param", b]
  ckpts = tmp_path / "killed" / "checkpoints"
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    done = [int(s) for s in os.listdir(ckpts) if s.isdigit()] if ckpts.exists() else []
    if any(s >= 100 for s in done):
      break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = max(int(s) for s in os.listdir(ckpts) if s.isdigit())
  if killed_at >= steps:
    pytest.skip("the run finished before it could be killed")
  subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=600)
  _run(toy_dirs, tmp_path / "straight", **model, **fast)
  pk, ps = _params(tmp_path / "killed"), _params(tmp_path / "straight")
  for x, y in zip(jax.tree.leaves(pk), jax.tree.leaves(ps)):
    np.testing.assert_array_equal(x, y)


def test_default_task_name_is_a_valid_seqio_name(tmp_path):
  import json as _json
  from cost_jax.tokenizer import artifact
  from cost_jax.tokenizer.config import task_name
  tok = tmp_path / "tok"
  tok.mkdir()
  (tok / "vocabulary.json").write_text(_json.dumps({"method": "rqvae+cost"}))
  assert task_name(artifact.read_method(str(tok)), "ml-100k") == "rqvae_cost_ml_100k"


def test_wsd_schedule_and_its_resume_rule():
  fn = optim.schedule_of(TrainConfig(lr_schedule="wsd", lr_constant_steps=100, lr_decay_steps=50))
  got = [float(fn(s)) for s in (0, 99, 100, 125, 149, 150, 1_000)]
  np.testing.assert_allclose(got, [0.01, 0.01, 0.01, 0.005, 0.0002, 0.0, 0.0], rtol=1e-5, atol=1e-9)
  with pytest.raises(UserError):
    TrainConfig(task="t", lr_schedule="wsd").validate()  # no decay length
  # A constant-rate run (TIGER's rsqrt before its 10k steps) resumed at step 2,734 with a cooldown
  # that starts there has taken the same steps; one that starts at 2,000 has not.
  old = dataclasses.asdict(TrainConfig())
  same = dict(old, lr_schedule="wsd", lr_constant_steps=2_734, lr_decay_steps=1_200)
  assert run_dir.schedule_change(old, same, 2_734) is None
  early = dict(old, lr_schedule="wsd", lr_constant_steps=2_000, lr_decay_steps=1_200)
  why = run_dir.schedule_change(old, early, 2_734)
  assert why is not None and "at step 2001" in why
  assert run_dir.schedule_change(old, dict(old, learning_rate=0.02), 1) is not None
