"""Amazon 2014 loader on small files in the real format (json.gz reviews, literal meta)."""

import gzip
import json
import os

import pytest

from cost_jax import data
from cost_jax.data import amazon
from cost_jax.data import __main__ as cli
from cost_jax.data.processed import ProcessedDataset
from cost_jax.io import UserError


def _review(user, asin, t):
  row = {"reviewerID": user, "asin": asin, "reviewerName": "x", "helpful": [0, 0],
         "reviewText": "ok", "overall": 5.0, "summary": "fine", "reviewTime": "01 1, 2014"}
  if t is not None:
    row["unixReviewTime"] = t
  return json.dumps(row)


def write_amazon(root, category="Beauty"):
  os.makedirs(root, exist_ok=True)
  reviews = [
      _review("A1", "B2", 100),
      _review("A1", "B1", 100),  # same second as line 1: file order kept
      '{"reviewerID": "A1", "asin": ',  # bad JSON (line 3)
      _review("A1", "B3", 50),
      _review("A2", "B1", 10),
      _review("A1", "B9", 200),  # B9 not in meta (line 6)
      _review("A2", "B2", None),  # no unixReviewTime (line 7)
      _review("A3", "B3", "x"),  # bad timestamp (line 8)
      _review("A4", "B3", 7),
      _review("A4", "B2", 8),
  ]
  metas = [
      "{'asin': 'B1', 'title': 'Lip Balm &amp; Co', 'brand': 'Acme', 'price': 3.5, "
      "'categories': [['Beauty', 'Skin Care', 'Lips']], 'description': 'Soft   lips.', "
      "'salesRank': {'Beauty': 10}, 'imUrl': 'http://x/y.jpg', 'related': {'also_bought': ['B2']}}",
      "{'asin': 'B2', 'title': \"Men's Shampoo\", 'categories': [['Beauty', 'Hair Care']]}",
      "this is not a dict",  # line 3
      "{'asin': 'B3', 'categories': [['Beauty']], 'brand': 'Zed'}",
      "{'asin': 'B7', 'title': 'never reviewed'}",
  ]
  with gzip.open(os.path.join(root, f"reviews_{category}_5.json.gz"), "wt") as f:
    f.write("\n".join(reviews) + "\n")
  with gzip.open(os.path.join(root, f"meta_{category}.json.gz"), "wt") as f:
    f.write("\n".join(metas) + "\n")
  return root


def test_sequences_text_and_malformed(tmp_path):
  root = write_amazon(str(tmp_path / "amz"))
  out = data.prepare("amazon", str(tmp_path / "out"), amazon_dir=root, category="Beauty", min_seq_len=2)
  ds = ProcessedDataset.load(out)
  ids = ds.items["item_id"].tolist()
  assert ids == ["B1", "B2", "B3"]
  seqs = {u: [ids[i] for i in s] for u, s in zip(ds.user_ids(), ds.item_sequences())}
  assert seqs == {"A1": ["B3", "B2", "B1"], "A4": ["B3", "B2"]}  # A2 has 1 valid review: dropped
  assert [list(t) for t in ds.timestamps()] == [[50, 100, 100], [7, 8]]
  texts = ds.items.set_index("item_id")["text"]
  assert texts["B1"] == ("Item category: Beauty > Skin Care > Lips. Title: Lip Balm & Co. "
                         "Description: Brand: Acme. Price: $3.50. Soft lips.")
  assert texts["B2"] == "Item category: Beauty > Hair Care. Title: Men's Shampoo."
  assert texts["B3"] == "Item category: Beauty. Description: Brand: Zed."
  assert ds.items.set_index("item_id").loc["B1", "brand"] == "Acme"
  s = ds.stats
  assert s["name"] == "beauty"
  assert (s["users"], s["items"], s["interactions"], s["malformed_rows"]) == (2, 3, 5, 5)
  assert s["malformed"]["by_reason"] == {"bad JSON": 1, "bad literal": 1, "bad timestamp": 1,
                                         "item missing from the meta file": 1, "missing field": 1}
  reviews = os.path.join(root, "reviews_Beauty_5.json.gz")
  samples = s["malformed"]["samples"]
  assert samples["bad JSON"][0].startswith(reviews + ":3: ")
  assert samples["item missing from the meta file"][0].startswith(reviews + ":6: ")
  assert samples["missing field"][0].startswith(reviews + ":7: ")
  assert samples["bad timestamp"][0].startswith(reviews + ":8: ")
  assert samples["bad literal"][0].startswith(os.path.join(root, "meta_Beauty.json.gz") + ":3: ")
  assert s["filtering"]["users_dropped_too_short"] == 1  # A2
  assert s["amazon"]["meta_rows_skipped_unreviewed"] == 1
  loo = ds.leave_one_out()
  assert loo.user_ids == ["A1"] and [ids[i] for i in loo.train[0]] == ["B3"]


