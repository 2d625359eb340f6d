"""RecBole atomic files (`<name>.inter` + `<name>.item`) from any folder.

RecBole's atomic format: tab-separated, first row a typed header `field:type` with
type one of token, token_seq, float, float_seq. This loader needs in `<name>.inter`
the fields `user_id` and `item_id` (by name, any column order) and uses `timestamp`
when present; `<name>.item` needs `item_id` and may carry any other fields.

  * Order: a user's interactions by (timestamp, line in the .inter file), stably; without a
    timestamp column, by file position (timestamps are then -1 in the processed form).
  * Item text: CoST's prompt (cost_jax.data.text) from the chosen item fields
    (`text_fields`, default: every field of the .item file but item_id, in file order). A
    field whose name says category (class, genre, categories, ...) fills the category slot,
    one that says title (title, movie_title, name) the title slot; the rest go to the
    description slot as "field: value". Missing fields are allowed (empty slots).
  * Malformed rows are counted with file:line (cost_jax.data.malformed): wrong field count,
    undecodable bytes, empty ids, non-finite / out-of-range / non-numeric timestamps,
    duplicate item ids, interactions with items missing from the .item file.

MovieLens-100K (cost_jax.data.movielens) is this loader with its own item-field mapping.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Callable, Iterator, Mapping, Sequence

from cost_jax.data import processed, text
from cost_jax.data.malformed import MalformedRows
from cost_jax.io import UserError, sha256_file

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
CATEGORY_NAMES = ("class", "classes", "genre", "genres", "category", "categories", "categories_list",
                  "cate", "cat", "type")
TITLE_NAMES = ("title", "movie_title", "name", "item_name", "book_title", "product_title")
# Timestamps must fit int64 microseconds of unix time and be finite: anything beyond is damage.
MAX_ABS_TIMESTAMP = 2.0 ** 53


@dataclasses.dataclass(frozen=True)
class Header:
  """A parsed typed header: field names and types, in column order."""

  path: str
  names: tuple[str, ...]
  types: tuple[str, ...]

  def index(self, field: str, required: bool = True) -> int | None:
    if field in self.names:
      return self.names.index(field)
    if required:
      raise UserError(f"{self.path}:1: header has no {field!r} field (fields: "
                      f"{', '.join(f'{n}:{t}' for n, t in zip(self.names, self.types))})")
    return None


def find_files(recbole_dir: str, name: str | None = None) -> tuple[str, str | None, str]:
  """(inter_path, item_path or None, dataset name) of the atomic files in `recbole_dir`."""
  recbole_dir = os.path.abspath(os.path.expanduser(recbole_dir))
  if not os.path.isdir(recbole_dir):
    raise UserError(f"{recbole_dir}: not a folder (expected RecBole atomic files <name>.inter "
                    "and <name>.item)")
  if name is None:
    inters = sorted(f[:-len(".inter")] for f in os.listdir(recbole_dir) if f.endswith(".inter"))
    if len(inters) != 1:
      raise UserError(f"{recbole_dir}: expected exactly one <name>.inter file, found "
                      f"{len(inters)}" + (f" ({', '.join(i + '.inter' for i in inters)}); "
                                          "name one with --recbole_name" if inters else ""))
    name = inters[0]
  inter = os.path.join(recbole_dir, name + ".inter")
  if not os.path.isfile(inter):
    raise UserError(f"{inter}: missing (expected RecBole atomic files {name}.inter and "
                    f"{name}.item in {recbole_dir})")
  item = os.path.join(recbole_dir, name + ".item")
  return inter, (item if os.path.isfile(item) else None), name


def read_rows(path: str, malformed: MalformedRows) -> tuple[Header, Iterator[tuple[int, list[str]]]]:
  """The header and an iterator of (line number, fields) rows of a RecBole atomic file.

  Rows are decoded as UTF-8 one by one; an undecodable row is malformed (never replaced by
  U+FFFD, which would merge distinct ids). Rows with the wrong field count are malformed.
  """
  try:
    f = open(path, "rb")
  except OSError as e:
    raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
  first = f.readline()
  try:
    header_line = first.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
  except UnicodeDecodeError:
    f.close()
    raise UserError(f"{path}:1: header is not UTF-8") from None
  if not header_line.strip():
    f.close()
    raise UserError(f"{path}: empty file (expected a typed header row such as "
                    "'user_id:token<TAB>item_id:token<TAB>timestamp:float')")
  names, types = [], []
  for col in header_line.split("\t"):
    field, sep, ftype = col.strip().rpartition(":")
    if not sep or not field or ftype not in FIELD_TYPES:
      f.close()
      raise UserError(f"{path}:1: header column {col!r} is not 'name:type' with type one of "
                      f"{', '.join(FIELD_TYPES)}")
    names.append(field)
    types.append(ftype)
  header = Header(path, tuple(names), tuple(types))

  def rows():
    with f:
      for lineno, raw in enumerate(f, start=2):
        try:
          line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
          malformed.add(path, lineno, "undecodable bytes", f"not UTF-8 at byte {e.start}")
          continue
        if not line.strip():
          continue
        fields = line.split("\t")
        if len(fields) != len(names):
          malformed.add(path, lineno, "wrong field count",
                        f"{len(fields)} tab-separated fields, expected {len(names)}")
          continue
        yield lineno, [x.strip() for x in fields]
  return header, rows()


def parse_timestamp(value: str) -> float | None:
  """A finite, in-range float timestamp, or None."""
  try:
    t = float(value)
  except ValueError:
    return None
  if not math.isfinite(t) or abs(t) > MAX_ABS_TIMESTAMP:
    return None
  return t


def generic_item_fields(text_fields: Sequence[str] | None) -> Callable[[Header, list[str]], dict]:
  """Item-field mapping for any dataset: raw fields kept, CoST prompt from `text_fields`."""
  def fields_of(header: Header, row: list[str]) -> dict[str, str]:
    chosen = [n for n in header.names if n != "item_id"] if text_fields is None else list(text_fields)
    values = dict(zip(header.names, row))
    out = {n: text.clean(values[n]) for n in header.names if n != "item_id"}
    category, title, description = [], [], []
    for name in chosen:
      value = text.clean(values.get(name, ""))
      if not value:
        continue
      # A token_seq field is a space-separated string: embedded as that text, never re-joined
      # (Amazon's "Beauty > Hair Care" must not read "Beauty, >, Hair, Care").
      lower = name.lower()
      if lower in CATEGORY_NAMES:
        category.append(value)
      elif lower in TITLE_NAMES:
        title.append(value)
      else:
        description.append(f"{name.replace('_', ' ')}: {value}")
    out["text"] = text.cost_prompt(" > ".join(category), " ".join(title), ". ".join(description))
    return out
  return fields_of


def load(recbole_dir: str, *, name: str | None = None, text_fields: Sequence[str] | None = None,
         strict: bool = False,
         item_fields: Callable[[Header, list[str]], dict] | None = None,
         sources_extra: Sequence[Mapping] = ()) -> tuple[processed.Interactions, MalformedRows, str]:
  """Reads `<name>.inter` (+ `<name>.item`); returns (interactions, malformed rows, name)."""
  inter_path, item_path, name = find_files(recbole_dir, name)
  malformed = MalformedRows(strict=strict)
  items: dict[str, dict[str, str]] | None = None
  if item_path is not None:
    header, rows = read_rows(item_path, malformed)
    id_col = header.index("item_id")
    if text_fields is not None:
      unknown = [f for f in text_fields if f not in header.names]
      if unknown:
        print(f"note: {item_path}: text field(s) {', '.join(unknown)} not in the header; "
              "left empty", flush=True)
    mapping = item_fields or generic_item_fields(text_fields)
    items = {}
    for lineno, row in rows:
      item_id = row[id_col]
      if not item_id:
        malformed.add(item_path, lineno, "empty item id")
        continue
      if item_id in items:
        malformed.add(item_path, lineno, "duplicate item id", item_id)
        continue
      items[item_id] = mapping(header, row)
    if not items:
      raise UserError(f"{item_path}: no item rows")

  header, rows = read_rows(inter_path, malformed)
  u_col, i_col = header.index("user_id"), header.index("item_id")
  t_col = header.index("timestamp", required=False)
  events: dict[str, list[tuple[float, int, str]]] = {}
  seen: set[tuple] = set()
  repeats = 0  # (user, item) pairs seen before, in a file without timestamps
  for lineno, row in rows:
    user, item = row[u_col], row[i_col]
    if not user or not item:
      malformed.add(inter_path, lineno, "empty user id" if not user else "empty item id")
      continue
    ts = -1.0
    if t_col is not None:
      ts = parse_timestamp(row[t_col])
      if ts is None:
        malformed.add(inter_path, lineno, "bad timestamp", repr(row[t_col])[:40])
        continue
    if items is not None and item not in items:
      malformed.add(inter_path, lineno, "item missing from the items file", item)
      continue
    key = tuple(row) if t_col is not None else (user, item)
    if key in seen:
      if t_col is not None:
        # The same row twice (same user, item, time and every other field): a copy, not a
        # second interaction. Kept, it would make a user's validation target equal the test
        # target (a leak).
        malformed.add(inter_path, lineno, "duplicate interaction",
                      f"user {user}, item {item}, timestamp {row[t_col]}")
        continue
      repeats += 1  # without timestamps a repeat may be real (re-consumption): kept, counted
    seen.add(key)
    events.setdefault(user, []).append((ts, lineno, item))
  if not events:
    raise UserError(f"{inter_path}: no usable interaction rows"
                    + (f" ({malformed.num_rows} malformed)" if malformed.num_rows else ""))
  if repeats:
    print(f"note: {inter_path}: {repeats} rows repeat an earlier (user, item) pair; with no "
          "timestamp column they are kept as repeated interactions", flush=True)
  if items is None:
    print(f"note: {recbole_dir}: no {name}.item file; items have no text (ID-only methods only)",
          flush=True)
    items = {i: {"text": ""} for ev in events.values() for _, _, i in ev}
  user_events = {u: [(int(math.floor(t)), i) for t, _, i in sorted(ev)] for u, ev in events.items()}
  tie = sum(1 for ev in events.values() for a, b in zip(sorted(ev), sorted(ev)[1:]) if a[0] == b[0])
  sources = [{"file": os.path.basename(p), "sha256": sha256_file(p)}
             for p in (inter_path, item_path) if p is not None] + list(sources_extra)
  extra = {"ordering": f"per user by ({'timestamp' if t_col is not None else 'no timestamp'}, "
                       f"position in {name}.inter), stable",
           "consecutive_same_timestamp_pairs": tie,
           "repeated_user_item_pairs_without_timestamp": repeats,
           "recbole": {"name": name, "inter_fields": list(header.names),
                       "text_fields": list(text_fields) if text_fields is not None else None}}
  return processed.Interactions(user_events, items, sources, extra), malformed, name



def dataset_name(name: str) -> str:
  """A SeqIO-safe dataset name from a RecBole file stem: "ml-100k" -> "ml_100k"."""
  return re.sub(r"[^0-9a-z_]+", "_", name.strip().lower()).strip("_") or "recbole"
