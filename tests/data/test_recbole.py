"""The RecBole atomic-file loader, on small files in RecBole's format written here."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cost_jax import data
from cost_jax.data import recbole
from cost_jax.data.processed import ProcessedDataset
from cost_jax.io import UserError


def _write(path, lines, mode="w"):
  if mode == "wb":
    with open(path, "wb") as f:
      f.write(b"".join(lines))
  else:
    with open(path, "w", encoding="utf-8") as f:
      f.write("".join(line + "\n" for line in lines))


@pytest.fixture
def shop(tmp_path):
  d = tmp_path / "shop"
  d.mkdir()
  # Column order differs from RecBole's usual; a rating column is carried and ignored.
  _write(d / "shop.inter", [
      "timestamp:float\tuser_id:token\trating:float\titem_id:token",
      "5\tu2\t1\ti3",
      "1\tu1\t1\ti1",
      "1\tu1\t1\ti2",        # same timestamp as the line above: file order decides
      "0\tu1\t1\ti3",
      "2.5\tu1\t1\ti10",
      "x\tu1\t1\ti1",        # bad timestamp
      "inf\tu2\t1\ti1",      # non-finite
      "1e300\tu2\t1\ti1",    # out of range
      "3\tu2\t1",            # wrong field count
      "4\tu2\t1\ti99",       # item not in the .item file
      "6\tu2\t1\ti1",
      "7\tu2\t1\ti2",
  ])
  _write(d / "shop.item", [
      "item_id:token\ttitle:token_seq\tbrand:token\tcategories:token_seq",
      "i1\tRed Lipstick\tAcme\tMakeup Lips",
      "i2\tBlue Shampoo\t\tHair",
      "i3\tGreen Soap\tSoapCo\t",
      "i10\tTen\tTenCo\tMakeup",
      "i2\tDuplicate\tX\tY",   # duplicate id
  ])
  return d


def test_load_orders_by_timestamp_then_file_position_and_counts_bad_rows(shop):
  interactions, malformed, name = recbole.load(str(shop))
  assert name == "shop"
  ev = interactions.user_events
  assert [i for _, i in ev["u1"]] == ["i3", "i1", "i2", "i10"]
  assert [t for t, _ in ev["u1"]] == [0, 1, 1, 2]
  assert [i for _, i in ev["u2"]] == ["i3", "i1", "i2"]
  assert malformed.counts == {"bad timestamp": 3, "wrong field count": 1,
                              "item missing from the items file": 1, "duplicate item id": 1}
  samples = malformed.to_json()["samples"]
  assert samples["bad timestamp"][0].startswith(f"{shop / 'shop.inter'}:7: bad timestamp")
  assert samples["duplicate item id"][0].startswith(f"{shop / 'shop.item'}:6:")
  # CoST's prompt: category slot from `categories`, title slot from `title`, the rest described.
  assert interactions.item_fields["i1"]["text"] == (
      "Item category: Makeup Lips. Title: Red Lipstick. Description: brand: Acme.")
  assert interactions.item_fields["i2"]["text"] == "Item category: Hair. Title: Blue Shampoo."


def test_duplicated_interaction_rows_are_dropped_and_counted_or_refused(tmp_path):
  rows = ["u1\ti1\t0", "u1\ti2\t1", "u1\ti3\t2", "u2\ti1\t0", "u2\ti3\t1", "u2\ti2\t2"]
  _write(tmp_path / "d.inter", ["user_id:token\titem_id:token\ttimestamp:float"] + rows + rows)
  _write(tmp_path / "d.item", ["item_id:token\ttitle:token_seq", "i1\tA", "i2\tB", "i3\tC"])
  interactions, malformed, _ = recbole.load(str(tmp_path))
  assert malformed.counts == {"duplicate interaction": 6}
  # Each user keeps one copy: validation (i2 / i3) and test (i3 / i2) targets differ.
  assert [i for _, i in interactions.user_events["u1"]] == ["i1", "i2", "i3"]
  assert malformed.to_json()["samples"]["duplicate interaction"][0].startswith(
      f"{tmp_path / 'd.inter'}:8: duplicate interaction")
  with pytest.raises(UserError, match=r"d\.inter:8: duplicate interaction .*--strict"):
    recbole.load(str(tmp_path), strict=True)


def test_token_seq_text_is_embedded_as_written(tmp_path):
  # A token_seq field is a space-separated string: its text goes into the prompt unchanged.
  _write(tmp_path / "a.inter", ["user_id:token\titem_id:token", "u\ti1", "u\ti2", "u\ti1"])
  _write(tmp_path / "a.item", ["item_id:token\ttitle:token_seq\tcategories:token_seq",
                               "i1\tGel 1oz.\tBeauty > Hair Care > Styling Products",
                               "i2\tSoap\t"])
  interactions, _, _ = recbole.load(str(tmp_path))
  assert interactions.item_fields["i1"]["text"] == (
      "Item category: Beauty > Hair Care > Styling Products. Title: Gel 1oz.")


def test_text_fields_choose_and_order_the_prompt(shop):
  interactions, _, _ = recbole.load(str(shop), text_fields=["title", "missing_field"])
  assert interactions.item_fields["i1"]["text"] == "Title: Red Lipstick."
  assert interactions.item_fields["i1"]["brand"] == "Acme"  # raw fields are kept


def test_prepare_writes_the_processed_form(shop, tmp_path):
  out = data.prepare("recbole", str(tmp_path / "out"), recbole_dir=str(shop),
                     text_fields="title,brand", min_seq_len=3)
  ds = ProcessedDataset.load(out)
  assert ds.name == "shop"
  assert ds.num_users == 2 and ds.num_items == 4
  # Items indexed by natural sort of their ids: i1, i2, i3, i10.
  assert ds.items["item_id"].tolist() == ["i1", "i2", "i3", "i10"]
  assert [list(s) for s in ds.item_sequences()] == [[2, 0, 1, 3], [2, 0, 1]]
  assert ds.stats["malformed_rows"] == 6
  assert ds.stats["recbole"]["text_fields"] == ["title", "brand"]


def test_undecodable_bytes_are_malformed_rows_not_merged_ids(tmp_path):
  d = tmp_path / "raw"
  d.mkdir()
  _write(d / "raw.inter", [b"user_id:token\titem_id:token\n", b"u\xff1\ti1\n", b"u\xfe1\ti1\n",
                           b"u1\ti1\n", b"u1\ti2\n"], mode="wb")
  _write(d / "raw.item", ["item_id:token\ttitle:token_seq", "i1\tA", "i2\tB"])
  interactions, malformed, _ = recbole.load(str(d))
  assert list(interactions.user_events) == ["u1"]
  assert malformed.counts == {"undecodable bytes": 2}
  # No timestamp column: file order.
  assert [i for _, i in interactions.user_events["u1"]] == ["i1", "i2"]
  with pytest.raises(UserError, match=r"raw.inter:2: undecodable bytes"):
    recbole.load(str(d), strict=True)


def test_bad_headers_and_empty_files_name_the_file(tmp_path):
  d = tmp_path / "bad"
  d.mkdir()
  _write(d / "bad.inter", ["user_id\titem_id:token"])
  with pytest.raises(UserError, match=r"bad.inter:1: header column 'user_id'"):
    recbole.load(str(d))
  _write(d / "bad.inter", ["user_id:token\tthing:token", "u\tx"])
  with pytest.raises(UserError, match=r"bad.inter:1: header has no 'item_id' field"):
    recbole.load(str(d))
  _write(d / "bad.inter", [])
  with pytest.raises(UserError, match=r"bad.inter: empty file"):
    recbole.load(str(d))
  _write(d / "bad.inter", ["user_id:token\titem_id:token"])
  with pytest.raises(UserError, match=r"no usable interaction rows"):
    recbole.load(str(d))
  os.remove(d / "bad.inter")
  with pytest.raises(UserError, match="exactly one <name>.inter"):
    recbole.load(str(d))


def test_cli_one_line_error_and_exit_code(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "cost_jax.data", "prepare", "recbole",
                         "--recbole_dir", str(tmp_path / "nope"), "--output", str(tmp_path / "o")],
                        capture_output=True, text=True)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  assert "not a folder" in proc.stderr.strip().splitlines()[-1]


BEAUTY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "..", "shared", "data", "amazon2014-beauty")


@pytest.mark.skipif(not os.path.isdir(BEAUTY), reason="../shared/data/amazon2014-beauty absent")
def test_tiger_beauty_cut_loads_with_its_published_counts(tmp_path):
  out = data.prepare("recbole", str(tmp_path / "beauty"), recbole_dir=BEAUTY)
  stats = json.load(open(os.path.join(out, "stats.json")))
  # TIGER Table 2: 22,363 users, 12,101 items, mean sequence length 8.87 (8.876 here).
  assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
  assert abs(stats["seq_len_mean"] - 8.87) < 0.01
  assert stats["malformed_rows"] == 0
  ds = ProcessedDataset.load(out)
  assert ds.name == "beauty"
  assert np.all(np.diff(ds.timestamps()[0]) >= 0)


def test_reproduction_prepares_from_a_recbole_folder(shop, tmp_path):
  from cost_jax.experiments import cli, stages  # pylint: disable=import-outside-toplevel
  args = cli.build_parser().parse_args(["--recbole_dir", str(shop), "--output", str(tmp_path)])
  prof = cli.profile_from_args(args)
  assert prof.dataset == "shop"
  assert prof.data == {"loader": "recbole", "recbole_dir": str(shop)}
  out = stages.REAL_FNS.prepare(prof.dataset, str(tmp_path / "ds"), **prof.data)
  assert ProcessedDataset.load(out).num_users == 2
  # --dataset_dir names the run after the processed folder's own stats, not the default ml100k.
  args = cli.build_parser().parse_args(["--dataset_dir", out, "--output", str(tmp_path / "r")])
  assert cli.profile_from_args(args).dataset == "shop"


def test_outputs_never_replace_what_the_command_did_not_write(shop, tmp_path):
  out = tmp_path / "mine"
  out.mkdir()
  (out / "notes.txt").write_text("my notes")
  with pytest.raises(UserError, match=r"holds files this command did not write \(notes.txt\)"):
    data.prepare("recbole", str(out), recbole_dir=str(shop))
  assert (out / "notes.txt").read_text() == "my notes" and sorted(os.listdir(out)) == ["notes.txt"]
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  with pytest.raises(UserError, match="not a directory"):
    data.prepare("recbole", str(a_file), recbole_dir=str(shop))
  assert a_file.read_text() == "x"
  # Its own output is replaced (here: a forced rebuild) ...
  own = data.prepare("recbole", str(tmp_path / "own"), recbole_dir=str(shop))
  data.prepare("recbole", own, recbole_dir=str(shop), force=True)
  # ... but not once a user file was added to it.
  with open(os.path.join(own, "extra.csv"), "w") as f:
    f.write("1")
  with pytest.raises(UserError, match=r"extra.csv"):
    data.prepare("recbole", own, recbole_dir=str(shop), force=True)
  assert os.path.isfile(os.path.join(own, "extra.csv"))
