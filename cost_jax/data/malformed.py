"""Counting and reporting malformed input rows (file:line samples, never silent).

Every loader hands each bad row to a `MalformedRows` collector instead of
crashing or skipping it quietly. The collector counts rows per reason, keeps the
first few `file:line: reason` samples per reason, prints a short summary to
stderr, and goes into stats.json. With `strict=True` the first bad row raises a
`UserError` naming file:line.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import sys
from typing import IO, Iterator

from cost_jax.io import UserError


@dataclasses.dataclass
class MalformedRows:
  """Collects malformed rows. `add` raises UserError in strict mode."""

  strict: bool = False
  max_samples_per_reason: int = 5

  def __post_init__(self):
    self._counts: collections.Counter[str] = collections.Counter()
    self._samples: dict[str, list[str]] = collections.defaultdict(list)
    self._rows: set[tuple[str, int]] = set()

  def add(self, path: str, line: int, reason: str, detail: str = "") -> None:
    """Records that `path:line` is malformed for `reason` (a short category)."""
    where = f"{path}:{line}"
    message = f"{where}: {reason}" + (f" ({detail})" if detail else "")
    if self.strict:
      raise UserError(message + "  [--strict: malformed rows are errors]")
    self._counts[reason] += 1
    self._rows.add((path, line))
    samples = self._samples[reason]
    if len(samples) < self.max_samples_per_reason:
      samples.append(message)

  @property
  def num_rows(self) -> int:
    """Distinct (file, line) rows with at least one problem."""
    return len(self._rows)

  @property
  def counts(self) -> dict[str, int]:
    return dict(self._counts)

  def to_json(self) -> dict:
    return {
        "rows": self.num_rows,
        "by_reason": dict(sorted(self._counts.items())),
        "samples": {k: list(v) for k, v in sorted(self._samples.items())},
    }

  def summary(self) -> str:
    if not self._rows:
      return "malformed rows: 0"
    lines = [f"malformed rows: {self.num_rows} (counted in stats.json; --strict makes them errors)"]
    for reason, count in sorted(self._counts.items()):
      lines.append(f"  {count:>8,}  {reason}")
      for sample in self._samples[reason][:3]:
        lines.append(f"            e.g. {sample}")
    return "\n".join(lines)

  def report(self, stream: IO[str] | None = None) -> None:
    if self._rows:
      print(self.summary(), file=stream or sys.stderr, flush=True)


def decoded_lines(path: str, malformed: MalformedRows, start: int = 1
                  ) -> Iterator[tuple[int, str]]:
  """(line number, text without the line break) of a UTF-8 text file (.gz read as gzip).

  Each line is decoded on its own; one that is not UTF-8 is a malformed row ("undecodable
  bytes"), never replaced by U+FFFD (which would merge distinct ids). Blank lines are skipped.
  A truncated or corrupt file is a UserError naming it.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      for lineno, raw in enumerate(f, start=start):
        try:
          line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
          malformed.add(path, lineno, "undecodable bytes", f"not UTF-8 at byte {e.start}")
          continue
        if line.strip():
          yield lineno, line
  except (OSError, EOFError) as e:
    raise UserError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
