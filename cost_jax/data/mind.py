"""MIND (Microsoft News, small or large) from the user's files.

Expected under --mind_dir, either directly or in split folders such as
MINDsmall_train/ and MINDsmall_dev/ (also MINDlarge_*; *_test has no click
labels and is ignored):
  news.tsv       news id, category, subcategory, title, abstract, url,
                 title entities, abstract entities           (8 tab-separated fields)
  behaviors.tsv  impression id, user id, time ("11/15/2019 8:55:22 AM"),
                 click history (space-separated news ids), impressions ("N1-1 N2-0")

A user's sequence is the click history once (taken from the user's impressions;
they repeat it), then the clicked impressions across all impressions ordered by
(time, folder, line, position). A click on news already in the sequence is
dropped by default (dedup_clicks). History items have no time: timestamps -1.
CoST (RecSys'24 §4.1, Table 1) keeps users with >= 15 interactions and the
latest 70 of each sequence (options min_seq_len / max_seq_len in prepare()).
Item text: category > subcategory, title, abstract (CoST: "type, subtype, title").
"""

from __future__ import annotations

import calendar
import datetime
import os
import re
import sys

from cost_jax.data import processed, text
from cost_jax.data.malformed import MalformedRows, decoded_lines
from cost_jax.io import UserError
from cost_jax.progress import Progress

NEWS_FIELDS = 8
BEHAVIOR_FIELDS = 5
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_SPLIT_DIR = re.compile(r"(?i)(^|[_-])(train|dev|valid|validation)$")
_TOKEN = re.compile(r"^(\S+)-([01])$")


def find_folders(mind_dir: str) -> list[str]:
  """Folders holding news.tsv + behaviors.tsv: mind_dir itself or its train/dev subfolders."""
  mind_dir = os.path.abspath(os.path.expanduser(mind_dir))
  if not os.path.isdir(mind_dir):
    raise UserError(f"{mind_dir}: no such directory (expected a MIND folder with news.tsv and "
                    "behaviors.tsv, or with MINDsmall_train/ [and MINDsmall_dev/])")
  def complete(d):
    return all(os.path.isfile(os.path.join(d, f)) for f in ("news.tsv", "behaviors.tsv"))
  if complete(mind_dir):
    return [mind_dir]
  subdirs = sorted(d for d in os.listdir(mind_dir) if os.path.isdir(os.path.join(mind_dir, d)))
  split = [d for d in subdirs if _SPLIT_DIR.search(d)]
  # train before dev: the dev week follows the train week.
  split.sort(key=lambda d: (0 if "train" in d.lower() else 1, d))
  folders, incomplete = [], []
  for d in split:
    (folders if complete(os.path.join(mind_dir, d)) else incomplete).append(os.path.join(mind_dir, d))
  if incomplete:
    missing = [os.path.join(d, f) for d in incomplete for f in ("news.tsv", "behaviors.tsv")
               if not os.path.isfile(os.path.join(d, f))]
    raise UserError(f"MIND split folder(s) incomplete; missing {', '.join(missing)}")
  if not folders:
    raise UserError(
        f"{mind_dir}: found no MIND files. Expected {mind_dir}/news.tsv and "
        f"{mind_dir}/behaviors.tsv, or split folders like {mind_dir}/MINDsmall_train/ and "
        f"{mind_dir}/MINDsmall_dev/ each holding news.tsv + behaviors.tsv "
        f"(found: {', '.join(subdirs) or 'nothing'}); *_test folders have no click labels")
  return folders


def parse_time(value: str) -> int:
  """'11/15/2019 8:55:22 AM' -> unix seconds (the file's clock taken as UTC)."""
  dt = datetime.datetime.strptime(value.strip(), TIME_FORMAT)
  return calendar.timegm(dt.timetuple())


def load_news(path: str, news: dict[str, dict[str, str]], malformed: MalformedRows) -> int:
  count = 0
  in_this_file: set[str] = set()
  for lineno, line in decoded_lines(path, malformed):
    fields = line.split("\t")
    if len(fields) != NEWS_FIELDS:
      malformed.add(path, lineno, "wrong field count",
                    f"{len(fields)} tab-separated fields, expected {NEWS_FIELDS}")
      continue
    news_id, category, subcategory, title, abstract = (f.strip() for f in fields[:5])
    if not news_id:
      malformed.add(path, lineno, "empty news id")
      continue
    if news_id in in_this_file:  # counted as in every loader (Amazon ASINs, RecBole items)
      malformed.add(path, lineno, "duplicate news id", news_id)
      continue
    in_this_file.add(news_id)
    count += 1
    if news_id in news:  # the same news in train and dev: expected, first wins
      continue
    cat = " > ".join(c for c in (text.clean(category), text.clean(subcategory)) if c)
    news[news_id] = {
        "category": text.clean(category),
        "subcategory": text.clean(subcategory),
        "title": text.clean(title),
        "abstract": text.clean(abstract),
        "url": fields[5].strip(),
        "text": text.cost_prompt(cat, title, abstract),
    }
  return count


