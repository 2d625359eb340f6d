"""Packed batches: first-fit by hand, and every example's loss equal to its padded one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.io import UserError
from cost_jax.seq2seq import batching, model, network, packing, splits

VOCAB = 40


def _config(**kw):
  base = dict(vocab_size=VOCAB, emb_dim=32, num_heads=2, head_dim=8, num_encoder_layers=2,
              num_decoder_layers=2, mlp_dim=48, dropout_rate=0.0, max_input_len=16,
              max_target_len=4)
  base.update(kw)
  return network.TransformerConfig(**base)


def _padded_batch(rng, n, t_in=16, t_out=4, lengths=None):
  if lengths is None:
    lengths = rng.integers(1, t_in + 1, size=n)
  enc = np.zeros((n, t_in), np.int32)
  for i, length in enumerate(lengths):
    enc[i, :length] = rng.integers(3, VOCAB, size=length)
  targets = rng.integers(3, VOCAB, size=(n, t_out)).astype(np.int32)
  return splits.encdec_features(enc, targets)


def _per_example_nll(module, params, batch):
  logits = model._forward(module, params, batch, False, None)  # pylint: disable=protected-access
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  tgt = jnp.asarray(batch["decoder_target_tokens"])
  nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
  return np.asarray(jnp.sum(nll * batch["decoder_loss_weights"], axis=-1)), np.asarray(logits)


def test_first_fit_decreasing_by_hand():
  # Longest first: 5 -> row 0 @0; 4 does not fit row 0 (3 free) -> row 1 @0;
  # 3 -> row 0 @5; 2 -> row 1 @4.
  row, offset, used = packing.first_fit_decreasing(np.array([5, 3, 4, 2]), 8)
  assert used == 2
  assert row.tolist() == [0, 0, 1, 1]
  assert offset.tolist() == [0, 5, 0, 4]
  with pytest.raises(UserError):
    packing.first_fit_decreasing(np.array([9]), 8)


def test_pack_batch_layout_by_hand():
  enc = np.array([[5, 6, 7, 0], [8, 0, 0, 0], [9, 9, 0, 0]], np.int32)
  batch = splits.encdec_features(enc, np.array([[3, 4], [5, 6], [7, 8]], np.int32))
  out = packing.pack_batch(batch, row_multiple=2)
  # 3 (ex 0) -> row 0 @0; 2 (ex 2) -> row 1 @0; 1 (ex 1) -> row 0 @3.
  assert out["encoder_input_tokens"].tolist() == [[5, 6, 7, 8], [9, 9, 0, 0]]
  assert out["encoder_segment_ids"].tolist() == [[1, 1, 1, 2], [1, 1, 0, 0]]
  assert out["encoder_positions"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
  assert out["decoder_encoder_row"].tolist() == [0, 0, 1]
  assert out["decoder_encoder_segment"].tolist() == [1, 2, 1]
  # Segment slots per row: row 0 holds examples 0 and 1, row 1 example 2 (3 = empty slot).
  assert out["encoder_row_examples"].tolist() == [[0, 1], [2, 3]]
  assert packing.pack_batch(batch, row_multiple=2, slots=3)["encoder_row_examples"].tolist() \
      == [[0, 1, 3], [2, 3, 3]]
  # One slot per row: no row is shared, three rows (rounded up to 4).
  one = packing.pack_batch(batch, row_multiple=2, slots=1)
  assert one["encoder_row_examples"].tolist() == [[0], [2], [1], [3]]
  assert one["encoder_input_tokens"].tolist() == [[5, 6, 7, 0], [9, 9, 0, 0], [8, 0, 0, 0],
                                                  [0, 0, 0, 0]]
  assert packing.max_segments(np.array([3, 1, 2]), 4) == 4
  assert packing.max_segments(np.array([5, 9, 81]), 81) == 16
  np.testing.assert_array_equal(out["decoder_target_tokens"], batch["decoder_target_tokens"])
  with pytest.raises(UserError, match="left-aligned"):
    packing.token_lengths(np.array([[0, 3]], np.int32))


def test_first_fit_decreasing_with_row_widths_by_hand():
  # Widths (4, 8): 7 opens an 8-row (row 0); 5 opens another 8-row (row 1); 3 fits neither
  # (1 and 3 free: row 1 has 3) -> row 1 @5; 2 opens a 4-row (row 2); 1 -> row 0 @7.
  row, offset, widths = packing.first_fit_decreasing(np.array([2, 7, 1, 5, 3]), (4, 8))
  assert widths.tolist() == [8, 8, 4]
  assert row.tolist() == [2, 0, 0, 1, 1]
  assert offset.tolist() == [0, 0, 7, 0, 5]
  with pytest.raises(UserError, match="ascending"):
    packing.first_fit_decreasing(np.array([2]), (8, 4))


def test_pack_batch_with_narrow_rows_by_hand():
  enc = np.zeros((4, 8), np.int32)
  for i, n in enumerate([7, 2, 1, 3]):
    enc[i, :n] = np.arange(3, 3 + n) + 10 * i
  batch = splits.encdec_features(enc, np.full((4, 2), 5, np.int32))
  out = packing.pack_batch(batch, row_multiple=1, widths=(4,))
  # 7 -> full row 0 @0; 3 -> new 4-row; 2 -> 4-row? no (1 free) -> new 4-row; 1 -> full @7.
  narrow = out[packing.bucket_key(4) + "encoder_input_tokens"]
  assert narrow.tolist() == [[33, 34, 35, 0], [13, 14, 0, 0]]
  assert out["encoder_input_tokens"].tolist() == [[3, 4, 5, 6, 7, 8, 9, 23]]
  # Narrow rows first (0, 1), then the full-width row (2).
  assert out["decoder_encoder_row"].tolist() == [2, 1, 2, 0]
  assert out["decoder_encoder_segment"].tolist() == [1, 1, 2, 1]
  assert out["encoder_row_examples"].tolist() == [[3, 4], [1, 4], [0, 2]]
  assert [t.shape for t, _, _ in packing.narrow_rows(out)] == [(2, 4)]
  assert packing.auto_widths(np.array([5] * 30 + [81] * 10), 81) == (24, 44)
  assert packing.auto_widths(np.array([81] * 10), 81) == ()


@pytest.mark.parametrize("position_embedding,widths", [("relative", ()), ("absolute", ()),
                                                       ("relative", (4, 8)),
                                                       ("absolute", (6,))])
def test_packed_loss_equals_padded_per_example(position_embedding, widths):
  rng = np.random.default_rng(0)
  module = network.Transformer(_config(position_embedding=position_embedding))
  padded = _padded_batch(rng, 24, lengths=rng.integers(1, 13, size=24))
  params = network.init_params(module, jax.random.PRNGKey(1), 16, 4)
  packed = packing.pack_batch(padded, row_multiple=4, widths=widths)
  rows = packed["encoder_input_tokens"].shape[0] + sum(
      t.shape[0] for t, _, _ in packing.narrow_rows(packed))
  assert rows < 24  # several examples per row
  if widths == (4, 8):  # this batch opens narrow rows: the multi-width path is exercised
    assert len(packing.narrow_rows(packed)) >= 1
  nll_pad, logits_pad = _per_example_nll(module, params, padded)
  nll_pack, logits_pack = _per_example_nll(module, params, packed)
  np.testing.assert_allclose(nll_pack, nll_pad, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(logits_pack, logits_pad, atol=1e-5)
  # The batch loss and its gradients are the same function of the parameters.
  lp, _ = model.loss_fn(params, padded, None, module=module)
  lq, _ = model.loss_fn(params, packed, None, module=module)
  assert abs(float(lp) - float(lq)) < 1e-5
  gp = jax.grad(lambda p: model.loss_fn(p, padded, None, module=module)[0])(params)
  gq = jax.grad(lambda p: model.loss_fn(p, packed, None, module=module)[0])(params)
  for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gq)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_no_leak_across_segments():
  rng = np.random.default_rng(1)
  module = network.Transformer(_config())
  params = network.init_params(module, jax.random.PRNGKey(2), 16, 4)
  padded = _padded_batch(rng, 8, lengths=np.array([3, 4, 5, 2, 6, 3, 4, 2]))
  packed = packing.pack_batch(padded, row_multiple=1)
  _, base = _per_example_nll(module, params, packed)
  # Change every token of example 0 (and its target); only example 0's logits may move.
  changed = dict(packed)
  enc = packed["encoder_input_tokens"].copy()
  r, seg = packed["decoder_encoder_row"][0], packed["decoder_encoder_segment"][0]
  own = packed["encoder_segment_ids"][r] == seg
  enc[r, own] = (enc[r, own] % (VOCAB - 3)) + 3 + 1
  enc[r, own] = np.minimum(enc[r, own], VOCAB - 1)
  changed["encoder_input_tokens"] = enc
  _, after = _per_example_nll(module, params, changed)
  assert not np.allclose(after[0], base[0])
  np.testing.assert_allclose(after[1:], base[1:], atol=1e-6)


def test_t5x_style_packing_of_both_sides_matches_padded():
  """seqio's EncDecFeatureConverter(pack=True) layout: decoder rows packed too."""
  rng = np.random.default_rng(2)
  module = network.Transformer(_config(max_target_len=8))
  params = network.init_params(module, jax.random.PRNGKey(3), 16, 8)
  padded = _padded_batch(rng, 2, lengths=np.array([5, 7]))
  nll_pad, logits_pad = _per_example_nll(module, params, padded)
  enc = np.zeros((1, 16), np.int32)
  enc[0, :5], enc[0, 5:12] = padded["encoder_input_tokens"][0, :5], padded["encoder_input_tokens"][1, :7]
  eseg = np.zeros((1, 16), np.int32)
  eseg[0, :5], eseg[0, 5:12] = 1, 2
  t = padded["decoder_target_tokens"]
  both = {
      "encoder_input_tokens": enc, "encoder_segment_ids": eseg,
      "decoder_target_tokens": np.concatenate([t[0], t[1]])[None],
      "decoder_input_tokens": np.concatenate([[0], t[0, :-1], [0], t[1, :-1]])[None].astype(np.int32),
      "decoder_loss_weights": np.ones((1, 8), np.float32),
      "decoder_segment_ids": np.array([[1] * 4 + [2] * 4], np.int32),
  }
  logits = np.asarray(model._forward(module, params, both, False, None))  # pylint: disable=protected-access
  np.testing.assert_allclose(logits[0, :4], logits_pad[0], atol=1e-5)
  np.testing.assert_allclose(logits[0, 4:], logits_pad[1], atol=1e-5)


