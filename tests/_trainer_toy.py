"""A tiny synthetic next-item task for the trainer/evaluator tests (not a test module).

Items 0..N-1 with 2-level semantic IDs (i // 6, i % 6). Every user's sequence
follows next = (5 * last + 7) mod N from a random start, so the next item is a
deterministic function of the last one and a small model can learn it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from cost_jax.tokenizer.layout import TokenLayout

NUM_ITEMS = 24
CODEBOOK_SIZES = (4, 6)


def successor(i: int) -> int:
  return (5 * i + 7) % NUM_ITEMS


def write_processed(path: str, num_users: int = 60, seed: int = 0, min_len: int = 5,
                    max_len: int = 9) -> str:
  """A processed dataset dir (items/sequences parquet + stats.json)."""
  rng = np.random.default_rng(seed)
  os.makedirs(path, exist_ok=True)
  items = pd.DataFrame({"item_index": np.arange(NUM_ITEMS, dtype=np.int32),
                        "item_id": [f"i{i}" for i in range(NUM_ITEMS)],
                        "text": [f"Item category: toy. Title: item {i}."
                                 for i in range(NUM_ITEMS)]})
  seqs, times = [], []
  for _ in range(num_users):
    n = int(rng.integers(min_len, max_len + 1))
    s = [int(rng.integers(NUM_ITEMS))]
    for _ in range(n - 1):
      s.append(successor(s[-1]))
    seqs.append(np.asarray(s, np.int32))
    times.append(np.arange(n, dtype=np.int64))
  sequences = pd.DataFrame({"user_index": np.arange(num_users, dtype=np.int32),
                            "user_id": [f"u{u}" for u in range(num_users)],
                            "items": seqs, "timestamps": times})
  items.to_parquet(os.path.join(path, "items.parquet"))
  sequences.to_parquet(os.path.join(path, "sequences.parquet"))
  lengths = np.asarray([len(s) for s in seqs])
  with open(os.path.join(path, "stats.json"), "w") as f:
    json.dump({"name": os.path.basename(path), "users": num_users, "items": NUM_ITEMS,
               "interactions": int(lengths.sum()), "malformed_rows": 0,
               "seq_len_min": int(lengths.min()), "seq_len_mean": float(lengths.mean()),
               "seq_len_median": float(np.median(lengths)), "seq_len_max": int(lengths.max())}, f)
  return path


def write_tokenizer(path: str, num_user_buckets: int = 16) -> str:
  """A tokenizer dir: semantic_ids.npy + vocabulary.json."""
  os.makedirs(path, exist_ok=True)
  ids = np.stack([np.arange(NUM_ITEMS) // 6, np.arange(NUM_ITEMS) % 6], axis=1).astype(np.int32)
  np.save(os.path.join(path, "semantic_ids.npy"), ids)
  layout = TokenLayout(CODEBOOK_SIZES, num_user_buckets=num_user_buckets)
  with open(os.path.join(path, "vocabulary.json"), "w") as f:
    json.dump(layout.to_json_dict(method="toy", num_items=NUM_ITEMS,
                                  semantic_ids_file="semantic_ids.npy", dedup="none"), f)
  return path


def tiny_model_overrides() -> dict:
  """A model small enough to train in seconds on one CPU core."""
  return dict(emb_dim=32, num_heads=2, head_dim=16, num_encoder_layers=1, num_decoder_layers=1,
              mlp_dim=64, dropout_rate=0.0)


def fast_train_overrides(**kw) -> dict:
  d = dict(batch_size=32, optimizer="adamw", learning_rate=3e-3, lr_schedule="constant",
           num_train_steps=40, log_every=10, eval_every=0, checkpoint_every=20,
           num_beams=10, topk=10, eval_batch_size=32, seed=0)
  d.update(kw)
  return d
