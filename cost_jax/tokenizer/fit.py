"""Fitting a tokenizer and encoding items with it: embeddings -> unique semantic IDs.

  fit(embeddings, method, output, seed=0, overrides=None) -> report   trains / fits `method`
                                                                      and writes a tokenizer dir
  load_tokenizer(dir).encode_items(embeddings)                       IDs for new items
  encode_new(dir, embeddings, output)                                those IDs as a tokenizer dir

The files are written by cost_jax.tokenizer.artifact into a StagedDir beside `output`, which
replaces `output` only when everything is written.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

from cost_jax.io import StagedDir, UserError, atomic_write_npz
from cost_jax.tokenizer import artifact, id_baselines, quality, rqvae
from cost_jax.tokenizer import config as tc
from cost_jax.tokenizer import dedup as sid
from cost_jax.tokenizer import trainer as tt
from cost_jax.progress import Progress
from cost_jax.tokenizer.embeddings import (EmbeddingStream, load_embeddings, open_embeddings,
                                             should_stream, validate_embeddings)
from cost_jax.tokenizer.layout import TokenLayout


def _log(msg: str, enabled: bool = True) -> None:
  if enabled:
    print(msg, file=sys.stderr, flush=True)


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

  def analyse(self, x: np.ndarray | EmbeddingStream, offset: int = 0,
              existing: np.ndarray | None = None, quality_seed: int | None = None):
    """(raw codes, scorer, quality or None) for x.

    quality (with `quality_seed`, neural and residual k-means tokenizers): reconstruction cosine
    and neighbour precision. An EmbeddingStream is read chunk by chunk (`_analyse_stream`).
    """
    if isinstance(x, EmbeddingStream):
      if self.model is None:
        raise UserError(f"{x.path}: streaming a memory-mapped catalogue is implemented for the "
                        f"neural tokenizers, not {self.method}; raise stream_above_gb")
      return self._analyse_stream(x, existing, quality_seed)
    x_hat = None
    if self.model is not None:
      codes, z, x_hat = tt.encode(self.model, self.params, x, cfg=self.config)
      scorer = sid.ResidualScorer(z, self._books())
    elif self.method == "random":
      codes, scorer = self.baseline.codes(len(x), offset), self.baseline.scorer(len(x))
    else:
      codes = self.baseline.codes(x)
      x_hat = self.baseline.reconstruct(x) if self.method == "rqkmeans" else None
      scorer = self.baseline.scorer(x)
    quality_report = None
    if x_hat is not None and quality_seed is not None:
      quality_report = {
          "reconstruction_cosine": quality.reconstruction_cosine(x, x_hat),
          "neighbor_precision": quality.neighbor_precision(
              x, x_hat, self.config.neighbor_k, self.config.neighbor_sample, quality_seed)}
    return codes, scorer, quality_report

  def _books(self) -> list[np.ndarray]:
    cbs = np.asarray(self.params["codebooks"])
    return [cbs[min(l, cbs.shape[0] - 1)] for l in range(self.config.num_levels)]

  def _analyse_stream(self, x: EmbeddingStream, existing: np.ndarray | None,
                      quality_seed: int | None):
    """`analyse` of a memory-mapped catalogue: codes chunk by chunk (kept: the IDs), latents only
    for the items whose codes collide (what de-duplication reads), neighbour precision on its
    sample's rows alone; nothing [N, D] or [N, latent] is held."""
    cfg = self.config
    codes = np.empty((len(x), cfg.num_levels), np.int32)
    cos_sum = 0.0
    progress = Progress(len(x), desc=f"encode {self.method}", unit="items",
                        min_interval=cfg.log_every_s)
    for start, part in x.chunks(cfg.stream_chunk_rows):
      c, _, h = tt.encode(self.model, self.params, part, cfg=cfg)
      codes[start:start + len(part)] = c
      cos_sum += quality.reconstruction_cosine(part, h) * len(part)
      progress.update(start + len(part))
    scorer = None
    if self.dedup_mode == "cost_reassign":  # the only de-duplication that reads latents
      rows = sid.colliding_rows(codes, existing)
      z = (tt.encode(self.model, self.params, x.rows(rows), cfg=cfg)[1] if len(rows)
           else np.zeros((0, cfg.latent_dim), np.float32))
      scorer = sid.ResidualScorer(z, self._books(), rows=rows)
    quality_report = None
    if quality_seed is not None:
      sample = quality.sample_rows(len(x), cfg.neighbor_sample, quality_seed)
      xs = x.rows(sample)
      hs = tt.encode(self.model, self.params, xs, cfg=cfg)[2]
      quality_report = {
          "reconstruction_cosine": cos_sum / len(x),
          "neighbor_precision": quality.neighbor_precision(xs, hs, cfg.neighbor_k, len(xs),
                                                           quality_seed)}
      quality_report["neighbor_precision"].update(num_items=len(x),
                                                  sampled=len(x) > cfg.neighbor_sample)
    return codes, scorer, quality_report

  def raw_codes(self, embeddings: np.ndarray) -> np.ndarray:
    """The quantizer's codes int32 [N, M] (not de-duplicated)."""
    return self.analyse(self._check(embeddings, "embeddings"))[0]

  def encode_items(self, embeddings: np.ndarray, dedup: bool = True
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """IDs for new items: raw codes, de-duplicated against the existing IDs (and each other)."""
    x = self._check(embeddings, "embeddings")
    offset = 0 if self.existing_ids is None else len(self.existing_ids)
    codes, scorer, _ = self.analyse(x, offset, existing=self.existing_ids)
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
  cfg_path = os.path.join(directory, artifact.CONFIG_FILE)
  meta = artifact.read_config(directory)
  try:
    method, seed, input_dim = meta["method"], int(meta["seed"]), int(meta["input_dim"])
    cfg = tc.TokenizerConfig.from_dict(meta["config"])
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"{cfg_path}: missing or bad field ({e})") from None
  existing = (artifact.load_semantic_ids(directory)[1]
              if os.path.exists(artifact.ids_path(directory)) else None)
  if method in tc.NEURAL_METHODS:
    model = rqvae.make_model(cfg, input_dim)
    abstract = jax.eval_shape(lambda: rqvae.init_params(model, jax.random.PRNGKey(seed)))
    params = artifact.restore_checkpoint(directory, abstract)
    return Tokenizer(method, cfg, input_dim, seed, existing, params=params)
  npz = os.path.join(directory, artifact.BASELINE_FILE)
  try:
    with np.load(npz) as a:
      base = id_baselines.BASELINES[method].from_arrays(a)
  except (OSError, KeyError, ValueError) as e:
    raise UserError(f"{npz}: cannot read ({e})") from None
  return Tokenizer(method, cfg, input_dim, seed, existing, baseline=base)