def test_batcher_packs_the_same_examples_per_step():
  rng = np.random.default_rng(3)
  feats = _padded_batch(rng, 50, lengths=rng.integers(1, 12, size=50))
  arrays = splits.ExampleArrays(**feats, item_index=np.arange(50, dtype=np.int32),
                                        user_index=np.arange(50, dtype=np.int32))
  off = batching.EpochBatcher(arrays, 16, seed=7, packing="off")
  on = batching.EpochBatcher(arrays, 16, seed=7, packing="encoder", pack_row_multiple=4)
  for step in (0, 3, 11):
    a, b = off.batch(step), on.batch(step)
    np.testing.assert_array_equal(a["decoder_target_tokens"], b["decoder_target_tokens"])
    assert int(np.count_nonzero(a["encoder_input_tokens"])) == int(
        np.count_nonzero(b["encoder_input_tokens"]))
    assert b["encoder_input_tokens"].shape[0] % 4 == 0
    assert on.real_tokens(step) == sum(packing.real_tokens(a))
  # A pure function of (seed, step): a fresh batcher gives the same packed batch.
  again = batching.EpochBatcher(arrays, 16, seed=7, packing="encoder", pack_row_multiple=4)
  for k, v in on.batch(5).items():
    np.testing.assert_array_equal(v, again.batch(5)[k])
  # The shapes to compile ahead of time: exactly the distinct packed shapes of those steps.
  seen = {on.batch(s)["encoder_input_tokens"].shape for s in range(2, 9)}
  scanned = on.shape_batches(2, 9)
  assert len(scanned) == len(seen) and {x["encoder_input_tokens"].shape for x in scanned} == seen
  assert len(on.shape_batches(2, 9, max_steps=1)) == 1
  assert [x["encoder_input_tokens"].shape for x in off.shape_batches(0, 100)] == [(16, 16)]


