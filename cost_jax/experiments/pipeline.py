"""The reproduction pipeline: plans the stages of a profile, runs them in order, writes the report.

  data                      cost_jax.data.prepare(dataset)  (embedded MovieLens-100K)
  embed                     cost_jax.data.embed.embed_dataset(dir, model)   item-text embeddings
  popularity                most-popular baseline (cost_jax.baselines.popularity)
  transition                item-transition (Markov chain) baseline (cost_jax.baselines.transition)
  tokenize-<method>-s<seed> cost_jax.tokenizer.fit.fit(embeddings, method, seed, overrides)
  train-<method>-s<seed>    cost_jax.seq2seq.trainer.train_and_evaluate: TIGER seq2seq +
                            constrained beam search on the test split -> metrics.json
  sasrec-s<seed>            SASRec baseline (cost_jax.baselines.sasrec), the profile's loss
  sasrec_bce-s<seed>        the same with SASRec's own loss (BCE, one sampled negative): the
                            setting of the SASRec row TIGER's Table 1 quotes
  cove_sasrec-s<seed>       COVE_SASRec (cost_jax.baselines.cove_sasrec), SASRec's settings
  tokenize-cove-s<seed>     COVE's codes as semantic IDs, learned in SASRec from the training split
  report                    results.md, results.csv, PNGs in OUTPUT (experiments.report),
                            rewritten after every seed so partial results are always there

Each stage is cached by cost_jax.experiments.stage_cache; every method uses the same seeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from typing import Any, Callable, Sequence



from cost_jax import stop
from cost_jax.experiments import assemble
from cost_jax.experiments import capabilities as capabilities_lib
from cost_jax.experiments.profiles import BASELINES, SASREC_ROWS, Profile
from cost_jax.experiments.stage_cache import StageCache, StageResult, config_hash
from cost_jax.experiments.stages import (REAL_FNS, StageFns, _is_number, checked_embeddings,
                                         tokenizer_stats, validate_profile)
from cost_jax.io import UserError, link_or_copy, read_json, read_json_or
from cost_jax.progress import Progress, format_duration
from cost_jax.tokenizer.config import INTERACTION_METHODS, METHODS, task_name


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
               dataset_dir: str | None = None, stream=None, reuse_from: Sequence[str] = ()):
    self.profile = profile
    self.output = os.path.abspath(output)
    self.fns = fns
    self.external_dataset = os.path.abspath(dataset_dir) if dataset_dir else None
    self.stream = stream or sys.stderr
    self.cache = StageCache(self.output, log=self.log, reuse_from=reuse_from)
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
      if m not in METHODS:
        raise UserError(f"methods: unknown method {m!r}; expected some of "
                        f"{', '.join(METHODS)}")
    for b in p.baselines:
      if b not in BASELINES:
        raise UserError(f"baselines: unknown baseline {b!r}; expected some of "
                        f"{', '.join(BASELINES)}")
    if not p.seeds:
      raise UserError("--seeds: at least one seed is needed")
    validate_profile(p)  # a bad binding fails here, --list included, before any stage runs

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
      data_cfg = {"dataset": p.dataset}
      if p.data:
        data_cfg["data"] = dict(p.data)
      self._add(PlannedStage("data", "data", data_cfg, (), self._run_data))
      self._add(self._embed_stage())

    for kind in ("popularity", "transition"):  # count baselines: no seed, no training
      if kind in p.baselines:
        cfg = {"data": self._hash("data"), "ks": list(p.ks)}
        self._add(PlannedStage(kind, kind, cfg, ("data",),
                               lambda tmp, fn=getattr(self.fns, kind): fn(
                                   self.dataset_path("data"), tmp, ks=p.ks),
                               method=kind, seed=0))
    for seed in p.seeds:
      for m in p.methods:
        tok_name = f"tokenize-{m}-s{seed}"
        if m in INTERACTION_METHODS and "cove_sasrec" in p.baselines:
          # The COVE_SASRec row's model is the same (training part, seed, settings): reuse
          # its codes instead of training it twice.
          host = self._cove_sasrec_stage(seed)
          tok_cfg = {"from": self._hash(host.name), "method": m, "seed": seed}
          self._add(PlannedStage(
              tok_name, "tokenize", tok_cfg, (host.name,),
              lambda tmp, host=host.name, seed=seed: tokenizer_stats(
                  self.fns.cove_tokenize_from(self._dir(host), os.path.join(tmp, "tokenizer")),
                  "cove", seed), method=m, seed=seed))
        elif m in INTERACTION_METHODS:  # COVE: learned from the training interactions
          tok_cfg = {"data": self._hash("data"), "method": m, "seed": seed,
                     "sasrec": dict(p.sasrec), "cove": dict(p.cove)}
          self._add(PlannedStage(tok_name, "tokenize", tok_cfg, ("data",),
                                 self._cove_tokenize_fn(seed), method=m, seed=seed))
        else:
          tok_cfg = {"embed": self._hash("embed"), "method": m, "seed": seed,
                     "overrides": p.tokenizer_overrides(m)}
          self._add(PlannedStage(tok_name, "tokenize", tok_cfg, ("embed",),
                                 self._tokenize_fn(m, seed), method=m, seed=seed))
        tr_cfg = {"data": self._hash("embed"), "tokenizer": self._hash(tok_name), "seed": seed,
                  "tiger": dict(p.tiger), "ks": list(p.ks)}
        self._add(PlannedStage(f"train-{m}-s{seed}", "train", tr_cfg, (tok_name,),
                               self._train_fn(tok_name, seed), method=m, seed=seed,
                               resume=True))
      for b in SASREC_ROWS:
        if b not in p.baselines:
          continue
        settings = p.sasrec_settings(b)
        cfg = {"data": self._hash("data"), "seed": seed, "sasrec": settings, "ks": list(p.ks)}
        self._add(PlannedStage(f"{b}-s{seed}", "sasrec", cfg, ("data",),
                               lambda tmp, seed=seed, settings=settings: self.fns.sasrec(
                                   self.dataset_path("data"), tmp, seed=seed, ks=p.ks,
                                   **settings), method=b, seed=seed,
                               resume=True))  # SASRec resumes from its epoch checkpoints
      if "cove_sasrec" in p.baselines:
        self._cove_sasrec_stage(seed)

    self._plan_capabilities()

  def _plan_capabilities(self) -> None:
    """TIGER's capability studies (experiments.capabilities) on the first seed."""
    p = self.profile
    cap = capabilities_lib.settings(p.capabilities)
    if not cap["studies"]:
      return
    seed, m = p.seeds[0], cap["method"]
    if m not in METHODS:
      raise UserError(f"CapabilityConfig.method: unknown method {m!r}")
    deps: list[str] = []
    if capabilities_lib.studies_need_main_model(cap["studies"]):
      if m not in p.methods:
        raise UserError(f"--capabilities {','.join(cap['studies'])}: the diversity and invalid-ID"
                        f" studies read the TIGER model of method {m!r}; add it to --methods or "
                        "--gin.CapabilityConfig.method=\"'<one of the methods>'\"")
      deps.append(f"train-{m}-s{seed}")
    if "cold_start" in cap["studies"]:
      data_cfg = {"embed": self._hash("embed"), "fraction": cap["cold_start_fraction"],
                  "seed": seed}
      self._add(PlannedStage("cold_start-data", "cold_start_data", data_cfg, ("embed",),
                             lambda tmp: self.fns.cold_start_data(
                                 self.dataset_path("embed"), os.path.join(tmp, "dataset"),
                                 fraction=cap["cold_start_fraction"], seed=seed)))
      tok = f"cold_start-tokenize-{m}-s{seed}"
      tok_cfg = {"data": self._hash("cold_start-data"), "method": m, "seed": seed,
                 "overrides": p.tokenizer_overrides(m)}
      self._add(PlannedStage(tok, "cold_start_tokenize", tok_cfg, ("cold_start-data",),
                             lambda tmp: tokenizer_stats(self.fns.cold_start_tokenize(
                                 self.dataset_path("cold_start-data"), m,
                                 os.path.join(tmp, "tokenizer"), seed=seed,
                                 overrides=dict(p.tokenizer_overrides(m))), m, seed),
                             method=m, seed=seed))
      train = f"cold_start-train-{m}-s{seed}"
      tr_cfg = {"data": self._hash("cold_start-data"), "tokenizer": self._hash(tok), "seed": seed,
                "tiger": dict(p.tiger)}

      def run_train(tmp: str) -> dict:
        metrics = self.fns.train(self.dataset_path("cold_start-data"),
                                 os.path.join(self._dir(tok), "tokenizer"),
                                 os.path.join(tmp, "model"), seed=seed,
                                 task=task_name(m, p.dataset) + "_cold_start", **p.tiger)
        return {k: v for k, v in dict(metrics).items() if _is_number(v)}

      self._add(PlannedStage(train, "cold_start_train", tr_cfg, (tok,), run_train, method=m,
                             seed=seed, resume=True))
      deps.append(train)
    cfg = {"deps": {d: self._hash(d) for d in deps},
           "capabilities": json.loads(json.dumps(cap, default=list))}

    def run_studies(tmp: str) -> dict:
      main = f"train-{m}-s{seed}" if f"train-{m}-s{seed}" in deps else None
      cold = f"cold_start-train-{m}-s{seed}" if "cold_start" in cap["studies"] else None
      res = self.fns.capabilities(
          tmp, cap, seed=seed,
          model_dir=os.path.join(self._dir(main), "model") if main else None,
          dataset_dir=self.dataset_path("embed"),
          cold_model_dir=os.path.join(self._dir(cold), "model") if cold else None,
          cold_dataset_dir=self.dataset_path("cold_start-data") if cold else None)
      return {"studies": [k for k in capabilities_lib.STUDIES if k in res]}

    self._add(PlannedStage(f"capabilities-s{seed}", "capabilities", cfg, tuple(deps), run_studies,
                           seed=seed))

  def _cove_sasrec_stage(self, seed: int) -> PlannedStage:
    """The COVE_SASRec baseline stage of `seed`, planned once (the cove tokenizer may need it
    before the baselines' turn)."""
    name = f"cove_sasrec-s{seed}"
    if name not in self._by_name:
      p = self.profile
      cfg = {"data": self._hash("data"), "seed": seed, "sasrec": dict(p.sasrec),
             "cove": dict(p.cove), "ks": list(p.ks)}
      self._add(PlannedStage(name, "cove_sasrec", cfg, ("data",),
                             lambda tmp: self.fns.cove_sasrec(
                                 self.dataset_path("data"), tmp, seed=seed, ks=p.ks,
                                 cove=dict(p.cove), **p.sasrec),
                             method="cove_sasrec", seed=seed, resume=True))
    return self._by_name[name]

  def _embed_stage(self) -> PlannedStage:
    cfg = {"data": self._hash("data"), "embed": dict(self.profile.embed)}
    return PlannedStage("embed", "embed", cfg, ("data",), self._run_embed)

  # .. stage bodies ..
  def dataset_path(self, stage: str) -> str:
    return os.path.join(self._dir(stage), "dataset")

  def _run_data(self, tmp: str) -> dict:
    out = self.fns.prepare(self.profile.dataset, output=os.path.join(tmp, "dataset"),
                           **dict(self.profile.data))
    if os.path.abspath(out) != os.path.join(tmp, "dataset"):
      raise UserError(f"data stage: prepare wrote {out}, expected {tmp}/dataset")
    return _read_stats(os.path.join(tmp, "dataset"))

  def _link_dataset(self, src: str, tmp: str, with_embeddings: bool) -> dict:
    dst = os.path.join(tmp, "dataset")
    os.makedirs(dst)
    files = list(DATASET_FILES) + (["embeddings.npy", "embeddings.json"] if with_embeddings else [])
    for f in files:
      if os.path.isfile(os.path.join(src, f)):
        link_or_copy(os.path.join(src, f), os.path.join(dst, f))
    return _read_stats(dst)

  def _run_embed(self, tmp: str) -> dict:
    dst = os.path.join(tmp, "dataset")
    os.makedirs(dst)
    for f in DATASET_FILES:
      link_or_copy(os.path.join(self.dataset_path("data"), f), os.path.join(dst, f))
    self.fns.embed(dst, **self.profile.embed)
    info = {}
    meta = os.path.join(dst, "embeddings.json")
    if os.path.isfile(meta):
      info = read_json(meta)
    return {"embeddings": info}

  def _tokenize_fn(self, method: str, seed: int) -> Callable[[str], Any]:
    def run(tmp: str) -> dict:
      emb = checked_embeddings(self.dataset_path("embed"))
      report = self.fns.tokenize(emb, method, os.path.join(tmp, "tokenizer"), seed=seed,
                                 overrides=dict(self.profile.tokenizer_overrides(method)))
      return tokenizer_stats(report, method, seed)
    return run

  def _cove_tokenize_fn(self, seed: int) -> Callable[[str], Any]:
    def run(tmp: str) -> dict:
      report = self.fns.cove_tokenize(self.dataset_path("data"), os.path.join(tmp, "tokenizer"),
                                      seed=seed, cove=dict(self.profile.cove),
                                      **self.profile.sasrec)
      return tokenizer_stats(report, "cove", seed)
    return run

  def _train_fn(self, tok_stage: str, seed: int) -> Callable[[str], Any]:
    def run(tmp: str) -> dict:
      method = self._by_name[tok_stage].method
      task = task_name(method, self.profile.dataset)
      metrics = self.fns.train(self.dataset_path("embed"),
                               os.path.join(self._dir(tok_stage), "tokenizer"),
                               os.path.join(tmp, "model"), seed=seed, task=task,
                               **self.profile.tiger)
      return {k: v for k, v in dict(metrics).items() if _is_number(v)}
    return run

  # .. running ..
  def status_of(self, stage: PlannedStage) -> str:
    if self.cache.done_marker(stage.name, stage.config):
      return "cached"
    return "reuse" if self.cache.reusable(stage.name, stage.config) else "pending"

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
    pending = [st.name for st in self.stages if self.status_of(st) not in ("cached", "reuse")]
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
      stop.check(f"before stage {st.name}")
      cached = self.status_of(st) in ("cached", "reuse")
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
        if not isinstance(e, UserError):  # bad input is one line; a bug keeps its traceback
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
  def write_report(self, partial: bool) -> dict[str, str] | None:
    """results.md, results.csv and the PNGs from the stages finished so far (assemble.py)."""
    paths = assemble.write_report(self, partial)
    if paths:
      self.log(f"reproduce: wrote {paths['results.md']}")
    return paths



def _read_stats(dataset_dir: str) -> dict:
  s = read_json_or(os.path.join(dataset_dir, "stats.json"), {})
  if not isinstance(s, dict):
    return {}
  return {k: s.get(k) for k in ("users", "items", "interactions", "seq_len_mean",
                                "seq_len_median")}



def _file_sig(path: str) -> dict:
  st = os.stat(path)
  return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _dataset_fingerprint(path: str) -> dict:
  return {f: _file_sig(os.path.join(path, f)) for f in DATASET_FILES
          if os.path.isfile(os.path.join(path, f))}