def _meta(method: str, cfg: tc.TokenizerConfig, seed: int, input_dim: int, num_items: int) -> dict:
  return {"method": method, "seed": seed, "input_dim": input_dim, "num_items": num_items,
          "config": cfg.to_dict()}


def fit(embeddings: np.ndarray | str, method: str, output: str, seed: int = 0,
        overrides: Mapping[str, Any] | None = None, *, log: bool = True) -> dict:
  """Trains / fits `method` on embeddings [N, D], writes a tokenizer dir to `output`.

  overrides: TokenizerConfig fields (typed values or strings), plus optional "preset".
  Returns the report (also written to output/report.json).
  """
  t_start = time.perf_counter()
  if method in tc.INTERACTION_METHODS:
    raise UserError(f"method {method!r} learns IDs from interactions, not from embeddings: "
                    "build it with cost_jax.baselines.cove_sasrec.fit_tokenizer or the "
                    "reproduction (`python -m cost_jax.reproduce --methods cove`)")
  cfg = tc.make_config(method, overrides)
  if isinstance(embeddings, (str, os.PathLike)):
    source = os.fspath(embeddings)
    if method in tc.NEURAL_METHODS and should_stream(source, cfg.stream_above_gb):
      _log(f"[tokenize {method}] {source}: {os.path.getsize(source) / 1e9:.1f} GB, memory-mapped "
           f"and streamed in {cfg.stream_chunk_rows:,}-row pieces", log)
      x = open_embeddings(source, cfg.stream_chunk_rows)
    else:
      x = load_embeddings(source)
  elif isinstance(embeddings, EmbeddingStream):
    source, x = embeddings.path, embeddings
  else:
    source = "embeddings"
    x = validate_embeddings(embeddings, source)
  needs_k = method in tc.NEURAL_METHODS or method == "rqkmeans"
  if needs_k and len(x) < cfg.codebook_size:
    raise UserError(f"{source}: {len(x)} items but each codebook level has {cfg.codebook_size} "
                    f"codes; need at least {cfg.codebook_size} items (or lower codebook_size "
                    "with --gin.TokenizerConfig.codebook_size=...)")
  n, dim = x.shape
  desc = f"tokenize {method}"
  staged = StagedDir(output, kind=artifact.OUTPUT_KIND, legacy=artifact.FILES)
  try:
    report: dict[str, Any] = {"method": method, "preset": cfg.preset, "seed": seed,
                              "num_items": n, "input_dim": dim}
    params = baseline = None
    if method in tc.NEURAL_METHODS:
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
          "ablation": "usage without the remedy: rerun with --gin.TokenizerConfig.dead_code_remedy=False "
                      "(or tools/bench_tokenizer.py remedy)"}
    else:
      _log(f"[{desc}] fitting {method} baseline on {n} items", log)
      if method == "random":
        baseline = id_baselines.RandomIDs((cfg.codebook_size,) * cfg.num_levels, seed)
      elif method == "lsh":
        baseline = id_baselines.LSH.fit(dim, cfg.lsh_bits, cfg.lsh_levels, seed)
      else:
        baseline = id_baselines.ResidualKMeans.fit(x, cfg.codebook_size, cfg.num_levels, seed,
                                                cfg.kmeans_iters)
    tok = Tokenizer(method, cfg, dim, seed, None, params=params, baseline=baseline)
    codes, scorer, quality_report = tok.analyse(x, quality_seed=seed)
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
    report.update(quality_report or {"reconstruction_cosine": None,
                                     "neighbor_precision": None})
    report["streamed"] = isinstance(x, EmbeddingStream)
    meta = _meta(method, cfg, seed, dim, n)
    artifact.write_ids(staged.path, ids, artifact.layout_for(ids, sizes, cfg.dedup),
                       method=method, dedup=cfg.dedup)
    artifact.write_json(staged.path, artifact.CONFIG_FILE, meta)
    if params is not None:
      artifact.save_checkpoint(staged.path, params, meta)
    else:
      atomic_write_npz(staged.file(artifact.BASELINE_FILE), **baseline.arrays())
    report["wall_time_s"] = round(time.perf_counter() - t_start, 2)
    report["config"] = cfg.to_dict()
    artifact.write_json(staged.path, artifact.REPORT_FILE, report)
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
  staged = StagedDir(output, kind=artifact.OUTPUT_KIND, legacy=artifact.FILES)
  try:
    ids, info = tok.encode_items(x)
    sizes = list(tok.raw_sizes)
    layout = (artifact.layout_for(ids, sizes, tok.dedup_mode) if tok.dedup_mode != "none"
              else TokenLayout(tuple(sizes)))
    if tok.existing_ids is not None and tok.dedup_mode == "tiger_extra_token":
      old = artifact.load_layout(checkpoint_dir).codebook_sizes
      layout = TokenLayout(tuple(max(a, b) for a, b in zip(layout.codebook_sizes, old)))
    report = {"method": tok.method, "from_checkpoint": os.path.abspath(checkpoint_dir),
              "num_items": len(x), "codebook_sizes": sizes,
              "usage_per_level": sid.usage_per_level(ids[:, :len(sizes)], sizes),
              "dedup": info, "all_distinct": sid.all_distinct(ids),
              "distinct_from_existing": (None if tok.existing_ids is None else
                                         not set(map(tuple, ids.tolist())) &
                                         set(map(tuple, tok.existing_ids.tolist()))),
              "wall_time_s": round(time.perf_counter() - t_start, 2)}
    artifact.write_ids(staged.path, ids, layout, method=tok.method, dedup=tok.dedup_mode)
    artifact.write_json(staged.path, artifact.REPORT_FILE, report)
    staged.commit()
  except BaseException:
    staged.discard()
    raise
  _log(f"[tokenize {tok.method}] encoded {len(x)} new items into {output}", log)
  return report


