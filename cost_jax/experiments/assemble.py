"""The reproduction's report, assembled from a pipeline's finished stages.

`write_report(pipe, partial)` reads what the stages wrote (metrics.json, top-K lists, tokenizer
reports, validation curves, capabilities.json) and hands it to experiments.report (tables and
plots), experiments.paired (intervals and paired tests), experiments.published (TIGER's rows),
experiments.breakdown (hits by target popularity, catalogue coverage) and
experiments.capabilities (TIGER's capability studies). `pipe` is an
experiments.pipeline.Pipeline; this module only reads it.
"""

from __future__ import annotations

import os

from cost_jax.experiments import capabilities as capabilities_lib
from cost_jax.data.processed import ProcessedDataset
from cost_jax.experiments import breakdown, notes, paired, published
from cost_jax.experiments import report as report_lib
from cost_jax.experiments.stages import _is_number
from cost_jax.io import UserError, read_json, read_json_or

SCORED_KINDS = ("train", "popularity", "transition", "sasrec", "cove_sasrec")


def collect(pipe) -> tuple[list[dict], list[dict], list[dict]]:
  """(metric rows, tokenizer stats, timings) of the stages finished so far."""
  rows, tok, timings = [], [], []
  for st in pipe.stages:
    r = pipe.results.get(st.name)
    if r is None:
      continue
    timings.append({"stage": st.name, "status": r.status, "seconds": r.seconds,
                    "cpu_seconds": r.cpu_seconds})
    if r.status not in ("ran", "cached") or r.value is None:
      continue
    if st.kind in SCORED_KINDS:
      metrics = _read_metrics(r.path) or dict(r.value)
      rows.append({"method": st.method, "seed": st.seed, **metrics})
    elif st.kind == "tokenize":
      tok.append(dict(r.value))
  return rows, tok, timings


def scored_lists(pipe) -> dict[str, list[tuple]]:
  """method -> [(user_ids, topk, targets) per finished seed] of the scored stages."""
  out: dict[str, list[tuple]] = {}
  for st in pipe.stages:
    r = pipe.results.get(st.name)
    if r is None or r.status not in ("ran", "cached") or st.kind not in SCORED_KINDS:
      continue
    lists = paired.read_lists(r.path)
    if lists is not None:
      out.setdefault(st.method, []).append(lists)
  return out


def write_report(pipe, partial: bool) -> dict[str, str] | None:
  """Writes results.md (+ csv and PNGs) into pipe.output; None when nothing finished yet."""
  rows, tok, timings = collect(pipe)
  if not rows:
    cap = capabilities_section(pipe)
    if not cap:
      return None
    path = os.path.join(pipe.output, "results.md")  # a capabilities-only run
    md = [f"# TIGER's capabilities on {pipe.profile.dataset} (profile: {pipe.profile.name})",
          "", "## Setup", ""] + [f"- {s}" for s in notes.setup_lines(pipe)] + [""] + cap
    report_lib.write_text(path, "\n".join(md))
    pipe.log(f"reproduce: wrote {path}")
    return {"results.md": path}
  seeds_done = sorted({r["seed"] for r in rows if r["method"] in pipe.profile.methods})
  title = f"{pipe.profile.title} on {pipe.profile.dataset} (profile: {pipe.profile.name})"
  if partial:
    title += f" - PARTIAL (seeds finished so far: {seeds_done})"
  order = report_lib.order_methods({r["method"] for r in rows})
  lists = scored_lists(pipe)
  sections = paired.significance_markdown(lists, order, report_lib.label,
                                          report_lib.PAPER_ORDERINGS)
  view = training_view(pipe)
  hits = (breakdown.markdown(lists, view[0], order, report_lib.label, seen=view[1])
          + breakdown.seen_steps_markdown(lists, order, view[1], view[2], report_lib.label)) \
      if view is not None else []
  sections = (published.markdown(pipe.profile.dataset, report_lib.summarize(rows),
                                 report_lib.label) + list(sections) + hits
              + capabilities_section(pipe))
  paths = report_lib.write_report(pipe.output, rows, tokenizer_stats=tok, timings=timings,
                                  title=title, setup=notes.setup_lines(pipe),
                                  notes=notes.deviation_notes(pipe, rows), ks=pipe.profile.ks,
                                  sections=sections, curves=learning_curves(pipe))
  pipe.log(f"reproduce: wrote {paths['results.md']}")
  return paths


def training_view(pipe):
  """(each item's interactions in the training parts, breakdown.seen_by_user,
  breakdown.steps_out_by_user) of the data stage's dataset (None before the data stage has
  finished)."""
  r = pipe.results.get("data")
  if r is None or r.status not in ("ran", "cached"):
    return None
  try:
    ds = ProcessedDataset.load(pipe.dataset_path("data"))
    split = ds.leave_one_out()
    return (breakdown.train_counts(split.train, ds.num_items), breakdown.seen_by_user(split),
            breakdown.steps_out_by_user(split))
  except (UserError, OSError, ValueError):
    return None


def learning_curves(pipe) -> dict[str, list[dict]]:
  """{"<label> s<seed>": validation curve} of the finished TIGER and SASRec-style stages."""
  out = {}
  for st in pipe.stages:
    r = pipe.results.get(st.name)
    if r is None or r.status not in ("ran", "cached"):
      continue
    curve, metrics_file, unit = None, None, "step"
    if st.kind == "train":
      f = os.path.join(r.path, "model", "validation_curve.json")
      curve = _read_json(f).get("curve") if os.path.isfile(f) else None
      metrics_file = os.path.join(r.path, "model", "metrics.json")
    elif st.kind in ("sasrec", "cove_sasrec"):
      f = os.path.join(r.path, "losses.json")
      curve = _read_json(f).get("validation_curve") if os.path.isfile(f) else None
      metrics_file, unit = os.path.join(r.path, "metrics.json"), "epoch"
    if curve:
      # Where the run peaked (the scored checkpoint) and why it stopped, from its metrics.json.
      m = _read_json(metrics_file) if metrics_file and os.path.isfile(metrics_file) else {}
      best = m.get(f"best_{unit}")
      curve = [dict(p, best=True) if best is not None and p.get(unit) == best else dict(p)
               for p in curve]
      if m.get("stop_reason"):
        curve[-1]["stop_reason"] = m["stop_reason"]
      out[f"{report_lib.label(st.method)} s{st.seed}"] = curve
  return out


def capabilities_section(pipe) -> list[str]:
  """The capabilities section (and its PNGs, copied next to results.md) once it has run."""
  for st in pipe.stages:
    r = pipe.results.get(st.name)
    if st.kind == "capabilities" and r is not None and r.status in ("ran", "cached"):
      res = capabilities_lib.read_results(r.path)
      if res:
        capabilities_lib.copy_plots(r.path, pipe.output)
        return capabilities_lib.markdown(res)
  return []


def _read_json(path: str) -> dict:
  out = read_json_or(path, {})
  return out if isinstance(out, dict) else {}


def _read_metrics(stage_dir: str) -> dict | None:
  """The scalar entries of the stage's metrics.json (numbers and strings such as "split")."""
  for sub in ("", "model"):
    file = os.path.join(stage_dir, sub, "metrics.json")
    if os.path.isfile(file):
      return {k: v for k, v in read_json(file).items() if _is_number(v) or isinstance(v, str)}
  return None
