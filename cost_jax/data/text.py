"""CoST's item-text prompt template (CoST RecSys'24 §3.1).

  "Item category: <category>. Title: <title>. Description: <description>."

Each dataset fills the three slots from its own fields (ML-100K: genres, title,
release year; MIND: category > subcategory, title, abstract; Amazon: category
path, title, brand/price/description). Empty slots are left out rather than
rendered as "Title: .", and whitespace is collapsed so equal items give equal
text (the embedding cache is keyed by the exact text).
"""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")


def clean(value: object) -> str:
  """One-line, whitespace-collapsed string; None/NaN become ""."""
  if value is None:
    return ""
  if isinstance(value, float) and value != value:
    return ""
  return _SPACE.sub(" ", str(value)).strip()


def _sentence(label: str, value: str) -> str:
  value = value.rstrip()
  if not value:
    return ""
  if value[-1] not in ".!?":
    value += "."
  return f"{label}: {value}"


def truncate(value: str, max_chars: int | None) -> str:
  """Cuts at a word boundary near `max_chars` (None: no limit)."""
  if max_chars is None or len(value) <= max_chars:
    return value
  cut = value[:max_chars]
  space = cut.rfind(" ")
  if space > max_chars // 2:
    cut = cut[:space]
  return cut.rstrip(" ,;:") + "..."


def cost_prompt(category: object = "", title: object = "", description: object = "") -> str:
  """The CoST template with empty slots omitted."""
  parts = [
      _sentence("Item category", clean(category)),
      _sentence("Title", clean(title)),
      _sentence("Description", clean(description)),
  ]
  return " ".join(p for p in parts if p)
