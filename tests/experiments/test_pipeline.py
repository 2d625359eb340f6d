"""Tests for cost_jax.reproduce: stage cache, pipeline orchestration, CLI, end-to-end smoke."""

import csv
import dataclasses
import glob
import hashlib
import json
import time
import os
import re

import numpy as np
import pytest

from cost_jax.experiments import cli, pipeline, profiles, stage_cache, stages
from cost_jax.io import UserError
from cost_jax.seq2seq import network


# --- stage cache -------------------------------------------------------------------------------


def test_config_hash_is_canonical_and_changes_with_config():
  a = stage_cache.config_hash({"x": 1, "y": {"b": 2, "a": [1, 2]}})
  assert a == stage_cache.config_hash({"y": {"a": [1, 2], "b": 2}, "x": 1})  # key order irrelevant
  assert a != stage_cache.config_hash({"x": 2, "y": {"b": 2, "a": [1, 2]}})
  assert a != stage_cache.config_hash({"x": 1, "y": {"b": 2, "a": [2, 1]}})
  # Pinned: the first 12 hex digits of sha256 of the canonical JSON (sorted keys, no spaces).
  assert a == hashlib.sha256(b'{"x":1,"y":{"a":[1,2],"b":2}}').hexdigest()[:12]


def test_stage_cache_runs_once_then_skips(tmp_path):
  cache = stage_cache.StageCache(str(tmp_path))
  calls = []

  def fn(d):
    calls.append(d)
    t_end = time.process_time() + 0.2
    while time.process_time() < t_end:  # 0.2 s of this process's CPU: the marker records it
      pass
    with open(os.path.join(d, "out.txt"), "w") as f:
      f.write("hello")
    return {"n": 1}

  r1 = cache.run("s", {"a": 1}, fn)
  assert (r1.status, r1.value) == ("ran", {"n": 1})
  assert open(os.path.join(r1.path, "out.txt")).read() == "hello"
  marker = json.load(open(os.path.join(r1.path, stage_cache.DONE_FILE)))
  assert marker["config"] == {"a": 1} and marker["hash"] == stage_cache.config_hash({"a": 1})
  assert 0.19 <= marker["cpu_seconds"] <= marker["seconds"] + 0.05 and marker["seconds"] < 300
  assert r1.hash in os.path.basename(r1.path)
  r2 = cache.run("s", {"a": 1}, fn)
  assert (r2.status, r2.value, len(calls)) == ("cached", {"n": 1}, 1)
  assert r2.seconds == pytest.approx(r1.seconds)
  r3 = cache.run("s", {"a": 2}, fn)  # new config -> new dir, runs
  assert r3.status == "ran" and r3.path != r1.path and len(calls) == 2


def test_stage_cache_reruns_interrupted_stage(tmp_path):
  cache = stage_cache.StageCache(str(tmp_path))

  def crash(d):
    with open(os.path.join(d, "partial"), "w") as f:
      f.write("x")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    cache.run("s", {"a": 1}, crash)
  path = cache.path("s", {"a": 1})
  assert not os.path.exists(path)                 # nothing half-written in place
  assert cache.done_marker("s", {"a": 1}) is None
  # also a final dir without DONE (e.g. copied in by hand) counts as unfinished
  os.makedirs(path)
  r = cache.run("s", {"a": 1}, lambda d: open(os.path.join(d, "ok"), "w").close())
  assert r.status == "ran"
  assert sorted(os.listdir(path)) == ["DONE", "ok"]
  assert not os.path.exists(path + ".tmp")


# --- pipeline with fake stages ----------------------------------------------------------------

METHODS = ("random", "lsh", "rqvae", "cost", "rqvae+cost")
QUALITY = {"random": 0.01, "lsh": 0.015, "rqvae": 0.02, "cost": 0.025, "rqvae+cost": 0.022,
           "cove": 0.018}


