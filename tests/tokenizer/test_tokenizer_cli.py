"""`python -m cost_jax.tokenize` end to end on a small clustered dataset, and its bad inputs."""

import json
import os

import numpy as np
import pytest

from cost_jax.tokenizer import cli, fit
from cost_jax.tokenizer.layout import TokenLayout

SMALL = ["--gin.TokenizerConfig.hidden_dims=(32,)", "--gin.TokenizerConfig.latent_dim=8",
         "--gin.TokenizerConfig.codebook_size=16", "--gin.TokenizerConfig.batch_size=64",
         "--gin.TokenizerConfig.kmeans_iters=20", "--gin.TokenizerConfig.neighbor_sample=300",
         "--gin.TokenizerConfig.log_every_s=0"]
SMALL_DICT = {"hidden_dims": (32,), "latent_dim": 8, "codebook_size": 16, "batch_size": 64,
              "kmeans_iters": 20, "neighbor_sample": 300, "epochs": 3}


def clustered(n=600, dim=32, k=20, noise=0.05, seed=0):
  rng = np.random.default_rng(seed)
  c = rng.normal(size=(k, dim))
  c /= np.linalg.norm(c, axis=1, keepdims=True)
  x = c[rng.integers(0, k, n)] + noise * rng.normal(size=(n, dim))
  return x.astype(np.float32)


@pytest.fixture(scope="module")
def emb_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("emb") / "items.npy"
  np.save(path, clustered())
  return str(path)


