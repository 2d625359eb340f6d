"""Evaluator: constrained beam search over a split -> Recall/NDCG@K, metrics.json, topk.npy.

  python -m cost_jax.evaluate --model_dir=DIR [--split=test] [--num_beams=50] [--num_users=N]

reads the model_dir written by `cost_jax.train` (config.json, item_tokens.npy, the
latest Orbax checkpoint), decodes the top-K items of every user of the split
with trie-constrained beam search (cost_jax.decoding.predict_topk), and writes
beside the checkpoints (split "test"; other splits get a `_{split}` suffix):

  metrics.json   recall@{5,10,20,40}, ndcg@{5,10,20,40}, invalid_id_rate,
                 num_users, plus split, step, num_beams, topk
  topk.npy       int32 [num_users, K] item indices, best first (-1 = invalid ID)
  targets.npy    int32 [num_users] held-out item index
  user_ids.npy   int32 [num_users] user_index of each row
  scores.npy     float32 [num_users, K] beam log-probabilities

so the ranking can be re-scored independently. Each file is written to a temp
file and renamed into place, metrics.json last.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cost_jax.errors import UserError, exits_cleanly

KS = (5, 10, 20, 40)  # CoST §4.1: Recall/NDCG@{5,10,20,40}; TIGER §4.1.2: @{5,10}
DEFAULT_NUM_BEAMS = 50  # >= max(KS) = 40: the top-40 list needs at least 40 beams
METRIC_KEYS = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in KS) + (
    "invalid_id_rate", "num_users")


def result_file(model_dir: str, name: str, split: str) -> str:
  """DIR/metrics.json for the test split, DIR/metrics_validation.json otherwise."""
  stem, ext = os.path.splitext(name)
  return os.path.join(model_dir, name if split == "test" else f"{stem}_{split}{ext}")


def score_topk(topk_items: np.ndarray, targets: np.ndarray,
               ks: Sequence[int] = KS) -> dict[str, float]:
  """Recall@K / NDCG@K (one relevant item per user) + invalid_id_rate + num_users.

  cost_jax.metrics.retrieval_metrics: invalid_id_rate is the share of returned
  slots holding -1 (a decoded sequence that is no item's semantic ID, or no beam);
  it is 0 under constrained decoding whenever the catalogue has >= topk items.
  A K larger than the list length is scored on the list (Recall@40 of a top-20
  list = Recall@20).
  """
  from cost_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  topk_items = np.asarray(topk_items)
  targets = np.asarray(targets)
  if topk_items.ndim != 2 or topk_items.shape[0] != targets.shape[0]:
    raise ValueError(f"topk {topk_items.shape} vs targets {targets.shape}")
  out: dict[str, Any] = {k: float(v) for k, v in
                         metrics_lib.retrieval_metrics(topk_items, targets, ks=ks).items()}
  out["num_users"] = int(targets.shape[0])
  return out


def make_predict_fn(module: Any, item_tokens: np.ndarray, num_beams: int, topk: int,
                    level_offsets: Sequence[int] | None = None,
                    level_sizes: Sequence[int] | None = None) -> Callable[[Any, Any], tuple]:
  """(params, encoder_input_tokens) -> (item_index [B, topk], scores [B, topk]).

  Trie-constrained beam search (cost_jax.decoding.predict_topk, jitted there with
  the trie as an argument, compiled once per batch shape).
  """
  from cost_jax import decoding  # pylint: disable=g-import-not-at-top
  if num_beams < topk:
    raise UserError(f"num_beams ({num_beams}) must be >= topk ({topk}): beam search returns "
                    "at most num_beams items")
  trie = decoding.ItemTrie.from_tokens(np.asarray(item_tokens, np.int32), level_offsets,
                                       level_sizes)

  def predict(params, encoder_input_tokens):
    return decoding.predict_topk(module, params, encoder_input_tokens, trie, num_beams, topk)

  return predict


def predict_arrays(predict_fn: Callable, params: Any, encoder_input_tokens: np.ndarray,
                   batch_size: int, sharding: Any = None, desc: str = "decode",
                   show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Runs `predict_fn` over all rows in fixed-size batches (last one padded by repeats)."""
  import jax  # pylint: disable=g-import-not-at-top
  from cost_jax.progress import Progress  # pylint: disable=g-import-not-at-top
  n = len(encoder_input_tokens)
  if n == 0:
    raise UserError("nothing to evaluate: the split has no users")
  num_batches = -(-n // batch_size)
  progress = Progress(num_batches, desc=desc, unit="batches",
                      items_per_step=batch_size) if show_progress else None
  items, scores = [], []
  for b in range(num_batches):
    rows = np.arange(b * batch_size, (b + 1) * batch_size)
    rows = np.where(rows < n, rows, rows % n)  # pad with repeats, dropped below
    x = jax.device_put(encoder_input_tokens[rows], sharding)
    it, sc = predict_fn(params, x)
    items.append(np.asarray(it))
    scores.append(np.asarray(sc, np.float32))
    if progress:
      progress.update(b + 1)
  return (np.concatenate(items)[:n].astype(np.int32), np.concatenate(scores)[:n])


def _atomic_save(path: str, write: Callable[[Any], None], binary: bool = True) -> None:
  d = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb" if binary else "w") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_results(model_dir: str, split: str, metrics: Mapping[str, Any], topk_items: np.ndarray,
                  targets: np.ndarray, user_ids: np.ndarray,
                  scores: np.ndarray | None = None) -> str:
  """Writes topk/targets/user_ids(/scores).npy then metrics.json atomically; returns its path."""
  os.makedirs(model_dir, exist_ok=True)
  arrays = {"topk.npy": np.asarray(topk_items, np.int32),
            "targets.npy": np.asarray(targets, np.int32),
            "user_ids.npy": np.asarray(user_ids, np.int32)}
  if scores is not None:
    arrays["scores.npy"] = np.asarray(scores, np.float32)
  for name, arr in arrays.items():
    _atomic_save(result_file(model_dir, name, split), lambda f, a=arr: np.save(f, a))
  path = result_file(model_dir, "metrics.json", split)
  _atomic_save(path, lambda f: f.write(json.dumps(dict(metrics), indent=2) + "\n"), binary=False)
  return path


def evaluate_arrays(module: Any, params: Any, arrays: Any, item_tokens: np.ndarray, *,
                    num_beams: int = DEFAULT_NUM_BEAMS, topk: int = max(KS), batch_size: int = 64,
                    sharding: Any = None, predict_fn: Callable | None = None,
                    desc: str = "decode", show_progress: bool = True,
                    level_offsets: Sequence[int] | None = None,
                    level_sizes: Sequence[int] | None = None,
                    ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
  """Decodes and scores an `input_pipeline.ExampleArrays` split: (metrics, topk, scores)."""
  if predict_fn is None:
    predict_fn = make_predict_fn(module, item_tokens, num_beams, topk, level_offsets, level_sizes)
  items, scores = predict_arrays(predict_fn, params, arrays.encoder_input_tokens, batch_size,
                                 sharding=sharding, desc=desc, show_progress=show_progress)
  return score_topk(items, arrays.item_index), items, scores


def evaluate(model_dir: str, split: str = "test", *, num_beams: int | None = None,
             topk: int | None = None, batch_size: int | None = None,
             num_users: int | None = None, step: int | None = None,
             write: bool = True) -> dict[str, Any]:
  """Scores the latest (or `step`) checkpoint of a cost_jax.train model_dir on `split`."""
  from cost_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  run = train_lib.load_run(model_dir, step=step)
  cfg = run.train_config
  num_beams = num_beams or cfg.num_beams
  topk = topk or cfg.topk
  batch_size = batch_size or cfg.eval_batch_size
  arrays = run.split_arrays(split)
  from cost_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  arrays = input_pipeline.eval_subset(arrays, num_users, cfg.seed)
  batch_size = run.round_batch(batch_size)
  metrics, items, scores = evaluate_arrays(
      run.module, run.params, arrays, run.item_tokens, num_beams=num_beams, topk=topk,
      batch_size=batch_size, sharding=run.batch_sharding, desc=f"eval {split}",
      level_offsets=run.record.get("layout", {}).get("level_offsets"),
      level_sizes=run.record.get("layout", {}).get("codebook_sizes"))
  metrics.update(split=split, step=run.step, num_beams=num_beams, topk=topk)
  if write:
    write_results(model_dir, split, metrics, items, arrays.item_index, arrays.user_index, scores)
  return metrics


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m cost_jax.evaluate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model_dir", required=True)
  p.add_argument("--split", default="test", choices=("test", "validation", "train"))
  p.add_argument("--num_beams", type=int, default=None,
                 help=f"beam size (default: the run's TrainConfig.num_beams, {DEFAULT_NUM_BEAMS})")
  p.add_argument("--topk", type=int, default=None, help="items kept per user (default 40)")
  p.add_argument("--batch_size", type=int, default=None)
  p.add_argument("--num_users", type=int, default=None, help="random user subsample (default all)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
  args = p.parse_args(argv)
  return _main(args)


@exits_cleanly
def _main(args: argparse.Namespace) -> int:
  metrics = evaluate(args.model_dir, args.split, num_beams=args.num_beams, topk=args.topk,
                     batch_size=args.batch_size, num_users=args.num_users, step=args.step)
  print(json.dumps(metrics, indent=2))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