class Fakes:
  """Fake stage functions that record their calls and write what the real ones write."""

  def __init__(self, fail_train=None):
    self.calls = []
    self.fail_train = fail_train

  def fns(self):
    return stages.StageFns(prepare=self.prepare, embed=self.embed, tokenize=self.tokenize,
                              train=self.train, popularity=self.popularity, sasrec=self.sasrec,
                              cove_sasrec=self.cove_sasrec, cove_tokenize=self.cove_tokenize,
                              cove_tokenize_from=self.cove_tokenize_from,
                              transition=self.transition)

  def prepare(self, dataset, output):
    self.calls.append(("prepare", dataset))
    os.makedirs(output)
    for f in pipeline.DATASET_FILES:
      with open(os.path.join(output, f), "w") as fh:
        fh.write(json.dumps({"users": 3, "items": 5, "interactions": 15}) if f == "stats.json"
                 else "x")
    return output

  def embed(self, path, model):
    self.calls.append(("embed", model))
    np.save(os.path.join(path, "embeddings.npy"), np.eye(5, dtype=np.float32))
    with open(os.path.join(path, "embeddings.json"), "w") as f:
      json.dump({"model": model, "dim": 5}, f)

  def tokenize(self, emb, method, output, seed, overrides):
    self.calls.append(("tokenize", method, seed))
    assert emb.shape == (5, 5)
    os.makedirs(output)
    np.save(os.path.join(output, "semantic_ids.npy"), np.arange(15, dtype=np.int32).reshape(5, 3))
    return {"usage_per_level": [1.0, 0.5, 0.25],
            "collisions_before_dedup": {"colliding_items": seed + 2, "largest_group": 2},
            "id_length": 3, "wall_time_s": 0.1}

  def _metrics(self, q):
    m = {f"recall@{k}": q * k / 5 for k in (5, 10, 20, 40)}
    m.update({f"ndcg@{k}": q * k / 10 for k in (5, 10, 20, 40)})
    m.update(invalid_id_rate=0.0, num_users=3)
    return m

  def train(self, dataset_dir, tokenizer_dir, model_dir, seed, **tiger):
    method = json.load(open(os.path.join(os.path.dirname(tokenizer_dir), "DONE")))["config"][
        "method"]
    self.calls.append(("train", method, seed))
    assert re.fullmatch(r"[\w.:#]+", tiger["task"]), tiger["task"]  # a valid SeqIO task name
    assert os.path.isfile(os.path.join(tokenizer_dir, "semantic_ids.npy"))
    assert os.path.isfile(os.path.join(dataset_dir, "embeddings.npy"))
    if self.fail_train == (method, seed):
      raise RuntimeError("boom")
    m = self._metrics(QUALITY[method] + 0.001 * seed)
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "metrics.json"), "w") as f:
      json.dump(m, f)
    return m

  def popularity(self, dataset_dir, output, ks):
    self.calls.append(("popularity",))
    return self._metrics(0.005)

  def transition(self, dataset_dir, output, ks):
    self.calls.append(("transition",))
    return self._metrics(0.04)

  def sasrec(self, dataset_dir, output, seed, ks, **cfg):
    self.calls.append(("sasrec", seed) + ((cfg["loss"],) if "loss" in cfg else ()))
    return self._metrics(0.03 if cfg.get("loss", "softmax") == "softmax" else 0.025)

  def cove_sasrec(self, dataset_dir, output, seed, ks, cove=None, **cfg):
    self.calls.append(("cove_sasrec", seed))
    return self._metrics(0.032)

  def cove_tokenize_from(self, run_dir, output):
    self.calls.append(("tokenize", "cove", "from", os.path.basename(run_dir).split("-")[1]))
    return self.cove_tokenize(None, output, None)

  def cove_tokenize(self, dataset_dir, output, seed, cove=None, **cfg):
    if seed is not None:
      self.calls.append(("tokenize", "cove", seed))
    os.makedirs(output)
    np.save(os.path.join(output, "semantic_ids.npy"), np.arange(15, dtype=np.int32).reshape(5, 3))
    return {"usage_per_level": [1.0, 0.5], "id_length": 3, "wall_time_s": 0.1}


def small_profile(**kw):
  kw.setdefault("methods", METHODS)
  kw.setdefault("baselines", ("popularity", "transition", "sasrec"))
  return dataclasses.replace(profiles.load("cpu"), seeds=(0, 1), **kw)


def gin(prof, *bindings):
  """`prof` with gin bindings on top (what --gin.X=v does on the command line)."""
  return profiles.override(prof, gin_params=list(bindings))


