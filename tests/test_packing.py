"""Packed batches: first-fit by hand, and every example's loss equal to its padded one."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.io import UserError
from cost_jax.seq2seq import input_pipeline, model, network, packing

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
  return input_pipeline.encdec_features(enc, targets)


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
  batch = input_pipeline.encdec_features(enc, np.array([[3, 4], [5, 6], [7, 8]], np.int32))
  out = packing.pack_batch(batch, row_multiple=2)
  # 3 (ex 0) -> row 0 @0; 2 (ex 2) -> row 1 @0; 1 (ex 1) -> row 0 @3.
  assert out["encoder_input_tokens"].tolist() == [[5, 6, 7, 8], [9, 9, 0, 0]]
  assert out["encoder_segment_ids"].tolist() == [[1, 1, 1, 2], [1, 1, 0, 0]]
  assert out["encoder_positions"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
  assert out["decoder_encoder_row"].tolist() == [0, 0, 1]
  assert out["decoder_encoder_segment"].tolist() == [1, 2, 1]
  np.testing.assert_array_equal(out["decoder_target_tokens"], batch["decoder_target_tokens"])
  with pytest.raises(UserError, match="left-aligned"):
    packing.token_lengths(np.array([[0, 3]], np.int32))


@pytest.mark.parametrize("position_embedding", ["relative", "absolute"])
def test_packed_loss_equals_padded_per_example(position_embedding):
  rng = np.random.default_rng(0)
  module = network.Transformer(_config(position_embedding=position_embedding))
  padded = _padded_batch(rng, 24, lengths=rng.integers(1, 9, size=24))
  params = network.init_params(module, jax.random.PRNGKey(1), 16, 4)
  packed = packing.pack_batch(padded, row_multiple=4)
  assert packed["encoder_input_tokens"].shape[0] < 24  # several examples per row
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
  arrays = input_pipeline.ExampleArrays(**feats, item_index=np.arange(50, dtype=np.int32),
                                        user_index=np.arange(50, dtype=np.int32))
  off = input_pipeline.EpochBatcher(arrays, 16, seed=7, packing="off")
  on = input_pipeline.EpochBatcher(arrays, 16, seed=7, packing="encoder", pack_row_multiple=4)
  for step in (0, 3, 11):
    a, b = off.batch(step), on.batch(step)
    np.testing.assert_array_equal(a["decoder_target_tokens"], b["decoder_target_tokens"])
    assert int(np.count_nonzero(a["encoder_input_tokens"])) == int(
        np.count_nonzero(b["encoder_input_tokens"]))
    assert b["encoder_input_tokens"].shape[0] % 4 == 0
    assert on.real_tokens(step) == sum(packing.real_tokens(a))
  # A pure function of (seed, step): a fresh batcher gives the same packed batch.
  again = input_pipeline.EpochBatcher(arrays, 16, seed=7, packing="encoder", pack_row_multiple=4)
  for k, v in on.batch(5).items():
    np.testing.assert_array_equal(v, again.batch(5)[k])
