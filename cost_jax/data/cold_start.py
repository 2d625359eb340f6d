"""The cold-start split (TIGER §4.4.1): a share of the test items is removed from all training data.

`make_cold_start(src, output, fraction=0.05, seed=0)` writes a processed dataset dir in which
a seeded random `fraction` of the distinct test items (the users' last items) are *unseen*:
every interaction with them is removed from every sequence, except where one is a user's
test target. So no training or validation example shows them, in the input or the target,
while the test cases whose target is unseen measure cold-start retrieval. The item table
(and the embeddings, linked) stay whole, so the tokenizer can give every item an ID.

`stats.json` gains "cold_start": fraction, seed, the unseen item indices, and counts.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cost_jax.data.processed import (EMBEDDINGS_FILE, EMBEDDINGS_META_FILE, ITEMS_FILE,
                                     SEQUENCES_FILE, STATS_FILE, ProcessedDataset, seq_len_stats)
from cost_jax.io import StagedDir, UserError, atomic_write_json, link_or_copy

DEFAULT_FRACTION = 0.05  # TIGER §4.4.1: "we remove 5% of test items from the training data"


def choose_unseen(test_targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """Sorted item indices: round(fraction x distinct test items) of them, at random (seeded)."""
  if not 0.0 < float(fraction) < 1.0:
    raise UserError(f"cold-start fraction must be in (0, 1), got {fraction}")
  items = np.unique(np.asarray(test_targets, np.int64))
  n = max(1, int(round(float(fraction) * len(items))))
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC01D]))
  return np.sort(rng.choice(items, size=n, replace=False))


def remove_unseen(sequence: np.ndarray, unseen: np.ndarray) -> np.ndarray:
  """The sequence without unseen items, except its last item (the test target)."""
  seq = np.asarray(sequence, np.int32)
  if len(seq) == 0:
    return seq
  keep = ~np.isin(seq[:-1], unseen)
  return np.concatenate([seq[:-1][keep], seq[-1:]])


def make_cold_start(src: str, output: str, fraction: float = DEFAULT_FRACTION,
                    seed: int = 0) -> dict:
  """Writes the cold-start dataset dir (see the module docstring); returns its "cold_start" stats."""
  ds = ProcessedDataset.load(src)
  seqs = ds.item_sequences()
  loo = ds.leave_one_out()
  unseen = choose_unseen(loo.test_target, fraction, seed)
  new = [remove_unseen(s, unseen) if len(s) >= 3 else s for s in seqs]
  lengths = np.asarray([len(s) for s in new], np.int64)
  unseen_set = set(unseen.tolist())
  cold_cases = int(sum(1 for s in new if len(s) >= 3 and int(s[-1]) in unseen_set))
  removed = int(sum(len(a) - len(b) for a, b in zip(seqs, new)))
  info = {"fraction": float(fraction), "seed": int(seed), "source": os.path.abspath(ds.path),
          "distinct_test_items": int(len(np.unique(loo.test_target))),
          "unseen_items": unseen.tolist(), "num_unseen_items": int(len(unseen)),
          "interactions_removed": removed, "cold_start_test_users": cold_cases,
          "users_below_3_items_after_removal": int(
              sum(1 for a, b in zip(seqs, new) if len(a) >= 3 and len(b) < 3))}
  stats = dict(ds.stats)
  stats.update(interactions=int(lengths.sum()), **seq_len_stats(lengths), cold_start=info)
  table = pq.read_table(os.path.join(ds.path, SEQUENCES_FILE))
  cols = {"user_index": table.column("user_index"), "user_id": table.column("user_id"),
          "items": pa.array(new, pa.list_(pa.int32()))}
  if "timestamps" in table.column_names:  # the timestamps of the kept interactions
    times = []
    for s, t in zip(seqs, table.column("timestamps").to_pylist()):
      t = np.asarray(t, np.int64)
      times.append(np.concatenate([t[:-1][~np.isin(s[:-1], unseen)], t[-1:]]) if len(s) >= 3
                   else t)
    cols["timestamps"] = pa.array(times, pa.list_(pa.int64()))
  with StagedDir(os.path.abspath(output), kind="cold-start dataset",
                 legacy=(ITEMS_FILE, SEQUENCES_FILE, STATS_FILE, EMBEDDINGS_FILE,
                         EMBEDDINGS_META_FILE)) as staged:
    pq.write_table(pa.table(cols), staged.file(SEQUENCES_FILE))
    atomic_write_json(staged.file(STATS_FILE), stats)
    for f in (ITEMS_FILE, EMBEDDINGS_FILE, EMBEDDINGS_META_FILE):
      if os.path.isfile(os.path.join(ds.path, f)):
        link_or_copy(os.path.join(ds.path, f), staged.file(f))
    staged.commit()
  return info


def unseen_items(dataset_dir: str) -> np.ndarray | None:
  """The unseen item indices of a cold-start dataset dir, or None for an ordinary one."""
  info = ProcessedDataset.load(dataset_dir).stats.get("cold_start")
  if not info:
    return None
  return np.asarray(info["unseen_items"], np.int64)

