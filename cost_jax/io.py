"""User-facing I/O for every stage: one-line errors, JSON reading, the one atomic writer.

- `UserError`: bad input or configuration; the message names the file, line or field.
- `exits_cleanly`: wraps a CLI `main` so a UserError prints `error: ...` and exits with 2, a
  stop requested by a signal (cost_jax.stop) exits with 128 + the signal number.
- `read_json`: a JSON file, or a UserError naming file and line; `read_json_or`: or a default.
- `atomic_write` (+ `_text`, `_json`, `_npy`): a file written beside its target and renamed
  into place, so a reader sees the old file or the new one, never half of one.
- `StagedDir`: a directory built beside its target and swapped in on `commit()`.
- `sha256_file`, `sha256_tree`, `files_fingerprint`: content hashes; `link_or_copy`, `copy_file`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import IO, Any, Callable, TypeVar, Sequence

from cost_jax.stop import Interrupted

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
  """Bad input or configuration. The message names the file, line or field."""


def exits_cleanly(main: F) -> F:
  """Wraps a CLI `main` so a UserError prints `error: ...` and exits with 2."""

  @functools.wraps(main)
  def wrapper(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      raise SystemExit(2) from None
    except Interrupted as e:
      print(f"interrupted: {e}", file=sys.stderr)
      raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
      print("interrupted", file=sys.stderr)
      raise SystemExit(130) from None
    except OSError as e:  # a full or read-only disk, permissions: one line, not a traceback
      where = f"{e.filename}: " if getattr(e, "filename", None) else ""
      print(f"error: {where}{e.strerror or e} (earlier outputs were left as they were)",
            file=sys.stderr)
      raise SystemExit(1) from None

  return wrapper  # type: ignore[return-value]


def quiet_tensorflow_logs() -> None:
  """Keeps TensorFlow's C++ log lines (seqio's input pipeline) off a command's stderr unless the
  user asked for them: without a GPU, TensorFlow logs an error-level "failed call to cuInit" that
  is not an error. Call before TensorFlow is imported; TF_CPP_MIN_LOG_LEVEL, when set, wins."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def read_json(path: str):
  """Reads a JSON file; an unreadable or malformed file is a UserError naming file and line."""
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None


def read_json_or(path: str, default: Any = None) -> Any:
  """A JSON file's contents, or `default` when it is missing, unreadable or not valid JSON (for
  files a command may find absent or half-written and then rebuilds: markers, caches)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return default


def copy_file(src: str, dst: str) -> str:
  """A copy (never a link: the copy must not change when `src` is rewritten in place)."""
  shutil.copy2(src, dst)
  return dst


def default_mode(directory: bool = False) -> int:
  """Permissions a plain open()/mkdir() would give under the current umask."""
  umask = os.umask(0)
  os.umask(umask)
  return (0o777 if directory else 0o666) & ~umask


def json_default(o: Any) -> Any:
  """json.dump `default` for numpy scalars and arrays."""
  import numpy as np  # local: this module stays import-light for every CLI
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_write(path: str, write: Callable[[IO], None], binary: bool = True) -> str:
  """Calls write(file) on a temp file beside `path`, then renames it onto `path`.

  The temp file gets the permissions a plain open() would (mkstemp makes 0600) and is
  removed if `write` fails, so `path` is either untouched or completely replaced.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  try:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
  except OSError as e:
    raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
  try:
    with os.fdopen(fd, "wb" if binary else "w") as f:
      write(f)
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise UserError(f"{path}: cannot write ({e.strerror or e}); the earlier file, if any, is "
                    "unchanged") from None
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def sha256_file(path: str) -> str:
  """The sha256 (hex) of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def sha256_tree(directory: str) -> dict[str, str]:
  """sha256 of every regular file under `directory`, by relative path."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in sorted(files):
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = sha256_file(path)
  return out


def files_fingerprint(paths: Sequence[str]) -> str:
  """One sha256 over the names and bytes of the existing files among `paths` (a directory
  stands for its regular files, sorted); missing paths are skipped."""
  h = hashlib.sha256()
  for p in paths:
    files = ([os.path.join(p, f) for f in sorted(os.listdir(p))
              if os.path.isfile(os.path.join(p, f))] if os.path.isdir(p) else [p])
    for f in files:
      if not os.path.isfile(f):
        continue
      h.update(os.path.basename(f).encode())
      with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
          h.update(chunk)
  return h.hexdigest()


def link_or_copy(src: str, dst: str) -> str:
  """A hard link of `src` at `dst`, or a copy where links are not possible (another device)."""
  try:
    os.link(src, dst)
  except OSError:
    shutil.copy2(src, dst)
  return dst


def atomic_write_text(path: str, text: str) -> str:
  return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path: str, obj: Any, *, sort_keys: bool = False) -> str:
  text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=json_default) + "\n"
  return atomic_write_text(path, text)


def atomic_write_npy(path: str, array: Any) -> str:
  import numpy as np  # local: this module stays import-light for every CLI
  return atomic_write(path, lambda f: np.save(f, np.asarray(array)))