def test_cove_stages_are_planned_from_the_data_and_reported(tmp_path):
  fakes = Fakes()
  out = str(tmp_path / "out")
  prof = small_profile(methods=("rqvae", "cove"), baselines=("sasrec", "cove_sasrec"),
                       cove={"codebook_sizes": (20, 5)})
  pipe = pipeline.Pipeline(prof, out, fns=fakes.fns())
  deps = {st.name: st.deps for st in pipe.stages}
  # COVE needs interactions, not embeddings; its codes come from the COVE_SASRec row's model.
  assert deps["tokenize-cove-s0"] == ("cove_sasrec-s0",)
  assert deps["cove_sasrec-s1"] == ("data",)
  alone = pipeline.Pipeline(dataclasses.replace(prof, baselines=("sasrec",)), str(tmp_path / "a"),
                            fns=fakes.fns())
  assert {st.name: st.deps for st in alone.stages}["tokenize-cove-s0"] == ("data",)
  results = pipe.run()
  assert {r.status for r in results} == {"ran"}
  assert ("tokenize", "cove", "from", "s1") in fakes.calls and ("train", "cove", 1) in fakes.calls
  assert ("cove_sasrec", 0) in fakes.calls
  assert ("cove_sasrec", 0) == fakes.calls[[c[0] for c in fakes.calls].index("cove_sasrec")]
  assert sum(c[0] == "cove_sasrec" for c in fakes.calls) == 2  # once per seed, not twice
  md = open(os.path.join(out, "results.md")).read()
  assert "COVE_SASRec" in md and "COVE IDs" in md
  # A COVE override changes only the COVE stages' hashes.
  again = pipeline.Pipeline(gin(prof, "CoveConfig.alpha = 0.5"), out,
                            fns=Fakes().fns())
  status = {st.name: again.status_of(st) for st in again.stages}
  assert status["sasrec-s0"] == "cached" and status["train-rqvae-s0"] == "cached"
  assert status["cove_sasrec-s0"] != "cached" and status["tokenize-cove-s0"] != "cached"


def test_pipeline_runs_all_stages_then_skips_them(tmp_path, capsys):
  fakes = Fakes()
  out = str(tmp_path / "out")
  pipe = pipeline.Pipeline(small_profile(), out, fns=fakes.fns())
  results = pipe.run()
  assert {r.status for r in results} == {"ran"}
  # data, embed, popularity, transition; per seed: tokenize + train per method, SASRec
  assert len(results) == 2 + 2 + 2 * (2 * len(METHODS) + 1)
  assert fakes.calls.count(("train", "cost", 1)) == 1 and fakes.calls.count(("transition",)) == 1
  # the report
  rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
  assert len(rows) == 2 * len(METHODS) + 2 + 2
  assert list(rows[0])[:4] == ["method", "seed", "recall@5", "recall@10"]
  md = open(os.path.join(out, "results.md")).read()
  assert "| Impr. | NDCG | +24.39% |" in md  # (0.0255 - 0.0205) / 0.0205
  assert "L_co (CoST) > L_re (RQ-VAE)" in md and "**held**" in md
  assert "| Markov (item transitions) (n=1) | NDCG |" in md  # the baseline's row
  for png in ("metrics.png", "codebook_usage.png", "collisions.png"):
    assert os.path.getsize(os.path.join(out, png)) > 0
  err = capsys.readouterr().err
  assert "[stage 5/" in err and "stage summary" in err
  # second run: everything cached, nothing called
  fakes.calls.clear()
  results = pipeline.Pipeline(small_profile(), out, fns=fakes.fns()).run()
  assert {r.status for r in results} == {"cached"}
  assert fakes.calls == []
  assert "skipped (cached)" in capsys.readouterr().err


def test_changed_train_config_reruns_only_training(tmp_path):
  fakes = Fakes()
  out = str(tmp_path / "out")
  pipeline.Pipeline(small_profile(), out, fns=fakes.fns()).run()
  fakes.calls.clear()
  prof = gin(small_profile(), "TrainConfig.num_train_steps = 7")
  results = {r.name: r.status for r in pipeline.Pipeline(prof, out, fns=fakes.fns()).run()}
  assert results["tokenize-cost-s0"] == "cached" and results["train-cost-s0"] == "ran"
  assert results["sasrec-s1"] == "cached" and results["popularity"] == "cached"
  assert sorted(c[0] for c in fakes.calls) == ["train"] * (2 * len(METHODS))
  # a tokenizer change re-runs that method's tokenizer and training only
  fakes.calls.clear()
  prof2 = gin(prof, "cost/TokenizerConfig.tau = 0.5")
  results = {r.name: r.status for r in pipeline.Pipeline(prof2, out, fns=fakes.fns()).run()}
  ran = sorted(n for n, s in results.items() if s == "ran")
  assert ran == ["tokenize-cost-s0", "tokenize-cost-s1", "train-cost-s0", "train-cost-s1"]


def test_failed_stage_does_not_stop_the_rest(tmp_path):
  fakes = Fakes(fail_train=("lsh", 0))
  out = str(tmp_path / "out")
  results = {r.name: r for r in pipeline.Pipeline(small_profile(), out, fns=fakes.fns()).run()}
  assert results["train-lsh-s0"].status == "failed" and "boom" in results["train-lsh-s0"].error
  assert results["train-cost-s1"].status == "ran"
  rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
  assert len(rows) == 2 * len(METHODS) - 1 + 4  # + MostPop, Markov, SASRec x 2 seeds
  assert "train-lsh-s0" in open(os.path.join(out, "results.md")).read()
  # the next run retries only the failed stage
  fakes2 = Fakes()
  results = {r.name: r.status for r in pipeline.Pipeline(small_profile(), out,
                                                          fns=fakes2.fns()).run()}
  assert fakes2.calls == [("train", "lsh", 0)]
  assert results["train-lsh-s0"] == "ran"


