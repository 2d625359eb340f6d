"""`python -m cost_jax.tokenize`: item embeddings (.npy) -> unique semantic IDs (Contract 1).

  python -m cost_jax.tokenize --embeddings items.npy --method cost --output out/cost [--seed 0]
      [--epochs 50] [--set key=value ...] [--gin_file gin/tokenizer/cost.gin] [--gin_param ...]
  python -m cost_jax.tokenize --from_checkpoint out/cost --embeddings new.npy --output out/new

Writes DIR/semantic_ids.npy (int32 [N, L], rows distinct), DIR/vocabulary.json, DIR/report.json,
DIR/config.json and DIR/checkpoint/ (Orbax: params + config; neural methods) or
DIR/baseline.npz (hyperplanes / centroids; baselines). Everything is written into a temp dir
beside DIR and moved into place at the end, so a failed run never touches DIR.

Python: run(embeddings, method, output, seed=0, overrides=None) -> report dict;
load_tokenizer(dir).encode_items(embeddings) -> IDs for new items.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np

from cost_jax import semantic_ids as sid
from cost_jax import tokenizer_config as tc
from cost_jax.errors import UserError, exits_cleanly, read_json
from cost_jax.layout import TokenLayout

IDS_FILE = "semantic_ids.npy"
BASELINE_FILE = "baseline.npz"


# --- input --------------------------------------------------------------------------------------
def _rows(idx: np.ndarray, limit: int = 5) -> str:
  shown = ", ".join(str(int(i)) for i in idx[:limit])
  more = f" (+{len(idx) - limit} more)" if len(idx) > limit else ""
  return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def load_embeddings(path: str) -> np.ndarray:
  """Reads a float [num_items, dim] .npy; UserError naming the file for anything else."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise UserError(f"{path}: no such file")
  if os.path.isdir(path):
    raise UserError(f"{path}: is a directory, expected a .npy file")
  if os.path.getsize(path) == 0:
    raise UserError(f"{path}: empty file, expected a .npy array [num_items, dim]")
  try:
    x = np.load(path, allow_pickle=False, mmap_mode=None)
  except PermissionError:
    raise UserError(f"{path}: cannot read (permission denied)") from None
  except OSError as e:
    raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
  except (ValueError, EOFError) as e:
    why = str(e).splitlines()[0] if str(e) else "bad header"
    raise UserError(f"{path}: not a .npy file ({why})") from None
  if isinstance(x, np.lib.npyio.NpzFile):
    x.close()
    raise UserError(f"{path}: is an .npz archive, expected a single .npy array")
  return validate_embeddings(x, path)


def validate_embeddings(x: Any, source: str = "embeddings", min_items: int = 1) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
    raise UserError(f"{source}: dtype {x.dtype} is not numeric, expected float [num_items, dim]")
  if x.ndim != 2:
    raise UserError(f"{source}: expected a 2-D array [num_items, dim], got shape {x.shape} "
                    f"(rank {x.ndim})")
  if x.shape[0] == 0:
    raise UserError(f"{source}: no items (shape {x.shape})")
  if x.shape[1] == 0:
    raise UserError(f"{source}: items have dimension 0 (shape {x.shape})")
  x = x.astype(np.float32)
  bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
  if len(bad):
    kinds = []
    if np.isnan(x[bad]).any():
      kinds.append("NaN")
    if np.isinf(x[bad]).any():
      kinds.append("inf")
    raise UserError(f"{source}: {_rows(bad)} contain{'s' if len(bad) == 1 else ''} "
                    f"{' and '.join(kinds)} values")
  if x.shape[0] < min_items:
    raise UserError(f"{source}: {x.shape[0]} items but each codebook level has {min_items} codes; "
                    f"need at least {min_items} items (or lower codebook_size with --set)")
  return x


# --- output --------------------------------------------------------------------------------------
class _StagedDir:
  """A temp dir beside `output` that replaces it on commit (and vanishes on failure)."""

  def __init__(self, output: str):
    self.output = os.path.abspath(output)
    parent = os.path.dirname(self.output)
    if os.path.exists(self.output) and not os.path.isdir(self.output):
      raise UserError(f"{output}: exists and is not a directory")
    try:
      os.makedirs(parent, exist_ok=True)
      self.path = tempfile.mkdtemp(prefix=f".{os.path.basename(self.output)}.tmp-", dir=parent)
    except OSError as e:
      raise UserError(f"{output}: cannot create output ({e.strerror or e})") from None

  def commit(self) -> None:
    old = None
    if os.path.exists(self.output):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.output)}.old-",
                             dir=os.path.dirname(self.output))
      os.rmdir(old)
      os.replace(self.output, old)
    os.replace(self.path, self.output)
    if old:
      shutil.rmtree(old, ignore_errors=True)

  def discard(self) -> None:
    shutil.rmtree(self.path, ignore_errors=True)


