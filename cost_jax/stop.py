"""Cooperative stops: SIGTERM and SIGINT set a flag that long loops check between steps.

A signal handler that raises (KeyboardInterrupt) can fire anywhere: inside a jitted step whose
state was donated, inside XLA's garbage-collection callback (where Python ignores it), inside a
checkpoint write. Here the first SIGTERM/SIGINT only records the request; the trainer checks it
after each step and saves the state it holds, the tokenizer after each epoch, the evaluator
after each batch, the reproduction between stages, and each raises `Interrupted` at that safe
point. A second signal raises KeyboardInterrupt at once (the old, immediate behaviour).

`Interrupted` is a KeyboardInterrupt, so every `except KeyboardInterrupt` cleanup runs; a CLI
wrapped in cost_jax.io.exits_cleanly exits with 128 + the signal number (143 for SIGTERM, 130
for SIGINT).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator


class Interrupted(KeyboardInterrupt):
  """A stop requested by a signal, raised at a safe point. `signum`: the signal's number."""

  def __init__(self, message: str, signum: int = signal.SIGINT):
    super().__init__(message)
    self.signum = int(signum)

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class _Request:
  """The process's one stop request (signals are process-wide, so is this)."""

  def __init__(self):
    self.signum: int | None = None


_REQUEST = _Request()


def requested() -> int | None:
  """The signal number of a pending stop request, or None."""
  return _REQUEST.signum


def clear() -> None:
  _REQUEST.signum = None


def request(signum: int = signal.SIGTERM) -> None:
  """Records a stop request (what the handler does; also for tests)."""
  _REQUEST.signum = int(signum)


def check(where: str) -> None:
  """Raises Interrupted when a stop was requested; `where` names the safe point."""
  signum = _REQUEST.signum
  if signum is not None:
    raise Interrupted(f"stopped by {signal.Signals(signum).name} {where}", signum)


@contextlib.contextmanager
def handling(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
  """Installs the flag-setting handlers for the duration (main thread only; elsewhere a no-op).
  A second signal while a request is pending raises `Interrupted` at once (exit 128 + that
  signal, like the first would)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    del frame
    if _REQUEST.signum is not None:
      raise Interrupted(f"stopped at once by a second {signal.Signals(signum).name}", signum)
    _REQUEST.signum = int(signum)
    print(f"[stop] {signal.Signals(signum).name}: stopping at the next safe point (send it again "
          "to stop at once)", file=sys.stderr, flush=True)

  previous = {}
  for sig in signals:
    try:
      previous[sig] = signal.signal(sig, handler)
    except (ValueError, OSError):
      pass
  clear()
  try:
    yield
  finally:
    for sig, old in previous.items():
      signal.signal(sig, old)
