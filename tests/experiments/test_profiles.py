"""cost_jax.experiments.profiles and the reproduction's command line: what each profile plans,
typed gin bindings, and bad settings refused before any stage runs."""

import csv
import dataclasses
import os
import sys

import pytest

from cost_jax.experiments import cli, pipeline, profiles
from cost_jax.io import UserError
from cost_jax.seq2seq import network

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _pipeline_fakes import Fakes, gin, small_profile  # noqa: E402  pylint: disable=wrong-import-position


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
  # a row's own bindings reach that row only
  scoped = gin(prof, "sasrec_bce/SASRecConfig.patience = 30")
  assert scoped.sasrec_settings("sasrec_bce") == {"num_epochs": 7, "loss": "bce", "patience": 30}
  assert scoped.sasrec_settings("sasrec") == {"num_epochs": 7, "loss": "softmax"}
  planned = {st.name: st.config["sasrec"] for st in pipeline.Pipeline(
      scoped, str(tmp_path / "scoped"), fns=fakes.fns()).stages if st.kind == "sasrec"}
  assert planned["sasrec_bce-s0"]["patience"] == 30 and "patience" not in planned["sasrec-s0"]
  assert profiles.load("tiger-cpu").sasrec_settings("sasrec_bce")["patience"] == 30
  with pytest.raises(UserError, match="sasrec_bce/SASRecConfig"):
    pipeline.Pipeline(gin(prof, "sasrec_bce/SASRecConfig.max_len = 0"), out, fns=fakes.fns())
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
  # TIGER §4.3.3's Random ID: 4 codewords of 255 each (not CoST's 3 x 64)
  assert prof.tokenizer_overrides("random") == {"preset": "cost", "num_levels": 4,
                                                "codebook_size": 255}
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
