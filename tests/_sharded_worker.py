"""One training run of the toy task on simulated devices, for tests/seq2seq/test_partitioning.py (not a test).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharded_worker.py \
      MODEL_DIR DATASET_DIR TOKENIZER_DIR --num_partitions 2 --steps 5 [--decode]

Multi-process: also set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. Prints one
JSON line: devices, processes, the last loss, each parameter's mesh PartitionSpec, the share of
sharded elements per state part, and with --decode whether the beam search over a data-sharded
batch gives the same top-K as on one device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("model_dir")
  ap.add_argument("dataset_dir")
  ap.add_argument("tokenizer_dir")
  ap.add_argument("--num_partitions", type=int, default=1)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--packing", default="encoder")
  ap.add_argument("--dropout", type=float, default=0.1)
  ap.add_argument("--cache_dir", default="")
  ap.add_argument("--decode", action="store_true")
  args = ap.parse_args()

  from cost_jax.seq2seq import devices
  devices.initialize_distributed()  # before JAX picks its devices
  import jax
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P

  from cost_jax.seq2seq import evaluator, partitioning, run_dir
  from cost_jax.seq2seq import trainer as train

  kw = dict(toy.tiny_model_overrides(), **toy.fast_train_overrides(
      num_train_steps=args.steps, checkpoint_every=args.steps, log_every=1,
      optimizer="adafactor", learning_rate=0.01))
  kw.update(dropout_rate=args.dropout, num_partitions=args.num_partitions, packing=args.packing,
            eval_at_end=False, eval_test=False, cache_dir=args.cache_dir)
  out = train.train_and_evaluate(model_dir=args.model_dir, dataset_dir=args.dataset_dir,
                                 tokenizer_dir=args.tokenizer_dir, show_progress=False, **kw)
  report = {"devices": jax.device_count(), "processes": jax.process_count(),
            "process_index": jax.process_index(), "loss": out["summary"]["train"]["loss"]}

  # The trainer's own placement, rebuilt the same way for inspection.
  from cost_jax.seq2seq import model, network, optim
  from cost_jax.seq2seq.config import TrainConfig
  record = json.load(open(os.path.join(args.model_dir, run_dir.CONFIG_FILE)))
  layout = devices.DeviceLayout.create(args.num_partitions)
  module = network.Transformer(run_dir.model_config_from_dict(record["model"]))
  config = TrainConfig(**{k: v for k, v in record["train"].items()})
  lengths = record["feature_lengths"]
  tx = optim.make_optimizer(config)
  shardings = partitioning.state_shardings(
      model.abstract_state(module, tx, lengths), partitioning.logical_param_specs(module, lengths),
      layout.mesh)
  state = model.init_state(module, tx, lengths, config.seed, shardings)
  flat = jax.tree_util.tree_flatten_with_path(state["params"])[0]
  report["param_specs"] = {
      "/".join(str(k.key) for k in path): [list(a) if isinstance(a, tuple) else a
                                           for a in leaf.sharding.spec]
      for path, leaf in flat}
  report["param_shapes"] = {"/".join(str(k.key) for k in path): list(leaf.shape)
                            for path, leaf in flat}
  report["sharded_fraction"] = partitioning.sharded_fraction(state)
  report["mesh"] = {"data": layout.data_size, "model": layout.model_size}

  if args.decode:  # beam search: data-sharded batch vs one device, same params
    run = run_dir.load_run(args.model_dir)
    arrays = run.split_arrays("validation")
    predict = evaluator.make_predict_fn(run.module, run.item_tokens, 10, 10,
                                        record["layout"]["level_offsets"],
                                        record["layout"]["codebook_sizes"])
    sharded_params = jax.device_put(run.params, layout.replicated)
    items_sharded, scores_sharded = evaluator.predict_arrays(
        predict, sharded_params, arrays.encoder_input_tokens, layout.round_batch(16),
        sharding=NamedSharding(layout.mesh, P("data")), show_progress=False)
    np.save(os.path.join(args.model_dir, f"decoded_sharded_p{jax.process_index()}.npy"),
            items_sharded)
    report["decode_users"] = int(len(items_sharded))
    if jax.process_count() == 1:
      one = jax.devices()[0]
      items_one, scores_one = evaluator.predict_arrays(
          predict, jax.device_put(run.params, one), arrays.encoder_input_tokens,
          layout.round_batch(16), sharding=one, show_progress=False)
      report["decode_same_topk"] = bool(np.array_equal(items_sharded, items_one))
      report["decode_max_score_diff"] = float(np.max(np.abs(scores_sharded - scores_one)))
  print(json.dumps(report))


if __name__ == "__main__":
  main()
