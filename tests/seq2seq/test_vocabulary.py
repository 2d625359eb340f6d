"""SemanticIDVocabulary: token names, Python and TF round trips, lazy loading, gin."""

import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from cost_jax.io import UserError
from cost_jax.tokenizer.layout import TokenLayout
from cost_jax.seq2seq.vocabulary import SemanticIDVocabulary, token_names, vocabulary_size

# Levels of 4, 3, 2 codes -> offsets 3, 7, 10; 5 user buckets at 12..16; 17 used -> 128.
LAYOUT = TokenLayout((4, 3, 2), num_user_buckets=5)


@pytest.fixture
def vocab():
  return SemanticIDVocabulary(layout=LAYOUT)


def write_tokenizer_dir(path, layout=LAYOUT):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "vocabulary.json"), "w") as f:
    json.dump(layout.to_json_dict(method="cost", num_items=0), f)
  return str(path)


def test_layout_and_names(vocab):
  assert vocab.vocab_size == 128
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  names = token_names(LAYOUT)
  assert names[:3] == ["<pad>", "</s>", "<unk>"]
  assert names[3:7] == ["<a_0>", "<a_1>", "<a_2>", "<a_3>"]
  assert names[7:10] == ["<b_0>", "<b_1>", "<b_2>"]
  assert names[10:12] == ["<c_0>", "<c_1>"]
  assert names[12:17] == [f"<u_{b}>" for b in range(5)]
  assert names[17] == "<x_17>" and names[127] == "<x_127>"
  assert len(set(names)) == 128


def test_python_encode_decode(vocab):
  assert vocab.encode("<u_1> <a_3> <b_2> <c_1>") == [13, 6, 9, 11]
  assert vocab.encode("  <a_0>\t<b_0>  ") == [3, 7]
  assert vocab.encode("<a_4> hello") == [2, 2]  # out-of-range code and junk -> unk
  # decode stops at EOS (seqio) and drops pad/eos; ids past vocab_size -> unk.
  assert vocab.decode([13, 6, 9, 11, 1, 5, 5]) == "<u_1> <a_3> <b_2> <c_1>"
  assert vocab.decode([3, 7, 10, 0, 0]) == "<a_0> <b_0> <c_0>"
  assert vocab.decode([3, 500]) == "<a_0> <unk>"
  assert vocab.level_token(2, 1) == 11
  assert vocab.parse_name("<c_1>") == (2, 1) and vocab.parse_name("<u_1>") is None


def test_python_round_trip_every_id(vocab):
  ids = list(range(2, vocab.vocab_size))
  assert vocab.encode(vocab.decode(ids)) == ids
  rng = np.random.default_rng(0)
  for _ in range(20):
    seq = rng.integers(2, vocab.vocab_size, size=rng.integers(0, 30)).tolist()
    assert vocab.encode(vocab.decode(seq)) == seq


def test_tf_round_trip(vocab):
  ids = tf.constant(list(range(2, 128)), tf.int32)
  s = vocab.decode_tf(ids)
  assert s.numpy().decode() == vocab.decode(list(range(2, 128)))
  np.testing.assert_array_equal(vocab.encode_tf(s).numpy(), np.arange(2, 128))
  # Batched decode drops pad, truncates after eos; batched encode is ragged.
  batch = tf.constant([[13, 6, 9, 11, 0, 0], [3, 7, 1, 4, 4, 4]], tf.int32)
  out = vocab.decode_tf(batch).numpy().tolist()
  assert out == [b"<u_1> <a_3> <b_2> <c_1>", b"<a_0> <b_0>"]
  enc = vocab.encode_tf(tf.constant(["<u_1> <a_3> <b_2> <c_1>", "<a_0> <b_0> junk"]))
  assert enc.to_list() == [[13, 6, 9, 11], [3, 7, 2]]


def test_tf_inside_dataset_map(vocab):
  ds = tf.data.Dataset.from_tensor_slices(["<a_1> <b_2>", "<u_4>"]).map(vocab.encode_tf)
  assert [x.tolist() for x in ds.as_numpy_iterator()] == [[4, 9], [16]]


def test_many_levels_names():
  layout = TokenLayout((2,) * 28, num_user_buckets=0)
  v = SemanticIDVocabulary(layout=layout)
  assert v.decode([3 + 2 * 19 + 1, 3 + 2 * 20 + 1]) == "<t_1> <l20_1>"
  assert v.parse_name("<l27_0>") == (27, 0)
  assert v.parse_name("<u_0>") is None and v.parse_name("<x_0>") is None
  ids = list(range(3, v.vocab_size))
  assert v.encode(v.decode(ids)) == ids


def test_lazy_tokenizer_dir(tmp_path):
  missing = SemanticIDVocabulary(tokenizer_dir=tmp_path / "nope")  # nothing read yet
  with pytest.raises(UserError, match="vocabulary.json"):
    _ = missing.vocab_size
  d = write_tokenizer_dir(tmp_path / "tok")
  v = SemanticIDVocabulary(tokenizer_dir=d)
  assert v.vocab_size == 128 and v.tokenizer_dir == d
  assert v == SemanticIDVocabulary(layout=LAYOUT)
  assert v != SemanticIDVocabulary(layout=TokenLayout((4, 3, 3), num_user_buckets=5))
  assert vocabulary_size(v) == 128


def test_constructor_needs_one_source(tmp_path):
  with pytest.raises(UserError):
    SemanticIDVocabulary()
  with pytest.raises(UserError):
    SemanticIDVocabulary(tokenizer_dir=str(tmp_path), layout=LAYOUT)


def test_gin_configurable(tmp_path):
  d = write_tokenizer_dir(tmp_path / "tok")
  with gin.unlock_config():
    gin.clear_config()
    gin.parse_config([f"SemanticIDVocabulary.tokenizer_dir = '{d}'"])
    try:
      v = SemanticIDVocabulary()  # pylint: disable=no-value-for-parameter
    finally:
      gin.clear_config()
  assert v.tokenizer_dir == d and v.vocab_size == 128