@pytest.fixture(scope="module")
def cost_dir(emb_file, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tok") / "cost")
  assert cli.main(["--embeddings", emb_file, "--method", "cost", "--output", out,
                        "--gin.TokenizerConfig.epochs=3", "--seed", "0"] + SMALL) == 0
  return out


def test_cli_writes_contract_files(cost_dir):
  ids = np.load(os.path.join(cost_dir, "semantic_ids.npy"))
  assert ids.dtype == np.int32 and ids.shape == (600, 3)
  assert len(np.unique(ids, axis=0)) == 600
  assert ids.min() >= 0 and ids.max() < 16
  vocab = json.load(open(os.path.join(cost_dir, "vocabulary.json")))
  assert vocab["method"] == "cost" and vocab["num_items"] == 600
  assert vocab["dedup"] == "cost_reassign" and vocab["semantic_ids_file"] == "semantic_ids.npy"
  layout = TokenLayout.load(cost_dir)
  assert layout.codebook_sizes == (16, 16, 16)
  rep = json.load(open(os.path.join(cost_dir, "report.json")))
  assert rep["all_distinct"] is True and len(rep["usage_per_level"]) == 3
  assert all(0 < u <= 1 for u in rep["usage_per_level"])
  assert rep["collisions_before_dedup"]["num_items"] == 600
  assert rep["largest_collision_group"] >= 1
  assert -1 <= rep["reconstruction_cosine"] <= 1
  assert rep["neighbor_precision"]["k"] == 10 and rep["neighbor_precision"]["sample_size"] == 300
  assert rep["neighbor_precision"]["sampled"] is True
  assert set(rep["training"]["final_losses"]) == {"loss", "mse", "infonce", "rq"}
  assert len(rep["training"]["history"]) == 3
  assert rep["config"]["shared_codebook"] is False and rep["config"]["latent_dim"] == 8
  assert rep["wall_time_s"] > 0
  assert os.path.isdir(os.path.join(cost_dir, "checkpoint"))
  assert json.load(open(os.path.join(cost_dir, "config.json")))["input_dim"] == 32
  # no temp dirs left beside the output
  assert [d for d in os.listdir(os.path.dirname(cost_dir)) if d.startswith(".")] == []


def test_same_seed_same_ids_and_checkpoint_encodes_new_items(cost_dir, emb_file, tmp_path):
  again = fit.fit(np.load(emb_file), "cost", str(tmp_path / "again"), seed=0,
                       overrides=SMALL_DICT, log=False)
  np.testing.assert_array_equal(np.load(tmp_path / "again" / "semantic_ids.npy"),
                                np.load(os.path.join(cost_dir, "semantic_ids.npy")))
  assert again["usage_per_level"] == json.load(open(os.path.join(cost_dir, "report.json"))
                                               )["usage_per_level"]
  tok = fit.load_tokenizer(cost_dir)
  x = np.load(emb_file)
  # The restored model reproduces the raw codes of the training items.
  raw = tok.raw_codes(x)
  rep = json.load(open(os.path.join(cost_dir, "report.json")))
  assert rep["collisions_before_dedup"] == fit.sid.collision_stats(raw)
  new = clustered(n=40, seed=5)
  ids, info = tok.encode_items(new)
  existing = set(map(tuple, tok.existing_ids.tolist()))
  assert ids.shape == (40, 3) and len(np.unique(ids, axis=0)) == 40
  assert not existing & set(map(tuple, ids.tolist()))
  np.save(tmp_path / "new.npy", new)
  assert cli.main(["--from_checkpoint", cost_dir, "--embeddings", str(tmp_path / "new.npy"),
                        "--output", str(tmp_path / "new_ids"), "--quiet"]) == 0
  np.testing.assert_array_equal(np.load(tmp_path / "new_ids" / "semantic_ids.npy"), ids)


def test_tiger_preset_extra_token_and_gin(emb_file, tmp_path):
  gin_file = tmp_path / "t.gin"
  gin_file.write_text("TokenizerConfig.latent_dim = 6\nTokenizerConfig.codebook_size = 8\n"
                      "TokenizerConfig.batch_size = 128\n")
  out = str(tmp_path / "rq")
  # Later bindings win over the file's (codebook_size 16 below, not 8), as in gin.
  assert cli.main(["--embeddings", emb_file, "--method", "rqvae", "--output", out,
                   "--gin.TokenizerConfig.epochs=2", "--gin_file", str(gin_file), "--gin_param",
                   "TokenizerConfig.hidden_dims = (16,)", "--gin.TokenizerConfig.codebook_size=16",
                   "--gin.TokenizerConfig.kmeans_iters=10", "--quiet"]) == 0
  rep = json.load(open(os.path.join(out, "report.json")))
  cfg = rep["config"]
  assert (cfg["preset"], cfg["optimizer"], cfg["shared_codebook"]) == ("tiger", "adam", False)
  assert (cfg["learning_rate"], cfg["loss_reduction"]) == (1e-3, "sum")  # see PRESETS["tiger"]
  assert (cfg["latent_dim"], cfg["codebook_size"], cfg["hidden_dims"]) == (6, 16, [16])
  ids = np.load(os.path.join(out, "semantic_ids.npy"))
  assert ids.shape == (600, 4) and len(np.unique(ids, axis=0)) == 600
  vocab = json.load(open(os.path.join(out, "vocabulary.json")))
  assert vocab["dedup"] == "tiger_extra_token"
  assert vocab["codebook_sizes"] == [16, 16, 16, rep["largest_collision_group"]]


@pytest.mark.parametrize("method", ["lsh", "random", "rqkmeans"])
def test_baseline_methods(method, emb_file, tmp_path):
  out = str(tmp_path / method)
  assert cli.main(["--embeddings", emb_file, "--method", method, "--output", out,
                        "--quiet"] + SMALL) == 0
  ids = np.load(os.path.join(out, "semantic_ids.npy"))
  assert len(np.unique(ids, axis=0)) == 600
  rep = json.load(open(os.path.join(out, "report.json")))
  assert rep["all_distinct"]
  if method == "lsh":
    assert ids.shape == (600, 5)              # m = 4 levels + TIGER's extra token
    assert rep["codebook_sizes"] == [256] * 4
  else:
    assert ids.shape == (600, 3)
  assert os.path.exists(os.path.join(out, "baseline.npz"))
  tok = fit.load_tokenizer(out)
  new, _ = tok.encode_items(clustered(n=20, seed=9))
  assert not set(map(tuple, new.tolist())) & set(map(tuple, ids.tolist()))
  if method == "rqkmeans":
    assert rep["reconstruction_cosine"] > 0.5


# --- bad input -------------------------------------------------------------------------------
def _bad(tmp_path, name, writer):
  path = tmp_path / name
  writer(path)
  return str(path)


BAD_INPUTS = {
    "nan_row": (lambda p: np.save(p, np.where(np.arange(600)[:, None] == 7, np.nan,
                                              clustered())), ["row 7", "NaN"]),
    "inf_rows": (lambda p: np.save(p, np.where(np.isin(np.arange(600), [3, 9])[:, None], np.inf,
                                               clustered())), ["rows 3, 9", "inf"]),
    "rank1": (lambda p: np.save(p, np.zeros(10, np.float32)), ["2-D", "(10,)"]),
    "rank3": (lambda p: np.save(p, np.zeros((4, 5, 6), np.float32)), ["2-D", "(4, 5, 6)"]),
    "empty_file": (lambda p: open(p, "wb").close(), ["empty file"]),
    "no_rows": (lambda p: np.save(p, np.zeros((0, 8), np.float32)), ["no items"]),
    "few_items": (lambda p: np.save(p, clustered(n=10)), ["10 items", "16 codes"]),
    "not_npy": (lambda p: open(p, "w").write("item,vec\n1,2\n"), ["not a .npy"]),
    "strings": (lambda p: np.save(p, np.array([["a", "b"]])), ["not numeric"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS) + ["missing"])
def test_bad_input_clean_error_and_output_untouched(case, tmp_path, capsys):
  if case == "missing":
    path, expect = str(tmp_path / "nope.npy"), ["nope.npy", "no such file"]
  else:
    writer, expect = BAD_INPUTS[case]
    path = _bad(tmp_path, f"{case}.npy", writer)
  out = tmp_path / "out"
  out.mkdir()
  (out / "semantic_ids.npy").write_text("earlier result")
  with pytest.raises(SystemExit) as e:
    cli.main(["--embeddings", path, "--method", "cost", "--output", str(out)] + SMALL)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  for s in expect:
    assert s in err[0], (s, err[0])
  if case != "missing":
    assert os.path.basename(path) in err[0]
  assert os.listdir(out) == ["semantic_ids.npy"]
  assert (out / "semantic_ids.npy").read_text() == "earlier result"
  assert sorted(os.listdir(tmp_path)) == sorted(
      [p for p in os.listdir(tmp_path) if not p.startswith(".")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path, capsys):
  path = tmp_path / "locked.npy"
  np.save(path, clustered())
  os.chmod(path, 0)
  with pytest.raises(SystemExit):
    cli.main(["--embeddings", str(path), "--output", str(tmp_path / "o")])
  assert "cannot read" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_bad_config_values(emb_file, tmp_path, capsys):
  for args, msg in ((["--gin.TokenizerConfig.nope=1"], "nope"),
                    (["--gin.TokenizerConfig.latent_dim='abc'"], "latent_dim expects int"),
                    (["--gin.TokenizerConfig.dedup='xyz'"], "dedup must be"),
                    # The old flags answer with the new spelling.
                    (["--set", "latent_dim=8"], "--gin.TokenizerConfig.latent_dim=8"),
                    (["--set", "dedup=none"], "--gin.TokenizerConfig.dedup='none'"),
                    (["--epochs", "3"], "--gin.TokenizerConfig.epochs=3"),
                    (["--preset", "tiger"], "--gin.TokenizerConfig.preset='tiger'")):
    with pytest.raises(SystemExit):
      cli.main(["--embeddings", emb_file, "--output", str(tmp_path / "o")] + args)
    assert msg in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_acceptance_20k_clustered_items(tmp_path):
  """The issue's acceptance: 20,000 clustered 768-d items, `cost` preset: all IDs distinct and
  per-level usage >= 80% (a few minutes on 2 CPU cores)."""
  rng = np.random.default_rng(0)
  c = rng.standard_normal((200, 768))
  c /= np.linalg.norm(c, axis=1, keepdims=True)
  x = c[rng.integers(0, 200, 20000)] + 0.02 * rng.standard_normal((20000, 768))
  x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  rep = fit.fit(x, "cost", str(tmp_path / "cost"), seed=0)
  assert rep["all_distinct"]
  assert min(rep["usage_per_level"]) >= 0.8, rep["usage_per_level"]