def test_default_min_five_and_strict(tmp_path):
  root = write_amazon(str(tmp_path / "amz"), category="Toys_and_Games")
  # Every user has fewer than 5 reviews: an empty dataset is an error, not a 0-user success.
  with pytest.raises(UserError, match=r"reviews_Toys_and_Games_5.json.gz.*no users left "
                                      r"\(read 3 users; min_seq_len 5"):
    data.prepare("amazon", str(tmp_path / "out"), amazon_dir=root, category="Toys and Games")
  assert not os.path.exists(tmp_path / "out")
  out = data.prepare("amazon", str(tmp_path / "out"), amazon_dir=root, category="Toys and Games",
                     min_seq_len=2)
  assert ProcessedDataset.load(out).stats["name"] == "toys_and_games"
  with pytest.raises(UserError, match=r"reviews_Toys_and_Games_5.json.gz:3: bad JSON"):
    data.prepare("amazon", str(tmp_path / "out2"), amazon_dir=root, category="Toys_and_Games", strict=True)


def test_missing_files_message(tmp_path):
  root = write_amazon(str(tmp_path / "amz"))
  with pytest.raises(UserError) as e:
    data.prepare("amazon", str(tmp_path / "out"), amazon_dir=root, category="Office_Products")
  msg = str(e.value)
  assert "reviews_Office_Products_5.json.gz" in msg and "meta_Office_Products.json.gz" in msg
  assert "found meta_Beauty.json.gz, reviews_Beauty_5.json.gz" in msg


def test_cli_prepare_and_clean_error(tmp_path, capsys):
  root = write_amazon(str(tmp_path / "amz"))
  out = str(tmp_path / "cli_out")
  assert cli.main(["prepare", "amazon", "--amazon_dir", root, "--category", "Beauty",
                   "--min_seq_len", "2", "--output", out]) == 0
  assert capsys.readouterr().out.strip() == out
  assert cli.main(["stats", out]) == 0
  assert json.loads(capsys.readouterr().out)["users"] == 2
  with pytest.raises(SystemExit) as e:
    cli.main(["prepare", "amazon", "--amazon_dir", root, "--category", "Beauty", "--strict",
              "--output", out])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "error: " in err and "reviews_Beauty_5.json.gz:3:" in err and "Traceback" not in err
  assert ProcessedDataset.load(out).stats["users"] == 2  # the old dir is untouched


def test_absurd_times_bad_bytes_and_empty_files_are_reported(tmp_path):
  root = tmp_path / "amz"
  root.mkdir()
  rows = [b'{"reviewerID": "u1", "asin": "A", "unixReviewTime": 1e400}',  # inf: overflow
          b'{"reviewerID": "u1", "asin": "A", "unixReviewTime": 1400000000.5}',  # not an integer
          b'{"reviewerID": "u1", "asin": "A", "unixReviewTime": 99999999999999}',  # year 5000+
          b'{"reviewerID": "u\xff1", "asin": "A", "unixReviewTime": 1}',  # not UTF-8
          b'{"reviewerID": "u2", "asin": "A", "unixReviewTime": 1}',
          b'{"reviewerID": "u2", "asin": "B", "unixReviewTime": 2}']
  with gzip.open(root / "reviews_Beauty_5.json.gz", "wb") as f:
    f.write(b"\n".join(rows) + b"\n")
  with gzip.open(root / "meta_Beauty.json.gz", "wb") as f:
    f.write(b"{'asin': 'A', 'title': 'a'}\n{'asin': 'B', 'title': 'b'}\n")
  interactions, malformed = amazon.load(str(root), "Beauty")
  assert malformed.counts == {"bad timestamp": 3, "undecodable bytes": 1}
  assert list(interactions.user_events) == ["u2"]
  with pytest.raises(UserError, match=r"reviews_Beauty_5.json.gz:1: bad timestamp"):
    amazon.load(str(root), "Beauty", strict=True)
  with gzip.open(root / "reviews_Beauty_5.json.gz", "wb") as f:
    f.write(b"")
  with pytest.raises(UserError, match=r"reviews_Beauty_5.json.gz: no usable review rows \(empty\)"):
    amazon.load(str(root), "Beauty")
