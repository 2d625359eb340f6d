"""Tests for cost_jax.sasrec: causality, padding, data windows, loss falls, ranking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.baselines import sasrec, sasrec_train


def small_config(**kw):
  base = dict(num_items=12, max_len=6, emb_dim=16, num_blocks=2, num_heads=2, dropout_rate=0.0,
              batch_size=16, num_epochs=1, learning_rate=1e-2)
  base.update(kw)
  return sasrec.SASRecConfig(**base)


def test_forward_is_causal():
  cfg = small_config()
  model = sasrec.SASRec(cfg)
  params = sasrec.init_params(model, seed=0)
  tokens = jnp.array([[0, 3, 5, 7, 2, 9]], jnp.int32)
  changed = tokens.at[0, 4].set(11)  # change the item at position 4
  h1 = model.apply({"params": params}, tokens)
  h2 = model.apply({"params": params}, changed)
  np.testing.assert_allclose(h1[0, :4], h2[0, :4], atol=1e-6)   # earlier positions unchanged
  assert not np.allclose(h1[0, 4:], h2[0, 4:], atol=1e-4)        # later ones see it


def test_score_last_shape_and_pad_rows():
  cfg = small_config()
  model = sasrec.SASRec(cfg)
  params = sasrec.init_params(model, seed=1)
  a = jnp.array([[0, 0, 4, 6, 8, 10]], jnp.int32)
  logits = model.apply({"params": params}, a, method=sasrec.SASRec.score_last)
  assert logits.shape == (1, cfg.num_items)
  hidden = model.apply({"params": params}, a)
  np.testing.assert_allclose(hidden[0, :2], 0.0, atol=0)  # pad rows are zeroed


def test_left_pad_and_windows():
  np.testing.assert_array_equal(sasrec.left_pad([np.array([0, 4]), np.array([1, 2, 3, 4, 5])], 3),
                                [[0, 1, 5], [4, 5, 6]])  # item i -> token i + 1
  rng = np.random.default_rng(0)
  inputs, targets = sasrec_train.sample_windows([np.array([5, 6, 7, 8]), np.array([1])], 3, rng)
  assert inputs.shape == targets.shape == (1, 3)  # the user with 1 item has no window
  # targets are the inputs shifted by one (in token space, 0 = pad)
  nz = inputs[0] > 0
  seq = np.array([5, 6, 7, 8]) + 1
  start = int(np.argmax(nz))
  got_in = inputs[0, start:]
  got_tg = targets[0, start:]
  k = int(np.where(seq == got_in[0])[0][0])
  np.testing.assert_array_equal(got_in, seq[k:k + len(got_in)])
  np.testing.assert_array_equal(got_tg, seq[k + 1:k + 1 + len(got_tg)])


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_loss_falls_on_toy_task(loss):
  # next item = current item + 1 (mod 12): a deterministic sequence task
  rng = np.random.default_rng(0)
  train = [np.array([(s + t) % 12 for t in range(9)]) for s in rng.integers(0, 12, 48)]
  cfg = small_config(num_epochs=25, loss=loss)
  params, losses = sasrec_train.train(cfg, train, seed=0)
  assert losses[-1] < 0.5 * losses[0], losses
  top = sasrec.predict_topk(cfg, params, [np.array([2, 3, 4]), np.array([9, 10])], k=1)
  np.testing.assert_array_equal(top[:, 0], [5, 11])


def test_sequence_loss_softmax_matches_manual():
  table = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  hidden = jnp.array([[[2.0, 0.0], [0.0, 0.0]]])
  targets = jnp.array([[2, 0]])  # item 1 at position 0; position 1 is padding
  got = sasrec.sequence_loss(table, hidden, targets, jax.random.PRNGKey(0), "softmax")
  logits = np.array([2.0, 0.0, 2.0])
  want = -(logits[1] - np.log(np.exp(logits).sum()))
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_best_epoch_is_kept_and_patience_stops():
  # Random sequences: validation Recall@10 wanders, so a best epoch exists before the last.
  rng = np.random.default_rng(1)
  train = [rng.integers(0, 12, 7) for _ in range(40)]
  valid = rng.integers(0, 12, 40)
  cfg = small_config(num_epochs=8, learning_rate=3e-2, eval_num_users=40, patience=2)
  curve, sel = [], {}
  params, losses = sasrec_train.train(cfg, train, seed=0, valid_target=valid, curve=curve,
                                      selection=sel)
  recalls = [c["recall@10"] for c in curve]
  best = int(np.argmax(recalls))  # the first maximum
  assert sel["best_epoch"] == curve[best]["epoch"]
  # Stopped by patience exactly 2 validations after the best, or ran out of epochs.
  if sel["stop_reason"] == "patience":
    assert len(curve) == best + 3 and sel["final_epoch"] == len(losses) == len(curve)
  else:
    assert sel["final_epoch"] == 8 and len(curve) - best - 1 < 2
  # The returned parameters are those after the best epoch: a run that stops there agrees.
  ref, _ = sasrec_train.train(small_config(num_epochs=sel["best_epoch"], learning_rate=3e-2,
                                           eval_num_users=40, keep_best=False), train, seed=0,
                              valid_target=valid, curve=[])
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_target_positions_hand_checked():
  targets = np.array([[0, 0, 3, 4], [0, 0, 0, 7]])
  idx, w = sasrec.target_positions(targets, multiple=4)
  np.testing.assert_array_equal(idx, [2, 3, 7, 0])      # the three targets, then padding
  np.testing.assert_array_equal(w, [1, 1, 1, 0])
  idx, w = sasrec.target_positions(targets, multiple=256)  # capped at B·L
  assert len(idx) == 8 and w.sum() == 3
  idx, w = sasrec.target_positions(np.zeros((2, 3), np.int64), multiple=4)
  assert w.sum() == 0 and len(idx) == 4


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_packed_targets_give_the_dense_loss_and_gradient(loss):
  # The output layer on the targets only (a padded pack) is the masked mean over [B, L].
  rng = np.random.default_rng(3)
  table = jnp.asarray(rng.normal(size=(9, 5)), jnp.float32)
  hidden = jnp.asarray(rng.normal(size=(3, 6, 5)), jnp.float32)
  targets = np.zeros((3, 6), np.int32)
  targets[0, 3:] = [4, 1, 9]
  targets[1, 5] = 2
  targets[2, 1:] = [5, 6, 7, 8, 3]
  positions = tuple(map(jnp.asarray, sasrec.target_positions(targets, multiple=4)))
  assert positions[0].shape == (12,)
  key = jax.random.PRNGKey(0)
  if loss == "bce":  # same negatives both ways: draw them for the packed shape only
    flat_targets = jnp.asarray(targets).reshape(1, -1)[:, positions[0]]
    dense_fn = lambda t, h: sasrec.sequence_loss(
        t, h.reshape(1, -1, 5)[:, positions[0]], flat_targets * positions[1].astype(jnp.int32),
        key, loss)
  else:
    dense_fn = lambda t, h: sasrec.sequence_loss(t, h, jnp.asarray(targets), key, loss)
  packed_fn = lambda t, h: sasrec.sequence_loss(t, h, jnp.asarray(targets), key, loss, positions)
  want, want_g = jax.value_and_grad(dense_fn, argnums=(0, 1))(table, hidden)
  got, got_g = jax.value_and_grad(packed_fn, argnums=(0, 1))(table, hidden)
  np.testing.assert_allclose(got, want, rtol=1e-5)  # other summation order
  for a, b in zip(got_g, want_g):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # A dropped target changes the loss: the pack must hold every target.
  short = (positions[0][:-4], positions[1][:-4])
  if loss == "softmax":
    assert abs(float(sasrec.sequence_loss(table, hidden, jnp.asarray(targets), key, loss, short))
               - float(want)) > 1e-3


def test_a_stopped_run_resumes_bit_for_bit(tmp_path, monkeypatch):
  # Epoch checkpoints: a run stopped after epoch 2 and rerun into the same folder ends with the
  # parameters, losses, curve and best epoch of the run that was never stopped.
  from cost_jax import stop  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  train = [rng.integers(0, 12, 7) for _ in range(40)]
  valid = rng.integers(0, 12, 40)
  cfg = small_config(num_epochs=5, learning_rate=3e-2, eval_num_users=40, dropout_rate=0.2)

  def run(folder, stop_after=None):
    calls = []
    real = stop.check

    def check(where):
      calls.append(where)
      if stop_after is not None and len(calls) == stop_after:
        raise stop.Interrupted(f"stopped {where}", 15)
      real(where)

    monkeypatch.setattr(sasrec_train.stop, "check", check)
    curve, sel = [], {}
    out = sasrec_train.train(cfg, train, seed=0, valid_target=valid, curve=curve,
                             selection=sel, checkpoint_dir=folder)
    return out, curve, sel, calls

  (want, want_losses), want_curve, want_sel, _ = run(None)
  folder = str(tmp_path / "run")
  with pytest.raises(stop.Interrupted) as e:
    run(folder, stop_after=2)
  assert "a rerun resumes from it" in str(e.value)
  (got, got_losses), got_curve, got_sel, calls = run(folder)
  assert len(calls) == 3 and got_sel["resumed_from_epoch"] == 2   # epochs 3..5 only
  assert got_losses == want_losses and got_curve == want_curve
  assert got_sel["best_epoch"] == want_sel["best_epoch"]
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A finished run rerun does no epoch; another config in the folder is refused by name.
  (_, again), _, _, calls = run(folder)
  assert calls == [] and again == want_losses
  cfg = small_config(num_epochs=5, learning_rate=1e-2, eval_num_users=40, dropout_rate=0.2)
  with pytest.raises(sasrec.UserError, match="config differs in learning_rate"):
    run(folder)


def test_a_finished_run_gives_back_the_parameters_it_scored(tmp_path):
  # The best epoch's parameters, read back from the run's folder, rank the test split exactly
  # as the run's topk.npy does (same function, same batches).
  from cost_jax.data.processed import leave_one_out  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(2)
  seqs = [rng.integers(0, 12, 9) for _ in range(40)]
  loo = leave_one_out([f"u{i}" for i in range(40)], seqs)
  cfg = small_config(num_epochs=6, learning_rate=3e-2, eval_num_users=40, patience=2)
  out = str(tmp_path / "run")
  m = sasrec_train.train_and_evaluate(loo, 12, cfg, seed=3, output_dir=out, ks=(5, 10))
  config, params, epoch = sasrec_train.load_scored_params(out)
  assert config == cfg and epoch == m["best_epoch"]
  histories = [np.concatenate([t, [v]]) for t, v in zip(loo.train, loo.valid_target)]
  np.testing.assert_array_equal(sasrec.predict_topk(config, params, histories, 10),
                                np.load(tmp_path / "run" / "topk.npy"))
  with pytest.raises(sasrec.UserError, match="no config.json"):
    sasrec_train.load_scored_params(str(tmp_path))
