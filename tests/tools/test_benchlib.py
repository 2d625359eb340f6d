"""tools/benchlib.py: the benchmarks' shared synthetic batch and step timer."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools"))
import benchlib  # noqa: E402  pylint: disable=wrong-import-position


def test_synthetic_batch_is_the_trainers_feature_layout():
  b = benchlib.synthetic_batch(4, 9, 3, vocab_size=50, seed=1)
  assert {k: v.shape for k, v in b.items()} == {
      "encoder_input_tokens": (4, 9), "decoder_target_tokens": (4, 3),
      "decoder_input_tokens": (4, 3), "decoder_loss_weights": (4, 3)}
  np.testing.assert_array_equal(b["decoder_input_tokens"][:, 1:], b["decoder_target_tokens"][:, :-1])
  assert (b["decoder_input_tokens"][:, 0] == 0).all() and b["encoder_input_tokens"].min() >= 3
  assert b["encoder_input_tokens"].max() < 50 and b["decoder_loss_weights"].sum() == 12
  again = benchlib.synthetic_batch(4, 9, 3, vocab_size=50, seed=1)
  assert all(np.array_equal(b[k], again[k]) for k in b)


def test_time_steps_counts_every_call():
  calls = []

  def step(state, batch):
    calls.append(batch)
    return state + 1, np.float32(state)

  state, m, compile_s, times = benchlib.time_steps(step, 0, "b", 3)
  assert (state, float(m), len(times), len(calls)) == (4, 3.0, 3, 4) and compile_s >= 0
