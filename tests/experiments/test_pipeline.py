"""Tests for cost_jax.reproduce: pipeline orchestration with fake stages, the report's inputs,
end-to-end smoke (stage cache: test_stage_cache.py; profiles and flags: test_profiles.py)."""

import csv
import dataclasses
import glob
import os
import re
import sys

import numpy as np
import pytest

from cost_jax.experiments import cli, pipeline, stage_cache, stages

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _pipeline_fakes import METHODS, Fakes, gin, small_profile, synthetic_dataset  # noqa: E402  pylint: disable=wrong-import-position


# --- pipeline with fake stages ----------------------------------------------------------------


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


def test_cli_reuses_the_stages_another_output_finished(tmp_path, capsys):
  first, second = str(tmp_path / "first"), str(tmp_path / "second")
  fakes = Fakes()
  assert cli.main(["--output", first, "--seeds", "0", "--methods", "rqvae",
                   "--baselines", ""], fns=fakes.fns()) == 0
  fakes.calls.clear()
  capsys.readouterr()
  # Another training setting: data, embedding and tokenizer stages are the first run's.
  assert cli.main(["--output", second, "--seeds", "0", "--methods", "rqvae", "--baselines", "",
                   "--reuse_stages_from", first, "--gin.TrainConfig.num_train_steps=7"],
                  fns=fakes.fns()) == 0
  assert [c[0] for c in fakes.calls] == ["train"]
  linked = sorted(n for n in os.listdir(os.path.join(second, "stages"))
                  if os.path.islink(os.path.join(second, "stages", n)))
  assert [n.split("-")[0] for n in linked] == ["data", "embed", "tokenize"]
  assert "reused from" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    cli.main(["--output", second, "--reuse_stages_from", str(tmp_path / "nowhere")],
             fns=fakes.fns())
  assert e.value.code != 0
  assert "--reuse_stages_from" in capsys.readouterr().err


def test_tokenizer_stats_normalizes_report():
  rep = {"usage_per_level": [1.0, 0.75], "collisions_before_dedup": {
      "colliding_items": 7, "largest_group": 3, "collision_groups": 2, "unique_ids": 9},
         "id_length": 3, "neighbor_precision": {"value": 0.4}, "wall_time_s": 2.5}
  s = stages.tokenizer_stats(rep, "cost", 1)
  assert s == {"method": "cost", "seed": 1, "usage": [1.0, 0.75], "collided_items": 7,
               "largest_group": 3, "collision_groups": 2, "unique_ids": 9, "id_length": 3,
               "neighbor_precision": 0.4, "seconds": 2.5}


# --- end to end with the real stages ------------------------------------------------------------


@pytest.mark.slow
def test_reproduce_smoke_real_stages(tmp_path):
  ds = synthetic_dataset(tmp_path / "ds")
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
  md = open(os.path.join(out, "results.md")).read()
  assert "Impr." in md and "## Where the hits come from" in md
  # a re-run skips every stage
  assert cli.main(args) == 0


def test_time_budget_stops_starting_stages(tmp_path):
  out = str(tmp_path / "out")
  pipeline.Pipeline(small_profile(), out, fns=Fakes().fns()).run()
  fakes = Fakes()
  prof = gin(small_profile(), "TrainConfig.num_train_steps = 3")
  results = pipeline.Pipeline(prof, out, fns=fakes.fns()).run(time_budget_s=0.0)
  assert fakes.calls == [] and {r.status for r in results} == {"cached"}
  md = open(os.path.join(out, "results.md")).read()
  assert "PARTIAL" in md and "Stages not run yet: 10" in md
