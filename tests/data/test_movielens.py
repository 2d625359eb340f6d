"""End-to-end on the embedded ML-100K (the recbole==1.2.1 wheel is fetched from PyPI once)."""

import json
import os

import numpy as np
import pytest

from cost_jax import data
from cost_jax.data import movielens
from cost_jax.data.processed import ProcessedDataset
from cost_jax.io import UserError


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("data_root"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("COST_JAX_DATA_DIR", root)
    out = data.prepare("ml100k")
    yield root, out


def _reference_sequences(directory):
  """Brute force: per user, ratings stably sorted by timestamp (file order breaks ties)."""
  rows = []
  with open(os.path.join(directory, "ml-100k.inter")) as f:
    next(f)
    for line in f:
      u, i, _, t = line.split("\t")
      rows.append((u, int(i), int(float(t))))
  seqs = {}
  for u, i, t in sorted(rows, key=lambda r: r[2]):  # sorted() is stable
    seqs.setdefault(u, []).append((i, t))
  return seqs


def test_stats_exact(ml100k):
  root, out = ml100k
  assert out == os.path.join(root, "ml100k")
  with open(os.path.join(out, "stats.json")) as f:
    s = json.load(f)
  assert (s["users"], s["items"], s["interactions"], s["malformed_rows"]) == (943, 1682, 100000, 0)
  assert (s["seq_len_min"], s["seq_len_max"], s["seq_len_median"]) == (20, 737, 65.0)
  assert s["seq_len_mean"] == pytest.approx(106.0445, abs=1e-4)
  assert s["leave_one_out"] == {"users": 943, "users_excluded_fewer_than_3": 0,
                                "train_interactions": 100000 - 2 * 943, "valid": 943, "test": 943}
  assert s["consecutive_same_timestamp_pairs"] == 50561  # ties are common: ordering matters


def test_sequences_match_reference(ml100k):
  root, out = ml100k
  ds = ProcessedDataset.load(out)
  assert ds.items["item_id"].tolist() == [str(i) for i in range(1, 1683)]
  assert ds.user_ids() == [str(u) for u in range(1, 944)]
  ref = _reference_sequences(os.path.join(root, "downloads", "ml-100k"))
  for uid, items, times in zip(ds.user_ids(), ds.item_sequences(), ds.timestamps()):
    np.testing.assert_array_equal(items + 1, [i for i, _ in ref[uid]])
    np.testing.assert_array_equal(times, [t for _, t in ref[uid]])
  # user 1: items 168 (line 59974) and 172 (line 92489) share second 874965478.
  assert (ds.item_sequences()[0][:2] + 1).tolist() == [168, 172]
  assert ds.timestamps()[0][:2].tolist() == [874965478, 874965478]


def test_split_and_text(ml100k):
  _, out = ml100k
  ds = ProcessedDataset.load(out)
  loo = ds.leave_one_out()
  assert len(loo) == 943 and sum(len(t) for t in loo.train) == 98114
  assert (loo.valid_target[:3] + 1).tolist() == [74, 314, 317]
  assert (loo.test_target[:3] + 1).tolist() == [102, 281, 181]
  text = ds.items["text"]
  assert text[0] == "Item category: Animation, Children's, Comedy. Title: Toy Story. Description: Released in 1995."
  assert ds.items["release_year"][1411] == "1995"  # year "V" in the file, "(1995)" in the title


def test_second_prepare_is_cached_and_checksum(ml100k, monkeypatch):
  root, out = ml100k
  monkeypatch.setenv("COST_JAX_DATA_DIR", root)
  mtime = os.path.getmtime(os.path.join(out, "stats.json"))
  assert data.prepare("ml100k") == out
  assert os.path.getmtime(os.path.join(out, "stats.json")) == mtime
  cached = os.path.join(root, "downloads", "ml-100k", "ml-100k.item")
  with open(cached, "ab") as f:
    f.write(b"tampered\n")
  assert not movielens._cached_ok(os.path.dirname(cached))


def test_bad_rows_in_user_copy(tmp_path):
  d = tmp_path / "ml"
  d.mkdir()
  (d / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                  "1\tA\t1990\tDrama\n2\tB\t1991\tComedy Drama\n3\tbroken\n")
  (d / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                   "7\t2\t3\t20\n7\t1\t3\t10\n7\t9\t3\t5\n7\t1\t4\tnoon\n7\t2\t5\t20\n")
  out = data.prepare("ml100k", str(tmp_path / "out"), directory=str(d))
  ds = ProcessedDataset.load(out)
  assert [s.tolist() for s in ds.item_sequences()] == [[0, 1, 1]]
  s = ds.stats
  assert s["malformed_rows"] == 3
  assert s["malformed"]["samples"]["item missing from the items file"][0].startswith(f"{d}/ml-100k.inter:4: ")
  assert s["malformed"]["samples"]["bad timestamp"][0].startswith(f"{d}/ml-100k.inter:5: ")
  assert s["malformed"]["samples"]["wrong field count"][0].startswith(f"{d}/ml-100k.item:4: ")
  with pytest.raises(UserError, match=r"ml-100k.item:4: wrong field count"):
    data.prepare("ml100k", str(tmp_path / "out2"), directory=str(d), strict=True)