def test_interrupted_pipeline_resumes(tmp_path):
  class Interrupt(Fakes):
    def train(self, dataset_dir, tokenizer_dir, model_dir, seed, **tiger):
      if seed == 1:
        raise KeyboardInterrupt
      return super().train(dataset_dir, tokenizer_dir, model_dir, seed, **tiger)

  out = str(tmp_path / "out")
  with pytest.raises(KeyboardInterrupt):
    pipeline.Pipeline(small_profile(), out, fns=Interrupt().fns()).run()
  # a partial report (seed 0) was written before seed 1 started
  md = open(os.path.join(out, "results.md")).read()
  assert "PARTIAL" in md and "(n=1)" in md
  fakes = Fakes()
  results = {r.name: r.status for r in pipeline.Pipeline(small_profile(), out,
                                                          fns=fakes.fns()).run()}
  assert results["train-random-s0"] == "cached" and results["tokenize-random-s1"] == "cached"
  assert results["train-random-s1"] == "ran"
  assert ("train", "random", 0) not in fakes.calls


def test_an_interrupted_sasrec_stage_keeps_its_epoch_checkpoints(tmp_path):
  # SASRec and COVE_SASRec resume from the epoch checkpoints in their stage folder: a rerun gets
  # the interrupted attempt's files (other stages start from an empty folder).
  seen = {}

  class Interrupt(Fakes):
    def _resumable(self, kind, output):
      seen.setdefault(kind, []).append(sorted(set(os.listdir(output)) - {"SPENT_SECONDS"}))
      if len(seen[kind]) == 1:
        with open(os.path.join(output, "epoch-3"), "w") as f:
          f.write("state")
        raise KeyboardInterrupt

    def sasrec(self, dataset_dir, output, seed, ks, **cfg):
      self._resumable("sasrec", output)
      return super().sasrec(dataset_dir, output, seed, ks, **cfg)

    def cove_sasrec(self, dataset_dir, output, seed, ks, cove=None, **cfg):
      self._resumable("cove_sasrec", output)
      return super().cove_sasrec(dataset_dir, output, seed, ks, cove=cove, **cfg)

  out = str(tmp_path / "out")
  prof = dataclasses.replace(small_profile(methods=(), baselines=("sasrec", "cove_sasrec")),
                             seeds=(0,))
  fakes = Interrupt()
  for _ in range(2):
    with pytest.raises(KeyboardInterrupt):
      pipeline.Pipeline(prof, out, fns=fakes.fns()).run()
  pipeline.Pipeline(prof, out, fns=fakes.fns()).run()
  assert seen == {"sasrec": [[], ["epoch-3"]], "cove_sasrec": [[], ["epoch-3"]]}


def test_cli_list_and_overrides(tmp_path, capsys):
  out = str(tmp_path / "o")
  assert cli.main(["--list", "--output", out, "--seeds", "3,4", "--methods", "cost,rqvae",
                         "--baselines", ""], fns=Fakes().fns()) == 0
  err = capsys.readouterr().err
  assert "tokenize-cost-s3" in err and "train-rqvae-s4" in err and "sasrec" not in err
  assert not os.path.exists(os.path.join(out, "stages"))
  cpu = profiles.load("cpu")
  prof = gin(cpu, "TransformerConfig.mlp_dim = 32", "SASRecConfig.loss = 'bce'",
             "TokenizerConfig.epochs = 3", "Profile.seeds = (0, 1)")
  assert prof.tiger["mlp_dim"] == 32 and prof.sasrec["loss"] == "bce" and prof.seeds == (0, 1)
  assert prof.tokenizer_overrides("cost") == {"preset": "cost", "epochs": 3}
  assert cpu.tiger["mlp_dim"] == 256  # the profile itself is untouched
  # The same from the command line, and the old --set answers with the new spelling.
  assert cli.main(["--list", "--output", out, "--gin.TransformerConfig.mlp_dim=32",
                   "--gin_param", "cost/TokenizerConfig.tau = 0.5"], fns=Fakes().fns()) == 0
  capsys.readouterr()
  for old, new in (("tiger.num_train_steps=5", "--gin.TrainConfig.num_train_steps=5"),
                   ("tiger.mlp_dim=32", "--gin.TransformerConfig.mlp_dim=32"),
                   ("tokenizer.cost.tau=0.5", "--gin.cost/TokenizerConfig.tau=0.5"),
                   ("seeds=0,1", "--gin.Profile.seeds=(0, 1)"),
                   ("bogus.key=1", "--gin.TrainConfig.num_train_steps=500")):
    with pytest.raises(SystemExit) as e:
      cli.main(["--list", "--set", old, "--output", out])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--set is gone" in err and new in err, err
  with pytest.raises(UserError):
    pipeline.Pipeline(dataclasses.replace(cpu, methods=("nope",)), out)


