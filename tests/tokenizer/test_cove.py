"""COVE (cost_jax.tokenizer.cove) and COVE_SASRec: hand-checked numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.baselines import cove_sasrec, sasrec, sasrec_train
from cost_jax.data.processed import leave_one_out
from cost_jax.io import UserError
from cost_jax.tokenizer import artifact
from cost_jax.tokenizer import cove

Z = np.array([[1.0, 0.5], [9.0, 1.0], [2.0, 8.0]], np.float32)
E0 = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], np.float32)  # fine: 3 entries
E1 = np.array([[1.0, 1.0], [8.0, 8.0]], np.float32)                 # coarse: 2 entries


def test_two_level_cascade_by_hand():
  out = cove.cascade(jnp.asarray(Z), (jnp.asarray(E0), jnp.asarray(E1)), alpha=1.0, beta=0.5)
  # Level 1 reads z: nearest of E0 are 0, 1, 2. Level 2 reads E0's codes (eq. 2), not z:
  # (0,0) -> (1,1); (10,0) and (0,10) -> (8,8) (68 < 82).
  assert np.asarray(out.codes).tolist() == [[0, 0], [1, 1], [2, 1]]
  np.testing.assert_allclose(out.quantized[:, 0], E0)
  np.testing.assert_allclose(out.quantized[:, 1], E1[[0, 1, 1]])
  # eq. 3 + 4: z + (e0 + e1) / 2.
  np.testing.assert_allclose(out.fused, Z + (E0 + E1[[0, 1, 1]]) / 2)
  # eq. 6: level 1 ||z - e0||^2 = 1.25, 2, 8 (mean 3.75); level 2 ||e0 - e1||^2 = 2, 68, 68
  # (mean 46); both terms have the same value, the commitment one weighted by beta.
  assert float(out.loss) == pytest.approx((3.75 + 46.0) * 1.5)


def test_straight_through_gradients():
  books = (jnp.asarray(E0), jnp.asarray(E1))
  # eq. 5: every z_q^(i) passes the gradient of z unchanged: d sum(z_c) / dz = 1 + alpha.
  g = jax.grad(lambda z: jnp.sum(cove.cascade(z, books, 0.5, 1.0).fused))(jnp.asarray(Z))
  np.testing.assert_allclose(g, np.full_like(Z, 1.5))
  # L_quant's gradient w.r.t. z comes from the commitment terms only:
  # 2 beta / N [(z - e0) + (e0 - e1)] = 2 beta / N (z - e1).
  beta = 0.5
  gz = jax.grad(lambda z: cove.cascade(z, books, 1.0, beta).loss)(jnp.asarray(Z))
  np.testing.assert_allclose(gz, 2 * beta / 3 * (Z - E1[[0, 1, 1]]), rtol=1e-6)
  # ... and w.r.t. the codebooks: level i's codebook term 2 / N (e_i - sg(z^(i-1))) per use,
  # plus, for E0, level 2's commitment term through z^(1) = z_q^(1), whose value is e0:
  # 2 beta / N (e0 - e1).
  g0, g1 = jax.grad(lambda b: cove.cascade(jnp.asarray(Z), b, 1.0, beta).loss)(books)
  np.testing.assert_allclose(g0, 2 / 3 * (E0 - Z) + 2 * beta / 3 * (E0 - E1[[0, 1, 1]]),
                             rtol=1e-6)
  want1 = np.zeros_like(E1)
  for n, c in enumerate([0, 1, 1]):
    want1[c] += 2 / 3 * (E1[c] - E0[n])
  np.testing.assert_allclose(g1, want1, rtol=1e-6)


def test_recommendation_loss_reaches_the_codebooks():
  # COVE §3.2: codes and embeddings are both trained by the recommendation loss. L_rec =
  # sum(z_c) = sum(z + alpha/H (z_q1 + z_q2)); z_q2's value is e1 but it passes the gradient to
  # z_q1 (eq. 5), so each use of E0 entry j gets 2 alpha/H = alpha, each use of E1 entry j
  # alpha/H. Codes: level 1 uses 0, 1, 2 once each; level 2 uses 0 once and 1 twice.
  books = (jnp.asarray(E0), jnp.asarray(E1))
  alpha = 0.8
  g0, g1 = jax.grad(lambda b: jnp.sum(cove.cascade(jnp.asarray(Z), b, alpha, 1.0).fused))(books)
  np.testing.assert_allclose(g0, np.full_like(E0, alpha), rtol=1e-6)
  np.testing.assert_allclose(g1, np.array([[1.0, 1.0], [2.0, 2.0]]) * alpha / 2, rtol=1e-6)


def _numpy_quant_loss(z, books, beta):
  """eq. 6 term by term, with explicit loops (no shared form with the implementation)."""
  prev = z.astype(np.float64)
  vq_terms, commit_terms = [], []
  for b in books:
    chosen = []
    for row in prev:
      dists = [float(np.dot(row - code, row - code)) for code in b.astype(np.float64)]
      chosen.append(b[int(np.argmin(dists))].astype(np.float64))
    chosen = np.stack(chosen)
    vq_terms.append(np.mean([np.dot(p - e, p - e) for p, e in zip(prev, chosen)]))
    commit_terms.append(np.mean([np.dot(p - e, p - e) for p, e in zip(prev, chosen)]))
    prev = chosen  # eq. 2
  return sum(vq_terms) + beta * sum(commit_terms)


def test_quant_loss_against_numpy_reference():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(50, 8)).astype(np.float32)
  books = tuple(rng.normal(size=(v, 8)).astype(np.float32) for v in (20, 6, 3))
  out = cove.cascade(jnp.asarray(z), tuple(map(jnp.asarray, books)), 1.0, 0.25)
  assert float(out.loss) == pytest.approx(_numpy_quant_loss(z, books, 0.25), rel=1e-5)


def test_config_checks_fine_to_coarse():
  with pytest.raises(UserError, match="fine to coarse"):
    cove.CoveConfig(codebook_sizes=(10, 50))
  with pytest.raises(UserError, match="alpha"):
    cove.CoveConfig(alpha=-1.0)


def _toy_loo(num_items=30, users=40, seed=0):
  rng = np.random.default_rng(seed)
  seqs = [rng.integers(0, num_items, size=int(rng.integers(4, 12))) for _ in range(users)]
  return leave_one_out([f"u{i}" for i in range(users)], seqs)


def test_alpha_zero_is_plain_sasrec_bit_for_bit():
  loo = _toy_loo()
  base = dict(num_items=30, max_len=8, emb_dim=16, num_blocks=1, num_heads=2, batch_size=16,
              num_epochs=2, dropout_rate=0.2)
  plain = sasrec.SASRecConfig(**base)
  with_cove = sasrec.SASRecConfig(**base, cove=cove.CoveConfig(codebook_sizes=(6, 3), alpha=0.0,
                                                               omega_q=0.0))
  tokens = sasrec.left_pad(loo.train[:5], 8)
  p_plain = sasrec.init_params(sasrec.SASRec(plain), 0)
  p_cove = sasrec.init_params(sasrec.SASRec(with_cove), 0)
  shared = {k: v for k, v in p_cove.items() if k != "cove"}
  assert jax.tree.structure(shared) == jax.tree.structure(p_plain)
  a = sasrec.SASRec(plain).apply({"params": p_plain}, tokens, method=sasrec.SASRec.score_last)
  b = sasrec.SASRec(with_cove).apply({"params": p_cove}, tokens, method=sasrec.SASRec.score_last)
  assert np.array_equal(np.asarray(a), np.asarray(b))
  # Training with alpha = omega_q = 0 moves the shared parameters exactly as plain SASRec.
  t_plain, l_plain = sasrec_train.train(plain, loo.train, seed=3)
  t_cove, l_cove = sasrec_train.train(with_cove, loo.train, seed=3)
  assert l_plain == l_cove
  for x, y in zip(jax.tree.leaves(t_plain), jax.tree.leaves({k: v for k, v in t_cove.items()
                                                             if k != "cove"})):
    assert np.array_equal(np.asarray(x), np.asarray(y))


def test_cove_sasrec_trains_scores_and_exports_a_tokenizer(tmp_path):
  loo = _toy_loo()
  settings = dict(max_len=8, emb_dim=16, num_blocks=1, num_heads=2, batch_size=16, num_epochs=3)
  m = cove_sasrec.train_and_evaluate(loo, 30, seed=0, output_dir=str(tmp_path / "run"),
                                     ks=(5, 10), cove={"codebook_sizes": (8, 3)}, **settings)
  # The scored metrics are those of the written lists (recomputed from topk/targets).
  topk = np.load(tmp_path / "run" / "topk.npy")
  targets = np.load(tmp_path / "run" / "targets.npy")
  assert m["recall@10"] == pytest.approx(np.mean((topk[:, :10] == targets[:, None]).any(1)))
  assert len(m["cove_usage_per_level"]) == 2
  assert (tmp_path / "run" / "cove_codes.npy").is_file()
  report = cove_sasrec.fit_tokenizer(loo, 30, str(tmp_path / "tok"), seed=0,
                                     cove={"codebook_sizes": (8, 3)}, **settings)
  layout, ids = artifact.load_semantic_ids(str(tmp_path / "tok"), num_items=30)
  assert ids.shape == (30, 3)  # 2 COVE levels (coarse first) + TIGER's extra token
  assert layout.codebook_sizes[:2] == (3, 8)
  assert len({tuple(r) for r in ids}) == 30
  assert report["all_distinct"]
  assert artifact.read_method(str(tmp_path / "tok")) == "cove"
  # The reproduction's shortcut (the COVE_SASRec run's codes) gives the IDs fit_tokenizer gives.
  cove_sasrec.tokenizer_from_run(str(tmp_path / "run"), str(tmp_path / "tok2"))
  np.testing.assert_array_equal(artifact.load_semantic_ids(str(tmp_path / "tok2"), 30)[1], ids)