def _write_json(path: str, obj: Any) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
    f.write("\n")


def _json_default(o):
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(type(o))


def _log(msg: str, enabled: bool = True) -> None:
  if enabled:
    print(msg, file=sys.stderr, flush=True)


# --- metrics --------------------------------------------------------------------------------------
def reconstruction_cosine(x: np.ndarray, x_hat: np.ndarray) -> float:
  num = np.sum(x * x_hat, axis=1)
  den = np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(x_hat, axis=1), 1e-12)
  return float(np.mean(num / den))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (np.sum(a * a, 1)[:, None] - 2.0 * (a @ b.T) + np.sum(b * b, 1)[None, :])


def neighbor_precision(x: np.ndarray, x_hat: np.ndarray, k: int = 10, sample: int = 5000,
                       seed: int = 0) -> dict[str, Any]:
  """Top-K precision (CoST preprint §4.1) on a sample of at most `sample` items.

  For item i: N_in = its K nearest other items by ||x_i - x_j||; N_rec = its K nearest other
  items by ||x_i - x_hat_j|| (input of i to the outputs of all items). Precision =
  |N_in & N_rec| / K, averaged.
  """
  n = len(x)
  idx = np.arange(n) if n <= sample else np.sort(
      np.random.default_rng(seed).choice(n, sample, replace=False))
  xs, hs = x[idx].astype(np.float32), x_hat[idx].astype(np.float32)
  k = min(k, len(idx) - 1)
  if k < 1:
    return {"value": None, "k": k, "sample_size": int(len(idx)), "num_items": n}
  d_in = _sq_dists(xs, xs)
  d_rec = _sq_dists(xs, hs)
  np.fill_diagonal(d_in, np.inf)
  np.fill_diagonal(d_rec, np.inf)
  nn_in = np.argpartition(d_in, k, axis=1)[:, :k]
  nn_rec = np.argpartition(d_rec, k, axis=1)[:, :k]
  hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(nn_in, nn_rec)]
  return {"value": float(np.mean(hits) / k), "k": k, "sample_size": int(len(idx)),
          "num_items": n, "sampled": bool(n > sample)}


