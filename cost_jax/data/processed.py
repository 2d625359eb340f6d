"""The one processed form shared by every dataset and its writer.

A processed directory holds:
  items.parquet      item_index int32 (dense 0..N-1, sorted), item_id str, text str
                     (CoST prompt), plus the raw text fields of the dataset.
  sequences.parquet  user_index int32, user_id str, items list<int32> (chronological),
                     timestamps list<int64> (unix seconds; -1 where the source has no
                     time, e.g. MIND click histories).
  stats.json         users, items, interactions, malformed_rows, seq_len_min/mean/
                     median/max, the papers' table columns, what filtering kept/dropped.
  embeddings.npy     float32 [N, D], row i = item_index i (written by embed.py)
  embeddings.json    model, dim, ...

Item and user indices are assigned by natural sort of the original ids (never by
order of first appearance, which leaks the test split into ids; TIGER App. D).
Writes are atomic: a temp dir beside the output, renamed into place at the end.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import sys
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cost_jax import paths
from cost_jax.io import (StagedDir, UserError, atomic_write_json, link_or_copy, read_json,
                         read_json_or)

FORMAT_VERSION = 1
ITEMS_FILE = "items.parquet"
SEQUENCES_FILE = "sequences.parquet"
STATS_FILE = "stats.json"
EMBEDDINGS_FILE = "embeddings.npy"
EMBEDDINGS_META_FILE = "embeddings.json"
REQUIRED_FILES = (ITEMS_FILE, SEQUENCES_FILE, STATS_FILE)
# Files/dirs derived from the item table: kept across a re-prepare only when the
# item table (ids and texts, in order) is unchanged.
ITEM_DERIVED = (EMBEDDINGS_FILE, EMBEDDINGS_META_FILE, "tokenizers")

_DIGITS = re.compile(r"(\d+)")


def natural_key(value: str) -> tuple:
  """Sort key where "N2" < "N10" and "9" < "10"."""
  return tuple((0, int(c), "") if c.isdigit() else (1, 0, c) for c in _DIGITS.split(value) if c)


@dataclasses.dataclass
class LeaveOneOut:
  """Leave-one-out split (TIGER §4.1.1): last item test, second to last validation."""

  user_ids: list[str]
  train: list[np.ndarray]  # items[:-2], int32, chronological
  valid_target: np.ndarray  # int32 [U], items[-2]
  test_target: np.ndarray  # int32 [U], items[-1]
  user_index: np.ndarray | None = None  # int32 [U], the users' user_index

  def __len__(self) -> int:
    return len(self.user_ids)


@dataclasses.dataclass
class ProcessedDataset:
  """A loaded processed directory (see module docstring)."""

  path: str
  name: str
  items: pd.DataFrame
  sequences: pd.DataFrame
  stats: dict

  @classmethod
  def load(cls, path: str) -> "ProcessedDataset":
    """Loads DIR (or a dataset name such as "ml100k" under cost_jax.paths.data_root())."""
    path = resolve_dir(path)
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
      raise UserError(
          f"{path}: not a processed dataset directory; missing {', '.join(missing)} "
          f"(expected {', '.join(REQUIRED_FILES)}). Build it with "
          "`python -m cost_jax.data prepare {ml100k|mind|amazon} --output DIR`.")
    stats = read_json(os.path.join(path, STATS_FILE))
    if not isinstance(stats, dict):
      raise UserError(f"{os.path.join(path, STATS_FILE)}: not a JSON object")
    items, sequences = (_read_parquet(os.path.join(path, f), cols)
                        for f, cols in ((ITEMS_FILE, ("item_index", "item_id", "text")),
                                        (SEQUENCES_FILE, ("user_index", "user_id", "items"))))
    if not np.array_equal(items["item_index"].to_numpy(), np.arange(len(items))):
      raise UserError(f"{os.path.join(path, ITEMS_FILE)}: item_index is not 0..N-1 in order")
    name = stats.get("name") or os.path.basename(os.path.normpath(path))
    return cls(path=path, name=name, items=items, sequences=sequences, stats=stats)

  @property
  def num_items(self) -> int:
    return len(self.items)

  @property
  def num_users(self) -> int:
    return len(self.sequences)

  def item_texts(self) -> list[str]:
    return self.items["text"].astype(str).tolist()

  def item_sequences(self) -> list[np.ndarray]:
    return [np.asarray(s, dtype=np.int32) for s in self.sequences["items"]]

  def timestamps(self) -> list[np.ndarray]:
    return [np.asarray(s, dtype=np.int64) for s in self.sequences["timestamps"]]

  def user_ids(self) -> list[str]:
    return self.sequences["user_id"].astype(str).tolist()

  def leave_one_out(self) -> LeaveOneOut:
    """Users with fewer than 3 items are left out (counted in stats.json)."""
    return leave_one_out(self.user_ids(), self.item_sequences(),
                         self.sequences["user_index"].to_numpy(np.int32))

  def embeddings(self) -> np.ndarray:
    file = os.path.join(self.path, EMBEDDINGS_FILE)
    if not os.path.isfile(file):
      raise UserError(
          f"{file}: no embeddings yet; run `python -m cost_jax.data embed {self.path}` "
          "(needs `pip install -e .[embed]`) or `... embed DIR --from_npy FILE`.")
    emb = np.load(file)
    if emb.ndim != 2 or emb.shape[0] != self.num_items:
      raise UserError(f"{file}: shape {emb.shape}, expected [{self.num_items}, D] (one row per item)")
    return emb.astype(np.float32, copy=False)

  def embeddings_info(self) -> dict | None:
    file = os.path.join(self.path, EMBEDDINGS_META_FILE)
    if not os.path.isfile(file):
      return None
    return read_json(file)


def _read_parquet(path: str, columns: Sequence[str]) -> pd.DataFrame:
  try:
    frame = pd.read_parquet(path)
  except (OSError, ValueError, pa.ArrowException) as e:
    raise UserError(f"{path}: cannot read ({str(e).splitlines()[0][:160]}); rebuild the dataset "
                    "with `python -m cost_jax.data prepare ... --force`") from None
  missing = [c for c in columns if c not in frame.columns]
  if missing:
    raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
  return frame


def resolve_dir(path: str) -> str:
  """A directory path, or a bare dataset name looked up under data_root()."""
  if not os.path.isdir(path) and os.sep not in path and not os.path.exists(path):
    candidate = paths.dataset_dir(path)
    if os.path.isdir(candidate):
      return candidate
  return os.path.abspath(path)


def leave_one_out(user_ids: Sequence[str], sequences: Sequence[np.ndarray],
                  user_index: np.ndarray | None = None) -> LeaveOneOut:
  keep = [i for i, s in enumerate(sequences) if len(s) >= 3]
  return LeaveOneOut(
      user_ids=[user_ids[i] for i in keep],
      train=[np.asarray(sequences[i][:-2], dtype=np.int32) for i in keep],
      valid_target=np.asarray([sequences[i][-2] for i in keep], dtype=np.int32),
      test_target=np.asarray([sequences[i][-1] for i in keep], dtype=np.int32),
      user_index=(np.asarray(user_index, np.int32)[keep] if user_index is not None
                  else np.asarray(keep, np.int32)),
  )


def items_fingerprint(item_ids: Iterable[str], texts: Iterable[str]) -> str:
  h = hashlib.sha256()
  for item_id, text in zip(item_ids, texts):
    h.update(item_id.encode())
    h.update(b"\0")
    h.update(text.encode())
    h.update(b"\n")
  return h.hexdigest()


def seq_len_stats(lengths: np.ndarray) -> dict:
  if len(lengths) == 0:
    return {"seq_len_min": 0, "seq_len_mean": 0.0, "seq_len_median": 0.0, "seq_len_max": 0}
  return {
      "seq_len_min": int(lengths.min()),
      "seq_len_mean": round(float(lengths.mean()), 4),
      "seq_len_median": float(np.median(lengths)),
      "seq_len_max": int(lengths.max()),
  }


@dataclasses.dataclass
class Interactions:
  """What a loader hands over: per-user chronological (timestamp, item_id) events and item fields.

  `user_events[user] = [(timestamp, item_id), ...]` already in final order.
  `item_fields[item_id] = {"text": CoST prompt, <raw field>: str, ...}`, same keys for all items.
  """

  user_events: dict[str, list[tuple[int, str]]]
  item_fields: dict[str, dict[str, str]]
  sources: list[dict]
  extra_stats: dict = dataclasses.field(default_factory=dict)


def build_and_write(name: str, data: Interactions, output: str, *, malformed_json: dict,
                    min_seq_len: int | None, max_seq_len: int | None, options: Mapping,
                    drop_longer: bool = False) -> dict:
  """Filters users, caps sequences, indexes items/users, writes the dir atomically. Returns stats.

  Users with fewer than `min_seq_len` events are dropped; longer than `max_seq_len`
  are cut to their latest `max_seq_len` events, or dropped with `drop_longer`
  (for ranges like CoST's Office(S) [10, 20]).
  """
  lengths_before = np.asarray([len(e) for e in data.user_events.values()], dtype=np.int64)
  users_before = len(data.user_events)
  interactions_before = int(lengths_before.sum())
  items_before = {i for events in data.user_events.values() for _, i in events}

  kept: dict[str, list[tuple[int, str]]] = {}
  dropped_short = dropped_short_interactions = capped_users = capped_interactions = 0
  dropped_long = dropped_long_interactions = 0
  for user, events in data.user_events.items():
    if min_seq_len is not None and len(events) < min_seq_len:
      dropped_short += 1
      dropped_short_interactions += len(events)
      continue
    if drop_longer and max_seq_len is not None and len(events) > max_seq_len:
      dropped_long += 1
      dropped_long_interactions += len(events)
      continue
    if max_seq_len is not None and len(events) > max_seq_len:
      capped_users += 1
      capped_interactions += len(events) - max_seq_len
      events = events[-max_seq_len:]  # keep the latest
    kept[user] = events

  if not kept:
    files = ", ".join(str(src.get("file")) for src in data.sources if src.get("file"))
    raise UserError(f"{files or name}: no users left (read {users_before} users; "
                    f"min_seq_len {min_seq_len}, max_seq_len {max_seq_len}"
                    + (", drop_longer" if drop_longer else "") + "); nothing was written")
  item_ids = sorted({i for events in kept.values() for _, i in events}, key=natural_key)
  index = {item: k for k, item in enumerate(item_ids)}
  field_names = sorted({k for f in data.item_fields.values() for k in f} - {"text"})
  items_table = pa.table({
      "item_index": pa.array(np.arange(len(item_ids), dtype=np.int32)),
      "item_id": pa.array(item_ids, pa.string()),
      "text": pa.array([data.item_fields[i]["text"] for i in item_ids], pa.string()),
      **{f: pa.array([str(data.item_fields[i].get(f, "")) for i in item_ids], pa.string())
         for f in field_names},
  })

  users = sorted(kept, key=natural_key)
  seqs = [np.asarray([index[i] for _, i in kept[u]], np.int32) for u in users]
  times = [np.asarray([t for t, _ in kept[u]], np.int64) for u in users]
  seq_table = pa.table({
      "user_index": pa.array(np.arange(len(users), dtype=np.int32)),
      "user_id": pa.array(users, pa.string()),
      "items": pa.array(seqs, pa.list_(pa.int32())),
      "timestamps": pa.array(times, pa.list_(pa.int64())),
  })

  lengths = np.asarray([len(s) for s in seqs], np.int64)
  sl = seq_len_stats(lengths)
  loo_users = int((lengths >= 3).sum())
  stats = {
      "name": name,
      "format_version": FORMAT_VERSION,
      "users": len(users),
      "items": len(item_ids),
      "interactions": int(lengths.sum()),
      "malformed_rows": int(malformed_json["rows"]),
      **sl,
      # CoST RecSys'24 Table 1 columns.
      "cost_table1": {"#User": len(users), "#Item": len(item_ids),
                      "Seq_Len": [sl["seq_len_min"], sl["seq_len_max"]],
                      "Average": round(sl["seq_len_mean"], 2), "Median": sl["seq_len_median"]},
      # TIGER NeurIPS'23 Table 2 columns.
      "tiger_table2": {"# Users": len(users), "# Items": len(item_ids),
                       "Mean": round(sl["seq_len_mean"], 2), "Median": sl["seq_len_median"]},
      "filtering": {
          "min_seq_len": min_seq_len,
          "max_seq_len": max_seq_len,
          "users_before": users_before,
          "users_kept": len(users),
          "users_dropped_too_short": dropped_short,
          "interactions_before": interactions_before,
          "interactions_dropped_with_short_users": dropped_short_interactions,
          "drop_longer": drop_longer,
          "users_dropped_too_long": dropped_long,
          "interactions_dropped_with_long_users": dropped_long_interactions,
          "users_capped": capped_users,
          "interactions_dropped_by_cap": capped_interactions,
          "items_before": len(items_before),
          "items_kept": len(item_ids),
          "items_dropped": len(items_before) - len(item_ids),
          **data.extra_stats.pop("filtering", {}),
      },
      "leave_one_out": {
          "users": loo_users,
          "users_excluded_fewer_than_3": len(users) - loo_users,
          "train_interactions": int(np.maximum(lengths[lengths >= 3] - 2, 0).sum()),
          "valid": loo_users,
          "test": loo_users,
      },
      "malformed": malformed_json,
      **data.extra_stats,
      "sources": data.sources,
      "options": dict(options),
      "items_fingerprint": items_fingerprint(item_ids, items_table.column("text").to_pylist()),
      "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  write_atomically(output, items_table, seq_table, stats)
  return stats


def write_atomically(output: str, items_table: pa.Table, seq_table: pa.Table, stats: dict) -> None:
  """Writes into a temp dir beside `output` (cost_jax.io.StagedDir), then swaps it in.

  Embeddings and tokenizer outputs of an existing dir are carried over (hard
  links) only when the item table is unchanged; otherwise they are stale and go.
  """
  output = os.path.abspath(output)
  with StagedDir(output, kind="processed dataset", keep=ITEM_DERIVED,
                 legacy=REQUIRED_FILES + ITEM_DERIVED) as staged:
    pq.write_table(items_table, staged.file(ITEMS_FILE))
    pq.write_table(seq_table, staged.file(SEQUENCES_FILE))
    atomic_write_json(staged.file(STATS_FILE), stats)
    if os.path.exists(output):
      old_fp = None
      old = read_json_or(os.path.join(output, STATS_FILE), {})
      old_fp = old.get("items_fingerprint") if isinstance(old, dict) else None
      derived = [d for d in ITEM_DERIVED if os.path.exists(os.path.join(output, d))]
      if old_fp == stats["items_fingerprint"]:
        for d in derived:
          src, dst = os.path.join(output, d), staged.file(d)
          if os.path.isdir(src):
            shutil.copytree(src, dst, copy_function=link_or_copy)
          else:
            link_or_copy(src, dst)
      elif derived:
        print(f"note: {output}: item table changed; removing stale {', '.join(derived)}",
              file=sys.stderr)
    staged.commit()



def existing_matches(output: str, options: Mapping, sources: list[dict] | None = None) -> bool:
  """True when `output` is a complete processed dir built with the same options."""
  if not all(os.path.isfile(os.path.join(output, f)) for f in REQUIRED_FILES):
    return False
  stats = read_json_or(os.path.join(output, STATS_FILE))
  if not isinstance(stats, dict):
    return False
  if stats.get("format_version") != FORMAT_VERSION:
    return False
  if json.loads(json.dumps(dict(options))) != stats.get("options"):
    return False
  if sources is not None and json.loads(json.dumps(sources)) != stats.get("sources"):
    return False
  return True
