"""Evaluator: constrained beam search over a split -> Recall/NDCG@K, metrics.json, topk.npy.

`evaluate(model_dir, split)` reads a model_dir written by the trainer (cost_jax.seq2seq.run_dir),
decodes the top-K items of every user of the split with trie-constrained beam search
(cost_jax.seq2seq.decoding.predict_topk) and writes the split's files with
cost_jax.results.write_results (metrics.json, topk.npy, targets.npy, user_ids.npy,
scores.npy = beam log-probabilities). CLI: `python -m cost_jax.evaluate` (cost_jax.seq2seq.cli).
A scoring never replaces a record already on disk (the trainer's test record, its validation
sample of `eval_num_users` users, or an earlier scoring): another scoring (step, users, beams,
list length) is written under `{split}_step{S}_users{N}_beams{B}_top{K}`; the same scoring
again leaves the record as it is when it gives the same lists, and is written under
`<name>_rescore<n>` when it does not (e.g. decoded on another machine, where near-ties can
swap). So re-scoring a finished reproduction stage never changes its files (which would make
the next `reproduce` re-run the stage). Paths are printed on stderr.
"""

from __future__ import annotations

import os
import sys

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cost_jax import stop
from cost_jax.io import UserError, read_json_or
from cost_jax.progress import Progress
from cost_jax.results import result_file, score_topk, write_results
from cost_jax.seq2seq import decoding, devices, run_dir, splits
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq.selection import SELECTION_KEYS
from cost_jax.seq2seq.trie import ItemTrie



def check_beams(num_beams: int, topk: int) -> None:
  if num_beams < topk:
    raise UserError(f"num_beams ({num_beams}) must be >= topk ({topk}): beam search returns "
                    "at most num_beams items")


def physical_memory_bytes() -> int | None:
  """This machine's RAM (None where the OS does not say)."""
  try:
    return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
  except (ValueError, OSError, AttributeError):
    return None


def decode_memory_bytes(model_config: Any, batch_size: int, num_beams: int, input_len: int,
                        id_length: int) -> int:
  """A lower bound on the memory of one beam-search batch, float32: per beam, the decoder's
  cross-attention keys/values over the input and self-attention cache over the ID, and a row
  of logits over the vocabulary (kept for the top-k of each step)."""
  c = model_config
  kv = c.num_decoder_layers * 2 * c.num_heads * c.head_dim
  per_beam = kv * (input_len + id_length) + 2 * c.vocab_size + c.emb_dim * input_len
  return 4 * int(batch_size) * int(num_beams) * int(per_beam)


