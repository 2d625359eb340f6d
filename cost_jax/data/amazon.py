"""Amazon product reviews 2014 (5-core) from the user's files.

Expected under --amazon_dir for --category C (e.g. Beauty, Sports_and_Outdoors,
Toys_and_Games as in TIGER §4.1.1; Office_Products as in CoST §4.1):
  reviews_C_5.json.gz  JSON lines with reviewerID, asin, unixReviewTime
  meta_C.json.gz       one Python-literal dict per line (asin, title, brand,
                       categories, price, description), parsed with ast.literal_eval
(.json without .gz is accepted too.) A user's sequence is the reviewed items by
(unixReviewTime, line), stably; users with fewer than 5 reviews are dropped
(min_seq_len). Item text (CoST: type, brand, title, category; TIGER: title,
price, brand, category): "Item category: <category path>. Title: <title>.
Description: Brand: <brand>. Price: $<price>. <description, truncated>."
"""

from __future__ import annotations

import ast
import html
import json
import os
import re

from cost_jax.data import processed, text
from cost_jax.data.malformed import MalformedRows, decoded_lines
from cost_jax.io import UserError

DESCRIPTION_CHARS = 512  # description text kept in the prompt (models truncate anyway)
_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def category_file_stem(category: str) -> str:
  return category.strip().replace(" ", "_").replace("&", "and")


def find_files(amazon_dir: str, category: str) -> tuple[str, str]:
  amazon_dir = os.path.abspath(os.path.expanduser(amazon_dir))
  stem = category_file_stem(category)
  wanted = {"reviews": f"reviews_{stem}_5.json", "meta": f"meta_{stem}.json"}
  found = {}
  for key, base in wanted.items():
    for candidate in (base + ".gz", base):
      if os.path.isfile(os.path.join(amazon_dir, candidate)):
        found[key] = os.path.join(amazon_dir, candidate)
        break
  if len(found) < 2:
    present = []
    if os.path.isdir(amazon_dir):
      present = sorted(f for f in os.listdir(amazon_dir) if f.startswith(("reviews_", "meta_")))
    missing = [os.path.join(amazon_dir, wanted[k] + ".gz") for k in wanted if k not in found]
    raise UserError(
        f"missing Amazon 2014 file(s) for category {category!r}: {', '.join(missing)}. Expected "
        f"reviews_<Category>_5.json.gz (5-core reviews) and meta_<Category>.json.gz in {amazon_dir}"
        + (f"; found {', '.join(present)}" if present else "; found no reviews_*/meta_* files"))
  return found["reviews"], found["meta"]


# Unix seconds of a review: 1970 .. 2100 (anything beyond is damage, not a date).
MAX_UNIX_SECONDS = 4_102_444_800


def unix_seconds(value) -> int | None:
  """An integer unix time in range, or None (non-integer, non-finite, absurd)."""
  if isinstance(value, bool):
    return None
  if isinstance(value, str):
    value = value.strip()
    if not value.lstrip("-").isdigit():
      return None
    value = int(value)
  if isinstance(value, float):
    if not value.is_integer():
      return None
    value = int(value)
  if not isinstance(value, int) or not 0 <= value <= MAX_UNIX_SECONDS:
    return None
  return value


def _string(value) -> str:
  if value is None:
    return ""
  if isinstance(value, (list, tuple)):
    return ", ".join(_string(v) for v in value if _string(v))
  return text.clean(html.unescape(str(value)))


def _price(value) -> str:
  if value in (None, ""):
    return ""
  try:
    return f"${float(value):.2f}"
  except (TypeError, ValueError):
    return _string(value)


def item_fields(meta: dict, description_chars: int | None) -> dict[str, str]:
  categories = meta.get("categories") or []
  if categories and isinstance(categories[0], (list, tuple)):
    path = [_string(c) for c in categories[0]]
  else:
    path = [_string(c) for c in categories]
  category = " > ".join(c for c in path if c)
  title, brand, price = _string(meta.get("title")), _string(meta.get("brand")), _price(meta.get("price"))
  description = _string(meta.get("description"))
  details = " ".join(p for p in (f"Brand: {brand}." if brand else "", f"Price: {price}." if price else "",
                                 text.truncate(description, description_chars)) if p)
  return {
      "title": title,
      "brand": brand,
      "category": category,
      "categories": json.dumps(categories, ensure_ascii=False),
      "price": price,
      "description": description,
      "text": text.cost_prompt(category, title, details),
  }


def load(amazon_dir: str, category: str, *, strict: bool = False,
         description_chars: int | None = DESCRIPTION_CHARS
         ) -> tuple[processed.Interactions, MalformedRows]:
  reviews_path, meta_path = find_files(amazon_dir, category)
  malformed = MalformedRows(strict=strict)

  reviews: list[tuple[str, int, int, str]] = []  # (user, time, line, asin)
  for lineno, line in decoded_lines(reviews_path, malformed):
    line = line.strip()
    try:
      row = json.loads(line)
    except ValueError as e:
      malformed.add(reviews_path, lineno, "bad JSON", str(e)[:80])
      continue
    if not isinstance(row, dict):
      malformed.add(reviews_path, lineno, "bad JSON", "not an object")
      continue
    missing = [k for k in ("reviewerID", "asin", "unixReviewTime") if row.get(k) in (None, "")]
    if missing:
      malformed.add(reviews_path, lineno, "missing field", ", ".join(missing))
      continue
    ts = unix_seconds(row["unixReviewTime"])
    if ts is None:
      malformed.add(reviews_path, lineno, "bad timestamp", repr(row["unixReviewTime"])[:40])
      continue
    reviews.append((str(row["reviewerID"]), ts, lineno, str(row["asin"])))
  if not reviews:
    raise UserError(f"{reviews_path}: no usable review rows"
                    + (f" ({malformed.num_rows} malformed)" if malformed.num_rows else " (empty)"))
  reviewed = {r[3] for r in reviews}

  metas: dict[str, dict[str, str]] = {}
  skipped = 0
  for lineno, line in decoded_lines(meta_path, malformed):
    line = line.strip()
    m = _ASIN.search(line)
    if m and m.group(1) not in reviewed:
      skipped += 1  # metadata of items nobody reviewed in the 5-core file: not parsed
      continue
    try:
      meta = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      try:
        meta = json.loads(line)
      except ValueError:
        malformed.add(meta_path, lineno, "bad literal", line[:60])
        continue
    if not isinstance(meta, dict) or not meta.get("asin"):
      malformed.add(meta_path, lineno, "bad literal", "not a dict with an 'asin'")
      continue
    asin = str(meta["asin"])
    if asin in metas:
      malformed.add(meta_path, lineno, "duplicate asin", asin)
      continue
    metas[asin] = item_fields(meta, description_chars)

  events: dict[str, list[tuple[int, int, str]]] = {}
  for user, ts, lineno, asin in reviews:
    if asin not in metas:
      malformed.add(reviews_path, lineno, "item missing from the meta file", asin)
      continue
    events.setdefault(user, []).append((ts, lineno, asin))
  user_events = {u: [(t, a) for t, _, a in sorted(ev)] for u, ev in events.items()}
  extra = {
      "amazon": {"category": category, "reviews_rows": len(reviews),
                 "meta_rows_parsed": len(metas), "meta_rows_skipped_unreviewed": skipped},
      "ordering": "per user by (unixReviewTime, line in the reviews file), stable",
  }
  sources = [{"file": reviews_path}, {"file": meta_path}]
  return processed.Interactions(user_events, metas, sources, extra), malformed