def test_sasrec_bce_row_is_sasrec_with_its_papers_loss_beside_the_default_row(tmp_path):
  """TIGER's Table 1 quotes SASRec with BCE and one sampled negative: the `sasrec_bce` row runs
  the profile's SASRec settings with that loss only, is cached apart, and is reported (with
  TIGER's published SASRec row beside it on TIGER's datasets)."""
  fakes = Fakes()
  out = str(tmp_path / "out")
  prof = small_profile(methods=(), baselines=("sasrec", "sasrec_bce"),
                       sasrec={"num_epochs": 7, "loss": "softmax"})
  pipe = pipeline.Pipeline(prof, out, fns=fakes.fns())
  cfgs = {st.name: st.config["sasrec"] for st in pipe.stages if st.kind == "sasrec"}
  assert cfgs == {"sasrec-s0": {"num_epochs": 7, "loss": "softmax"},
                  "sasrec_bce-s0": {"num_epochs": 7, "loss": "bce"},
                  "sasrec-s1": {"num_epochs": 7, "loss": "softmax"},
                  "sasrec_bce-s1": {"num_epochs": 7, "loss": "bce"}}
  assert {r.status for r in pipe.run()} == {"ran"}
  assert sorted(c for c in fakes.calls if c[0] == "sasrec") == [
      ("sasrec", 0, "bce"), ("sasrec", 0, "softmax"), ("sasrec", 1, "bce"), ("sasrec", 1, "softmax")]
  rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
  by = {(r["method"], r["seed"]): float(r["recall@10"]) for r in rows}
  assert by[("sasrec_bce", "0")] == pytest.approx(0.05) and by[("sasrec", "1")] == pytest.approx(0.06)
  md = open(os.path.join(out, "results.md")).read()
  assert "| SASRec (BCE) (n=2) |" in md and "the SASRec (BCE) row: the same with BCE" in md
  # sasrec_bce is not a default row; an unknown row is refused by name
  assert "sasrec_bce" not in profiles.Profile(name="x", description="").baselines
  with pytest.raises(UserError, match="sasrec_ce"):
    pipeline.Pipeline(dataclasses.replace(prof, baselines=("sasrec_ce",)), out, fns=fakes.fns())


def test_tiger_cpu_profile_keeps_tigers_model_and_plans_table3(tmp_path, capsys):
  """The CPU budget of TIGER's own benchmark changes only steps, methods and budgets: the
  seq2seq model is TIGER's (no model field overridden), the RQ-VAE is TIGER's preset."""
  prof = profiles.load("tiger-cpu")
  model_fields = {f.name for f in dataclasses.fields(network.TransformerConfig)}
  assert not model_fields & set(prof.tiger) and "max_history" not in prof.tiger
  assert prof.embed == profiles.load("paper").embed
  assert prof.tokenizer_overrides("rqvae") == {"preset": "tiger"}  # TIGER's preset as it is
  # Trained to the best validation checkpoint, with a time budget per run.
  assert prof.tiger["patience"] >= 1 and prof.tiger["eval_every"] > 0
  assert prof.tiger["time_budget_min"] > 0 and prof.sasrec["patience"] >= 1
  out = str(tmp_path / "o")
  assert cli.main(["--profile", "tiger-cpu", "--list", "--output", out], fns=Fakes().fns()) == 0
  err = capsys.readouterr().err
  for stage in ("train-random-s0", "train-lsh-s0", "train-rqvae-s0", "train-rqkmeans-s0",
                "train-cost-s0", "sasrec-s0", "sasrec_bce-s0", "popularity"):
    assert stage in err
  assert "-s1" not in err and "cove" not in err


def test_cost_cpu_profile_is_costs_ablation_trained_to_the_best_checkpoint(tmp_path, capsys):
  """CoST's Table 2 on CPU: its four ID methods with one tokenizer architecture (CoST's preset,
  equal epochs), the cpu profile's model, validation with patience, three seeds."""
  prof, cpu = profiles.load("cost-cpu"), profiles.load("cpu")
  assert prof.methods == ("random", "rqvae", "cost", "rqvae+cost") and prof.seeds == (0, 1, 2)
  assert {m: prof.tokenizer_overrides(m) for m in prof.methods} == {
      m: {"preset": "cost", "epochs": 200} for m in prof.methods}
  model_fields = {f.name for f in dataclasses.fields(network.TransformerConfig)}
  assert {k: prof.tiger[k] for k in model_fields & set(prof.tiger)} == {
      k: cpu.tiger[k] for k in model_fields & set(cpu.tiger)}
  assert prof.tiger["eval_every"] > 0 and prof.tiger["patience"] >= 1
  assert prof.tiger["eval_at_end"] and prof.tiger["eval_num_users"] == 0
  out = str(tmp_path / "o")
  assert cli.main(["--profile", "cost-cpu", "--list", "--output", out], fns=Fakes().fns()) == 0
  err = capsys.readouterr().err
  assert "train-rqvae+cost-s2" in err and "transition" in err
  assert "sasrec" not in err and "lsh" not in err and "cove" not in err