# --- tokenizers -----------------------------------------------------------------------------------
class Tokenizer:
  """A trained tokenizer (neural or baseline) that encodes new items."""

  def __init__(self, method: str, config: tc.TokenizerConfig, input_dim: int, seed: int,
               existing_ids: np.ndarray | None = None, params: dict | None = None,
               baseline: Any = None):
    self.method = method
    self.config = config
    self.input_dim = input_dim
    self.seed = seed
    self.existing_ids = existing_ids
    self.params = params
    self.baseline = baseline
    self.model = None
    if params is not None:
      from cost_jax import rqvae  # pylint: disable=g-import-not-at-top
      self.model = rqvae.make_model(config, input_dim)

  @property
  def dedup_mode(self) -> str:
    return self.config.dedup

  @property
  def raw_sizes(self) -> tuple[int, ...]:
    if self.baseline is not None:
      return tuple(self.baseline.sizes)
    return (self.config.codebook_size,) * self.config.num_levels

  def _check(self, x: np.ndarray, source: str) -> np.ndarray:
    x = validate_embeddings(x, source)
    if x.shape[1] != self.input_dim:
      raise UserError(f"{source}: items have dimension {x.shape[1]}, the tokenizer was trained on "
                      f"dimension {self.input_dim}")
    return x

  def analyse(self, x: np.ndarray, offset: int = 0):
    """(raw codes, scorer, reconstruction or None) for x."""
    if self.model is not None:
      from cost_jax import tokenizer_train as tt  # pylint: disable=g-import-not-at-top
      codes, z, x_hat = tt.encode(self.model, self.params, x, cfg=self.config)
      cbs = np.asarray(self.params["codebooks"])
      books = [cbs[min(l, cbs.shape[0] - 1)] for l in range(self.config.num_levels)]
      return codes, sid.ResidualScorer(z, books), x_hat
    if self.method == "random":
      return self.baseline.codes(len(x), offset), self.baseline.scorer(len(x)), None
    codes = self.baseline.codes(x)
    rec = self.baseline.reconstruct(x) if self.method == "rqkmeans" else None
    return codes, self.baseline.scorer(x), rec

  def raw_codes(self, embeddings: np.ndarray) -> np.ndarray:
    """The quantizer's codes int32 [N, M] (not de-duplicated)."""
    return self.analyse(self._check(embeddings, "embeddings"))[0]

  def encode_items(self, embeddings: np.ndarray, dedup: bool = True
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """IDs for new items: raw codes, de-duplicated against the existing IDs (and each other)."""
    x = self._check(embeddings, "embeddings")
    offset = 0 if self.existing_ids is None else len(self.existing_ids)
    codes, scorer, _ = self.analyse(x, offset)
    before = sid.collision_stats(codes)
    if not dedup or self.dedup_mode == "none":
      return codes.astype(np.int32), {"dedup": "none", "collisions_before_dedup": before}
    try:
      ids, info = sid.deduplicate(self.dedup_mode, codes, scorer, self.existing_ids)
    except ValueError as e:
      raise UserError(f"dedup: {e}") from None
    info["collisions_before_dedup"] = before
    return ids, info


def load_tokenizer(directory: str) -> Tokenizer:
  """Loads a tokenizer output dir written by run() (checkpoint/ or baseline.npz)."""
  directory = os.fspath(directory)
  cfg_path = os.path.join(directory, "config.json")
  meta = read_json(cfg_path)
  try:
    method, seed, input_dim = meta["method"], int(meta["seed"]), int(meta["input_dim"])
    cfg = tc.TokenizerConfig.from_dict(meta["config"])
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"{cfg_path}: missing or bad field ({e})") from None
  ids_path = os.path.join(directory, IDS_FILE)
  existing = np.load(ids_path) if os.path.exists(ids_path) else None
  if method in tc.NEURAL_METHODS:
    params = _restore_checkpoint(os.path.join(directory, "checkpoint"), cfg, input_dim, seed)
    return Tokenizer(method, cfg, input_dim, seed, existing, params=params)
  from cost_jax import baselines  # pylint: disable=g-import-not-at-top
  npz = os.path.join(directory, BASELINE_FILE)
  try:
    with np.load(npz) as a:
      base = baselines.BASELINES[method].from_arrays(a)
  except (OSError, KeyError, ValueError) as e:
    raise UserError(f"{npz}: cannot read ({e})") from None
  return Tokenizer(method, cfg, input_dim, seed, existing, baseline=base)


def _save_checkpoint(path: str, params: dict, meta: dict) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(os.path.abspath(path), args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), config=ocp.args.JsonSave(meta)))