def fit_cold_start(embeddings: np.ndarray, unseen: np.ndarray, method: str, output: str,
                   seed: int = 0, overrides: Mapping[str, Any] | None = None,
                   log: bool = True) -> dict:
  """TIGER §4.4.1: the tokenizer trains on the seen items only, then gives every item an ID.

  `output/seen/` is the tokenizer fitted on the seen items (`fit`); `output` holds the IDs of
  all N items (semantic_ids.npy row i = item i): the seen items keep their fitted IDs and the
  unseen ones are encoded by the trained tokenizer, de-duplicated against the seen IDs (so an
  unseen item shares its first L-1 tokens with seen items of the same codes, never a whole ID).
  """
  x = validate_embeddings(embeddings, "embeddings")
  mask = np.zeros(len(x), bool)
  mask[np.asarray(unseen, np.int64)] = True
  seen = np.flatnonzero(~mask)
  staged = StagedDir(output, kind=artifact.OUTPUT_KIND + " (cold start)",
                     legacy=artifact.FILES + ("seen",))
  try:
    report = fit(x[seen], method, staged.file("seen"), seed=seed, overrides=overrides, log=log)
    tok = load_tokenizer(staged.file("seen"))
    new_ids, info = tok.encode_items(x[mask])
    ids = np.zeros((len(x), tok.existing_ids.shape[1]), np.int32)
    ids[seen] = tok.existing_ids
    ids[mask] = new_ids
    old = artifact.load_layout(staged.file("seen")).codebook_sizes
    layout = artifact.layout_for(ids, tok.raw_sizes, tok.dedup_mode)
    layout = TokenLayout(tuple(max(a, b) for a, b in zip(layout.codebook_sizes, old)))
    artifact.write_ids(staged.path, ids, layout, method=method, dedup=tok.dedup_mode)
    cold = {"num_items": int(len(x)), "num_seen": int(len(seen)), "num_unseen": int(mask.sum()),
            "unseen_dedup": info, "all_distinct": sid.all_distinct(ids)}
    artifact.write_json(staged.path, artifact.REPORT_FILE, {**report, "cold_start": cold})
    staged.commit()
  except BaseException:
    staged.discard()
    raise
  _log(f"[tokenize {method}] cold start: fitted on {len(seen)} seen items, encoded "
       f"{int(mask.sum())} unseen items into {output}", log)
  return {**report, "cold_start": cold}