def test_gin_values_are_typed_at_the_door():
  cpu = profiles.load("cpu")
  with pytest.raises(UserError, match=r"TrainConfig\.num_train_steps expects int, got 'abc'"):
    gin(cpu, "TrainConfig.num_train_steps = 'abc'")
  with pytest.raises(UserError, match=r"num_steps"):
    gin(cpu, "TrainConfig.num_train_steps = 5", "TrainConfig.num_steps = 5")
  p = gin(cpu, "TrainConfig.learning_rate = 1", "SASRecConfig.patience = 3")
  assert p.tiger["learning_rate"] == 1  # kept as written: existing stages keep their hash
  with pytest.raises(UserError, match=r"TrainConfig\.learning_rate expects float, got 'fast'"):
    gin(cpu, "TrainConfig.learning_rate = 'fast'")
  assert p.sasrec["patience"] == 3
  with pytest.raises(UserError, match=r"Profile.tiger: set TrainConfig.X"):
    gin(cpu, "Profile.tiger = {'num_train_steps': 3}")


def test_profiles_are_gin_files_that_state_only_what_they_change():
  """The stage configs (and their cache hashes) hold exactly the profile's changes: pinned here
  for the profiles' sections as they were written in Python before they became gin files."""
  cpu = profiles.load("cpu")
  assert cpu.tiger == {"emb_dim": 64, "num_heads": 4, "head_dim": 16, "num_encoder_layers": 2,
                       "num_decoder_layers": 2, "mlp_dim": 256, "max_history": 10,
                       "lr_constant_steps": 300, "num_train_steps": 1200, "num_beams": 40,
                       "topk": 40, "eval_every": 0, "eval_at_end": False,
                       "checkpoint_every": 300}
  assert cpu.tokenizer == {"*": {"epochs": 50}, "rqvae": {"preset": "cost"},
                           "cost": {"preset": "cost"}, "rqvae+cost": {"preset": "cost"},
                           "random": {"preset": "cost"}, "lsh": {"dedup": "cost_reassign"}}
  paper = profiles.load("paper")
  assert paper.tiger == {} and paper.sasrec == {"num_epochs": 200}
  tc = profiles.load("tiger-cpu")
  assert tc.tokenizer_overrides("cost") == {"preset": "cost", "epochs": 400}
  assert tc.tokenizer_overrides("rqkmeans") == {"preset": "tiger"}
  assert tc.seeds == (0,) and tc.sasrec == {"num_epochs": 200, "patience": 10}
  assert tc.title == "TIGER's Table 1 and Table 3" and profiles.load("cpu").title == "CoST ablation"
  assert set(profiles.names()) == {"cpu", "cost-cpu", "paper", "tiger-cpu"}
  with pytest.raises(UserError, match="unknown"):
    profiles.load("gpu")


def test_a_signal_during_a_stage_stops_the_reproduction_before_the_next(tmp_path, capsys):
  """SIGTERM while a stage runs (here: requested from inside the tokenizer stage): that stage
  finishes at its own safe point, no later stage starts, the exit code is 143."""
  from cost_jax import stop  # pylint: disable=import-outside-toplevel

  class SignalledDuringTokenize(Fakes):
    def tokenize(self, emb, method, output, seed, overrides):
      out = super().tokenize(emb, method, output, seed, overrides)
      stop.request()  # what the SIGTERM handler does
      return out

  fakes = SignalledDuringTokenize()
  out = str(tmp_path / "o")
  try:
    with pytest.raises(SystemExit) as e:
      cli.main(["--output", out, "--seeds", "0", "--methods", "rqvae", "--baselines", ""],
               fns=fakes.fns())
  finally:
    stop.clear()
  assert e.value.code == 143
  assert "interrupted: stopped by SIGTERM before stage train-rqvae-s0" in capsys.readouterr().err
  assert [c[0] for c in fakes.calls] == ["prepare", "embed", "tokenize"]  # no training
  assert glob.glob(os.path.join(out, "stages", "tokenize-*", stage_cache.DONE_FILE))
  assert not os.path.exists(os.path.join(out, ".lock"))  # the lock is released


