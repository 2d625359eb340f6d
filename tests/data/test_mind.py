"""MIND loader on small files written in the real format (train + dev folders, bad rows)."""

import os

import numpy as np
import pytest

from cost_jax import data
from cost_jax.data import mind
from cost_jax.data.processed import ProcessedDataset
from cost_jax.io import UserError


def _news_line(nid, cat, sub, title, abstract=""):
  return "\t".join([nid, cat, sub, title, abstract, f"https://example.org/{nid}", "[]", "[]"])


def write_mind(root):
  train = os.path.join(root, "MINDsmall_train")
  dev = os.path.join(root, "MINDsmall_dev")
  os.makedirs(train)
  os.makedirs(dev)
  news_train = [
      _news_line("N1", "sports", "football_nfl", "Team wins", "A close game."),
      _news_line("N2", "news", "newsus", "Storm  hits\tcoast"),  # 9 fields: malformed (line 2)
      _news_line("N2", "news", "newsus", "Storm hits coast"),
      _news_line("N3", "finance", "markets", "Stocks rise"),
      _news_line("N4", "health", "wellness", "Sleep more"),
      _news_line("N5", "travel", "travelnews", "Cheap flights"),
      _news_line("N6", "video", "viral", "Cat video"),
  ]
  news_dev = [_news_line("N1", "sports", "football_nfl", "Team wins (dev copy)"),
              _news_line("N7", "tv", "tvnews", "Finale tonight")]
  behaviors_train = [
      "1\tU1\t11/11/2019 9:05:58 AM\tN1 N2\tN3-1 N4-0 N5-1",
      "2\tU2\t11/12/2019 1:00:00 PM\tN2\tN4-0 N6-1",
      "3\tU1\t11/11/2019 8:00:00 AM\tN1 N2\tN6-1 N3-0",
      "4\tU1\t11/31/2019 8:00:00 AM\tN1 N2\tN4-1",  # bad timestamp
      "5\tU3\t11/13/2019 10:00:00 AM\tN9 N1\tN2-1 X",  # N9 unknown, token X bad
      "6\tU4\t11/13/2019 10:00:00 AM",  # 3 fields
  ]
  behaviors_dev = [
      "1\tU1\t11/15/2019 8:55:22 AM\tN1 N2\tN7-1 N3-1",  # N3 repeats: dropped
      "2\tU2\t11/15/2019 9:00:00 AM\tN2\tN8-1",  # N8 unknown
  ]
  for folder, news, behaviors in ((train, news_train, behaviors_train), (dev, news_dev, behaviors_dev)):
    with open(os.path.join(folder, "news.tsv"), "w") as f:
      f.write("\n".join(news) + "\n")
    with open(os.path.join(folder, "behaviors.tsv"), "w") as f:
      f.write("\n".join(behaviors) + "\n")
  return root


@pytest.fixture
def mind_dir(tmp_path):
  return write_mind(str(tmp_path / "MIND"))


def test_parse_time():
  assert mind.parse_time("11/15/2019 8:55:22 AM") == 1573808122
  assert mind.parse_time("11/12/2019 1:00:00 PM") == 1573563600
  assert mind.parse_time("11/12/2019 12:00:00 AM") == 1573516800


