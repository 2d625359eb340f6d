"""cost_jax.seq2seq.seqrec_task and registry: exact token sequences of a hand-made example, splits, errors, postprocessing."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

from cost_jax.seq2seq import registry, seqrec_task
from cost_jax.io import UserError
from cost_jax.tokenizer.layout import TokenLayout, user_bucket

# Levels of 4, 3, 2 codes -> level offsets 3, 7, 10; 5 user buckets at tokens 12..16.
LAYOUT = TokenLayout((4, 3, 2), num_user_buckets=5)
SEMANTIC_IDS = np.array([
    [0, 0, 0],  # item 0 -> tokens 3 7 10
    [0, 1, 0],  # item 1 -> 3 8 10
    [1, 2, 1],  # item 2 -> 4 9 11
    [2, 0, 0],  # item 3 -> 5 7 10
    [3, 1, 1],  # item 4 -> 6 8 11
    [3, 2, 0],  # item 5 -> 6 9 10
], np.int32)
T = {0: [3, 7, 10], 1: [3, 8, 10], 2: [4, 9, 11], 3: [5, 7, 10], 4: [6, 8, 11], 5: [6, 9, 10]}
USERS = ["alice", "bob", "carol", "dave"]
SEQUENCES = [[0, 1, 2, 3, 4], [5, 4, 3], [2, 5], [1, 0, 5, 2]]  # carol (< 3 items) is left out


def u(name):
  return 12 + user_bucket(name, 5)


def write_dataset(root):
  d = os.path.join(root, "ds")
  os.makedirs(d)
  pq.write_table(pa.table({
      "item_index": pa.array(np.arange(6, dtype=np.int32)),
      "item_id": [f"i{k}" for k in range(6)], "text": ["t"] * 6}), os.path.join(d, "items.parquet"))
  pq.write_table(pa.table({
      "user_index": pa.array(np.arange(4, dtype=np.int32)),
      "user_id": USERS,
      "items": pa.array(SEQUENCES, pa.list_(pa.int32())),
      "timestamps": pa.array([list(range(len(s))) for s in SEQUENCES], pa.list_(pa.int64())),
  }), os.path.join(d, "sequences.parquet"))
  with open(os.path.join(d, "stats.json"), "w") as f:
    json.dump({"users": 4, "items": 6}, f)
  return d


def write_tokenizer(root, ids=SEMANTIC_IDS, layout=LAYOUT):
  t = os.path.join(root, "tok")
  os.makedirs(t)
  np.save(os.path.join(t, "semantic_ids.npy"), ids)
  with open(os.path.join(t, "vocabulary.json"), "w") as f:
    json.dump(layout.to_json_dict(method="cost", num_items=len(ids)), f)
  return t


@pytest.fixture
def task(tmp_path):
  return seqrec_task.register_task("test_tiny", write_dataset(str(tmp_path)),
                                      write_tokenizer(str(tmp_path)), max_history=2)


def examples(task, split, lengths=None, **kw):
  ds = task.get_dataset(lengths, split=split, shuffle=False, **kw)
  return [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in ex.items()}
          for ex in ds.as_numpy_iterator()]


def ex(user, user_index, history, target):
  return {"inputs": [u(user)] + sum((T[i] for i in history), []), "targets": T[target],
          "item_index": target, "user_index": user_index}


def test_exact_examples_every_split(task):
  # alice: train [0 1 2], valid 3, test 4; bob: train [5], valid 4, test 3;
  # dave: train [1 0], valid 5, test 2. History = latest 2 items, oldest first.
  assert examples(task, "train") == [
      ex("alice", 0, [0], 1),
      ex("alice", 0, [0, 1], 2),
      ex("dave", 3, [1], 0),
  ]
  assert examples(task, "validation") == [
      ex("alice", 0, [1, 2], 3),
      ex("bob", 1, [5], 4),
      ex("dave", 3, [1, 0], 5),
  ]
  assert examples(task, "test") == [
      ex("alice", 0, [2, 3], 4),
      ex("bob", 1, [5, 4], 3),
      ex("dave", 3, [0, 5], 2),
  ]
  # Spelled out once: alice's test input and target in token ids.
  first = examples(task, "test")[0]
  assert first["inputs"] == [u("alice"), 4, 9, 11, 5, 7, 10] and first["targets"] == [6, 8, 11]


def test_split_index_numpy():
  train = [np.array([0, 1, 2]), np.array([5]), np.array([1, 0])]
  idx = seqrec_task.split_index(train, np.array([3, 4, 5]), np.array([4, 3, 2]), "train", 20)
  assert idx.sequences.tolist() == [0, 1, 2, 3, 4, 5, 4, 3, 1, 0, 5, 2]
  assert (idx.start.tolist(), idx.end.tolist(), idx.target.tolist()) == ([0, 0, 8], [1, 2, 9], [1, 2, 0])
  idx = seqrec_task.split_index(train, np.array([3, 4, 5]), np.array([4, 3, 2]), "test", 1)
  assert (idx.start.tolist(), idx.end.tolist(), idx.target.tolist()) == ([3, 6, 10], [4, 7, 11], [4, 3, 2])
  with pytest.raises(UserError, match="split"):
    seqrec_task.split_index(train, np.zeros(3), np.zeros(3), "dev", 20)


def test_feature_lengths_and_converter(task):
  lengths = {"inputs": 7, "targets": 3}
  assert examples(task, "test", lengths) == examples(task, "test")
  # Too short for 2 items: whole oldest items go, the user token and latest item stay.
  short = examples(task, "test", {"inputs": 5, "targets": 3})
  assert [e["inputs"] for e in short] == [[u("alice")] + T[3], [u("bob")] + T[4], [u("dave")] + T[5]]
  with pytest.raises(UserError, match="targets=4.*length 3"):
    examples(task, "test", {"inputs": 7, "targets": 4})
  ds = task.get_dataset(lengths, split="validation", shuffle=False)
  conv = seqio.EncDecFeatureConverter(pack=False)(ds, lengths)
  first = next(conv.as_numpy_iterator())
  assert first["encoder_input_tokens"].tolist() == [u("alice")] + T[1] + T[2]
  assert first["decoder_target_tokens"].tolist() == T[3]
  assert first["decoder_input_tokens"].tolist() == [0] + T[3][:2]
  assert first["decoder_loss_weights"].tolist() == [1, 1, 1]


def test_shuffle_is_a_seeded_permutation(task):
  plain = examples(task, "train")
  src = seqrec_task.task_source(task)
  s1 = [e["item_index"] for e in src.dataset_fn("train", True, 3).as_numpy_iterator()]
  s2 = [e["item_index"] for e in src.dataset_fn("train", True, 3).as_numpy_iterator()]
  assert s1 == s2 and sorted(s1) == sorted(e["item_index"] for e in plain)


def test_vocabulary_and_postprocess(task):
  vocab = task.output_features["targets"].vocabulary
  assert vocab.vocab_size == 128 and not task.output_features["targets"].add_eos
  assert not task.output_features["inputs"].add_eos
  post = task.postprocess_fn
  assert post("<a_3> <b_1> <c_1>", example={"item_index": np.int32(4)}, is_target=True) == 4
  assert post("<a_3> <b_1> <c_1>", is_target=False) == [4]
  # T5X return_all_decodes gives beams sorted by increasing score: best last.
  assert post(["<a_0> <b_0> <c_1>", "<a_0> <b_1> <c_0>", "<a_3> <b_2> <c_0>"]) == [5, 1, -1]
  assert post("<a_0> <b_0>") == [-1]
  assert registry.task_dirs("test_tiny")[1].endswith("tok")


def test_metric_fn(task):
  pytest.importorskip("cost_jax.metrics")
  # Ranks of the targets: 0, 1, miss.
  m = seqrec_task.retrieval_metric_fn([4, 3, 2], [[4, 1], [1, 3], [-1, 0]], ks=(1, 2))
  assert m["invalid_id_rate"] == pytest.approx(1 / 6)
  assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)
  assert m["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
  assert task.metric_fns == [seqrec_task.retrieval_metric_fn]


def test_builtin_registrations():
  names = set(seqio.TaskRegistry.names())
  for n in ("cost_ml100k", "rqvae_ml100k", "rqvae_cost_mind", "rqkmeans_beauty", "lsh_sports",
            "random_toys", "cost_office", "cost_mind"):
    assert n in names
  assert registry.task_name("rqvae+cost", "office") == "rqvae_cost_office"
  assert seqrec_task.MAX_HISTORY["mind"] == 70 and seqrec_task.MAX_HISTORY["beauty"] == 20


def test_missing_files_are_named(tmp_path):
  root = str(tmp_path)
  t = seqrec_task.register_task("test_missing", os.path.join(root, "none"), os.path.join(root, "tok"))
  with pytest.raises(UserError, match="none"):
    t.get_dataset(None, split="train")
  ds = write_dataset(root)
  os.makedirs(os.path.join(root, "tok"))
  t = seqrec_task.register_task("test_missing", ds, os.path.join(root, "tok"))
  with pytest.raises(UserError, match="vocabulary.json: missing"):
    t.get_dataset(None, split="train")
  with open(os.path.join(root, "tok", "vocabulary.json"), "w") as f:
    json.dump(LAYOUT.to_json_dict(), f)
  t = seqrec_task.register_task("test_missing", ds, os.path.join(root, "tok"))
  with pytest.raises(UserError, match="semantic_ids.npy: missing"):
    t.get_dataset(None, split="train")
  os.remove(os.path.join(ds, "sequences.parquet"))
  t = seqrec_task.register_task("test_missing", ds, os.path.join(root, "tok"))
  with pytest.raises(UserError, match="sequences.parquet"):
    t.get_dataset(None, split="train")


def test_bad_semantic_ids(tmp_path):
  root = str(tmp_path)
  ds = write_dataset(root)
  bad = SEMANTIC_IDS.copy()
  bad[2, 1] = 3  # level 1 has only 3 codes
  t = seqrec_task.register_task("test_bad", ds, write_tokenizer(root, bad))
  with pytest.raises(UserError, match=r"semantic_ids.npy: row 2 level 1: code 3"):
    t.get_dataset(None, split="train")
  os.rename(os.path.join(root, "tok"), os.path.join(root, "tok_old"))
  t = seqrec_task.register_task("test_bad", ds, write_tokenizer(root, SEMANTIC_IDS[:5]))
  with pytest.raises(UserError, match="5 rows but the dataset has 6 items"):
    t.get_dataset(None, split="train")


def test_t5x_task_gins_agree_with_the_task_and_tokenizer_defaults():
  """gin/tasks/*.gin state T5X's TASK_FEATURE_LENGTHS as literals (T5X reads a dict): each must
  be 1 + max_history * L and L, with max_history the task's and L the ID length of the
  method's tokenizer preset (TIGER's extra token adds one level)."""
  import ast  # pylint: disable=import-outside-toplevel
  import glob  # pylint: disable=import-outside-toplevel
  import re  # pylint: disable=import-outside-toplevel
  from cost_jax.tokenizer import config as tc  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  files = sorted(glob.glob(os.path.join(repo, "gin", "tasks", "*.gin")))
  assert len(files) >= 7
  for path in files:
    text = open(path).read()
    name = re.search(r"MIXTURE_OR_TASK_NAME = '([^']+)'", text).group(1)
    method, dataset = name.rsplit("_", 1)
    assert os.path.basename(path) == f"{name}.gin"
    preset = tc.PRESETS[tc.METHOD_PRESET[method]]
    id_len = preset["num_levels"] + (preset["dedup"] == "tiger_extra_token")
    lengths = ast.literal_eval(re.search(r"TASK_FEATURE_LENGTHS = (\{[^}]*\})", text).group(1))
    assert lengths == {"inputs": 1 + seqrec_task.max_history_of(dataset) * id_len,
                       "targets": id_len}, path
