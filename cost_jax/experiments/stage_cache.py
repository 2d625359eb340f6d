"""The stage cache: each stage runs into OUTPUT/stages/<name>-<config hash>/ once.

The work happens in <dir>.tmp, renamed to <dir> with a DONE marker (the stage's config JSON,
timings, summary and a manifest of the files written, with their sizes and sha256) at the end;
a re-run skips every stage whose marker matches and whose files are all still there, unchanged.
A stage whose outputs were deleted or changed is re-run, with a message naming what changed.

With `reuse_from` (other output folders), a stage that has not run here but finished there with
the same config (same name and hash, its files unchanged) is linked in (a symlink to that
folder's stage dir) instead of run again: e.g. an ablation that shares its data, embedding and
tokenizer stages with an earlier run. The other folder is only read; if its stage changes later,
the link is set aside here (never followed into a write) and the stage runs here.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from cost_jax.io import atomic_write_json, atomic_write_text, read_json_or, sha256_file

DONE_FILE = "DONE"
STAGES_SUBDIR = "stages"


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

  def __init__(self, root: str, log: Callable[[str], None] | None = None,
               reuse_from: Sequence[str] = (), spent_every_s: float = 60.0):
    self.root = os.path.abspath(root)
    # A resumable stage's SPENT_SECONDS is rewritten this often while it runs, so that a stage
    # killed outright (SIGKILL, the end of a machine's session) still counts the time it spent.
    self.spent_every_s = spent_every_s
    self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    self.reuse_from = tuple(r for r in (os.path.abspath(x) for x in reuse_from)
                            if os.path.realpath(r) != os.path.realpath(self.root))

  def path(self, name: str, config: Mapping[str, Any]) -> str:
    return os.path.join(self.root, STAGES_SUBDIR, f"{safe_name(name)}-{config_hash(config)}")

  def done_marker(self, name: str, config: Mapping[str, Any]) -> dict | None:
    """The DONE marker of a finished stage with this exact config, else None."""
    return self._marker_at(self.path(name, config), name, config, quiet=False)

  def _marker_at(self, directory: str, name: str, config: Mapping[str, Any],
                 quiet: bool) -> dict | None:
    marker = read_json_or(os.path.join(directory, DONE_FILE))
    if not isinstance(marker, dict):
      return None
    canonical = json.loads(json.dumps(config, sort_keys=True, default=str))
    if marker.get("config") != canonical:
      return None
    problems = manifest_problems(directory, marker.get("manifest"))
    if problems:
      if not quiet:
        self.log(f"[stage {name}] cached outputs changed ({'; '.join(problems[:3])}"
                 + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
                 + "): re-running")
      return None
    return marker

  def reusable(self, name: str, config: Mapping[str, Any]) -> str | None:
    """The finished stage dir with this config in a `reuse_from` folder (the first one), when
    nothing of that stage is here yet; else None."""
    here = self.path(name, config)
    if os.path.lexists(here):
      return None
    for other in self.reuse_from:
      there = os.path.join(other, STAGES_SUBDIR, os.path.basename(here))
      if os.path.isdir(there) and self._marker_at(there, name, config, quiet=True) is not None:
        return os.path.realpath(there)
    return None

  def adopt(self, name: str, config: Mapping[str, Any]) -> dict | None:
    """done_marker(), after linking in a reusable stage from a `reuse_from` folder."""
    there = self.reusable(name, config)
    if there is not None:
      here = self.path(name, config)
      os.makedirs(os.path.dirname(here), exist_ok=True)
      os.symlink(there, here, target_is_directory=True)
      self.log(f"[stage {name}] reused from {there}")
    return self.done_marker(name, config)

  def run(self, name: str, config: Mapping[str, Any], fn: Callable[[str], Any],
          resume: bool = False) -> StageResult:
    """fn(tmp_dir) writes the stage's files into tmp_dir and returns a JSON-able summary.

    The work happens in <dir>.tmp, renamed to <dir> with its DONE marker at the end. The
    .tmp of an interrupted attempt (same config hash) is removed first, or, with `resume`
    (stages that resume by themselves, e.g. the trainer from its checkpoints), kept.
    """
    path = self.path(name, config)
    h = config_hash(config)
    marker = self.adopt(name, config)
    if marker is not None:
      return StageResult(name, path, h, "cached", float(marker.get("seconds", 0.0)),
                         cpu_seconds=marker.get("cpu_seconds"), value=marker.get("result"))
    if os.path.isfile(os.path.join(path, DONE_FILE)):
      # A finished stage whose files were changed since (e.g. a model re-scored by hand): it is
      # re-run, but what the user had there is kept, never deleted.
      kept = keep_aside(path)
      self.log(f"[stage {name}] the changed outputs are kept in {kept}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    if os.path.exists(tmp) and not resume:  # an interrupted earlier attempt
      shutil.rmtree(tmp)
    os.makedirs(tmp, exist_ok=True)
    spent, spent_cpu = _read_spent(tmp)  # earlier interrupted attempts (resumable stages)
    t0, c0 = time.perf_counter(), time.process_time()

    def record_spent():
      _write_spent(tmp, spent + time.perf_counter() - t0, spent_cpu + time.process_time() - c0)

    stop = threading.Event()
    clock = None
    if resume:
      def tick():
        while not stop.wait(self.spent_every_s):
          record_spent()
      clock = threading.Thread(target=tick, name=f"spent-{name}", daemon=True)
      clock.start()
    try:
      try:
        value = fn(tmp)
      finally:
        stop.set()
        if clock is not None:
          clock.join()
    except BaseException:
      if resume:
        record_spent()
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
        "manifest": manifest(tmp),
    }
    atomic_write_json(os.path.join(tmp, DONE_FILE), marker, sort_keys=True)
    if os.path.islink(path):  # a link to another folder's stage whose files changed there
      os.remove(path)
    elif os.path.exists(path):  # an unfinished (no DONE) or foreign dir in the way
      shutil.rmtree(path)
    os.replace(tmp, path)
    return StageResult(name, path, h, "ran", seconds, cpu_seconds=cpu_seconds,
                       value=marker["result"])


SPENT_FILE = "SPENT_SECONDS"


def keep_aside(path: str) -> str:
  """Renames `path` to the first free `path.changed-N` (N = 1, 2, ...); returns the new name."""
  n = 1
  while os.path.exists(f"{path}.changed-{n}"):
    n += 1
  os.replace(path, f"{path}.changed-{n}")
  return f"{path}.changed-{n}"


def _read_spent(tmp: str) -> tuple[float, float]:
  """(wall, cpu) seconds spent by earlier interrupted attempts of a resumable stage."""
  try:
    with open(os.path.join(tmp, SPENT_FILE)) as f:
      parts = [float(x) for x in f.read().split()]
  except (OSError, ValueError):
    return 0.0, 0.0
  return (parts + [0.0, 0.0])[0], (parts + [0.0, 0.0])[1]


def _write_spent(tmp: str, seconds: float, cpu_seconds: float) -> None:
  atomic_write_text(os.path.join(tmp, SPENT_FILE), f"{seconds:.3f} {cpu_seconds:.3f}\n")


def safe_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("+", "_"))


def manifest(directory: str) -> dict[str, dict[str, Any]]:
  """{relative path: {"size", "sha256"}} of every regular file under `directory` (DONE
  excluded): a same-size replacement of a finished stage's file is caught too."""
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      p = os.path.join(root, f)
      rel = os.path.relpath(p, directory)
      if rel != DONE_FILE and os.path.isfile(p):
        out[rel] = {"size": os.path.getsize(p), "sha256": _file_sha256(p)}
  return out


_SHA_CACHE: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def _file_sha256(path: str) -> str:
  st = os.stat(path)
  key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
  if key not in _SHA_CACHE:
    _SHA_CACHE[key] = sha256_file(path)
  return _SHA_CACHE[key]


def manifest_problems(directory: str, recorded: Mapping[str, Any] | None) -> list[str]:
  """What differs from the recorded manifest (none recorded: nothing to check). Entries are
  {"size", "sha256"} (or a bare size, as markers written before hashes were recorded)."""
  if not recorded:
    return []
  problems = []
  for rel, want in sorted(recorded.items()):
    size = want["size"] if isinstance(want, dict) else want
    p = os.path.join(directory, rel)
    if not os.path.isfile(p):
      problems.append(f"{rel} is gone")
    elif os.path.getsize(p) != size:
      problems.append(f"{rel} is {os.path.getsize(p)} bytes, was {size}")
    elif isinstance(want, dict) and want.get("sha256") and _file_sha256(p) != want["sha256"]:
      problems.append(f"{rel} has other contents (sha256 {want['sha256'][:12]} -> "
                      f"{_file_sha256(p)[:12]})")
  return problems