def atomic_write_npz(path: str, **arrays: Any) -> str:
  import numpy as np  # local: this module stays import-light for every CLI
  return atomic_write(path, lambda f: np.savez(f, **arrays))


OWNER_FILE = ".cost_jax_output.json"


class StagedDir:
  """A temp dir beside `output` that replaces it on `commit()` and vanishes on `discard()`.

  Use as a context manager: commit() inside the block; an exception discards the staging.

  A command writes only what it owns: `kind` names what the directory is ("tokenizer",
  "processed dataset"). An existing `output` is replaced only if it is empty or was written by
  this kind of command (its OWNER_FILE lists the entries written; `keep` names entries that
  other commands of the project add to it later, e.g. embeddings; `legacy` the entries a
  directory written before OWNER_FILE existed may hold). Anything else there is refused, with
  the names, before any work is done, and nothing is touched. A regular file is never replaced.
  """

  def __init__(self, output: str, kind: str = "output", keep: Sequence[str] = (),
               legacy: Sequence[str] = ()):
    self.output = os.path.abspath(os.fspath(output))
    self.kind = kind
    parent = os.path.dirname(self.output)
    if os.path.exists(self.output) and not os.path.isdir(self.output):
      raise UserError(f"{output}: exists and is not a directory (refusing to replace a file)")
    if os.path.isdir(self.output):
      foreign = foreign_entries(self.output, kind, keep, legacy)
      if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise UserError(f"{output}: holds files this command did not write ({shown}); choose a "
                        f"new or empty output directory (nothing was changed)")
    try:
      os.makedirs(parent, exist_ok=True)
      self.path = tempfile.mkdtemp(prefix=f".{os.path.basename(self.output)}.tmp-", dir=parent)
      os.chmod(self.path, default_mode(directory=True))  # mkdtemp makes it 0700
    except OSError as e:
      raise UserError(f"{output}: cannot create output ({e.strerror or e})") from None
    self.committed = False

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  def commit(self) -> None:
    entries = sorted(os.listdir(self.path))
    atomic_write_json(os.path.join(self.path, OWNER_FILE), {"kind": self.kind, "files": entries})
    old = None
    if os.path.exists(self.output):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.output)}.old-",
                             dir=os.path.dirname(self.output))
      os.rmdir(old)
      os.replace(self.output, old)
    os.replace(self.path, self.output)
    self.committed = True
    if old:
      shutil.rmtree(old, ignore_errors=True)

  def discard(self) -> None:
    if not self.committed:
      shutil.rmtree(self.path, ignore_errors=True)

  def __enter__(self) -> "StagedDir":
    return self

  def __exit__(self, *exc) -> None:
    self.discard()


def foreign_entries(directory: str, kind: str, keep: Sequence[str] = (),
                    legacy: Sequence[str] = ()) -> list[str]:
  """Entries of `directory` that a `kind` command did not write (sorted; [] = safe to replace)."""
  entries = sorted(e for e in os.listdir(directory) if e != OWNER_FILE)
  marker = os.path.join(directory, OWNER_FILE)
  owned: set[str] = set(keep)
  if os.path.isfile(marker):
    try:
      info = read_json(marker)
    except UserError:
      info = {}
    if isinstance(info, dict) and info.get("kind") == kind:
      owned |= set(info.get("files") or [])
  elif entries and set(entries) <= set(legacy) | set(keep):
    owned |= set(entries)  # written by this project before the marker existed
  return [e for e in entries if e not in owned]


# --- one writer per output -----------------------------------------------------------------
LOCK_NAME = ".lock"


class DirLock:
  """A lock file (O_EXCL) held while one command writes an output: a second command on the
  same output is refused with the holder's pid; a lock left by a dead process on this host is
  taken over. The file holds {"pid", "host", "command"}; a lock of another host cannot be
  checked, so it is refused too. `command` names the holder in the messages.
  """

  def __init__(self, path: str, command: str):
    self.path = os.path.abspath(path)
    self.command = command
    self.held = False

  def acquire(self) -> "DirLock":
    import socket  # local: this module stays import-light
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if holder is not None and holder.get("host") == me["host"] and not _alive(holder["pid"]):
          print(f"[{self.command}] {self.path}: stale lock of process {holder['pid']} (not "
                "running); taking it over", file=sys.stderr, flush=True)
          try:
            os.remove(self.path)
          except FileNotFoundError:
            pass
          continue
        who = (f"process {holder.get('pid')} on {holder.get('host')}"
               + (f" ({holder['command']})" if holder.get("command") else "") if holder
               else "an unreadable lock file")
        raise UserError(f"{os.path.dirname(self.path)}: in use by {who} ({self.path}); wait for "
                        "it to finish, or remove the lock file if that process is gone") from None
      except OSError as e:
        raise UserError(f"{self.path}: cannot create the lock ({e.strerror or e})") from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return self
    raise UserError(f"{self.path}: could not take the lock")

  def _holder(self) -> dict | None:
    try:
      with open(self.path) as f:
        d = json.load(f)
      return d if isinstance(d, dict) and isinstance(d.get("pid"), int) else None
    except (OSError, ValueError):
      return None

  def release(self) -> None:
    if self.held:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
      self.held = False

  def __enter__(self) -> "DirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True