def check_decode_fits(model_config: Any, batch_size: int, num_beams: int, input_len: int,
                      id_length: int, where: str) -> None:
  """Refuses up front a decode whose batches cannot fit in this machine's memory (80% of it),
  with the estimate and what to lower."""
  need = decode_memory_bytes(model_config, batch_size, num_beams, input_len, id_length)
  have = physical_memory_bytes()
  if have is not None and need > 0.8 * have:
    fit_batch = max(1, int(0.8 * have // max(need // max(batch_size, 1), 1)))
    raise UserError(f"{where}: a beam search of {num_beams} beams over batches of {batch_size} "
                    f"needs at least {need / 2**30:.1f} GiB, more than this machine's "
                    f"{have / 2**30:.1f} GiB; lower TrainConfig.num_beams or TrainConfig.eval_batch_size "
                    f"(e.g. --gin.TrainConfig.eval_batch_size={fit_batch})")


def make_predict_fn(module: Any, item_tokens: np.ndarray, num_beams: int, topk: int,
                    level_offsets: Sequence[int] | None = None,
                    level_sizes: Sequence[int] | None = None,
                    score_over: str = decoding.DEFAULT_SCORE_OVER) -> Callable[[Any, Any], tuple]:
  """(params, encoder_input_tokens) -> (item_index [B, topk], scores [B, topk]).

  Trie-constrained beam search (cost_jax.seq2seq.decoding.predict_topk, jitted there with
  the trie as an argument, compiled once per batch shape).
  """
  check_beams(num_beams, topk)
  trie = ItemTrie.from_tokens(np.asarray(item_tokens, np.int32), level_offsets, level_sizes)

  def predict(params, encoder_input_tokens):
    return decoding.predict_topk(module, params, encoder_input_tokens, trie, num_beams, topk,
                                 score_over=score_over)

  return predict


def predict_arrays(predict_fn: Callable, params: Any, encoder_input_tokens: np.ndarray,
                   batch_size: int, sharding: Any = None, desc: str = "decode",
                   show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Runs `predict_fn` over all rows in fixed-size batches (last one padded by repeats)."""
  n = len(encoder_input_tokens)
  if n == 0:
    raise UserError("nothing to evaluate: the split has no users")
  num_batches = -(-n // batch_size)
  progress = Progress(num_batches, desc=desc, unit="batches",
                      items_per_step=batch_size, items_name="users") if show_progress else None
  items, scores = [], []
  for b in range(num_batches):
    rows = np.arange(b * batch_size, (b + 1) * batch_size)
    rows = np.where(rows < n, rows, rows % n)  # pad with repeats, dropped below
    x = devices.put(encoder_input_tokens[rows], sharding)
    it, sc = predict_fn(params, x)
    items.append(devices.to_host(it))
    scores.append(devices.to_host(sc).astype(np.float32))
    if progress:
      progress.update(b + 1)
    stop.check(f"while decoding ({desc}, batch {b + 1} of {num_batches})")
  return (np.concatenate(items)[:n].astype(np.int32), np.concatenate(scores)[:n])


def evaluate_arrays(module: Any, params: Any, arrays: Any, item_tokens: np.ndarray, *,
                    num_beams: int = TrainConfig.num_beams, topk: int = TrainConfig.topk, batch_size: int = 64,
                    sharding: Any = None, predict_fn: Callable | None = None,
                    desc: str = "decode", show_progress: bool = True,
                    level_offsets: Sequence[int] | None = None,
                    level_sizes: Sequence[int] | None = None,
                    ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
  """Decodes and scores an `splits.ExampleArrays` split: (metrics, topk, scores)."""
  if predict_fn is None:
    predict_fn = make_predict_fn(module, item_tokens, num_beams, topk, level_offsets, level_sizes)
  items, scores = predict_arrays(predict_fn, params, arrays.encoder_input_tokens, batch_size,
                                 sharding=sharding, desc=desc, show_progress=show_progress)
  return score_topk(items, arrays.item_index), items, scores


def evaluate(model_dir: str, split: str = "test", *, num_beams: int | None = None,
             topk: int | None = None, batch_size: int | None = None,
             num_users: int | None = None, step: int | str | None = None,
             write: bool = True, score_over: str | None = None,
             allow_changed_inputs: bool = False) -> dict[str, Any]:
  """Scores the latest (or `step`) checkpoint of a cost_jax.train model_dir on `split`.

  `score_over`: the beam-scoring rule (decoding.SCORE_RULES), default the run's; results
  with a rule other than the run's are written with a `_{rule}` suffix on the split."""
  run = run_dir.load_run(model_dir, step=step, allow_changed_inputs=allow_changed_inputs)
  cfg = run.train_config
  rule = score_over or cfg.score_over
  num_beams = num_beams or cfg.num_beams
  topk = topk or cfg.topk
  check_beams(num_beams, topk)
  # More beams or list slots than items buy nothing: capped at the catalogue.
  num_items = len(run.item_tokens)
  num_beams, topk = min(num_beams, num_items), min(topk, num_items)
  batch_size = batch_size or cfg.eval_batch_size
  check_decode_fits(run.model_config, run.round_batch(batch_size), num_beams,
                    int(run.record["feature_lengths"]["inputs"]), run.item_tokens.shape[1],
                    f"evaluate {model_dir}")
  arrays = run.split_arrays(split)
  arrays = splits.eval_subset(arrays, num_users, cfg.seed)
  batch_size = run.round_batch(batch_size)
  layout = run.record.get("layout", {})
  predict_fn = make_predict_fn(run.module, run.item_tokens, num_beams, topk,
                               layout.get("level_offsets"), layout.get("codebook_sizes"),
                               rule)
  metrics, items, scores = evaluate_arrays(
      run.module, run.params, arrays, run.item_tokens, batch_size=batch_size,
      sharding=run.batch_sharding, predict_fn=predict_fn, desc=f"eval {split}")
  metrics.update(split=split, step=run.step, num_beams=num_beams, topk=topk, score_over=rule)
  if write:
    name = split if rule == cfg.score_over else f"{split}_{rule}"
    old = read_json_or(result_file(model_dir, "metrics.json", name), {})
    if isinstance(old, dict) and old and not same_scoring(old, metrics):
      # Another scoring (the trainer's validation sample, another step or beam count) is on
      # disk under that name: it is the run's record, so these results get their own name.
      name = f"{name}_{scoring_suffix(metrics)}"
      old = read_json_or(result_file(model_dir, "metrics.json", name), {})
    # How the run chose this checkpoint (best step, stop reason, ...) stays with its scores.
    if isinstance(old, dict) and old.get("step") == run.step:
      metrics.update({k: old[k] for k in SELECTION_KEYS if k in old})
    if isinstance(old, dict) and old and same_scoring(old, metrics):
      if same_lists(model_dir, name, items, arrays.user_index):
        print(f"[evaluate] {result_file(model_dir, 'metrics.json', name)} holds the same lists: "
              "left as it is", file=sys.stderr, flush=True)
        return metrics
      name = free_name(model_dir, f"{name}_rescore")
    path = write_results(model_dir, name, metrics, items, arrays.item_index, arrays.user_index,
                         scores)
    print(f"[evaluate] wrote {path}", file=sys.stderr, flush=True)
  return metrics


SCORING_KEYS = ("step", "num_users", "num_beams", "topk")


def same_lists(model_dir: str, name: str, topk: np.ndarray, user_ids: np.ndarray) -> bool:
  """True when the top-K lists and users written under `name` equal these."""
  try:
    old_topk = np.load(result_file(model_dir, "topk.npy", name), allow_pickle=False)
    old_users = np.load(result_file(model_dir, "user_ids.npy", name), allow_pickle=False)
  except (OSError, ValueError):
    return False
  return (np.array_equal(old_topk, np.asarray(topk, np.int32))
          and np.array_equal(old_users, np.asarray(user_ids, np.int32)))


def free_name(model_dir: str, base: str) -> str:
  """`base`1, `base`2, ...: the first whose metrics file does not exist yet."""
  n = 1
  while os.path.exists(result_file(model_dir, "metrics.json", f"{base}{n}")):
    n += 1
  return f"{base}{n}"


def same_scoring(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
  """True when two metrics records scored the same checkpoint on the same users and beams."""
  return all(old.get(k) == new.get(k) for k in SCORING_KEYS)


def scoring_suffix(metrics: Mapping[str, Any]) -> str:
  """The file-name suffix of a scoring that differs from the record on disk:
  step4000_users22363_beams50_top40."""
  return (f"step{metrics['step']}_users{metrics['num_users']}_beams{metrics['num_beams']}"
          f"_top{metrics['topk']}")
