"""The tokenizer directory: the one writer and the one reader of stage 1's output.

A tokenizer dir (written by `python -m cost_jax.tokenize`) holds:

  semantic_ids.npy   int32 [num_items, L] codes, row i = item i, rows distinct
  vocabulary.json    the TokenLayout (codebook sizes, level offsets, user buckets), the method,
                     and `semantic_ids_file` (the name of the IDs file, default semantic_ids.npy)
  config.json        method, seed, input_dim, num_items and the TokenizerConfig
  report.json        usage, collisions, quality, training history
  checkpoint/        Orbax params of a neural tokenizer, or baseline.npz for the baselines

Stage 2 (the SeqIO tasks, the trainer, the T5X decode_fn) reads it only through
`load_semantic_ids` / `load_item_tokens`, so every reader applies the same checks.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import orbax.checkpoint as ocp

from cost_jax.io import UserError, atomic_write_json, atomic_write_npy, read_json
from cost_jax.tokenizer.layout import TokenLayout

IDS_FILE = "semantic_ids.npy"
VOCABULARY_FILE = "vocabulary.json"
CONFIG_FILE = "config.json"
REPORT_FILE = "report.json"
CHECKPOINT_SUBDIR = "checkpoint"
BASELINE_FILE = "baseline.npz"
# What a tokenizer dir holds (cost_jax.io.StagedDir refuses to replace a dir with anything else).
OUTPUT_KIND = "tokenizer"
FILES = (IDS_FILE, VOCABULARY_FILE, CONFIG_FILE, REPORT_FILE, CHECKPOINT_SUBDIR, BASELINE_FILE)


def _missing(path: str, tokenizer_dir: str) -> UserError:
  return UserError(f"{path}: missing; build the tokenizer dir with `python -m cost_jax.tokenize "
                   f"--embeddings EMB --method METHOD --output {tokenizer_dir}`")


def ids_path(tokenizer_dir: str) -> str:
  """The semantic-IDs file named by vocabulary.json (`semantic_ids_file`), else the default."""
  vocab = os.path.join(tokenizer_dir, VOCABULARY_FILE)
  name = IDS_FILE
  if os.path.isfile(vocab):
    name = str(read_json(vocab).get("semantic_ids_file") or IDS_FILE)
  return os.path.join(tokenizer_dir, name)


def load_layout(tokenizer_dir: str) -> TokenLayout:
  vocab = os.path.join(os.fspath(tokenizer_dir), VOCABULARY_FILE)
  if not os.path.isdir(tokenizer_dir):
    raise UserError(f"{tokenizer_dir}: tokenizer dir does not exist "
                    "(run `python -m cost_jax.tokenize --output DIR` first)")
  if not os.path.isfile(vocab):
    raise _missing(vocab, tokenizer_dir)
  return TokenLayout.load(vocab)


def load_semantic_ids(tokenizer_dir: str,
                      num_items: int | None = None) -> tuple[TokenLayout, np.ndarray]:
  """(layout, codes int32 [N, L]) of a tokenizer dir, validated against its layout."""
  tokenizer_dir = os.fspath(tokenizer_dir)
  layout = load_layout(tokenizer_dir)
  vocab = os.path.join(tokenizer_dir, VOCABULARY_FILE)
  path = ids_path(tokenizer_dir)
  if not os.path.isfile(path):
    raise _missing(path, tokenizer_dir)
  try:
    ids = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f"{path}: cannot read ({str(e).splitlines()[0] if str(e) else e})") from None
  if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
    raise UserError(f"{path}: expected an int array [num_items, L], got {ids.dtype} {ids.shape}")
  if ids.shape[1] != layout.num_levels:
    raise UserError(f"{path}: IDs have length {ids.shape[1]} but {vocab} has "
                    f"{layout.num_levels} levels")
  bad = (ids < 0) | (ids >= np.asarray(layout.codebook_sizes))
  if bad.any():
    row, col = map(int, np.argwhere(bad)[0])
    raise UserError(f"{path}: row {row} level {col}: code {int(ids[row, col])} outside "
                    f"[0, {layout.codebook_sizes[col]}) of {vocab}")
  if num_items is not None and ids.shape[0] != num_items:
    raise UserError(f"{path}: {ids.shape[0]} rows but the dataset has {num_items} items")
  return layout, ids.astype(np.int32)


def first_duplicate(ids: np.ndarray) -> tuple[int, int] | None:
  """(i, j), i < j, the first two rows with the same ID (by j), or None when all are unique."""
  if len(ids) < 2:
    return None
  _, first, inverse = np.unique(ids, axis=0, return_index=True, return_inverse=True)
  inverse = np.asarray(inverse).reshape(-1)
  dup = np.flatnonzero(first[inverse] != np.arange(len(ids)))
  if not dup.size:
    return None
  j = int(dup[0])
  return int(first[inverse[j]]), j


def load_item_tokens(tokenizer_dir: str,
                     num_items: int | None = None) -> tuple[TokenLayout, np.ndarray]:
  """(layout, item_tokens int32 [N, L]): every item's semantic ID in token space. The IDs must
  be unique (a generated ID names one item): a repeated one is refused here, before training."""
  layout, codes = load_semantic_ids(tokenizer_dir, num_items)
  dup = first_duplicate(codes)
  if dup is not None:
    i, j = dup
    raise UserError(f"{ids_path(tokenizer_dir)}: items {i} and {j} share the semantic ID "
                    f"{codes[j].tolist()}; generative retrieval needs unique IDs (re-tokenize "
                    "with dedup cost_reassign or tiger_extra_token)")
  return layout, layout.codes_to_tokens(codes)


def read_method(tokenizer_dir: str, default: str = "tok") -> str:
  """The tokenizer method recorded in vocabulary.json (`default` if unreadable)."""
  try:
    return str(read_json(os.path.join(tokenizer_dir, VOCABULARY_FILE)).get("method", default))
  except UserError:
    return default


def layout_for(ids: np.ndarray, sizes, dedup: str) -> TokenLayout:
  """The layout of de-duplicated IDs: TIGER's extra token adds a level of its own size."""
  sizes = list(sizes)
  if dedup == "tiger_extra_token":
    sizes.append(int(ids[:, -1].max()) + 1 if len(ids) else 1)
  return TokenLayout(tuple(sizes))


