"""Outputs: a command writes only what it owns (cost_jax.io.StagedDir)."""

import os

import numpy as np
import pytest

from cost_jax.io import OWNER_FILE, StagedDir, UserError, foreign_entries
from cost_jax.tokenizer import fit


def test_tokenizer_refuses_a_folder_with_user_files(tmp_path):
  emb = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
  out = tmp_path / "tok"
  out.mkdir()
  (out / "paper.pdf").write_bytes(b"%PDF")
  with pytest.raises(UserError, match=r"paper.pdf"):
    fit.fit(emb, "random", str(out), overrides={"codebook_size": 8}, log=False)
  assert os.listdir(out) == ["paper.pdf"]
  fresh = tmp_path / "fresh"
  fit.fit(emb, "random", str(fresh), overrides={"codebook_size": 8}, log=False)
  assert OWNER_FILE in os.listdir(fresh)
  fit.fit(emb, "random", str(fresh), seed=1, overrides={"codebook_size": 8}, log=False)  # its own


def test_legacy_and_kind_rules(tmp_path):
  d = tmp_path / "d"
  d.mkdir()
  (d / "semantic_ids.npy").write_bytes(b"")
  assert foreign_entries(str(d), "tokenizer", legacy=("semantic_ids.npy",)) == []
  (d / "mine.txt").write_text("x")
  assert foreign_entries(str(d), "tokenizer", legacy=("semantic_ids.npy",)) == [
      "mine.txt", "semantic_ids.npy"]
  # A directory written by another kind of command is not this one's to replace.
  other = tmp_path / "other"
  with StagedDir(str(other), kind="processed dataset") as s:
    open(s.file("stats.json"), "w").close()
    s.commit()
  with pytest.raises(UserError, match="did not write"):
    StagedDir(str(other), kind="tokenizer")
