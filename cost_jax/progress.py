"""Progress lines with rate and ETA, for anything that runs longer than a few seconds.

One line per `update` call at most every `min_interval` seconds (and always on
the last step), written to stderr so stdout stays machine-readable:

  [tokenize cost] 1200/5000 epochs  24.0%  3.1 it/s  items/s 81,920  ETA 0:20:31  loss=0.412 usage=0.93
  [train] 2000/4000 steps  50.0%  0.7 steps/s  examples/s 179  ETA 0:47:37  loss=2.9 epoch=3.9
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import IO, Mapping


def format_duration(seconds: float) -> str:
  if seconds != seconds or seconds == float("inf"):  # NaN or inf
    return "?:??:??"
  seconds = int(round(max(seconds, 0.0)))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}"


def _format_value(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


@dataclasses.dataclass
class Progress:
  """Rate/ETA reporter. `total` is in `unit`s; `items_per_step` adds a `<items_name>/s` figure
  (what one step processes: catalogue items, training examples, users)."""

  total: int
  desc: str = ""
  unit: str = "it"
  items_per_step: int | None = None
  items_name: str = "items"
  min_interval: float = 2.0
  stream: IO[str] | None = None
  start_step: int = 0

  def __post_init__(self):
    self._t0 = time.perf_counter()
    self._last_print = -float("inf")
    self._step0 = self.start_step
    self.step = self.start_step
    if self.stream is None:
      self.stream = sys.stderr

  @property
  def elapsed(self) -> float:
    return time.perf_counter() - self._t0

  def rate(self) -> float:
    done = self.step - self._step0
    return done / self.elapsed if self.elapsed > 0 else 0.0

  def line(self, metrics: Mapping[str, object] | None = None) -> str:
    rate = self.rate()
    remaining = (self.total - self.step) / rate if rate > 0 else float("inf")
    pct = 100.0 * self.step / self.total if self.total else 100.0
    parts = []
    if self.desc:
      parts.append(f"[{self.desc}]")
    parts.append(f"{self.step}/{self.total} {self.unit}")
    parts.append(f"{pct:5.1f}%")
    parts.append(f"{rate:.3g} {self.unit}/s")
    if self.items_per_step:
      parts.append(f"{self.items_name}/s {rate * self.items_per_step:,.0f}")
    parts.append(f"elapsed {format_duration(self.elapsed)}")
    parts.append(f"ETA {format_duration(remaining)}")
    if metrics:
      parts.append(" ".join(f"{k}={_format_value(v)}" for k, v in metrics.items()))
    return "  ".join(parts)

  def update(self, step: int | None = None, metrics: Mapping[str, object] | None = None,
             force: bool = False) -> None:
    """Sets the current step (or advances by one) and prints if due."""
    self.step = self.step + 1 if step is None else step
    now = time.perf_counter()
    if force or self.step >= self.total or now - self._last_print >= self.min_interval:
      self._last_print = now
      print(self.line(metrics), file=self.stream, flush=True)

  def close(self, metrics: Mapping[str, object] | None = None) -> None:
    print(self.line(metrics), file=self.stream, flush=True)
