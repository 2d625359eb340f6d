"""Trie, constrained beam search, sampling and the T5X-style decode_fn on tiny random models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.seq2seq import decoding, t5x_compat
from cost_jax.seq2seq.trie import ItemTrie
from cost_jax.seq2seq import network
from cost_jax.io import UserError

OFFSETS = (3, 7, 12)  # level token ranges [3, 7), [7, 12), [12, 15)
SIZES = (4, 5, 3)
VOCAB = 24


def _tiny_module(vocab=VOCAB, **kw):
  cfg = network.TransformerConfig(vocab_size=vocab, emb_dim=16, num_heads=2, head_dim=8,
                                  num_encoder_layers=1, num_decoder_layers=2, mlp_dim=32,
                                  dropout_rate=0.0, **kw)
  return network.Transformer(cfg)


def _random_items(rng, n, sizes=SIZES, offsets=OFFSETS):
  space = np.stack(np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij"), -1).reshape(
      -1, len(sizes))
  codes = space[rng.choice(len(space), n, replace=False)]
  return (codes + np.asarray(offsets)).astype(np.int32)


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  items = _random_items(rng, 25)
  trie = ItemTrie.from_tokens(items, OFFSETS, SIZES)
  module = _tiny_module()
  params = network.init_params(module, jax.random.PRNGKey(0), 6, 3)
  # Make the model opinionated so rankings are not near-ties.
  params = jax.tree_util.tree_map(lambda x: x * 3.0, params)
  enc = jnp.asarray(rng.integers(3, VOCAB, size=(NUM_USERS, 6)), jnp.int32).at[:, -1].set(0)
  return items, trie, module, params, enc


NUM_USERS = 64


def _brute_force(module, params, enc, items):
  """Teacher-forced log-prob of every item for every example: [B, N]."""
  b, n = enc.shape[0], items.shape[0]
  tgt = jnp.tile(jnp.asarray(items)[None], (b, 1, 1)).reshape(b * n, -1)
  dec_in = jnp.concatenate([jnp.zeros((b * n, 1), jnp.int32), tgt[:, :-1]], axis=1)
  enc_rep = jnp.repeat(enc, n, axis=0)
  logits = module.apply({"params": params}, enc_rep, dec_in, tgt, enable_dropout=False)
  logp = jax.nn.log_softmax(logits, -1)
  return np.asarray(jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0].sum(-1)).reshape(b, n)


def test_trie_tables_and_lookup():
  items = np.array([[3, 7, 12], [3, 8, 12], [3, 8, 13], [5, 11, 14]], np.int32)
  trie = ItemTrie.from_tokens(items, OFFSETS, SIZES)
  assert trie.num_nodes == (1, 2, 3)
  np.testing.assert_array_equal(np.asarray(trie.dense[0]), [[0, -1, 1, -1]])
  # level 2 node order: prefixes (3,7), (3,8), (5,11) -> items
  np.testing.assert_array_equal(np.asarray(trie.dense[2]), [[0, -1, -1], [1, 2, -1], [-1, -1, 3]])
  got = jax.jit(lambda t, x: t.lookup(x))(trie, jnp.array([[3, 8, 13], [5, 11, 14], [5, 11, 12], [4, 7, 12], [3, 3, 3]]))
  np.testing.assert_array_equal(np.asarray(got), [2, 3, -1, -1, -1])
  # CSR (sparse) levels give the same children as dense ones.
  sparse = ItemTrie.from_tokens(items, OFFSETS, SIZES, dense_limit=0)
  assert all(d is None for d in sparse.dense)
  for l in range(3):
    nodes = jnp.arange(-1, trie.num_nodes[l])
    children = jax.jit(lambda t, n, l=l: t.children(l, n))
    np.testing.assert_array_equal(np.asarray(children(sparse, nodes)),
                                  np.asarray(children(trie, nodes)))


def test_trie_rejects_duplicates_and_out_of_range():
  with pytest.raises(UserError, match="rows 0 and 2"):
    ItemTrie.from_tokens(np.array([[3, 7, 12], [3, 8, 12], [3, 7, 12]]), OFFSETS, SIZES)
  with pytest.raises(UserError, match="outside"):
    ItemTrie.from_tokens(np.array([[3, 7, 15]]), OFFSETS, SIZES)


def test_cache_decode_equals_full_decode(setup):
  _, _, module, params, enc = setup
  enc = enc[:5]
  dec = jnp.array([[0, 4, 9], [0, 6, 7], [0, 3, 11], [0, 5, 8], [0, 3, 10]], jnp.int32)

  @jax.jit
  def both(params):
    full = module.apply({"params": params}, enc, dec, dec, enable_dropout=False)
    cache = decoding.init_decoder_cache(module, params, 5, 3)
    encoded = module.apply({"params": params}, enc, enable_dropout=False, method=module.encode)
    steps = []
    for i in range(3):
      lg, v = module.apply({"params": params, "cache": cache}, encoded, enc, dec[:, i:i + 1],
                           dec[:, i:i + 1], enable_dropout=False, decode=True,
                           mutable=["cache"], method=module.decode)
      cache = v["cache"]
      steps.append(lg)
    return full, jnp.concatenate(steps, 1)

  full, stepped = both(params)
  np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), rtol=1e-3, atol=1e-4)


def test_beam_search_equals_brute_force(setup):
  items, trie, module, params, enc = setup
  ref = _brute_force(module, params, enc, items)
  n = len(items)
  # More beams than items: the tail must be padded with item -1 / score -inf, no duplicates.
  got, scores = decoding.predict_topk(module, params, enc, trie, num_beams=n + 7, topk=n + 7,
                                      score_over="vocab")
  got, scores = np.asarray(got), np.asarray(scores)
  order = np.argsort(-ref, axis=1, kind="stable")
  np.testing.assert_array_equal(got[:, :n], order)
  np.testing.assert_allclose(scores[:, :n], np.take_along_axis(ref, order, 1), rtol=1e-3,
                             atol=1e-4)
  assert (got[:, n:] == -1).all() and np.isneginf(scores[:, n:]).all()


def test_small_beams_valid_and_top1_not_worse_than_greedy(setup):
  items, trie, module, params, enc = setup
  ref = _brute_force(module, params, enc, items)
  got, scores = decoding.predict_topk(module, params, enc, trie, num_beams=4, topk=4,
                                      score_over="vocab")
  _, gscore, _ = decoding.sample_items(module, params, enc, trie, 4, jax.random.PRNGKey(0),
                                       temperature=1e-6, score_over="vocab")
  got, scores = np.asarray(got), np.asarray(scores)
  assert (got >= 0).all()
  for i in range(len(got)):
    assert len(set(got[i])) == 4
    np.testing.assert_allclose(scores[i], ref[i, got[i]], rtol=1e-3, atol=1e-4)  # scores are real log-probs
    assert scores[i, 0] >= float(gscore[i, 0]) - 1e-5
    assert np.all(np.diff(scores[i]) <= 1e-6)


def test_constrained_never_invalid_many_users(setup):
  items, trie, module, params, enc = setup
  # A fresh random model (different params) on the same compiled shapes.
  params = network.init_params(module, jax.random.PRNGKey(3), 6, 3)
  got, _ = decoding.predict_topk(module, params, enc, trie, num_beams=4, topk=4)
  got = np.asarray(got)
  assert ((got >= 0) & (got < len(items))).all()
  assert all(len(set(r)) == 4 for r in got)
  # Unconstrained search over the 4*5*3 = 60 IDs often lands outside the 25 items.
  ug, us = decoding.predict_topk(module, params, enc, trie, num_beams=4, topk=4,
                                 constrained=False)
  ug = np.asarray(ug)
  assert 0.2 < (ug == -1).mean() < 1.0
  assert np.all(np.isfinite(np.asarray(us)))
  valid = ug >= 0
  np.testing.assert_array_equal(
      np.asarray(trie.item_tokens)[ug[valid]],
      np.asarray(decoding.predict_topk(module, params, enc, trie, 4, 4, constrained=False,
                                       return_tokens=True)[2])[valid])


def test_fewer_children_than_beams_at_step0():
  # Level 0 has a single valid code: beams 2.. must be padded with -inf, not invalid IDs.
  items = np.array([[3, 7, 12], [3, 8, 12], [3, 8, 14]], np.int32)
  trie = ItemTrie.from_tokens(items, OFFSETS, SIZES)
  module = _tiny_module()
  params = network.init_params(module, jax.random.PRNGKey(1), 6, 3)
  enc = jnp.ones((NUM_USERS, 6), jnp.int32)
  got, scores = decoding.predict_topk(module, params, enc, trie, num_beams=4, topk=4)
  got, scores = np.asarray(got), np.asarray(scores)
  assert sorted(got[0, :3].tolist()) == [0, 1, 2]
  assert (got[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
  assert np.isfinite(scores[:, :3]).all()


def _brute_force_level(module, params, enc, items):
  """Teacher-forced score of every item with each level's logits renormalized over that level's
  code range alone (score_over="level"): [B, N]."""
  b, n = enc.shape[0], items.shape[0]
  tgt = jnp.tile(jnp.asarray(items)[None], (b, 1, 1)).reshape(b * n, -1)
  dec_in = jnp.concatenate([jnp.zeros((b * n, 1), jnp.int32), tgt[:, :-1]], axis=1)
  logits = module.apply({"params": params}, jnp.repeat(enc, n, axis=0), dec_in, tgt,
                        enable_dropout=False)
  total = 0.0
  for level, (off, k) in enumerate(zip(OFFSETS, SIZES)):
    logp = jax.nn.log_softmax(logits[:, level, off:off + k], -1)
    total = total + jnp.take_along_axis(logp, tgt[:, level, None] - off, -1)[:, 0]
  return np.asarray(total).reshape(b, n)


def test_score_over_level_equals_its_brute_force(setup):
  items, trie, module, params, enc = setup
  n = len(items)
  ref = _brute_force_level(module, params, enc, items)
  got, scores = decoding.predict_topk(module, params, enc, trie, n, n, score_over="level")
  order = np.argsort(-ref, axis=1, kind="stable")
  np.testing.assert_array_equal(np.asarray(got), order)
  np.testing.assert_allclose(np.asarray(scores), np.take_along_axis(ref, order, 1), rtol=1e-3,
                             atol=1e-4)
  # The two rules differ on this model (the level rule is not the vocab rule in disguise).
  assert not np.allclose(ref, _brute_force(module, params, enc, items), atol=1e-2)


def test_default_score_is_t5x_full_vocabulary(setup):
  items, trie, module, params, enc = setup
  assert decoding.DEFAULT_SCORE_OVER == "vocab"
  ref = _brute_force(module, params, enc, items)
  _, scores = decoding.predict_topk(module, params, enc, trie, len(items), 5)  # default rule
  np.testing.assert_allclose(np.asarray(scores), -np.sort(-ref, axis=1)[:, :5], rtol=1e-3,
                             atol=1e-4)


def test_temperature_sampling(setup):
  items, trie, module, params, enc = setup
  ref = _brute_force(module, params, enc, items)
  g, gs, _ = decoding.sample_items(module, params, enc, trie, 4, jax.random.PRNGKey(0),
                                   temperature=1e-6, score_over="vocab")
  g = np.asarray(g)
  assert (g == g[:, :1]).all()  # T -> 0: every sample is the greedy ID ...
  greedy, _ = decoding.predict_topk(module, params, enc, trie, 1, 1, score_over="vocab")
  np.testing.assert_array_equal(g[:, 0], np.asarray(greedy)[:, 0])  # ... = beam search, 1 beam
  np.testing.assert_allclose(np.asarray(gs)[:, 0], ref[np.arange(len(g)), g[:, 0]], rtol=1e-3, atol=1e-4)
  s, ss, _ = decoding.sample_items(module, params, enc, trie, 4, jax.random.PRNGKey(1),
                                   temperature=3.0, score_over="vocab")
  s, ss = np.asarray(s), np.asarray(ss)
  assert ((s >= 0) & (s < len(items))).all()
  np.testing.assert_allclose(ss, np.take_along_axis(ref, s, 1), rtol=1e-3, atol=1e-4)
  assert np.all(np.diff(ss, axis=1) <= 1e-6)
  assert np.mean([len(set(r)) for r in s]) > np.mean([len(set(r)) for r in g])


def _fake_t5x_setup(trie, b, beams, seed=0):
  """A T5X-like tokens_to_logits: logits depend on the prefix through a fixed table,
  with a cache that counts steps (cache_index) and remembers the last token per row."""
  rng = np.random.default_rng(seed)
  table = jnp.asarray(rng.normal(size=(b, VOCAB, VOCAB)) * 3, jnp.float32)

  def tokens_to_logits(state):
    cache = state.cache
    row = cache["decoder"]["row"]  # [B*beams] which example a row belongs to
    logits = table[row, state.cur_token[:, 0]] + cache["decoder"]["acc"]
    new = {"decoder": {"row": row, "acc": cache["decoder"]["acc"] * 0.5 + logits * 0.1,
                       "cache_index": cache["decoder"]["cache_index"] + 1}}
    return logits, new

  cache = {"decoder": {"row": jnp.arange(b), "acc": jnp.zeros((b, VOCAB)),
                       "cache_index": jnp.zeros((), jnp.int32)}}
  return tokens_to_logits, cache, table


def _fake_brute_force(trie, table, items, b, score_over="vocab"):
  scores = np.zeros((b, len(items)))
  for i in range(b):
    for j, it in enumerate(items):
      acc = np.zeros(VOCAB)
      tok, s = 0, 0.0
      for level, t in enumerate(it):
        logits = np.asarray(table[i, tok]) + acc
        acc = acc * 0.5 + logits * 0.1
        if score_over == "vocab":
          s += float(jax.nn.log_softmax(logits)[t])
        else:  # softmax over the level's code range only
          off, k = trie.level_offsets[level], trie.level_sizes[level]
          s += float(jax.nn.log_softmax(logits[off:off + k])[t - off])
        tok = t
      scores[i, j] = s
  return scores


@pytest.mark.parametrize("score_over", decoding.SCORE_RULES)
def test_t5x_decode_fn_matches_brute_force(setup, score_over):
  items, trie, _, _, _ = setup
  b, n = 3, len(items)
  ttl, cache, table = _fake_t5x_setup(trie, b, n)
  fn = t5x_compat.make_t5x_decode_fn(trie=trie, score_over=score_over)
  seqs, scores = jax.jit(lambda c: fn(jnp.zeros((b, 4), jnp.int32), c, ttl, eos_id=1,
                                      num_decodes=n))(cache)
  seqs, scores = np.asarray(seqs), np.asarray(scores)
  assert seqs.shape == (b, n, 4) and (seqs[:, :, 3] == 0).all()
  ref = _fake_brute_force(trie, table, items, b, score_over)
  order = np.argsort(ref, axis=1, kind="stable")  # increasing: best LAST, T5X's convention
  np.testing.assert_array_equal(seqs[:, :, :3], items[order])
  np.testing.assert_allclose(scores, np.take_along_axis(ref, order, 1), rtol=1e-3, atol=1e-4)



@pytest.mark.slow
@pytest.mark.t5x
def test_real_t5x_encoder_decoder_model(setup):
  """T5X's EncoderDecoderModel with this network and decode_fn ranks like predict_topk."""
  t5x_models = pytest.importorskip("t5x.models")
  adafactor = pytest.importorskip("t5x.adafactor")
  seqio = pytest.importorskip("seqio")
  items, trie, module, params, enc = setup
  enc = enc[:4]
  vocab = seqio.PassThroughVocabulary(size=VOCAB, eos_id=1)
  model = t5x_models.EncoderDecoderModel(module, vocab, vocab, adafactor.Adafactor(),
                                         decode_fn=t5x_compat.make_t5x_decode_fn(trie=trie))
  zeros = jnp.zeros((4, 3), jnp.int32)
  batch = {"encoder_input_tokens": enc, "decoder_input_tokens": zeros,
           "decoder_target_tokens": zeros}
  n = len(items)
  dec, aux = model.predict_batch_with_aux(params, batch, num_decodes=n, return_all_decodes=True)
  # Both paths use the one default rule (decoding.DEFAULT_SCORE_OVER).
  mine, scores = decoding.predict_topk(module, params, enc, trie, n, n)
  np.testing.assert_array_equal(np.asarray(dec)[:, ::-1], items[np.asarray(mine)])
  np.testing.assert_allclose(np.asarray(aux["scores"])[:, ::-1], np.asarray(scores), rtol=1e-3,
                             atol=1e-3)
  top1, _ = model.predict_batch_with_aux(params, batch, num_decodes=5)
  np.testing.assert_array_equal(np.asarray(top1), items[np.asarray(mine)[:, 0]])


