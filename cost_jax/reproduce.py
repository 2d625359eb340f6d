"""One-command reproduction of the CoST ablation (CoST RecSys'24 Table 2) + baselines.

  python -m cost_jax.reproduce --profile cpu --output results/ml100k

Stages (each cached under OUTPUT/stages/<stage>-<config hash>/ with a DONE marker that holds
the stage's config JSON; a re-run skips every stage whose hash matches, and re-runs a stage that
was interrupted, i.e. has no DONE marker):

  data                      cost_jax.data.prepare(dataset)  (embedded MovieLens-100K)
  embed                     cost_jax.data.embed.embed_dataset(dir, model)   item-text embeddings
  popularity                most-popular baseline (cost_jax.popularity)
  tokenize-<method>-s<seed> cost_jax.tokenize.run(embeddings, method, seed, overrides)
  train-<method>-s<seed>    cost_jax.train.train_and_evaluate: TIGER seq2seq + constrained beam
                            search on the test split -> metrics.json
  sasrec-s<seed>            SASRec-style baseline (cost_jax.sasrec)
  report                    results.md, results.csv, PNGs in OUTPUT (cost_jax.report), rewritten
                            after every seed so partial results are always there

Every method uses the same seeds; the seed drives both the tokenizer and the seq2seq model.
Profiles (--profile): "cpu" (small model, few steps; ~1 h on 2 cores) and "paper" (TIGER size and
steps, tokenizer presets as the papers; for a GPU/TPU). `--set section.key=value` overrides any
profile value (sections: tokenizer, tokenizer.<method>, tiger, sasrec, embed; or a top-level key).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import sys
import time
import traceback
from typing import Any, Callable, Mapping, Sequence

from cost_jax.errors import UserError, exits_cleanly
from cost_jax.progress import Progress, format_duration

DONE_FILE = "DONE"
STAGES_SUBDIR = "stages"
ABLATION_METHODS = ("random", "lsh", "rqvae", "cost", "rqvae+cost")
BASELINES = ("popularity", "sasrec")


# --- profiles ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Profile:
  """Everything the pipeline runs. Section dicts are passed to the stage they name."""

  name: str
  description: str
  dataset: str = "ml100k"
  methods: tuple[str, ...] = ABLATION_METHODS
  seeds: tuple[int, ...] = (0, 1, 2)
  baselines: tuple[str, ...] = BASELINES
  ks: tuple[int, ...] = (5, 10, 20, 40)  # CoST Table 2 columns
  # cost_jax.data.embed.embed_dataset kwargs. Papers: Sentence-T5 (768-d), CoST §4.1, TIGER §4.1.3.
  embed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # cost_jax.tokenize.run overrides for every method ("*") and per method.
  tokenizer: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  # cost_jax.train.train_and_evaluate keyword arguments (model size, steps, decoding).
  tiger: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # cost_jax.sasrec.SASRecConfig fields.
  sasrec: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def tokenizer_overrides(self, method: str) -> dict[str, Any]:
    out = dict(self.tokenizer.get("*", {}))
    out.update(self.tokenizer.get(method, {}))
    return out

  def to_json_dict(self) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(self), default=list))


# The CoST ablation compares losses with one architecture: every neural tokenizer (L_re, L_co,
# L_re + L_co) and the random IDs use CoST's preset (§4.1: latent 96, 3 levels x 64 codes shared,
# Adam 1e-4, batch 256, unique IDs by re-assignment). LSH keeps TIGER §4.3.2's hashing (8 bits x
# 4 levels) but resolves collisions the same way as the others (no extra token).
_ABLATION_TOKENIZER = {
    "rqvae": {"preset": "cost"},
    "cost": {"preset": "cost"},
    "rqvae+cost": {"preset": "cost"},
    "random": {"preset": "cost"},
    "lsh": {"dedup": "cost_reassign"},
}

PAPER = Profile(
    name="paper",
    description=("TIGER-size seq2seq model and schedule (TIGER §4.1.3: 4+4 layers, d_model 128, "
                 "6 heads x 64, MLP 1024, ReLU, dropout 0.1, batch 256, lr 0.01 for 10k steps then "
                 "inverse sqrt, 200k steps); tokenizer presets as the papers (CoST §4.1); "
                 "for a GPU/TPU."),
    embed={"model": "all-mpnet-base-v2"},
    tokenizer={**_ABLATION_TOKENIZER, "*": {"epochs": 100}},  # CoST Fig. 3: up to 100 epochs
    tiger={
        # cost_jax.network.TransformerConfig (TIGER §4.1.3; its defaults)
        "emb_dim": 128, "num_heads": 6, "head_dim": 64,
        "num_encoder_layers": 4, "num_decoder_layers": 4,
        "mlp_dim": 1024, "dropout_rate": 0.1,
        # cost_jax.train.TrainConfig (TIGER §4.1.3: batch 256, lr 0.01 for 10k steps then
        # inverse sqrt, 200k steps for Beauty/Sports)
        "batch_size": 256, "learning_rate": 0.01, "lr_schedule": "rsqrt",
        "lr_constant_steps": 10_000, "num_train_steps": 200_000,
        "max_history": 20,                                       # TIGER §4.1.1
        "num_beams": 50, "topk": 40,                             # top-40 for Recall@40
        "eval_every": 5_000, "eval_num_users": 0, "checkpoint_every": 1_000,
    },
    sasrec={"num_epochs": 200},                                  # SASRec §4
)

CPU = Profile(
    name="cpu",
    description=("small seq2seq model and short schedules so that every method x 3 seeds plus the "
                 "baselines finish in about an hour on 2 CPU cores"),
    embed={"model": "all-MiniLM-L6-v2"},
    tokenizer={**_ABLATION_TOKENIZER, "*": {"epochs": 50}},     # CoST Fig. 3 lowest: 20-50
    tiger={
        "emb_dim": 64, "num_heads": 4, "head_dim": 16,
        "num_encoder_layers": 2, "num_decoder_layers": 2,
        "mlp_dim": 256, "dropout_rate": 0.1,
        "max_history": 10,  # TIGER §4.1.1: 20; halves the encoder cost on CPU
        "batch_size": 256, "learning_rate": 0.01, "lr_schedule": "rsqrt",
        "lr_constant_steps": 300, "num_train_steps": 1200,  # ~3 epochs of ML-100K prefixes
        "num_beams": 40, "topk": 40,
        # no validation runs (the test split is always scored on all users)
        "eval_every": 0, "eval_at_end": False, "checkpoint_every": 300,
    },
    sasrec={"num_epochs": 100},
)

PROFILES = {"cpu": CPU, "paper": PAPER}


def parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(profile: Profile, items: Sequence[str]) -> Profile:
  """--set key=value: methods/seeds/baselines/ks/dataset, tiger.X, sasrec.X, embed.X,
  tokenizer.X (every method) or tokenizer.<method>.X."""
  changes: dict[str, Any] = {}
  sections = {f: copy.deepcopy(dict(getattr(profile, f)))
              for f in ("embed", "tokenizer", "tiger", "sasrec")}
  for item in items:
    if "=" not in item:
      raise UserError(f"--set {item!r}: expected key=value")
    key, raw = (s.strip() for s in item.split("=", 1))
    value = parse_value(raw)
    parts = key.split(".")
    if parts[0] in ("methods", "seeds", "baselines", "ks") and len(parts) == 1:
      vals = value if isinstance(value, (list, tuple)) else [value] if not isinstance(
          value, str) else [v.strip() for v in value.split(",") if v.strip()]
      if parts[0] in ("seeds", "ks"):
        vals = [int(v) for v in vals]
      changes[parts[0]] = tuple(vals)
    elif parts[0] in ("dataset", "description") and len(parts) == 1:
      changes[parts[0]] = str(value)
    elif parts[0] in ("tiger", "sasrec", "embed") and len(parts) == 2:
      sections[parts[0]][parts[1]] = value
    elif parts[0] == "tokenizer" and len(parts) in (2, 3):
      method, field = ("*", parts[1]) if len(parts) == 2 else (parts[1], parts[2])
      sections["tokenizer"].setdefault(method, {})[field] = value
    else:
      raise UserError(f"--set {item!r}: unknown key {key!r} (expected methods, seeds, baselines, "
                      "ks, dataset, tiger.X, sasrec.X, embed.X, tokenizer.X or tokenizer.M.X)")
  return dataclasses.replace(profile, **changes, **sections)


# --- stage cache ---------------------------------------------------------------------------


def config_hash(config: Mapping[str, Any]) -> str:
  """12 hex digits of the SHA-256 of the canonical JSON of `config`."""
  text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclasses.dataclass
class StageResult:
  name: str
  path: str
  hash: str
  status: str          # "ran", "cached", "failed", "blocked"
  seconds: float = 0.0  # wall time when it ran (for cached stages: as recorded in DONE)
  cpu_seconds: float | None = None  # process CPU time when it ran (None: not recorded)
  error: str = ""
  value: Any = None     # what the stage function returned (ran) or DONE["result"] (cached)


class StageCache:
  """Runs a stage function into OUTPUT/stages/<name>-<hash>/ unless a finished one exists."""

  def __init__(self, root: str, log: Callable[[str], None] | None = None):
    self.root = os.path.abspath(root)
    self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

  def path(self, name: str, config: Mapping[str, Any]) -> str:
    return os.path.join(self.root, STAGES_SUBDIR, f"{safe_name(name)}-{config_hash(config)}")

  def done_marker(self, name: str, config: Mapping[str, Any]) -> dict | None:
    """The DONE marker of a finished stage with this exact config, else None."""
    file = os.path.join(self.path(name, config), DONE_FILE)
    try:
      with open(file) as f:
        marker = json.load(f)
    except (OSError, ValueError):
      return None
    canonical = json.loads(json.dumps(config, sort_keys=True, default=str))
    return marker if marker.get("config") == canonical else None

  def run(self, name: str, config: Mapping[str, Any], fn: Callable[[str], Any],
          resume: bool = False) -> StageResult:
    """fn(tmp_dir) writes the stage's files into tmp_dir and returns a JSON-able summary.

    The work happens in <dir>.tmp, renamed to <dir> with its DONE marker at the end. The
    .tmp of an interrupted attempt (same config hash) is removed first, or, with `resume`
    (stages that resume by themselves, e.g. the trainer from its checkpoints), kept.
    """
    path = self.path(name, config)
    h = config_hash(config)
    marker = self.done_marker(name, config)
    if marker is not None:
      return StageResult(name, path, h, "cached", float(marker.get("seconds", 0.0)),
                         cpu_seconds=marker.get("cpu_seconds"), value=marker.get("result"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    if os.path.exists(tmp) and not resume:  # an interrupted earlier attempt
      shutil.rmtree(tmp)
    os.makedirs(tmp, exist_ok=True)
    spent, spent_cpu = _read_spent(tmp)  # earlier interrupted attempts (resumable stages)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
      value = fn(tmp)
    except BaseException:
      if resume:
        _write_spent(tmp, spent + time.perf_counter() - t0,
                     spent_cpu + time.process_time() - c0)
      raise
    seconds = spent + time.perf_counter() - t0
    cpu_seconds = spent_cpu + time.process_time() - c0
    if os.path.exists(os.path.join(tmp, SPENT_FILE)):
      os.remove(os.path.join(tmp, SPENT_FILE))
    marker = {
        "stage": name, "hash": h,
        "config": json.loads(json.dumps(config, sort_keys=True, default=str)),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # process CPU time (all threads): load-independent cost
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "result": json.loads(json.dumps(value, default=str)) if value is not None else None,
    }
    with open(os.path.join(tmp, DONE_FILE), "w") as f:
      json.dump(marker, f, indent=2, sort_keys=True)
    if os.path.exists(path):  # an unfinished (no DONE) or foreign dir in the way
      shutil.rmtree(path)
    os.replace(tmp, path)
    return StageResult(name, path, h, "ran", seconds, cpu_seconds=cpu_seconds,
                       value=marker["result"])


SPENT_FILE = "SPENT_SECONDS"


def _read_spent(tmp: str) -> tuple[float, float]:
  """(wall, cpu) seconds spent by earlier interrupted attempts of a resumable stage."""
  try:
    with open(os.path.join(tmp, SPENT_FILE)) as f:
      parts = [float(x) for x in f.read().split()]
  except (OSError, ValueError):
    return 0.0, 0.0
  return (parts + [0.0, 0.0])[0], (parts + [0.0, 0.0])[1]


def _write_spent(tmp: str, seconds: float, cpu_seconds: float) -> None:
  with open(os.path.join(tmp, SPENT_FILE), "w") as f:
    f.write(f"{seconds:.3f} {cpu_seconds:.3f}\n")


def safe_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("+", "_"))


# --- stage functions (the other workstreams' entry points, imported lazily) -----------------


@dataclasses.dataclass
class StageFns:
  """Entry points of the stages; tests swap in fakes."""

  prepare: Callable[..., str]
  embed: Callable[..., str]
  tokenize: Callable[..., dict]
  train: Callable[..., dict]
  popularity: Callable[..., dict]
  sasrec: Callable[..., dict]


def _real_prepare(dataset: str, output: str) -> str:
  from cost_jax import data  # pylint: disable=import-outside-toplevel
  return data.prepare(dataset, output=output)


def _real_embed(dataset_dir: str, **kwargs) -> str:
  from cost_jax.data import embed  # pylint: disable=import-outside-toplevel
  return embed.embed_dataset(dataset_dir, **kwargs)


def _real_tokenize(embeddings, method: str, output: str, seed: int, overrides: dict) -> dict:
  from cost_jax import tokenize  # pylint: disable=import-outside-toplevel
  return tokenize.run(embeddings, method, output, seed=seed, overrides=overrides)


def _real_train(dataset_dir: str, tokenizer_dir: str, model_dir: str, seed: int,
                task: str = "", **tiger: Any) -> dict:
  """TIGER seq2seq training + test scoring; `tiger` = TrainConfig / TransformerConfig fields.

  `task`: the SeqIO task name to register ("{method}_{dataset}" with SeqIO-safe characters;
  the trainer's default would take the method verbatim, and "rqvae+cost" is not a valid name).
  """
  from cost_jax import train  # pylint: disable=import-outside-toplevel
  metrics = train.train_and_evaluate(task or None, model_dir, dataset_dir=dataset_dir,
                                     tokenizer_dir=tokenizer_dir, seed=seed, **tiger)
  metrics.pop("summary", None)
  return metrics


def _real_popularity(dataset_dir: str, output: str, ks: Sequence[int]) -> dict:
  from cost_jax import popularity  # pylint: disable=import-outside-toplevel
  from cost_jax.data.processed import ProcessedDataset  # pylint: disable=import-outside-toplevel
  ds = ProcessedDataset.load(dataset_dir)
  return popularity.evaluate(ds.leave_one_out(), ds.num_items, ks=ks, output_dir=output)


def _real_sasrec(dataset_dir: str, output: str, seed: int, ks: Sequence[int], **cfg: Any) -> dict:
  from cost_jax import sasrec  # pylint: disable=import-outside-toplevel
  from cost_jax.data.processed import ProcessedDataset  # pylint: disable=import-outside-toplevel
  ds = ProcessedDataset.load(dataset_dir)
  return sasrec.train_and_evaluate(ds.leave_one_out(), ds.num_items, seed=seed, output_dir=output,
                                   ks=ks, **cfg)


REAL_FNS = StageFns(prepare=_real_prepare, embed=_real_embed, tokenize=_real_tokenize,
                    train=_real_train, popularity=_real_popularity, sasrec=_real_sasrec)


# --- the pipeline ----------------------------------------------------------------------------

DATASET_FILES = ("items.parquet", "sequences.parquet", "stats.json")


@dataclasses.dataclass
class PlannedStage:
  name: str
  kind: str
  config: dict
  deps: tuple[str, ...]
  run: Callable[[str], Any]
  method: str = ""
  seed: int | None = None
  resume: bool = False  # keep an interrupted attempt's files (the trainer resumes from them)


class Pipeline:
  """Plans the stages of a profile, runs them in order (seed by seed), writes the report."""

  def __init__(self, profile: Profile, output: str, fns: StageFns = REAL_FNS,
               dataset_dir: str | None = None, stream=None):
    self.profile = profile
    self.output = os.path.abspath(output)
    self.fns = fns
    self.external_dataset = os.path.abspath(dataset_dir) if dataset_dir else None
    self.stream = stream or sys.stderr
    self.cache = StageCache(self.output, log=self.log)
    self.results: dict[str, StageResult] = {}
    self.stages: list[PlannedStage] = []
    self._plan()

  def log(self, msg: str) -> None:
    print(msg, file=self.stream, flush=True)

  # .. planning ..
  def _dir(self, name: str) -> str:
    """The output dir of a planned stage (its dataset/tokenizer subfolder is chosen by kind)."""
    st = self._by_name[name]
    return self.cache.path(st.name, st.config)

  def _hash(self, name: str) -> str:
    st = self._by_name[name]
    return config_hash(st.config)

  def _add(self, stage: PlannedStage) -> None:
    self.stages.append(stage)
    self._by_name[stage.name] = stage

  def _plan(self) -> None:
    p = self.profile
    self._by_name: dict[str, PlannedStage] = {}
    for m in p.methods:
      if m not in ABLATION_METHODS + ("rqkmeans",):
        raise UserError(f"--set methods: unknown method {m!r}; expected some of "
                        f"{', '.join(ABLATION_METHODS + ('rqkmeans',))}")
    for b in p.baselines:
      if b not in BASELINES:
        raise UserError(f"--set baselines: unknown baseline {b!r}; expected some of "
                        f"{', '.join(BASELINES)}")
    if not p.seeds:
      raise UserError("--seeds: at least one seed is needed")

    if self.external_dataset:
      ext = self.external_dataset
      if not os.path.isfile(os.path.join(ext, "stats.json")):
        raise UserError(f"{ext}: not a processed dataset dir (no stats.json)")
      fp = _dataset_fingerprint(ext)
      self._add(PlannedStage("data", "data", {"external": ext, "fingerprint": fp}, (),
                             lambda tmp: self._link_dataset(ext, tmp, with_embeddings=False)))
      if os.path.isfile(os.path.join(ext, "embeddings.npy")):
        self._add(PlannedStage("embed", "embed", {"external": ext, "fingerprint": fp,
                                                  "embeddings": _file_sig(os.path.join(
                                                      ext, "embeddings.npy"))}, ("data",),
                               lambda tmp: self._link_dataset(ext, tmp, with_embeddings=True)))
      else:
        self._add(self._embed_stage())
    else:
      self._add(PlannedStage("data", "data", {"dataset": p.dataset}, (), self._run_data))
      self._add(self._embed_stage())

    if "popularity" in p.baselines:
      cfg = {"data": self._hash("data"), "ks": list(p.ks)}
      self._add(PlannedStage("popularity", "popularity", cfg, ("data",),
                             lambda tmp: self.fns.popularity(self.dataset_path("data"), tmp,
                                                             ks=p.ks), method="popularity",
                             seed=0))
    for seed in p.seeds:
      for m in p.methods:
        tok_name = f"tokenize-{m}-s{seed}"
        tok_cfg = {"embed": self._hash("embed"), "method": m, "seed": seed,
                   "overrides": p.tokenizer_overrides(m)}
        self._add(PlannedStage(tok_name, "tokenize", tok_cfg, ("embed",),
                               self._tokenize_fn(m, seed), method=m, seed=seed))
        tr_cfg = {"data": self._hash("embed"), "tokenizer": self._hash(tok_name), "seed": seed,
                  "tiger": dict(p.tiger), "ks": list(p.ks)}
        self._add(PlannedStage(f"train-{m}-s{seed}", "train", tr_cfg, (tok_name,),
                               self._train_fn(tok_name, seed), method=m, seed=seed,
                               resume=True))
      if "sasrec" in p.baselines:
        cfg = {"data": self._hash("data"), "seed": seed, "sasrec": dict(p.sasrec),
               "ks": list(p.ks)}
        self._add(PlannedStage(f"sasrec-s{seed}", "sasrec", cfg, ("data",),
                               lambda tmp, seed=seed: self.fns.sasrec(
                                   self.dataset_path("data"), tmp, seed=seed, ks=p.ks,
                                   **p.sasrec), method="sasrec", seed=seed))

  def _embed_stage(self) -> PlannedStage:
    cfg = {"data": self._hash("data"), "embed": dict(self.profile.embed)}
    return PlannedStage("embed", "embed", cfg, ("data",), self._run_embed)

  # .. stage bodies ..
  def dataset_path(self, stage: str) -> str:
    return os.path.join(self._dir(stage), "dataset")

  def _run_data(self, tmp: str) -> dict:
    out = self.fns.prepare(self.profile.dataset, output=os.path.join(tmp, "dataset"))
    if os.path.abspath(out) != os.path.join(tmp, "dataset"):
      raise UserError(f"data stage: prepare wrote {out}, expected {tmp}/dataset")
    return _read_stats(os.path.join(tmp, "dataset"))

  def _link_dataset(self, src: str, tmp: str, with_embeddings: bool) -> dict:
    dst = os.path.join(tmp, "dataset")
    os.makedirs(dst)
    files = list(DATASET_FILES) + (["embeddings.npy", "embeddings.json"] if with_embeddings else [])
    for f in files:
      if os.path.isfile(os.path.join(src, f)):
        _link_or_copy(os.path.join(src, f), os.path.join(dst, f))
    return _read_stats(dst)

  def _run_embed(self, tmp: str) -> dict:
    dst = os.path.join(tmp, "dataset")
    os.makedirs(dst)
    for f in DATASET_FILES:
      _link_or_copy(os.path.join(self.dataset_path("data"), f), os.path.join(dst, f))
    self.fns.embed(dst, **self.profile.embed)
    info = {}
    meta = os.path.join(dst, "embeddings.json")
    if os.path.isfile(meta):
      with open(meta) as f:
        info = json.load(f)
    return {"embeddings": info}

  def _tokenize_fn(self, method: str, seed: int) -> Callable[[str], Any]:
    def run(tmp: str) -> dict:
      import numpy as np  # pylint: disable=import-outside-toplevel
      emb = np.load(os.path.join(self.dataset_path("embed"), "embeddings.npy"))
      report = self.fns.tokenize(emb, method, os.path.join(tmp, "tokenizer"), seed=seed,
                                 overrides=dict(self.profile.tokenizer_overrides(method)))
      return tokenizer_stats(report, method, seed)
    return run

  def _train_fn(self, tok_stage: str, seed: int) -> Callable[[str], Any]:
    def run(tmp: str) -> dict:
      method = self._by_name[tok_stage].method
      task = f"{safe_name(method)}_{safe_name(self.profile.dataset)}".replace("-", "_")
      metrics = self.fns.train(self.dataset_path("embed"),
                               os.path.join(self._dir(tok_stage), "tokenizer"),
                               os.path.join(tmp, "model"), seed=seed, task=task,
                               **self.profile.tiger)
      return {k: v for k, v in dict(metrics).items() if _is_number(v)}
    return run

  # .. running ..
  def status_of(self, stage: PlannedStage) -> str:
    return "cached" if self.cache.done_marker(stage.name, stage.config) else "pending"

  def print_plan(self) -> None:
    self.log(f"reproduce: profile {self.profile.name} -> {self.output}")
    self.log(f"  {len(self.stages)} stages (seeds {list(self.profile.seeds)}; methods "
             f"{list(self.profile.methods)}; baselines {list(self.profile.baselines)})")
    for i, st in enumerate(self.stages, 1):
      self.log(f"  [{i:2d}/{len(self.stages)}] {st.name:28s} {self.status_of(st):7s} "
               f"{os.path.relpath(self.cache.path(st.name, st.config), self.output)}")

  def run(self, keep_going: bool = True, report: bool = True,
          time_budget_s: float | None = None) -> list[StageResult]:
    """Runs the planned stages in order; with `time_budget_s`, starts no stage after that many
    seconds (the rest are reported as not run)."""
    t_start = time.perf_counter()
    self.print_plan()
    total = len(self.stages)
    pending = [st.name for st in self.stages if self.status_of(st) != "cached"]
    # Rate and ETA over the stages that have to run (cached ones take no time).
    progress = Progress(max(len(pending), 1), desc="reproduce", unit="stages to run",
                        min_interval=0.0)
    done_pending = 0
    last_seed = None
    for i, st in enumerate(self.stages, 1):
      if report and st.seed is not None and last_seed is not None and st.seed != last_seed and \
          st.kind in ("tokenize", "train"):
        self.write_report(partial=True)  # after each seed: a partial report
      if st.kind in ("tokenize", "train"):
        last_seed = st.seed
      blocked = [d for d in st.deps if self.results.get(d) is None or
                 self.results[d].status in ("failed", "blocked")]
      if blocked:
        res = StageResult(st.name, self.cache.path(st.name, st.config), config_hash(st.config),
                          "blocked", error=f"needs {', '.join(blocked)}")
        self.results[st.name] = res
        self.log(f"[stage {i}/{total}] {st.name}: blocked ({res.error})")
        if st.name in pending:
          done_pending += 1
          progress.update(done_pending)
        continue
      cached = self.status_of(st) == "cached"
      if (not cached and time_budget_s is not None and
          time.perf_counter() - t_start > time_budget_s):
        self.log(f"[stage {i}/{total}] {st.name}: not started (time budget of "
                 f"{format_duration(time_budget_s)} used up)")
        continue
      self.log(f"[stage {i}/{total}] {st.name}: " + ("skipped (cached)" if cached else "running"))
      try:
        res = self.cache.run(st.name, st.config, st.run, resume=st.resume)
      except KeyboardInterrupt:
        raise
      except Exception as e:  # pylint: disable=broad-except
        if not keep_going:
          raise
        traceback.print_exc(file=self.stream)
        res = StageResult(st.name, self.cache.path(st.name, st.config), config_hash(st.config),
                          "failed", error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
      self.results[st.name] = res
      if res.status == "ran":
        self.log(f"[stage {i}/{total}] {st.name}: done in {format_duration(res.seconds)}")
      elif res.status == "failed":
        self.log(f"[stage {i}/{total}] {st.name}: FAILED ({res.error})")
      if st.name in pending:
        done_pending += 1
        progress.update(done_pending)
    self.print_summary()
    if report:
      complete = len(self.results) == len(self.stages) and all(
          r.status in ("ran", "cached") for r in self.results.values())
      self.write_report(partial=not complete)
    return [self.results[s.name] for s in self.stages if s.name in self.results]

  def print_summary(self) -> None:
    self.log("reproduce: stage summary")
    for st in self.stages:
      r = self.results.get(st.name)
      if r is None:
        continue
      status = {"ran": "done", "cached": "skipped"}.get(r.status, r.status)
      self.log(f"  {st.name:28s} {status:8s} {format_duration(r.seconds)}"
               + (f"  {r.error}" if r.error else ""))

  # .. report ..
  def collect(self) -> tuple[list[dict], list[dict], list[dict]]:
    """(metric rows, tokenizer stats, timings) of the stages finished so far."""
    rows, tok, timings = [], [], []
    for st in self.stages:
      r = self.results.get(st.name)
      if r is None:
        continue
      timings.append({"stage": st.name, "status": r.status, "seconds": r.seconds,
                      "cpu_seconds": r.cpu_seconds})
      if r.status not in ("ran", "cached") or r.value is None:
        continue
      if st.kind in ("train", "popularity", "sasrec"):
        metrics = _read_metrics(r.path) or dict(r.value)
        rows.append({"method": st.method, "seed": st.seed, **metrics})
      elif st.kind == "tokenize":
        tok.append(dict(r.value))
    return rows, tok, timings

  def write_report(self, partial: bool) -> dict[str, str] | None:
    from cost_jax import report as report_lib  # pylint: disable=import-outside-toplevel
    rows, tok, timings = self.collect()
    if not rows:
      return None
    seeds_done = sorted({r["seed"] for r in rows if r["method"] in self.profile.methods})
    title = f"CoST ablation on {self.profile.dataset} (profile: {self.profile.name})"
    if partial:
      title += f" - PARTIAL (seeds finished so far: {seeds_done})"
    paths = report_lib.write_report(self.output, rows, tokenizer_stats=tok, timings=timings,
                                    title=title, setup=self.setup_lines(),
                                    notes=self.deviation_notes(rows), ks=self.profile.ks)
    self.log(f"reproduce: wrote {paths['results.md']}")
    return paths

  def setup_lines(self) -> list[str]:
    p = self.profile
    lines = [f"Command: `python -m cost_jax.reproduce {' '.join(sys.argv[1:])}`".replace(
        "`python -m cost_jax.reproduce `", "`python -m cost_jax.reproduce`"),
             f"Profile `{p.name}`: {p.description}.",
             f"Methods: {', '.join(p.methods)}; baselines: {', '.join(p.baselines) or 'none'}; "
             f"seeds: {', '.join(map(str, p.seeds))} (the same for every method; a seed drives "
             "the tokenizer and the seq2seq model).",
             f"Seq2seq model (TIGER): {_fmt_kv(p.tiger)}.",
             f"Tokenizer overrides: {_fmt_kv({k: v for k, v in p.tokenizer.items()})}.",
             f"SASRec: {_fmt_kv(p.sasrec) or 'defaults'} (see cost_jax/sasrec.py).",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs visible, Python "
             f"{platform.python_version()}; finished "
             f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}."]
    data = self.results.get("data")
    if data is not None and isinstance(data.value, dict):
      s = data.value
      lines.append(f"Data: {s.get('users', '?')} users, {s.get('items', '?')} items, "
                   f"{s.get('interactions', '?')} interactions (stats.json).")
    return lines

  def deviation_notes(self, rows: Sequence[Mapping]) -> list[str]:
    """Deviations from the papers, from the profile's actual values."""
    p, t = self.profile, self.profile.tiger
    emb = self.results.get("embed")
    emb_model = (emb.value or {}).get("embeddings", {}).get("model") if emb and isinstance(
        emb.value, dict) else None
    emb_model = emb_model or p.embed.get("model", "?")
    dataset = ("MovieLens-100K (item text: the CoST prompt with genres as category, title and "
               "release year)" if p.dataset == "ml100k" else p.dataset)
    if self.external_dataset:
      dataset += f", from {self.external_dataset}"
    notes = [
        f"Dataset: {dataset} instead of MIND / Amazon Office (CoST §4.1) or Amazon "
        "Beauty/Sports/Toys (TIGER §4.1.1).",
        f"Text encoder: {emb_model} instead of Sentence-T5 (768-d; CoST §4.1, TIGER §4.1.3).",
        f"Seq2seq model: {t.get('num_encoder_layers')}+{t.get('num_decoder_layers')} layers, "
        f"d_model {t.get('emb_dim')}, {t.get('num_heads')} heads x {t.get('head_dim')}, MLP "
        f"{t.get('mlp_dim')} (TIGER §4.1.3: 4+4, 128, 6 x 64, 1024).",
        f"Training: {t.get('num_train_steps')} steps, batch {t.get('batch_size')}, lr "
        f"{t.get('learning_rate')} ({t.get('lr_constant_steps')} constant steps, then inverse sqrt; "
        f"{t.get('optimizer', 'adafactor')}) "
        "(TIGER §4.1.3: 200k steps, batch 256, lr 0.01 for 10k steps; CoST §4.1: batch 512, "
        "lr 0.001).",
        f"Tokenizer epochs: {self._tok_epochs()} (CoST Fig. 3: 20/50/100 epochs; TIGER §4.1.3: "
        "20k epochs).",
        "Ablation tokenizers (random, L_re, L_co, L_re + L_co) share CoST's architecture (§4.1: "
        "latent 96, 3 levels x 64 codes, shared codebook), so only the loss differs; collisions "
        "are resolved by re-assigning colliding items to free codes (IDs of length 3; TIGER adds a "
        "4th token instead). LSH follows TIGER §4.3.2 (8 hyperplanes x 4 levels, IDs of length 4, "
        "same re-assignment). TIGER's Random ID uses 4 x 255 codes; here random IDs have CoST's "
        "3 x 64 cardinality.",
        f"Seeds: {len(p.seeds)} ({', '.join(map(str, p.seeds))}); the papers report single runs "
        "without spread.",
        f"Decoding: trie-constrained beam search, {t.get('num_beams')} beams, top-{max(p.ks)}; "
        "metrics over all items (full ranking), no history filtering; leave-one-out test split "
        f"(history = train + validation item, the last {t.get('max_history') or 20} items; "
        "TIGER §4.1.1: 20).",
        "Baselines: MostPop counts training + validation interactions; SASRec-style model "
        f"({self._sasrec_desc()}) ranks all items, same split and metric function. TIGER "
        "Table 1's SASRec numbers are on Amazon, not comparable in value.",
    ]
    if len(p.seeds) < 3:
      notes.append(f"Only {len(p.seeds)} seed(s): spreads are not meaningful.")
    for m in list(p.methods) + [b for b in p.baselines if b == "sasrec"]:
      done = sorted({r["seed"] for r in rows if r["method"] == m})
      if done != sorted(p.seeds):
        notes.append(f"{m}: results for seed(s) {done or 'none'} of {list(p.seeds)} so far; its "
                     "mean/std cover only those.")
    missing = [s.name for s in self.stages if self.results.get(s.name) is not None and
               self.results[s.name].status in ("failed", "blocked")]
    if missing:
      notes.append(f"Stages that did not finish: {', '.join(missing)}.")
    pending = [s.name for s in self.stages if s.name not in self.results]
    if pending:
      notes.append(f"Stages not run yet: {len(pending)} ({', '.join(pending[:8])}"
                   f"{', ...' if len(pending) > 8 else ''}).")
    return notes

  def _tok_epochs(self) -> str:
    vals = {m: self.profile.tokenizer_overrides(m).get("epochs") for m in self.profile.methods
            if m in ("rqvae", "cost", "rqvae+cost")}
    vals = {m: v for m, v in vals.items() if v is not None}
    if not vals:
      return "tokenizer defaults"
    if len(set(vals.values())) == 1:
      return f"{next(iter(vals.values()))} for the neural tokenizers"
    return ", ".join(f"{m} {v}" for m, v in vals.items())

  def _sasrec_desc(self) -> str:
    from cost_jax import sasrec  # pylint: disable=import-outside-toplevel
    fields = {f.name: f.default for f in dataclasses.fields(sasrec.SASRecConfig)
              if f.default is not dataclasses.MISSING}
    fields.update(self.profile.sasrec)
    return (f"{fields['num_blocks']} blocks, d {fields['emb_dim']}, max len {fields['max_len']}, "
            f"{fields['num_epochs']} epochs, loss {fields['loss']}"
            + (" = full softmax cross-entropy over all items" if fields["loss"] == "softmax"
               else " = BCE with one sampled negative (SASRec paper)"))


# --- helpers -----------------------------------------------------------------------------------


def tokenizer_stats(report: Mapping[str, Any] | None, method: str, seed: int) -> dict:
  """Normalizes a cost_jax.tokenize report to {method, seed, usage[levels], collided_items,
  largest_group, id_length, ...}; collisions are before dedup."""
  report = dict(report or {})
  out: dict[str, Any] = {"method": method, "seed": seed}
  usage = _find(report, ("usage_per_level", "codebook_usage", "usage"))
  if isinstance(usage, Mapping):
    usage = [usage[k] for k in sorted(usage)]
  if isinstance(usage, (list, tuple)):
    out["usage"] = [float(u) for u in usage if _is_number(u)]
  coll = _find(report, ("collisions_before_dedup", "collisions_before", "collisions"))
  if isinstance(coll, Mapping):
    for src, dst in (("colliding_items", "collided_items"), ("largest_group", "largest_group"),
                     ("collision_groups", "collision_groups"), ("unique_ids", "unique_ids")):
      if _is_number(coll.get(src)):
        out[dst] = coll[src]
  ids = _find(report, ("id_length", "semantic_id_length"))
  if _is_number(ids):
    out["id_length"] = int(ids)
  if _is_number(report.get("reconstruction_cosine")):
    out["reconstruction_cosine"] = float(report["reconstruction_cosine"])
  nprec = report.get("neighbor_precision")
  if isinstance(nprec, Mapping) and _is_number(nprec.get("value")):
    out["neighbor_precision"] = float(nprec["value"])
  for k in ("wall_time_s", "seconds"):
    if _is_number(report.get(k)):
      out["seconds"] = float(report[k])
      break
  return out


def _find(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
  """First of `keys` in d or in a nested dict (one level deep)."""
  for k in keys:
    if k in d:
      return d[k]
  for v in d.values():
    if isinstance(v, Mapping):
      for k in keys:
        if k in v:
          return v[k]
  return None


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt_kv(d: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v}" for k, v in d.items())


def _read_stats(dataset_dir: str) -> dict:
  try:
    with open(os.path.join(dataset_dir, "stats.json")) as f:
      s = json.load(f)
  except (OSError, ValueError):
    return {}
  return {k: s.get(k) for k in ("users", "items", "interactions", "seq_len_mean",
                                "seq_len_median")}


def _read_metrics(stage_dir: str) -> dict | None:
  """The scalar entries of the stage's metrics.json (numbers and strings such as "split")."""
  for sub in ("", "model"):
    file = os.path.join(stage_dir, sub, "metrics.json")
    if os.path.isfile(file):
      with open(file) as f:
        return {k: v for k, v in json.load(f).items()
                if _is_number(v) or isinstance(v, str)}
  return None


def _file_sig(path: str) -> dict:
  st = os.stat(path)
  return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _dataset_fingerprint(path: str) -> dict:
  return {f: _file_sig(os.path.join(path, f)) for f in DATASET_FILES
          if os.path.isfile(os.path.join(path, f))}


def _link_or_copy(src: str, dst: str) -> None:
  try:
    os.link(src, dst)
  except OSError:
    shutil.copy2(src, dst)


# --- CLI ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _terminate_as_interrupt():
  """SIGTERM (and SIGINT, ignored in background jobs) -> KeyboardInterrupt while running, so
  that `kill PID` lets the trainer save a checkpoint and the stage resume on the next run."""
  def handler(signum, frame):  # pylint: disable=unused-argument
    raise KeyboardInterrupt
  previous = {}
  for sig in (signal.SIGTERM, signal.SIGINT):
    try:
      previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
      pass
  try:
    yield
  finally:
    for sig, old in previous.items():
      signal.signal(sig, old)


def build_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(
      prog="python -m cost_jax.reproduce",
      description="Reproduce the CoST ablation (random / LSH / L_re / L_co / L_re+L_co) with "
                  "TIGER on MovieLens-100K, plus MostPop and SASRec baselines.")
  ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu",
                  help="cpu: small model, ~1 h on 2 cores; paper: TIGER size/steps (GPU/TPU)")
  ap.add_argument("--output", default="results/ml100k", help="output dir (report + stage cache)")
  ap.add_argument("--seeds", help="comma-separated seeds (default: the profile's, cpu: 0,1,2)")
  ap.add_argument("--methods", help=f"comma-separated subset of {','.join(ABLATION_METHODS)}")
  ap.add_argument("--baselines", help="comma-separated subset of popularity,sasrec ('' = none)")
  ap.add_argument("--dataset_dir", "--dataset-dir", dest="dataset_dir",
                  help="use this processed dataset dir instead of preparing --set dataset")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override a profile value, e.g. tiger.num_train_steps=500, "
                       "tokenizer.epochs=20, tokenizer.cost.tau=0.5, sasrec.num_epochs=50")
  ap.add_argument("--list", action="store_true", help="print the stage plan and exit")
  ap.add_argument("--report_only", "--report-only", dest="report_only", action="store_true",
                  help="rewrite the report from finished stages; run nothing")
  ap.add_argument("--time_budget_min", "--time-budget-min", dest="time_budget_min", type=float,
                  help="start no new stage after this many minutes; report what finished")
  ap.add_argument("--fail_fast", "--fail-fast", dest="fail_fast", action="store_true",
                  help="stop at the first failing stage (default: keep going, report the rest)")
  return ap