def load(mind_dir: str, *, strict: bool = False, dedup_clicks: bool = True
         ) -> tuple[processed.Interactions, MalformedRows]:
  folders = find_folders(mind_dir)
  malformed = MalformedRows(strict=strict)
  news: dict[str, dict[str, str]] = {}
  news_rows = 0
  for folder in folders:
    path = os.path.join(folder, "news.tsv")
    rows = load_news(path, news, malformed)
    if rows == 0:
      raise UserError(f"{path}: no usable news rows (empty or all malformed)")
    news_rows += rows

  histories: dict[str, list[str]] = {}
  inconsistent: set[str] = set()
  clicks: dict[str, list[tuple[int, int, int, int, str]]] = {}
  impressions = clicks_total = 0
  for folder_index, folder in enumerate(folders):
    path = os.path.join(folder, "behaviors.tsv")
    size = max(os.path.getsize(path), 1)
    progress = Progress(total=size // (1 << 20) + 1, desc=f"read {os.path.basename(folder)}/behaviors.tsv",
                        unit="MiB", min_interval=10.0)
    done = 0
    for lineno, line in decoded_lines(path, malformed):
      done += len(line) + 1
      if lineno % 50000 == 0:
        progress.update(done // (1 << 20))
      fields = line.split("\t")
      if len(fields) != BEHAVIOR_FIELDS:
        malformed.add(path, lineno, "wrong field count",
                      f"{len(fields)} tab-separated fields, expected {BEHAVIOR_FIELDS}")
        continue
      _, user, when, history, shown = fields
      user = user.strip()
      if not user:
        malformed.add(path, lineno, "empty user id")
        continue
      try:
        ts = parse_time(when)
      except ValueError:
        malformed.add(path, lineno, "bad timestamp", f"{when!r}, expected like '11/15/2019 8:55:22 AM'")
        continue
      impressions += 1
      hist = history.split()
      missing = [n for n in hist if n not in news]
      if missing:
        malformed.add(path, lineno, "history item missing from news.tsv", " ".join(missing[:5]))
        hist = [n for n in hist if n in news]
      previous = histories.get(user)
      if previous is None:
        histories[user] = hist
      elif previous != hist:
        inconsistent.add(user)
        if len(hist) > len(previous):  # keep the longest
          histories[user] = hist
      bad_tokens, missing_clicks = [], []
      for pos, token in enumerate(shown.split()):
        m = _TOKEN.match(token)
        if not m:
          bad_tokens.append(token)
          continue
        if m.group(2) != "1":
          continue
        if m.group(1) not in news:
          missing_clicks.append(m.group(1))
          continue
        clicks.setdefault(user, []).append((ts, folder_index, lineno, pos, m.group(1)))
        clicks_total += 1
      if bad_tokens:
        malformed.add(path, lineno, "bad impression token", f"{' '.join(bad_tokens[:5])}; expected like N123-1")
      if missing_clicks:
        malformed.add(path, lineno, "clicked item missing from news.tsv", " ".join(missing_clicks[:5]))
    progress.close()

  user_events: dict[str, list[tuple[int, str]]] = {}
  repeats = 0
  for user in histories.keys() | clicks.keys():
    events = [(-1, n) for n in histories.get(user, [])]
    seen = {n for _, n in events}
    for ts, _, _, _, n in sorted(clicks.get(user, [])):
      if dedup_clicks and n in seen:
        repeats += 1
        continue
      seen.add(n)
      events.append((ts, n))
    if events:
      user_events[user] = events
  extra = {
      "mind": {
          "folders": [os.path.basename(f) for f in folders],
          "news_rows": news_rows,
          "news_unique": len(news),
          "impressions": impressions,
          "clicks": clicks_total,
          "clicks_dropped_as_repeats": repeats,
          "users_with_differing_histories": len(inconsistent),
          "history_timestamps": -1,
      },
      "ordering": "history (once, file order), then clicks by (time, folder, line, position)",
  }
  if inconsistent:
    print(f"note: {len(inconsistent)} users have differing histories across impressions; "
          "the longest was used", file=sys.stderr)
  sources = [{"folder": f, "files": ["news.tsv", "behaviors.tsv"]} for f in folders]
  return processed.Interactions(user_events, news, sources, extra), malformed
