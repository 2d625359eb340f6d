"""Ground-truth item categories for Entropy@K (TIGER §4.4.2): one item field, read as lists.

The field is any column of items.parquet (the raw item fields every loader keeps): ML-100K's
`genres`, or a RecBole item field such as `categories`. A value is split on commas (and on
whitespace for RecBole `:token_seq` values with no comma); empty parts are dropped.
"""

from __future__ import annotations

import os

import pandas as pd

from cost_jax.data.processed import ITEMS_FILE
from cost_jax.io import UserError

# Tried in this order when no field is named.
CATEGORY_FIELDS = ("genres", "genre", "categories", "category", "class", "classes",
                   "categories_list")


def split_value(value: str) -> list[str]:
  value = str(value or "").strip()
  parts = value.split(",") if "," in value else value.split()
  return [p.strip() for p in parts if p.strip()]


def item_categories(dataset_dir: str, field: str = "") -> tuple[list[list[int]], list[str], str]:
  """(category ids per item, category names, the field used) of a processed dataset dir."""
  path = os.path.join(dataset_dir, ITEMS_FILE)
  try:
    items = pd.read_parquet(path)
  except (OSError, ValueError) as e:
    raise UserError(f"{path}: cannot read ({e})") from None
  columns = [c for c in items.columns if c not in ("item_index", "item_id", "text")]
  if not field:
    field = next((f for f in CATEGORY_FIELDS if f in columns), "")
    if not field:
      raise UserError(f"{path}: no category field (looked for {', '.join(CATEGORY_FIELDS)}; "
                      f"the items have {', '.join(columns) or 'no fields'}); name one with "
                      "--category_field")
  elif field not in columns:
    raise UserError(f"{path}: no item field '{field}' (the items have "
                    f"{', '.join(columns) or 'no fields'})")
  names: dict[str, int] = {}
  lists = []
  for value in items[field].astype(str).tolist():
    lists.append([names.setdefault(p, len(names)) for p in split_value(value)])
  if not names:
    raise UserError(f"{path}: the field '{field}' is empty for every item")
  return lists, list(names), field
