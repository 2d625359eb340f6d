"""The sharded built-in trainer on simulated devices, and input that shards across hosts.

Each run is a subprocess (tests/_sharded_worker.py) with
XLA_FLAGS=--xla_force_host_platform_device_count=N: one device; 8 devices as a 4 (data) x 2
(model) mesh; and two processes of 4 devices each on localhost (gloo collectives). The toy task
trains 5 Adafactor steps with dropout on, so the masks must also agree across layouts.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax.seq2seq import partitioning, run_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_sharded_worker.py")
# Parameters of a sharded run vs one device: the same math with sums in another order.
PARAM_ATOL = 1e-5


def _env(num_devices: int, **extra) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _start(dirs, model_dir, num_devices, num_partitions, decode=False, **env):
  ds, tok, cache = dirs
  cmd = [sys.executable, WORKER, str(model_dir), ds, tok, "--num_partitions",
         str(num_partitions), "--cache_dir", cache] + (["--decode"] if decode else [])
  return subprocess.Popen(cmd, cwd=REPO, env=_env(num_devices, **env), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600) -> dict:
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-4000:]
  return json.loads(out.strip().splitlines()[-1])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sharded")
  dirs = (toy.write_processed(str(root / "toyds")), toy.write_tokenizer(str(root / "tok")),
          str(root / "split_cache"))
  # The split cache is written once, before processes could race on it.
  first = _finish(_start(dirs, root / "one", 1, 1))
  mesh = _start(dirs, root / "mesh", 8, 2, decode=True)
  mesh_out = _finish(mesh)
  port = _free_port()
  procs = [_start(dirs, root / "multi", 4, 2, decode=True, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                  JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i) for i in range(2)]
  multi = [_finish(p) for p in procs]
  return {"root": root, "one": first, "mesh": mesh_out, "multi": multi}


def _params(model_dir):
  return jax.tree.map(np.asarray, run_dir.load_run(str(model_dir)).params)


def _assert_params_close(a, b):
  la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (path, x), (_, y) in zip(la, lb):
    np.testing.assert_allclose(x, y, atol=PARAM_ATOL, err_msg=jax.tree_util.keystr(path))


def test_mesh_4x2_trains_like_one_device(runs):
  one, mesh = runs["one"], runs["mesh"]
  assert (one["devices"], mesh["devices"]) == (1, 8)
  assert mesh["mesh"] == {"data": 4, "model": 2}
  assert mesh["loss"] == pytest.approx(one["loss"], rel=1e-5)
  _assert_params_close(_params(runs["root"] / "one"), _params(runs["root"] / "mesh"))


def test_mesh_shards_every_large_kernel_over_model(runs):
  mesh = runs["mesh"]
  specs, shapes = mesh["param_specs"], mesh["param_shapes"]
  for name, shape in shapes.items():
    if len(shape) >= 2 and np.prod(shape) >= 256:  # every kernel and embedding table
      assert "model" in specs[name], (name, shape, specs[name])
    if len(shape) == 1:  # layer-norm scales: small, replicated
      assert specs[name] == [None], (name, specs[name])
  # Whole-state shares (the rest are layer-norm scales, the step and the dropout key).
  assert mesh["sharded_fraction"]["params"] > 0.95
  assert mesh["sharded_fraction"]["opt_state"] > 0.5
  assert runs["one"]["sharded_fraction"]["params"] == 0.0


def test_beam_search_over_a_data_sharded_batch_matches_one_device(runs):
  mesh = runs["mesh"]
  assert mesh["decode_users"] == 60
  assert mesh["decode_same_topk"]
  assert mesh["decode_max_score_diff"] < 1e-4


def test_two_processes_train_like_one_process(runs):
  multi = runs["multi"]
  assert [m["processes"] for m in multi] == [2, 2]
  assert sorted(m["process_index"] for m in multi) == [0, 1]
  assert all(m["devices"] == 8 for m in multi)
  assert multi[0]["loss"] == pytest.approx(runs["mesh"]["loss"], rel=1e-5)
  _assert_params_close(_params(runs["root"] / "mesh"), _params(runs["root"] / "multi"))
  # Multi-host evaluation: each process gets the whole top-K, the same as one process.
  single = np.load(runs["root"] / "mesh" / "decoded_sharded_p0.npy")
  for p in range(2):
    np.testing.assert_array_equal(np.load(runs["root"] / "multi" / f"decoded_sharded_p{p}.npy"),
                                  single)
  # One set of checkpoint sums, written by process 0 (Orbax's multi-process save).
  sums = os.listdir(runs["root"] / "multi" / "checkpoint_sums")
  assert sums == ["5.json"]


# --- pure pieces -----------------------------------------------------------------------------

def test_rules_name_every_logical_axis_of_the_network():
  from cost_jax.seq2seq import network
  module = network.Transformer(network.TransformerConfig(vocab_size=256))
  specs = partitioning.logical_param_specs(module, {"inputs": 9, "targets": 4})
  names = {a for s in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)) for a in s
           if a is not None}
  assert names <= {k for k, _ in partitioning.LOGICAL_AXIS_RULES}
  assert {"vocab", "embed", "mlp", "heads", "kv"} <= names


def test_mesh_spec_replicates_a_dimension_the_axis_does_not_divide():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))

  class FakeMesh:
    shape = {"data": 4, "model": 2}

  assert partitioning.mesh_spec(P("vocab", "embed"), (3072, 128), FakeMesh) == P("model", None)
  assert partitioning.mesh_spec(P("vocab", "embed"), (3071, 128), FakeMesh) == P(None, None)
  assert partitioning.mesh_spec(P("embed", "mlp"), (128, 1024), FakeMesh) == P(None, "model")
  # A 1-device model axis shards nothing.
  assert partitioning.mesh_spec(P("vocab", "embed"), (3072, 128), mesh) == P(None, None)


def test_seqio_shards_are_disjoint_and_cover_the_split(tmp_path):
  """seqio.ShardInfo reaches the source: each host builds only its own examples."""
  import seqio

  from cost_jax.seq2seq import seqrec_task
  ds = toy.write_processed(str(tmp_path / "toyds"))
  tok = toy.write_tokenizer(str(tmp_path / "tok"))
  task = seqrec_task.register_task("toy_shards", ds, tok, max_history=5)
  assert task.source.supports_arbitrary_sharding
  lengths = {"inputs": 21, "targets": 2}

  def examples(shard_info):
    data = task.get_dataset(lengths, split="train", shuffle=True, seed=3,
                            shard_info=shard_info)
    return [(int(e["user_index"]), tuple(e["inputs"].tolist()), tuple(e["targets"].tolist()))
            for e in data.as_numpy_iterator()]

  whole = examples(None)
  shards = [examples(seqio.ShardInfo(index=i, num_shards=2)) for i in range(2)]
  assert len(whole) == 244 and min(map(len, shards)) >= len(whole) // 2 - 1
  assert collections.Counter(shards[0]) + collections.Counter(shards[1]) == collections.Counter(
      whole)
  assert not set(shards[0]) & set(shards[1])
