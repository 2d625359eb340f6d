"""History cropping (TrainConfig.history_crop): suffixes of the history, drawn per (seed, step)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax.io import UserError  # noqa: E402
from cost_jax.seq2seq import batching, packing, splits  # noqa: E402
from cost_jax.seq2seq import trainer as train  # noqa: E402
from cost_jax.seq2seq.config import TrainConfig  # noqa: E402


def test_crop_histories_by_hand():
  # A user token (9), then items of 2 tokens; rows: 3, 1, 3, 3 items.
  tokens = np.asarray([[9, 11, 12, 21, 22, 31, 32, 0],
                       [9, 41, 42, 0, 0, 0, 0, 0],
                       [9, 11, 12, 21, 22, 31, 32, 0],
                       [9, 11, 12, 21, 22, 31, 32, 0]], np.int32)
  out = batching.crop_histories(tokens, np.asarray([7, 3, 7, 7]), np.asarray([1, 5, 2, 3]),
                                tokens_per_item=2)
  np.testing.assert_array_equal(out, [[9, 31, 32, 0, 0, 0, 0, 0],
                                      [9, 41, 42, 0, 0, 0, 0, 0],
                                      [9, 21, 22, 31, 32, 0, 0, 0],
                                      [9, 11, 12, 21, 22, 31, 32, 0]])
  assert out.dtype == np.int32


def _item_arrays(n=60, per_item=2, max_items=6, seed=0):
  """[user token] + items of `per_item` tokens, item k of row i encoded as distinct tokens."""
  rng = np.random.default_rng(seed)
  items = rng.integers(1, max_items + 1, size=n)
  enc = np.zeros((n, 1 + per_item * max_items), np.int32)
  for i, k in enumerate(items):
    enc[i, 0] = 3 + i % 5
    enc[i, 1:1 + per_item * k] = 100 + 10 * np.arange(per_item * k) + i % 7
  targets = rng.integers(3, 90, size=(n, per_item)).astype(np.int32)
  arrays = splits.ExampleArrays(**splits.encdec_features(enc, targets),
                                item_index=np.arange(n, dtype=np.int32),
                                user_index=np.arange(n, dtype=np.int32))
  return arrays, items


def test_every_example_keeps_a_suffix_drawn_per_seed_and_step():
  arrays, items = _item_arrays()
  b = batching.EpochBatcher(arrays, 16, seed=3, packing="off", history_crop=1.0,
                            tokens_per_item=2)
  seen = {i: set() for i in range(len(items))}
  for step in range(40):
    idx, batch = b.indices(step), b.batch(step)
    for row, i in enumerate(idx):
      orig = arrays.encoder_input_tokens[i]
      got = batch["encoder_input_tokens"][row]
      k = (np.count_nonzero(got) - 1) // 2
      assert 1 <= k <= items[i] and got[0] == orig[0]
      n = 1 + 2 * items[i]
      np.testing.assert_array_equal(got[1:1 + 2 * k], orig[n - 2 * k:n])  # the latest items
      assert not got[1 + 2 * k:].any()
      seen[i].add(k)
    np.testing.assert_array_equal(batch["decoder_target_tokens"],
                                  arrays.decoder_target_tokens[idx])  # targets untouched
    assert b.real_tokens(step) == int(np.count_nonzero(batch["encoder_input_tokens"])
                                      + np.count_nonzero(batch["decoder_loss_weights"]))
  # Over ~10 draws per example, every example of >= 2 items was cut at least once, and the
  # drawn lengths span 1..n.
  assert all(len(seen[i]) > 1 for i in range(len(items)) if items[i] >= 3)
  assert set().union(*(seen[i] for i in range(len(items)) if items[i] == 6)) == set(range(1, 7))
  # A pure function of (seed, step); another seed draws other lengths.
  again = batching.EpochBatcher(arrays, 16, seed=3, packing="off", history_crop=1.0,
                                tokens_per_item=2)
  other = batching.EpochBatcher(arrays, 16, seed=4, packing="off", history_crop=1.0,
                                tokens_per_item=2)
  np.testing.assert_array_equal(again.batch(7)["encoder_input_tokens"],
                                b.batch(7)["encoder_input_tokens"])
  assert not np.array_equal(other.kept_items(7, b.indices(7)), b.kept_items(7, b.indices(7)))


def test_crop_probability_zero_half_and_packing():
  arrays, items = _item_arrays(n=400, seed=1)
  plain = batching.EpochBatcher(arrays, 64, seed=0, packing="off")
  assert plain.kept_items(0, plain.indices(0)) is None
  # p = 0.5: about half of the croppable examples are cut (400 draws; bounds at ~5 sigma).
  half = batching.EpochBatcher(arrays, 64, seed=0, packing="off", history_crop=0.5,
                               tokens_per_item=2)
  cut = total = 0
  for step in range(7):
    idx = half.indices(step)
    keep = half.kept_items(step, idx)
    # An example that draws its full length is not cut: P(cut) = p (1 - 1/n) for n items.
    cut += int((keep < items[idx]).sum())
    total += float((0.5 * (1 - 1 / items[idx])).sum())
  assert abs(cut - total) < 5 * np.sqrt(total)
  # Packed rows hold the same cropped examples as the padded batch.
  packed = batching.EpochBatcher(arrays, 64, seed=0, packing="encoder", history_crop=0.5,
                                 tokens_per_item=2, pack_row_multiple=4)
  for step in (0, 5):
    a, p = half.batch(step), packed.batch(step)
    assert np.count_nonzero(a["encoder_input_tokens"]) == np.count_nonzero(
        p["encoder_input_tokens"])
    assert sum(packing.real_tokens(p)) == packed.real_tokens(step) == half.real_tokens(step)
    assert p["encoder_input_tokens"].shape[0] <= a["encoder_input_tokens"].shape[0]


def test_crop_refuses_what_it_cannot_cut():
  arrays, _ = _item_arrays()
  with pytest.raises(UserError, match="whole items of 3 tokens"):
    batching.EpochBatcher(arrays, 16, seed=0, packing="off", history_crop=1.0,
                          tokens_per_item=3)
  with pytest.raises(UserError, match="history_crop needs packing"):
    batching.make_batcher(arrays, 16, seed=0, packing="bucket", history_crop=1.0,
                          tokens_per_item=2)
  with pytest.raises(UserError, match=r"history_crop must be in \[0, 1\]"):
    TrainConfig(dataset_dir="d", tokenizer_dir="t", history_crop=1.5).validate()


def test_trainer_crops_with_the_configured_probability(tmp_path, capsys):
  ds, tok = toy.write_processed(str(tmp_path / "toyds")), toy.write_tokenizer(str(tmp_path / "tok"))
  settings = dict(toy.tiny_model_overrides(), **toy.fast_train_overrides(num_train_steps=20))
  train.train_and_evaluate(model_dir=str(tmp_path / "m"), dataset_dir=ds, tokenizer_dir=tok,
                           eval_at_end=False, eval_test=False, show_progress=False,
                           history_crop=0.75, **settings)
  assert "histories cropped with probability 0.75" in capsys.readouterr().err