def test_short_embeddings_fail_the_tokenizer_stage_naming_the_file(tmp_path, capsys):
  class ShortEmbeddings(Fakes):
    def embed(self, path, model):
      super().embed(path, model)
      np.save(os.path.join(path, "embeddings.npy"), np.eye(5, dtype=np.float32)[:4])

  out = str(tmp_path / "o")
  assert cli.main(["--output", out, "--seeds", "0", "--methods", "rqvae", "--baselines", ""],
                  fns=ShortEmbeddings().fns()) == 1
  err = capsys.readouterr().err
  assert re.search(r"tokenize-rqvae-s0: FAILED \(UserError: .*embeddings\.npy: shape \(4, 5\), "
                   r"expected \[5, D\]: one row per item", err)
  assert "Traceback" not in err and "train-rqvae-s0: blocked" in err
  assert not glob.glob(os.path.join(out, "stages", "tokenize-*", stage_cache.DONE_FILE))


def test_cli_end_to_end_with_fakes_and_report_only(tmp_path):
  out = str(tmp_path / "o")
  fakes = Fakes()
  assert cli.main(["--output", out, "--seeds", "0"], fns=fakes.fns()) == 0
  os.remove(os.path.join(out, "results.md"))
  assert cli.main(["--output", out, "--seeds", "0", "--report_only"], fns=fakes.fns()) == 0
  assert os.path.isfile(os.path.join(out, "results.md"))
  assert cli.main(["--output", out, "--seeds", "0", "--methods", "cost",
                         "--gin.TrainConfig.num_train_steps=1"], fns=Fakes(
                             fail_train=("cost", 0)).fns()) == 1


def test_tokenizer_stats_normalizes_report():
  rep = {"usage_per_level": [1.0, 0.75], "collisions_before_dedup": {
      "colliding_items": 7, "largest_group": 3, "collision_groups": 2, "unique_ids": 9},
         "id_length": 3, "neighbor_precision": {"value": 0.4}, "wall_time_s": 2.5}
  s = stages.tokenizer_stats(rep, "cost", 1)
  assert s == {"method": "cost", "seed": 1, "usage": [1.0, 0.75], "collided_items": 7,
               "largest_group": 3, "collision_groups": 2, "unique_ids": 9, "id_length": 3,
               "neighbor_precision": 0.4, "seconds": 2.5}


# --- end to end with the real stages ------------------------------------------------------------


def _synthetic_dataset(path, num_users=24, num_items=30, seed=0):
  from cost_jax.data import processed  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  events = {}
  for u in range(num_users):
    start = int(rng.integers(0, num_items))
    n = int(rng.integers(5, 10))
    events[f"u{u}"] = [(t, f"i{(start + t) % num_items}") for t in range(n)]
  fields = {f"i{i}": {"text": f"Item category: c{i % 3}. Title: item {i}."}
            for i in range(num_items)}
  data = processed.Interactions(user_events=events, item_fields=fields, sources=[])
  processed.build_and_write("synthetic", data, str(path), malformed_json={"rows": 0},
                            min_seq_len=None, max_seq_len=None, options={})
  ds = processed.ProcessedDataset.load(str(path))
  np.save(os.path.join(path, "embeddings.npy"),
          rng.normal(size=(ds.num_items, 16)).astype(np.float32))
  return str(path)


@pytest.mark.slow
def test_reproduce_smoke_real_stages(tmp_path):
  ds = _synthetic_dataset(tmp_path / "ds")
  out = str(tmp_path / "out")
  sets = ["TrainConfig.num_train_steps=4", "TrainConfig.batch_size=16",
          "TransformerConfig.emb_dim=16", "TransformerConfig.num_heads=2",
          "TransformerConfig.head_dim=8", "TransformerConfig.mlp_dim=32",
          "TransformerConfig.num_encoder_layers=1", "TransformerConfig.num_decoder_layers=1",
          "TrainConfig.num_beams=4", "TrainConfig.topk=4", "TrainConfig.eval_num_users=4",
          "TrainConfig.eval_batch_size=8", "TokenizerConfig.epochs=2",
          "TokenizerConfig.codebook_size=4", "TokenizerConfig.latent_dim=8",
          "TokenizerConfig.hidden_dims=(16,)", "TokenizerConfig.batch_size=16",
          "TokenizerConfig.kmeans_iters=5", "lsh/TokenizerConfig.lsh_bits=2",
          "SASRecConfig.num_epochs=2", "SASRecConfig.max_len=8", "SASRecConfig.emb_dim=8",
          "CoveConfig.codebook_sizes=(4,2)"]
  args = ["--output", out, "--dataset_dir", ds, "--seeds", "0"]
  args += [f"--gin.{s}" for s in sets]
  assert cli.main(args) == 0
  rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
  assert {r["method"] for r in rows} == set(METHODS) | {"cove", "popularity", "transition",
                                                         "sasrec", "cove_sasrec"}
  for r in rows:
    assert 0.0 <= float(r["ndcg@5"]) <= float(r["recall@5"]) <= float(r["recall@40"]) <= 1.0
    if r["method"] in METHODS:  # TIGER's top-4 lists: recall@5..40 are over the same 4 entries
      assert float(r["recall@5"]) == float(r["recall@40"])
  assert "Impr." in open(os.path.join(out, "results.md")).read()
  # a re-run skips every stage
  assert cli.main(args) == 0


