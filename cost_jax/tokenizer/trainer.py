"""Training the RQ-VAE / CoST tokenizer: jitted train step, k-means init, dead-code remedy, loop.

  train_step(params, opt_state, batch, rng) -> (params, opt_state, metrics)   one jitted function
  train_epoch(...)                           lax.scan of train_step over an epoch's batches, with
                                             the dead-code remedy folded in (one dispatch / epoch)
  train(x, cfg, seed)                        the host loop: numpy shuffling, progress lines

Dead-code remedy (our addition, switch `dead_code_remedy`): code usage is counted per level
on device; every `dead_code_window` steps, codes unused during the window (per level; for a
shared codebook: unused at every level) are re-seeded with random residuals of the current
batch (of that level; shared: of any level). It is not applied during the last 10% of steps,
so the codebook settles before the final assignment.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cost_jax import stop
from cost_jax.tokenizer import kmeans as km
from cost_jax.io import UserError
from cost_jax.tokenizer import losses
from cost_jax.tokenizer import quantizer as rq
from cost_jax.tokenizer import rqvae
from cost_jax.progress import Progress
from cost_jax.tokenizer.config import TokenizerConfig
from cost_jax.tokenizer.embeddings import EmbeddingStream


def make_optimizer(cfg: TokenizerConfig) -> optax.GradientTransformation:
  if cfg.optimizer == "adam":
    return optax.adam(cfg.learning_rate)
  if cfg.optimizer == "adagrad":
    return optax.adagrad(cfg.learning_rate)
  return optax.sgd(cfg.learning_rate)


def make_train_step(model: rqvae.RQVAE, tx: optax.GradientTransformation, cfg: TokenizerConfig
                    ) -> Callable:
  """The jitted (params, opt_state, batch, rng) -> (params, opt_state, metrics)."""

  def loss_fn(params, batch):
    out = model.apply({"params": params}, batch)
    l_rq = rq.rq_loss(out["residuals"], out["selected"], cfg.beta, cfg.loss_reduction)
    loss, parts = losses.total_loss(cfg.loss, batch, out["x_hat"], l_rq, alpha=cfg.alpha,
                                    tau=cfg.tau, reduction=cfg.loss_reduction)
    parts["counts"] = rq.code_counts(out["codes"], cfg.codebook_size)
    return loss, parts

  @jax.jit
  def train_step(params, opt_state, batch, rng):
    del rng  # the tokenizer has no dropout; kept for the standard step signature
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, metrics

  return train_step


def reseed_dead_codes(model: rqvae.RQVAE, params: dict, counts: jax.Array, batch: jax.Array,
                      rng: jax.Array) -> tuple[dict, jax.Array]:
  """Codes with zero count get random current residuals.

  counts [M, K]. Returns (params, number of re-seeded codes).
  """
  z = model.apply({"params": params}, batch, method=rqvae.RQVAE.encode)
  q = rq.residual_quantize(z, params["codebooks"], model.num_levels)
  cbs = params["codebooks"]
  b, m, d = q.residuals.shape
  k = cbs.shape[1]
  if cbs.shape[0] == 1:
    dead = (jnp.sum(counts, axis=0) == 0)[None]                      # [1, K]
    pool = q.residuals.reshape(1, b * m, d)
  else:
    dead = counts == 0                                               # [M, K]
    pool = jnp.transpose(q.residuals, (1, 0, 2))                     # [M, B, d]
  idx = jax.random.randint(rng, (cbs.shape[0], k), 0, pool.shape[1])
  fresh = jnp.take_along_axis(pool, idx[..., None], axis=1)          # [books, K, d]
  new = jnp.where(dead[..., None], fresh, cbs)
  params = dict(params)
  params["codebooks"] = new
  return params, jnp.sum(dead)


def make_train_epoch(model: rqvae.RQVAE, tx: optax.GradientTransformation, cfg: TokenizerConfig
                     ) -> Callable:
  """Jitted epoch (or a piece of one): scan of train_step over perm [S, B] (rows of `data`) with
  per-step keys [S] and the dead-code remedy. Returns the step-mean metrics and the code
  counts [M, K] of these steps ("counts")."""
  train_step = make_train_step(model, tx, cfg)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_epoch(params, opt_state, window_counts, data, perm, keys, step0, remedy_until):
    def body(carry, xs):
      params, opt_state, window_counts, epoch_counts, reseeded = carry
      idx, key, step = xs
      batch = jnp.take(data, idx, axis=0)
      params, opt_state, metrics = train_step(params, opt_state, batch, key)
      counts = metrics.pop("counts")
      window_counts = window_counts + counts
      epoch_counts = epoch_counts + counts
      if cfg.dead_code_remedy:
        due = ((step + 1) % cfg.dead_code_window == 0) & (step < remedy_until)
        params, n = jax.lax.cond(
            due, lambda p: reseed_dead_codes(model, p, window_counts, batch,
                                             jax.random.fold_in(key, 1)),
            lambda p: (p, jnp.zeros((), jnp.int32)), params)
        reseeded = reseeded + n.astype(jnp.int32)
        window_counts = jnp.where(due, 0.0, window_counts)
      return (params, opt_state, window_counts, epoch_counts, reseeded), metrics

    steps = perm.shape[0]
    step_ids = step0 + jnp.arange(steps)
    init = (params, opt_state, window_counts, jnp.zeros_like(window_counts),
            jnp.zeros((), jnp.int32))
    (params, opt_state, window_counts, epoch_counts, reseeded), metrics = jax.lax.scan(
        body, init, (perm, keys, step_ids))
    metrics = jax.tree_util.tree_map(jnp.mean, metrics)
    metrics["counts"] = epoch_counts
    metrics["reseeded"] = reseeded
    return params, opt_state, window_counts, metrics

  return train_epoch


def kmeans_init(model: rqvae.RQVAE, params: dict, batch: jax.Array, cfg: TokenizerConfig,
                rng: jax.Array) -> dict:
  """Codebooks from k-means (cfg.kmeans_iters iterations) on the first batch's latents.

  Per-level codebooks: level l's k-means runs on the residuals after level l-1.
  Shared codebook: k-means on the pool of all levels' residuals, refined level by level.
  """
  k = cfg.codebook_size
  z = model.apply({"params": params}, batch, method=rqvae.RQVAE.encode)
  keys = jax.random.split(rng, cfg.num_levels)
  r = z
  if not cfg.shared_codebook:
    books = []
    for level in range(cfg.num_levels):
      res = km.kmeans(r, k, keys[level], cfg.kmeans_iters)
      books.append(res.centroids)
      r = r - res.centroids[res.assignments]
    codebooks = jnp.stack(books)
  else:
    pool, cb = [], None
    for level in range(cfg.num_levels):
      pool.append(r)
      pts = jnp.concatenate(pool)
      cb = (km.kmeans(pts, k, keys[level], cfg.kmeans_iters).centroids if cb is None
            else km.lloyd(pts, cb, cfg.kmeans_iters).centroids)
      r = r - cb[jnp.argmin(rq.squared_distances(r, cb), axis=-1)]
    codebooks = cb[None]
  params = dict(params)
  params["codebooks"] = codebooks.astype(params["codebooks"].dtype)
  return params


_COMPILE_IRRELEVANT = dict(preset="", epochs=0, dedup="none", neighbor_k=1, neighbor_sample=1,
                           log_every_s=0.0, lsh_bits=1, lsh_levels=1, stream_above_gb=0.0,
                           stream_chunk_rows=1)


class Compiled(NamedTuple):
  model: rqvae.RQVAE
  tx: optax.GradientTransformation
  init_fn: Callable      # (init_key, kmeans_batch, kmeans_key) -> (params, usage [M])
  train_epoch: Callable
  encode_chunk: Callable  # (params, x) -> (codes, z, x_hat)


def compiled(cfg: TokenizerConfig, input_dim: int) -> Compiled:
  """Model and jitted functions, shared by runs whose configs only differ in irrelevant fields
  (so a second run in the same process does not recompile)."""
  return _compiled(dataclasses.replace(cfg, **_COMPILE_IRRELEVANT), input_dim)


@functools.lru_cache(maxsize=8)
def _compiled(cfg: TokenizerConfig, input_dim: int) -> Compiled:
  model = rqvae.make_model(cfg, input_dim)
  tx = make_optimizer(cfg)

  @jax.jit
  def init_fn(init_key, km_batch, km_key):
    params = rqvae.init_params(model, init_key)
    if cfg.kmeans_init:
      params = kmeans_init(model, params, km_batch, cfg, km_key)
    z = model.apply({"params": params}, km_batch, method=rqvae.RQVAE.encode)
    codes = rq.residual_quantize(z, params["codebooks"], cfg.num_levels).codes
    return params, jnp.mean(rq.code_counts(codes, cfg.codebook_size) > 0, axis=-1)

  @jax.jit
  def encode_chunk(params, x):
    out = model.apply({"params": params}, x)
    return out["codes"], out["z"], out["x_hat"]

  return Compiled(model, tx, init_fn, make_train_epoch(model, tx, cfg), encode_chunk)


@dataclasses.dataclass
class TrainResult:
  params: dict
  model: rqvae.RQVAE
  history: list[dict[str, Any]]
  steps: int
  reseeded_codes: int
  train_time_s: float
  compile_time_s: float
  init_usage: list[float]


def _host_metrics(metrics: dict) -> dict[str, Any]:
  out = {}
  for k, v in jax.device_get(metrics).items():
    v = np.asarray(v)
    out[k] = v.tolist() if v.ndim else v.item()
  return out


def train(x: np.ndarray | EmbeddingStream, cfg: TokenizerConfig, seed: int = 0,
          desc: str = "tokenize", log: bool = True,
          on_epoch: Callable[[int, dict], None] | None = None) -> TrainResult:
  """Trains the tokenizer on x [N, D] (N >= codebook_size) for cfg.epochs epochs.

  x in memory: the whole matrix goes to the device once and each epoch is one scan. An
  EmbeddingStream (a memory-mapped .npy): each epoch's shuffled rows are read in pieces of
  about cfg.stream_chunk_rows rows, each piece one scan; the steps, batches and keys are the
  same, so both give the same parameters. `on_epoch(epoch, params)` (1-based) is called after
  every epoch, e.g. to measure the codes along the way (tools/tokenizer_convergence.py).
  """
  streamed = isinstance(x, EmbeddingStream)
  n, dim = x.shape
  fns = compiled(cfg, dim)
  model, tx = fns.model, fns.tx
  rng = jax.random.PRNGKey(seed)
  rng, init_key, km_key = jax.random.split(rng, 3)
  np_rng = np.random.default_rng(seed)
  batch_size = min(cfg.batch_size, n)
  steps_per_epoch = n // batch_size
  data = None if streamed else jnp.asarray(x, jnp.float32)
  first = np_rng.permutation(n)
  km_rows = first[:max(batch_size, cfg.codebook_size)]
  km_batch = jnp.asarray(x.rows(km_rows)) if streamed else data[km_rows]
  params, init_usage = fns.init_fn(init_key, km_batch, km_key)
  init_usage = [float(u) for u in np.asarray(init_usage)]
  opt_state = tx.init(params)
  train_epoch = fns.train_epoch
  window_counts = jnp.zeros((cfg.num_levels, cfg.codebook_size), jnp.float32)
  total_steps = cfg.epochs * steps_per_epoch
  remedy_until = int(0.9 * total_steps)
  piece = (max(1, cfg.stream_chunk_rows // batch_size) if streamed else max(steps_per_epoch, 1))
  progress = (Progress(total=total_steps, desc=desc, unit="steps", items_per_step=batch_size,
                       min_interval=cfg.log_every_s) if streamed else
              Progress(total=cfg.epochs, desc=desc, unit="epoch",
                       items_per_step=steps_per_epoch * batch_size, min_interval=cfg.log_every_s))
  history: list[dict[str, Any]] = []
  reseeded = 0
  compile_s = 0.0
  t0 = time.perf_counter()
  for epoch in range(cfg.epochs):
    perm = first if epoch == 0 else np_rng.permutation(n)
    perm = perm[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
    rng, key = jax.random.split(rng)
    keys = jax.random.split(key, steps_per_epoch)
    te = time.perf_counter()
    sums: dict[str, float] = {}
    counts = np.zeros((cfg.num_levels, cfg.codebook_size), np.float64)
    for s0 in range(0, steps_per_epoch, piece):
      p = perm[s0:s0 + piece]
      if streamed:
        rows, local = jnp.asarray(x.rows(p.reshape(-1))), jnp.arange(p.size).reshape(p.shape)
      else:
        rows, local = data, jnp.asarray(p, jnp.int32)
      params, opt_state, window_counts, metrics = train_epoch(
          params, opt_state, window_counts, rows, local.astype(jnp.int32),
          keys[s0:s0 + len(p)], epoch * steps_per_epoch + s0, remedy_until)
      m = _host_metrics(metrics)
      counts += np.asarray(m.pop("counts"))
      reseeded += int(m.pop("reseeded"))
      for k, v in m.items():
        sums[k] = sums.get(k, 0.0) + float(v) * len(p)
      if streamed and log:
        progress.update(epoch * steps_per_epoch + s0 + len(p),
                        {"loss": m["loss"], "epoch": epoch + 1})
    m = {k: v / max(steps_per_epoch, 1) for k, v in sums.items()}
    m["usage"] = np.mean(counts > 0, axis=-1).tolist()
    if epoch == 0:
      # The first epoch includes compilation; estimate it as (first - second epoch) later.
      compile_s = time.perf_counter() - te
    elif epoch == 1:
      compile_s = max(0.0, compile_s - (time.perf_counter() - te))
    m["epoch"] = epoch + 1
    history.append(m)
    if not np.isfinite(m["loss"]) or not all(
        np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params)):
      raise UserError(f"tokenizer training diverged in epoch {epoch + 1}: loss {m['loss']} "
                      f"(rq {m['rq']}, mse {m['mse']}, infonce {m['infonce']}); nothing was "
                      "written. Lower learning_rate, or raise tau if it is near 0.")
    if on_epoch is not None:
      on_epoch(epoch + 1, params)
    stop.check(f"after tokenizer epoch {epoch + 1} (nothing written)")
    if log and not streamed:
      progress.update(epoch + 1, {"loss": m["loss"], "rq": m["rq"], "mse": m["mse"],
                                  "nce": m["infonce"],
                                  "usage": "/".join(f"{u:.2f}" for u in m["usage"])})
  return TrainResult(params=params, model=model, history=history,
                     steps=total_steps, reseeded_codes=reseeded,
                     train_time_s=time.perf_counter() - t0, compile_time_s=compile_s,
                     init_usage=init_usage)


# --- inference ---------------------------------------------------------------------------------
def encode(model: rqvae.RQVAE, params: dict, x: np.ndarray, chunk: int = 4096,
           cfg: TokenizerConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Raw codes int32 [N, M], latents z [N, d] and reconstructions x_hat [N, D], in chunks.

  With `cfg`, the cached jitted encoder of that config is used (no recompilation).
  """
  x = np.asarray(x, np.float32)
  n = len(x)
  size = min(chunk, max(n, 1))
  if cfg is not None:
    encode_chunk = compiled(cfg, x.shape[1]).encode_chunk
  else:
    @jax.jit
    def encode_chunk(params, x):
      out = model.apply({"params": params}, x)
      return out["codes"], out["z"], out["x_hat"]

  codes, zs, xh = [], [], []
  for s in range(0, n, size):
    part = x[s:s + size]
    pad = size - len(part)
    if pad:
      part = np.concatenate([part, np.zeros((pad, x.shape[1]), np.float32)])
    c, z, h = jax.device_get(encode_chunk(params, jnp.asarray(part)))
    codes.append(c[:size - pad])
    zs.append(z[:size - pad])
    xh.append(h[:size - pad])
  return np.concatenate(codes), np.concatenate(zs), np.concatenate(xh)