def test_trie_from_tokenizer_dir_and_gin_decode_fn(tmp_path, setup):
  import gin  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  from cost_jax.tokenizer.layout import TokenLayout  # pylint: disable=import-outside-toplevel
  items, trie, _, _, _ = setup
  layout = TokenLayout(SIZES, num_user_buckets=10)
  assert layout.level_offsets == OFFSETS
  np.save(tmp_path / "semantic_ids.npy", layout.tokens_to_codes(items))
  (tmp_path / "vocabulary.json").write_text(json.dumps(layout.to_json_dict(
      method="test", num_items=len(items), semantic_ids_file="semantic_ids.npy")))
  loaded = ItemTrie.from_tokenizer_dir(str(tmp_path))
  np.testing.assert_array_equal(np.asarray(loaded.item_tokens), items)
  b = 2
  ttl, cache, _ = _fake_t5x_setup(trie, b, 5)
  with gin.unlock_config():
    gin.parse_config(f"t5x_compat.constrained_decode_fn.tokenizer_dir = '{tmp_path}'")
  try:
    fn = gin.get_configurable(t5x_compat.constrained_decode_fn)()
    seqs, scores = fn(inputs=jnp.zeros((b, 3), jnp.int32), cache=cache, tokens_to_logits=ttl,
                      eos_id=1, num_decodes=5)
  finally:
    gin.clear_config()
  ref_seqs, ref_scores = t5x_compat.make_t5x_decode_fn(trie=trie)(
      jnp.zeros((b, 3), jnp.int32), cache, ttl, eos_id=1, num_decodes=5)
  np.testing.assert_array_equal(np.asarray(seqs), np.asarray(ref_seqs))
  np.testing.assert_allclose(np.asarray(scores), np.asarray(ref_scores), rtol=1e-5)
  (tmp_path / "semantic_ids.npy").unlink()
  with pytest.raises(UserError, match="semantic_ids.npy: missing"):
    ItemTrie.from_tokenizer_dir(str(tmp_path))