def test_resumable_stage_keeps_interrupted_work(tmp_path):
  cache = stage_cache.StageCache(str(tmp_path))
  seen = []

  def step(d):
    seen.append(sorted(os.listdir(d)))
    if not os.path.exists(os.path.join(d, "ckpt")):
      open(os.path.join(d, "ckpt"), "w").close()
      raise RuntimeError("killed after a checkpoint")
    return {"ok": 1}

  with pytest.raises(RuntimeError):
    cache.run("train", {"a": 1}, step, resume=True)
  r = cache.run("train", {"a": 1}, step, resume=True)
  assert r.status == "ran" and seen[1][0] == stage_cache.SPENT_FILE and "ckpt" in seen[1]
  assert sorted(os.listdir(r.path)) == ["DONE", "ckpt"]


def test_time_budget_stops_starting_stages(tmp_path):
  out = str(tmp_path / "out")
  pipeline.Pipeline(small_profile(), out, fns=Fakes().fns()).run()
  fakes = Fakes()
  prof = gin(small_profile(), "TrainConfig.num_train_steps = 3")
  results = pipeline.Pipeline(prof, out, fns=fakes.fns()).run(time_budget_s=0.0)
  assert fakes.calls == [] and {r.status for r in results} == {"cached"}
  md = open(os.path.join(out, "results.md")).read()
  assert "PARTIAL" in md and "Stages not run yet: 10" in md


@pytest.mark.parametrize("bad, message", [
    ("TrainConfig.foo=1", "foo"),
    ("TrainConfig.batch_size=0", "batch_size must be >= 1"),
    ("SASRecConfig.bogus=2", "bogus"),
    ("CoveConfig.codebook_sizes=(5,50)", "fine to coarse"),
    ("TokenizerConfig.hidden_dims=(0,)", "tokenizer"),
    ("Profile.embed={'modle': 'x'}", "unknown key"),
])
def test_bad_overrides_fail_before_any_stage_even_with_list(tmp_path, capsys, bad, message):
  with pytest.raises(SystemExit) as e:
    cli.main(["--output", str(tmp_path / "o"), "--list", f"--gin.{bad}"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err
  assert not os.path.exists(tmp_path / "o" / "stages")


def test_a_cached_stage_whose_outputs_are_gone_is_rerun(tmp_path, capsys):
  cache = stage_cache.StageCache(str(tmp_path))
  calls = []

  def work(d):
    calls.append(d)
    with open(os.path.join(d, "out.bin"), "wb") as f:
      f.write(b"12345")
    return {"ok": 1}

  assert cache.run("s", {"a": 1}, work).status == "ran"
  assert cache.run("s", {"a": 1}, work).status == "cached"
  os.remove(os.path.join(cache.path("s", {"a": 1}), "out.bin"))
  assert cache.run("s", {"a": 1}, work).status == "ran"
  assert "out.bin is gone" in capsys.readouterr().err
  with open(os.path.join(cache.path("s", {"a": 1}), "out.bin"), "wb") as f:
    f.write(b"1")
  assert cache.run("s", {"a": 1}, work).status == "ran" and len(calls) == 3
  capsys.readouterr()
  # A same-size replacement is caught by the content hash.
  with open(os.path.join(cache.path("s", {"a": 1}), "out.bin"), "wb") as f:
    f.write(b"54321")
  assert cache.run("s", {"a": 1}, work).status == "ran" and len(calls) == 4
  err = capsys.readouterr().err
  assert "out.bin has other contents (sha256" in err
  assert cache.run("s", {"a": 1}, work).status == "cached" and len(calls) == 4
  # Nothing the user had is deleted: each changed version was kept beside the stage.
  path = cache.path("s", {"a": 1})
  assert f"kept in {path}.changed-3" in err
  kept = [open(os.path.join(f"{path}.changed-{n}", "out.bin"), "rb").read() if n > 1 else
          os.path.exists(os.path.join(f"{path}.changed-{n}", "out.bin")) for n in (1, 2, 3)]
  assert kept == [False, b"1", b"54321"]
