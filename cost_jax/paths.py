"""Where datasets and tokenizer outputs live by default.

  $COST_JAX_DATA_DIR  (default: $XDG_CACHE_HOME/cost_jax or ~/.cache/cost_jax)
    <dataset>/                    processed split: items.parquet, sequences.parquet,
                                  stats.json, embeddings.npy
    <dataset>/tokenizers/<method>/  semantic_ids.npy, vocabulary.json, report.json, checkpoint/
"""

from __future__ import annotations

import os


def data_root() -> str:
  root = os.environ.get("COST_JAX_DATA_DIR")
  if root:
    return os.path.abspath(os.path.expanduser(root))
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache, "cost_jax")


def dataset_dir(dataset: str, root: str | None = None) -> str:
  return os.path.join(root or data_root(), dataset)


def tokenizer_dir(dataset: str, method: str, root: str | None = None) -> str:
  return os.path.join(dataset_dir(dataset, root), "tokenizers", method)