def test_bucket_batcher_covers_each_epoch_once_with_few_shapes():
  rng = np.random.default_rng(4)
  lengths = rng.choice([2, 3, 5, 9, 16], size=203, p=[.3, .2, .2, .1, .2])
  feats = _padded_batch(rng, 203, lengths=lengths)
  arrays = splits.ExampleArrays(**feats, item_index=np.arange(203, dtype=np.int32),
                                        user_index=np.arange(203, dtype=np.int32))
  b = batching.make_batcher(arrays, 16, seed=5, packing="bucket", pack_widths="3,9")
  assert b.widths == (3, 9, 16)
  spe = b.steps_per_epoch
  for epoch in (0, 1):
    rows, shapes = [], set()
    for s in range(epoch * spe, (epoch + 1) * spe):
      idx, batch = b.indices(s), b.batch(s)
      width = batch["encoder_input_tokens"].shape[1]
      shapes.add(batch["encoder_input_tokens"].shape)
      real = idx >= 0
      assert (lengths[idx[real]] <= width).all()  # nothing cut
      # Every token of the example is kept; padding rows carry no loss.
      np.testing.assert_array_equal(batch["encoder_input_tokens"][real],
                                    feats["encoder_input_tokens"][idx[real], :width])
      assert not batch["decoder_loss_weights"][~real].any()
      rows += idx[real].tolist()
    assert sorted(rows) == list(range(203))  # each example exactly once per epoch
    assert shapes <= {(16, 3), (16, 9), (16, 16)}
  # A pure function of (seed, step): a fresh batcher gives the same batches.
  again = batching.make_batcher(arrays, 16, seed=5, packing="bucket", pack_widths="3,9")
  for s in (0, spe - 1, spe + 2):
    np.testing.assert_array_equal(again.indices(s), b.indices(s))
  assert [x["encoder_input_tokens"].shape for x in b.shape_batches()] == [(16, 3), (16, 9),
                                                                          (16, 16)]


def test_bucket_width_loss_equals_padded_loss():
  """A narrower bucket only drops padding: every example's loss is its fully padded loss."""
  rng = np.random.default_rng(6)
  module = network.Transformer(_config())
  params = network.init_params(module, jax.random.PRNGKey(7), 16, 4)
  padded = _padded_batch(rng, 12, lengths=rng.integers(1, 6, size=12))
  narrow = dict(padded, encoder_input_tokens=padded["encoder_input_tokens"][:, :6])
  nll_pad, _ = _per_example_nll(module, params, padded)
  nll_narrow, _ = _per_example_nll(module, params, narrow)
  np.testing.assert_allclose(nll_narrow, nll_pad, atol=1e-5, rtol=1e-5)