def test_sequences_order_dedup_and_malformed(mind_dir, tmp_path):
  out = data.prepare("mind", str(tmp_path / "out"), mind_dir=mind_dir, min_seq_len=1, max_seq_len=0)
  ds = ProcessedDataset.load(out)
  ids = ds.items["item_id"].tolist()
  assert ids == ["N1", "N2", "N3", "N5", "N6", "N7"]  # natural sort, only used items
  seqs = {u: [ids[i] for i in s] for u, s in zip(ds.user_ids(), ds.item_sequences())}
  # history once, then clicks across impressions by time (line 3 at 8:00 before line 1 at 9:05),
  # dev after train; the repeated N3 click is dropped.
  assert seqs == {"U1": ["N1", "N2", "N6", "N3", "N5", "N7"], "U2": ["N2", "N6"], "U3": ["N1", "N2"]}
  times = dict(zip(ds.user_ids(), ds.timestamps()))
  np.testing.assert_array_equal(times["U1"], [-1, -1, 1573459200, 1573463158, 1573463158, 1573808122])
  assert ds.user_ids() == ["U1", "U2", "U3"]
  text = ds.items.set_index("item_id").loc["N1", "text"]
  assert text == "Item category: sports > football_nfl. Title: Team wins. Description: A close game."
  s = ds.stats
  assert (s["users"], s["items"], s["interactions"]) == (3, 6, 10)
  assert s["malformed_rows"] == 5
  reasons = s["malformed"]["by_reason"]
  assert reasons == {"bad impression token": 1, "bad timestamp": 1, "clicked item missing from news.tsv": 1,
                     "history item missing from news.tsv": 1, "wrong field count": 2}
  samples = s["malformed"]["samples"]
  assert samples["bad timestamp"][0].startswith(os.path.join(mind_dir, "MINDsmall_train", "behaviors.tsv") + ":4: ")
  assert samples["wrong field count"][0].startswith(os.path.join(mind_dir, "MINDsmall_train", "news.tsv") + ":2: ")
  assert "N9" in samples["history item missing from news.tsv"][0]
  assert samples["clicked item missing from news.tsv"][0].startswith(
      os.path.join(mind_dir, "MINDsmall_dev", "behaviors.tsv") + ":2: ")
  assert s["mind"]["clicks_dropped_as_repeats"] == 1
  assert s["mind"]["folders"] == ["MINDsmall_train", "MINDsmall_dev"]
  assert (s["seq_len_min"], s["seq_len_max"], s["seq_len_median"]) == (2, 6, 2.0)
  loo = ds.leave_one_out()
  assert loo.user_ids == ["U1"] and s["leave_one_out"]["users_excluded_fewer_than_3"] == 2
  assert [ids[i] for i in loo.train[0]] == ["N1", "N2", "N6", "N3"]
  assert ids[loo.valid_target[0]] == "N5" and ids[loo.test_target[0]] == "N7"


def test_filter_and_cap(mind_dir, tmp_path):
  out = data.prepare("mind", str(tmp_path / "out"), mind_dir=mind_dir, min_seq_len=3, max_seq_len=4)
  ds = ProcessedDataset.load(out)
  ids = ds.items["item_id"].tolist()
  assert ds.user_ids() == ["U1"]
  assert [ids[i] for i in ds.item_sequences()[0]] == ["N6", "N3", "N5", "N7"]  # latest 4
  f = ds.stats["filtering"]
  assert (f["users_before"], f["users_dropped_too_short"], f["users_capped"], f["interactions_dropped_by_cap"]) == (3, 2, 1, 2)
  assert (f["items_before"], f["items_kept"]) == (6, 4)


def test_no_dedup_keeps_repeat(mind_dir, tmp_path):
  out = data.prepare("mind", str(tmp_path / "out"), mind_dir=mind_dir, min_seq_len=1, dedup_clicks=False)
  ds = ProcessedDataset.load(out)
  assert len(ds.item_sequences()[0]) == 7


def test_strict_names_file_line(mind_dir, tmp_path):
  with pytest.raises(UserError, match=r"MINDsmall_train/news.tsv:2: wrong field count"):
    data.prepare("mind", str(tmp_path / "out"), mind_dir=mind_dir, strict=True)
  assert not os.path.exists(tmp_path / "out")


def test_flat_folder_and_missing_files(tmp_path):
  root = write_mind(str(tmp_path / "m"))
  assert mind.find_folders(os.path.join(root, "MINDsmall_dev")) == [os.path.join(root, "MINDsmall_dev")]
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(UserError, match=r"news.tsv.*behaviors.tsv"):
    data.prepare("mind", str(tmp_path / "out"), mind_dir=str(empty))
  os.remove(os.path.join(root, "MINDsmall_dev", "behaviors.tsv"))
  with pytest.raises(UserError, match=r"MINDsmall_dev/behaviors.tsv"):
    mind.find_folders(root)


def test_duplicate_news_ids_bad_bytes_and_empty_files(tmp_path):
  root = write_mind(str(tmp_path / "m"))
  news = os.path.join(root, "MINDsmall_train", "news.tsv")
  with open(news, "ab") as f:  # the same id twice in one file: counted like Amazon's ASINs
    f.write((_news_line("N3", "finance", "markets", "Stocks rise again") + "\n").encode())
  behaviors = os.path.join(root, "MINDsmall_train", "behaviors.tsv")
  with open(behaviors, "ab") as f:  # a user id that is not UTF-8: a malformed row, no merge
    f.write(b"7\tU\xff1\t11/13/2019 10:00:00 AM\tN1\tN3-1\n")
  _, malformed = mind.load(root)
  assert malformed.counts["duplicate news id"] == 1  # N1 in train and dev is expected, not counted
  assert malformed.counts["undecodable bytes"] == 1
  open(os.path.join(root, "MINDsmall_dev", "news.tsv"), "w").close()
  with pytest.raises(UserError, match=r"MINDsmall_dev/news.tsv: no usable news rows"):
    mind.load(root)
