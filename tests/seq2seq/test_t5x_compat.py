"""The real T5X with our gin files, task, vocabulary, network and constrained decode_fn.

Skipped when `t5x` is not importable (CI installs only .[test]); see the README
section "Running with T5X" for how to install it.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cost_jax.tokenizer import artifact

t5x = pytest.importorskip("t5x")

# Both tests take 1-3 min of wall time on 2 shared cores: run them with
#   pytest -m t5x tests/seq2seq/test_t5x_compat.py
pytestmark = [pytest.mark.t5x, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Tiny model for CPU: overrides of gin/models/tiger.gin.
TINY = {
    "TransformerConfig.num_encoder_layers": 1,
    "TransformerConfig.num_decoder_layers": 1,
    "TransformerConfig.emb_dim": 16,
    "TransformerConfig.num_heads": 2,
    "TransformerConfig.head_dim": 8,
    "TransformerConfig.mlp_dim": 32,
}


def write_data_root(root: str, dataset: str = "ml100k", method: str = "cost",
                    num_levels: int = 3) -> tuple[str, str]:
  """A 10-user, 12-item processed dir + a tokenizer dir (IDs of length 3 or 4) under `root`."""
  from cost_jax import paths
  from cost_jax.tokenizer.layout import TokenLayout
  rng = np.random.default_rng(0)
  ds = paths.dataset_dir(dataset, root)
  tok = paths.tokenizer_dir(dataset, method, root)
  os.makedirs(ds)
  os.makedirs(tok)
  n_items = 12
  pq.write_table(pa.table({
      "item_index": pa.array(np.arange(n_items, dtype=np.int32)),
      "item_id": [str(k) for k in range(n_items)], "text": ["x"] * n_items}),
      os.path.join(ds, "items.parquet"))
  seqs = [rng.choice(n_items, size=rng.integers(4, 8), replace=False).tolist() for _ in range(10)]
  pq.write_table(pa.table({
      "user_index": pa.array(np.arange(10, dtype=np.int32)),
      "user_id": [f"u{k}" for k in range(10)],
      "items": pa.array(seqs, pa.list_(pa.int32())),
      "timestamps": pa.array([[0] * len(s) for s in seqs], pa.list_(pa.int64())),
  }), os.path.join(ds, "sequences.parquet"))
  with open(os.path.join(ds, "stats.json"), "w") as f:
    json.dump({"users": 10, "items": n_items}, f)
  ids = np.array([[k // 4, k % 4, k % 3, 0][:num_levels] for k in range(n_items)], np.int32)
  np.save(os.path.join(tok, "semantic_ids.npy"), ids)  # rows all distinct
  with open(os.path.join(tok, "vocabulary.json"), "w") as f:
    json.dump(TokenLayout((3, 4, 3, 1)[:num_levels], num_user_buckets=8).to_json_dict(
        method=method, num_items=n_items, semantic_ids_file="semantic_ids.npy", dedup="none"), f)
  return ds, tok


@pytest.mark.parametrize("task,num_levels", [("cost_ml100k", 3), ("rqvae_ml100k", 4)])
def test_t5x_train_runs_on_run_gin(tmp_path, task, num_levels):
  """`python -m t5x.train --gin_file=gin/<task>.gin` for 2 steps on a tiny task.

  cost_ml100k uses CoST's setup (Adam via optax), rqvae_ml100k TIGER's (T5X Adafactor).
  """
  root = str(tmp_path / "data")
  write_data_root(root, method=task.split("_")[0], num_levels=num_levels)
  model_dir = str(tmp_path / "model")
  bindings = dict(TINY, MODEL_DIR=repr(model_dir), TRAIN_STEPS=2, BATCH_SIZE=4)
  cmd = [sys.executable, "-m", "t5x.train", f"--gin_file=gin/{task}.gin"]
  cmd += [f"--gin.{k}={v}" for k, v in bindings.items()]
  env = dict(os.environ, COST_JAX_DATA_DIR=root, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
             TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert os.path.isdir(os.path.join(model_dir, "checkpoint_2")), os.listdir(model_dir)
  with open(os.path.join(model_dir, "config.gin")) as f:
    config = f.read()
  assert f"'{task}'" in config and "num_encoder_layers = 1" in config


def test_predict_batch_constrained_decode_fn(tmp_path):
  """T5X EncoderDecoderModel.predict_batch with our decode_fn returns only valid item IDs."""
  import gin
  import jax
  import seqio
  from t5x import models

  from cost_jax.seq2seq import registry

  root = str(tmp_path / "data")
  _, tok = write_data_root(root)
  registry.register_builtin_tasks(root)
  try:
    with gin.unlock_config():
      gin.clear_config()
      gin.add_config_file_search_path(REPO)
      gin.parse_config_files_and_bindings(
          [os.path.join(REPO, "gin/tasks/cost_ml100k.gin"), os.path.join(REPO, "gin/t5x/model.gin")],
          [f"{k} = {v}" for k, v in TINY.items()] + ["NUM_BEAMS = 4"], finalize_config=False)
      model = gin.get_configurable(models.EncoderDecoderModel)()
      lengths = gin.query_parameter("%TASK_FEATURE_LENGTHS")
      gin.clear_config()
    task = seqio.get_mixture_or_task("cost_ml100k")
    ds = task.get_dataset(lengths, split="test", shuffle=False)
    batch = next(seqio.EncDecFeatureConverter(pack=False)(ds, lengths).batch(6).as_numpy_iterator())
    shapes = {k: v.shape for k, v in batch.items()}
    params = model.get_initial_variables(jax.random.PRNGKey(0), shapes)["params"]
    decodes, aux = model.predict_batch_with_aux(params, batch)
    assert decodes.shape == (6, 4, 3) and aux["scores"].shape == (6, 4)
    item_tokens = artifact.load_item_tokens(tok)[1]
    valid = {tuple(row) for row in item_tokens.tolist()}
    assert all(tuple(d) in valid for d in np.asarray(decodes).reshape(-1, 3).tolist())
    assert np.all(np.diff(np.asarray(aux["scores"]), axis=1) >= -1e-5)  # best beam last (T5X order)
    # Through the vocabulary and the task's postprocess_fn: item indices, best first, none invalid.
    vocab = task.output_features["targets"].vocabulary
    strings = [[vocab.decode(d) for d in row] for row in np.asarray(decodes).tolist()]
    items = [task.postprocess_fn(s) for s in strings]
    assert all(len(r) == 4 and min(r) >= 0 and len(set(r)) == 4 for r in items)
  finally:
    with gin.unlock_config():
      gin.clear_config()
    registry.register_builtin_tasks()


def _train_losses(model_dir: str) -> dict[int, float]:
  """step -> training loss from T5X's TensorBoard summaries in model_dir/train."""
  import tensorflow as tf
  losses = {}
  train_dir = os.path.join(model_dir, "train")
  for name in sorted(os.listdir(train_dir)):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(train_dir, name)):
      for value in event.summary.value:
        if value.tag == "loss":
          losses[int(event.step)] = float(tf.make_ndarray(value.tensor))
  return losses


