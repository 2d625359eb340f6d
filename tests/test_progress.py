"""cost_jax.progress: the rate, ETA and per-item figures of a progress line, on a fake clock."""

import io

import pytest

from cost_jax import progress


@pytest.fixture
def clock(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
  return now


def test_format_duration():
  assert progress.format_duration(0) == "0:00:00"
  assert progress.format_duration(3725.4) == "1:02:05"
  assert progress.format_duration(-3) == "0:00:00"
  assert progress.format_duration(float("inf")) == "?:??:??"
  assert progress.format_duration(float("nan")) == "?:??:??"


def test_line_has_rate_items_elapsed_and_eta(clock):
  out = io.StringIO()
  p = progress.Progress(10, desc="train", unit="steps", items_per_step=4, items_name="examples",
                        stream=out)
  clock[0] += 10.0
  p.update(5, {"loss": 2.345678, "epoch": 3}, force=True)
  line = out.getvalue().strip()
  # 5 steps in 10 s: 0.5 steps/s, 2 examples/s, 5 steps left -> 10 s
  assert line == ("[train]  5/10 steps   50.0%  0.5 steps/s  examples/s 2  elapsed 0:00:10  "
                  "ETA 0:00:10  loss=2.346 epoch=3")


def test_a_resumed_run_rates_only_the_steps_it_ran(clock):
  out = io.StringIO()
  p = progress.Progress(100, unit="steps", start_step=60, stream=out)
  clock[0] += 20.0
  p.update(70, force=True)
  # 10 steps since the resume in 20 s: 0.5 steps/s, 30 left -> 60 s; the item figure is absent
  assert "70/100 steps   70.0%  0.5 steps/s  elapsed 0:00:20  ETA 0:01:00" in out.getvalue()
  assert "/s 5" not in out.getvalue()


def test_update_prints_at_most_every_interval_and_always_the_last_step(clock):
  out = io.StringIO()
  p = progress.Progress(3, min_interval=5.0, stream=out)
  p.update()            # first call prints
  clock[0] += 1.0
  p.update()            # 1 s later: too soon
  clock[0] += 1.0
  p.update()            # the last step prints anyway
  assert len(out.getvalue().splitlines()) == 2