def _restore_checkpoint(path: str, cfg: tc.TokenizerConfig, input_dim: int, seed: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from cost_jax import rqvae  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise UserError(f"{path}: no checkpoint directory")
  model = rqvae.make_model(cfg, input_dim)
  abstract = jax.eval_shape(lambda: rqvae.init_params(model, jax.random.PRNGKey(seed)))
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      out = ckptr.restore(os.path.abspath(path), args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # orbax raises a variety of errors for damaged checkpoints
    raise UserError(f"{path}: cannot restore checkpoint ({str(e).splitlines()[0][:200]})") from None
  return out["params"]


# --- run -----------------------------------------------------------------------------------------
def _layout(ids: np.ndarray, sizes: Sequence[int], dedup: str) -> TokenLayout:
  sizes = list(sizes)
  if dedup == "tiger_extra_token":
    sizes.append(int(ids[:, -1].max()) + 1 if len(ids) else 1)
  return TokenLayout(tuple(sizes))


def _meta(method: str, cfg: tc.TokenizerConfig, seed: int, input_dim: int, num_items: int) -> dict:
  return {"method": method, "seed": seed, "input_dim": input_dim, "num_items": num_items,
          "config": cfg.to_dict()}


def run(embeddings: np.ndarray | str, method: str, output: str, seed: int = 0,
        overrides: Mapping[str, Any] | None = None, *, log: bool = True) -> dict:
  """Trains / fits `method` on embeddings [N, D], writes Contract 1 files to `output`.

  overrides: TokenizerConfig fields (typed values or strings), plus optional "preset".
  Returns the report (also written to output/report.json).
  """
  t_start = time.perf_counter()
  cfg = tc.make_config(method, overrides)
  if isinstance(embeddings, (str, os.PathLike)):
    source = os.fspath(embeddings)
    x = load_embeddings(source)
  else:
    source = "embeddings"
    x = validate_embeddings(embeddings, source)
  needs_k = method in tc.NEURAL_METHODS or method == "rqkmeans"
  if needs_k and len(x) < cfg.codebook_size:
    raise UserError(f"{source}: {len(x)} items but each codebook level has {cfg.codebook_size} "
                    f"codes; need at least {cfg.codebook_size} items (or lower codebook_size "
                    "with --set codebook_size=...)")
  n, dim = x.shape
  desc = f"tokenize {method}"
  staged = _StagedDir(output)
  try:
    report: dict[str, Any] = {"method": method, "preset": cfg.preset, "seed": seed,
                              "num_items": n, "input_dim": dim}
    params = baseline = None
    if method in tc.NEURAL_METHODS:
      from cost_jax import tokenizer_train as tt  # pylint: disable=g-import-not-at-top
      res = tt.train(x, cfg, seed=seed, desc=desc, log=log)
      params = res.params
      report["training"] = {
          "epochs": cfg.epochs, "steps": res.steps,
          "train_time_s": round(res.train_time_s, 2),
          "compile_time_s_estimate": round(res.compile_time_s, 2),
          "final_losses": ({k: res.history[-1][k] for k in ("loss", "mse", "infonce", "rq")}
                           if res.history else None),
          "history": [{k: h[k] for k in ("epoch", "loss", "mse", "infonce", "rq", "usage")}
                      for h in res.history],
      }
      report["dead_code_remedy"] = {
          "enabled": cfg.dead_code_remedy, "window_steps": cfg.dead_code_window,
          "reseeded_codes": res.reseeded_codes,
          "usage_after_kmeans_init_first_batch": res.init_usage,
          "ablation": "usage without the remedy: rerun with --set dead_code_remedy=false "
                      "(or tools/bench_tokenizer.py remedy)"}
    else:
      from cost_jax import baselines  # pylint: disable=g-import-not-at-top
      _log(f"[{desc}] fitting {method} baseline on {n} items", log)
      if method == "random":
        baseline = baselines.RandomIDs((cfg.codebook_size,) * cfg.num_levels, seed)
      elif method == "lsh":
        baseline = baselines.LSH.fit(dim, cfg.lsh_bits, cfg.lsh_levels, seed)
      else:
        baseline = baselines.ResidualKMeans.fit(x, cfg.codebook_size, cfg.num_levels, seed,
                                                cfg.kmeans_iters)
    tok = Tokenizer(method, cfg, dim, seed, None, params=params, baseline=baseline)
    codes, scorer, x_hat = tok.analyse(x)
    sizes = tok.raw_sizes
    before = sid.collision_stats(codes)
    report["codebook_sizes"] = list(sizes)
    report["usage_per_level"] = sid.usage_per_level(codes, sizes)
    report["collisions_before_dedup"] = before
    report["largest_collision_group"] = before["largest_group"]
    t_dedup = time.perf_counter()
    _log(f"[{desc}] de-duplicating ({cfg.dedup}): {before['items_to_move']} of {n} items share "
         f"an ID, largest group {before['largest_group']}", log)
    try:
      ids, info = sid.deduplicate(cfg.dedup, codes, scorer)
    except ValueError as e:
      raise UserError(f"dedup: {e}") from None
    info["time_s"] = round(time.perf_counter() - t_dedup, 2)
    report["dedup"] = info
    report["id_length"] = int(ids.shape[1])
    report["all_distinct"] = sid.all_distinct(ids)
    report["usage_per_level_after_dedup"] = sid.usage_per_level(
        ids[:, :len(sizes)], sizes)
    if x_hat is not None:
      report["reconstruction_cosine"] = reconstruction_cosine(x, x_hat)
      report["neighbor_precision"] = neighbor_precision(x, x_hat, cfg.neighbor_k,
                                                        cfg.neighbor_sample, seed)
    else:
      report["reconstruction_cosine"] = None
      report["neighbor_precision"] = None
    layout = _layout(ids, sizes, cfg.dedup)
    meta = _meta(method, cfg, seed, dim, n)
    np.save(os.path.join(staged.path, IDS_FILE), ids.astype(np.int32))
    _write_json(os.path.join(staged.path, "vocabulary.json"), layout.to_json_dict(
        method=method, num_items=n, semantic_ids_file=IDS_FILE, dedup=cfg.dedup))
    _write_json(os.path.join(staged.path, "config.json"), meta)
    if params is not None:
      _save_checkpoint(os.path.join(staged.path, "checkpoint"), params, meta)
    else:
      np.savez(os.path.join(staged.path, BASELINE_FILE), **baseline.arrays())
    report["wall_time_s"] = round(time.perf_counter() - t_start, 2)
    report["config"] = cfg.to_dict()
    _write_json(os.path.join(staged.path, "report.json"), report)
    staged.commit()
  except BaseException:
    staged.discard()
    raise
  _log(f"[{desc}] wrote {output}: {n} items, IDs of length {ids.shape[1]}, usage "
       f"{'/'.join(f'{u:.2f}' for u in report['usage_per_level'])}, collisions before dedup "
       f"{before['items_to_move']} (largest group {before['largest_group']}), "
       f"{report['wall_time_s']:.1f}s", log)
  return report


def encode_new(checkpoint_dir: str, embeddings: np.ndarray | str, output: str,
               *, log: bool = True) -> dict:
  """Tokenizes new items with a trained tokenizer; writes semantic_ids.npy etc. to `output`."""
  t_start = time.perf_counter()
  tok = load_tokenizer(checkpoint_dir)
  if isinstance(embeddings, (str, os.PathLike)):
    x = load_embeddings(os.fspath(embeddings))
  else:
    x = validate_embeddings(embeddings, "embeddings")
  staged = _StagedDir(output)
  try:
    ids, info = tok.encode_items(x)
    sizes = list(tok.raw_sizes)
    layout = _layout(ids, sizes, tok.dedup_mode) if tok.dedup_mode != "none" else TokenLayout(
        tuple(sizes))
    if tok.existing_ids is not None and tok.dedup_mode == "tiger_extra_token":
      old = TokenLayout.load(checkpoint_dir).codebook_sizes
      layout = TokenLayout(tuple(max(a, b) for a, b in zip(layout.codebook_sizes, old)))
    report = {"method": tok.method, "from_checkpoint": os.path.abspath(checkpoint_dir),
              "num_items": len(x), "codebook_sizes": sizes,
              "usage_per_level": sid.usage_per_level(ids[:, :len(sizes)], sizes),
              "dedup": info, "all_distinct": sid.all_distinct(ids),
              "distinct_from_existing": (None if tok.existing_ids is None else
                                         not set(map(tuple, ids.tolist())) &
                                         set(map(tuple, tok.existing_ids.tolist()))),
              "wall_time_s": round(time.perf_counter() - t_start, 2)}
    np.save(os.path.join(staged.path, IDS_FILE), ids.astype(np.int32))
    _write_json(os.path.join(staged.path, "vocabulary.json"), layout.to_json_dict(
        method=tok.method, num_items=len(x), semantic_ids_file=IDS_FILE, dedup=tok.dedup_mode))
    _write_json(os.path.join(staged.path, "report.json"), report)
    staged.commit()
  except BaseException:
    staged.discard()
    raise
  _log(f"[tokenize {tok.method}] encoded {len(x)} new items into {output}", log)
  return report


# --- CLI -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m cost_jax.tokenize",
                              description=__doc__.split("\n")[0])
  p.add_argument("--embeddings", required=True, help=".npy float [num_items, dim], row i = item i")
  p.add_argument("--method", choices=tc.METHODS, default="cost")
  p.add_argument("--output", required=True, help="output directory (replaced atomically)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--epochs", type=int, default=None, help="overrides the preset's epochs")
  p.add_argument("--preset", choices=sorted(tc.PRESETS), default=None,
                 help="hyperparameter preset (default by method: cost -> cost, rqvae -> tiger)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a TokenizerConfig field, e.g. --set codebook_size=128")
  p.add_argument("--gin_file", action="append", default=[], help="gin file with tokenizer.X = Y")
  p.add_argument("--gin_param", action="append", default=[], help="gin binding tokenizer.X = Y")
  p.add_argument("--from_checkpoint", default=None, metavar="DIR",
                 help="tokenize new embeddings with the tokenizer trained in DIR")
  p.add_argument("--quiet", action="store_true", help="no progress lines")
  return p


@exits_cleanly
def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if args.from_checkpoint:
    report = encode_new(args.from_checkpoint, args.embeddings, args.output, log=not args.quiet)
  else:
    overrides = tc.gin_overrides(args.gin_file, args.gin_param)
    overrides.update(tc.parse_set_args(args.set))
    if args.epochs is not None:
      overrides["epochs"] = args.epochs
    if args.preset:
      overrides["preset"] = args.preset
    report = run(args.embeddings, args.method, args.output, seed=args.seed, overrides=overrides,
                 log=not args.quiet)
  summary = {k: report.get(k) for k in ("method", "num_items", "usage_per_level", "all_distinct",
                                        "largest_collision_group", "reconstruction_cosine",
                                        "wall_time_s")}
  print(json.dumps(summary, default=_json_default))
  return 0


if __name__ == "__main__":
  sys.exit(main())
