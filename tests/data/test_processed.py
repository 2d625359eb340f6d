"""Processed-dir writer/reader: indexing, leave-one-out, stats, atomic replacement."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from cost_jax.data import processed, text
from cost_jax.data.malformed import MalformedRows
from cost_jax.io import UserError


def _interactions(titles=None):
  titles = titles or {"i10": "ten", "i2": "two", "i1": "one", "i3": "three"}
  items = {k: {"title": v, "text": text.cost_prompt("c", v, "")} for k, v in titles.items()}
  users = {
      "u10": [(1, "i10"), (2, "i2"), (3, "i1"), (4, "i3"), (5, "i2")],
      "u2": [(7, "i1"), (8, "i2")],
      "u1": [(1, "i2"), (2, "i3"), (3, "i10")],
  }
  return processed.Interactions(users, items, [{"file": "x"}])


def _write(path, data=None, **kw):
  opts = dict(min_seq_len=None, max_seq_len=None)
  opts.update(kw)
  return processed.build_and_write("toy", data or _interactions(), str(path),
                                   malformed_json=MalformedRows().to_json(), options={"o": 1}, **opts)


def test_natural_key():
  assert sorted(["N10", "N9", "N100", "A2"], key=processed.natural_key) == ["A2", "N9", "N10", "N100"]
  assert sorted(["10", "9", "1"], key=processed.natural_key) == ["1", "9", "10"]


def test_write_load_and_leave_one_out(tmp_path):
  stats = _write(tmp_path / "d")
  ds = processed.ProcessedDataset.load(str(tmp_path / "d"))
  assert ds.name == "toy" and ds.num_items == 4 and ds.num_users == 3
  assert ds.items["item_id"].tolist() == ["i1", "i2", "i3", "i10"]
  assert ds.user_ids() == ["u1", "u2", "u10"]
  assert [s.tolist() for s in ds.item_sequences()] == [[1, 2, 3], [0, 1], [3, 1, 0, 2, 1]]
  assert all(s.dtype == np.int32 for s in ds.item_sequences())
  schema = pq.read_schema(os.path.join(tmp_path, "d", "sequences.parquet"))
  assert str(schema.field("items").type) == "list<element: int32>"
  assert str(schema.field("timestamps").type) == "list<element: int64>"
  assert str(pq.read_schema(os.path.join(tmp_path, "d", "items.parquet")).field("item_index").type) == "int32"
  loo = ds.leave_one_out()
  assert loo.user_ids == ["u1", "u10"]
  assert [t.tolist() for t in loo.train] == [[1], [3, 1, 0]]
  assert loo.valid_target.tolist() == [2, 2] and loo.test_target.tolist() == [3, 1]
  assert loo.user_index.tolist() == [0, 2]
  assert loo.valid_target.dtype == np.int32 and loo.test_target.dtype == np.int32
  assert (stats["users"], stats["items"], stats["interactions"], stats["malformed_rows"]) == (3, 4, 10, 0)
  assert (stats["seq_len_min"], stats["seq_len_mean"], stats["seq_len_median"], stats["seq_len_max"]) == (
      2, 3.3333, 3.0, 5)
  assert stats["leave_one_out"] == {"users": 2, "users_excluded_fewer_than_3": 1,
                                    "train_interactions": 4, "valid": 2, "test": 2}
  assert stats["cost_table1"]["Seq_Len"] == [2, 5]


def test_filter_cap_counts(tmp_path):
  stats = _write(tmp_path / "d", min_seq_len=3, max_seq_len=4)
  ds = processed.ProcessedDataset.load(str(tmp_path / "d"))
  assert ds.user_ids() == ["u1", "u10"]
  assert ds.items["item_id"].tolist() == ["i1", "i2", "i3", "i10"]
  assert [ds.items["item_id"][i] for i in ds.item_sequences()[1]] == ["i2", "i1", "i3", "i2"]
  f = stats["filtering"]
  assert (f["users_dropped_too_short"], f["interactions_dropped_with_short_users"], f["users_capped"],
          f["interactions_dropped_by_cap"]) == (1, 2, 1, 1)


def test_drop_longer(tmp_path):
  stats = _write(tmp_path / "d", min_seq_len=3, max_seq_len=4, drop_longer=True)
  ds = processed.ProcessedDataset.load(str(tmp_path / "d"))
  assert ds.user_ids() == ["u1"] and ds.items["item_id"].tolist() == ["i2", "i3", "i10"]
  f = stats["filtering"]
  assert (f["users_dropped_too_short"], f["users_dropped_too_long"], f["users_capped"]) == (1, 1, 0)


def test_embeddings_carried_over_only_if_items_unchanged(tmp_path):
  d = tmp_path / "d"
  _write(d)
  np.save(d / "embeddings.npy", np.ones((4, 2), np.float32))
  (d / "embeddings.json").write_text(json.dumps({"model": "m", "dim": 2}))
  (d / "tokenizers" / "cost").mkdir(parents=True)
  (d / "tokenizers" / "cost" / "semantic_ids.npy").write_bytes(b"x")
  _write(d, min_seq_len=3)  # same items -> kept
  assert (d / "embeddings.npy").exists() and (d / "tokenizers" / "cost" / "semantic_ids.npy").exists()
  assert processed.ProcessedDataset.load(str(d)).embeddings().shape == (4, 2)
  _write(d, _interactions({"i10": "TEN", "i2": "two", "i1": "one", "i3": "three"}))  # text changed
  assert not (d / "embeddings.npy").exists() and not (d / "tokenizers").exists()
  assert sorted(os.listdir(tmp_path)) == ["d"]  # no temp dirs left behind
  with pytest.raises(UserError, match="embed"):
    processed.ProcessedDataset.load(str(d)).embeddings()


def test_failed_write_leaves_old_dir(tmp_path, monkeypatch):
  d = tmp_path / "d"
  _write(d)
  before = (d / "stats.json").read_text()
  def boom(*a, **k):
    raise RuntimeError("disk full")
  monkeypatch.setattr(processed.pq, "write_table", boom)
  with pytest.raises(RuntimeError):
    _write(d, min_seq_len=3)
  assert (d / "stats.json").read_text() == before
  assert sorted(os.listdir(tmp_path)) == ["d"]


def test_load_missing_names_files(tmp_path):
  with pytest.raises(UserError, match=r"items.parquet, sequences.parquet, stats.json"):
    processed.ProcessedDataset.load(str(tmp_path))


def test_malformed_collector():
  m = MalformedRows(max_samples_per_reason=2)
  for line in (3, 5, 9):
    m.add("f.tsv", line, "bad", "x")
  m.add("f.tsv", 3, "other")
  assert m.num_rows == 3 and m.counts == {"bad": 3, "other": 1}
  assert m.to_json()["samples"]["bad"] == ["f.tsv:3: bad (x)", "f.tsv:5: bad (x)"]
  with pytest.raises(UserError, match=r"^g.json:7: oops"):
    MalformedRows(strict=True).add("g.json", 7, "oops")


def test_prompt_template():
  assert text.cost_prompt("Drama", "Heat", "Released in 1995") == (
      "Item category: Drama. Title: Heat. Description: Released in 1995.")
  assert text.cost_prompt("", " A \n B. ", None) == "Title: A B."
  assert text.truncate("one two three four", 9) == "one two..."