def write_ids(directory: str, ids: np.ndarray, layout: TokenLayout, *, method: str,
              dedup: str) -> None:
  """semantic_ids.npy, then vocabulary.json (which names it)."""
  atomic_write_npy(os.path.join(directory, IDS_FILE), np.asarray(ids, np.int32))
  atomic_write_json(os.path.join(directory, VOCABULARY_FILE), layout.to_json_dict(
      method=method, num_items=int(len(ids)), semantic_ids_file=IDS_FILE, dedup=dedup))


def write_json(directory: str, name: str, obj: Mapping[str, Any]) -> None:
  atomic_write_json(os.path.join(directory, name), dict(obj))


def read_config(tokenizer_dir: str) -> dict:
  return read_json(os.path.join(os.fspath(tokenizer_dir), CONFIG_FILE))


def save_checkpoint(directory: str, params: Any, meta: Mapping[str, Any]) -> None:
  """Orbax: params + config, under directory/checkpoint."""
  path = os.path.abspath(os.path.join(directory, CHECKPOINT_SUBDIR))
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                             config=ocp.args.JsonSave(dict(meta))))


def restore_checkpoint(directory: str, abstract_params: Any) -> Any:
  path = os.path.abspath(os.path.join(directory, CHECKPOINT_SUBDIR))
  if not os.path.isdir(path):
    raise UserError(f"{path}: no checkpoint directory")
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      out = ckptr.restore(path, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_params)))
  except Exception as e:  # orbax raises a variety of errors for damaged checkpoints
    raise UserError(f"{path}: cannot restore checkpoint ({str(e).splitlines()[0][:200]})") from None
  return out["params"]