def profile_from_args(args: argparse.Namespace) -> Profile:
  profile = apply_overrides(PROFILES[args.profile], list(args.set))
  changes: dict[str, Any] = {}
  try:
    if args.seeds is not None:
      changes["seeds"] = tuple(int(s) for s in args.seeds.split(",") if s.strip())
  except ValueError:
    raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
  if args.methods is not None:
    changes["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
  if args.baselines is not None:
    changes["baselines"] = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
  return dataclasses.replace(profile, **changes)


@exits_cleanly
def main(argv: Sequence[str] | None = None, fns: StageFns = REAL_FNS) -> int:
  args = build_parser().parse_args(argv)
  profile = profile_from_args(args)
  pipe = Pipeline(profile, args.output, fns=fns, dataset_dir=args.dataset_dir)
  if args.list:
    pipe.print_plan()
    return 0
  if args.report_only:
    for st in pipe.stages:
      marker = pipe.cache.done_marker(st.name, st.config)
      if marker is not None:
        pipe.results[st.name] = StageResult(st.name, pipe.cache.path(st.name, st.config),
                                            config_hash(st.config), "cached",
                                            float(marker.get("seconds", 0.0)),
                                            cpu_seconds=marker.get("cpu_seconds"),
                                            value=marker.get("result"))
    if pipe.write_report(partial=len(pipe.results) < len(pipe.stages)) is None:
      raise UserError(f"{args.output}: no finished stage with metrics to report")
    return 0
  with _terminate_as_interrupt():
    results = pipe.run(keep_going=not args.fail_fast,
                       time_budget_s=None if args.time_budget_min is None
                       else 60.0 * args.time_budget_min)
  failed = [r.name for r in results if r.status in ("failed", "blocked")]
  not_run = len(pipe.stages) - len(results)
  if failed or not_run:
    print(f"reproduce: {len(failed)} stage(s) did not finish"
          + (f": {', '.join(failed)}" if failed else "")
          + (f"; {not_run} not started (time budget)" if not_run else ""), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