def test_t5x_model_parallel_matches_data_parallel(tmp_path):
  """`num_partitions=2` (our logical axis rules through gin/t5x/train.gin) gives the loss curve
  of `num_partitions=1` on 2 simulated devices."""
  root = str(tmp_path / "data")
  write_data_root(root, method="rqvae", num_levels=4)
  curves = []
  for partitions in (1, 2):
    model_dir = str(tmp_path / f"model_p{partitions}")
    bindings = dict(TINY, MODEL_DIR=repr(model_dir), TRAIN_STEPS=4, BATCH_SIZE=4)
    bindings.update({"partitioning.PjitPartitioner.num_partitions": partitions,
                     "RANDOM_SEED": 0, "train/utils.DatasetConfig.seed": 0,
                     "train.eval_period": 1, "train.eval_steps": 1})
    cmd = [sys.executable, "-m", "t5x.train", "--gin_file=gin/rqvae_ml100k.gin"]
    cmd += [f"--gin.{k}={v}" for k, v in bindings.items()]
    env = dict(os.environ, COST_JAX_DATA_DIR=root, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    curves.append(_train_losses(model_dir))
  assert len(curves[0]) >= 3 and curves[0].keys() == curves[1].keys()
  for step in curves[0]:
    assert curves[1][step] == pytest.approx(curves[0][step], rel=1e-4), step
