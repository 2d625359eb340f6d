"""Fake stage functions and small profiles for the reproduction's tests (not a test module).

The fakes record their calls and write what the real stages write, so the pipeline, its cache
and its report run end to end in milliseconds.
"""

import json
import os
import re
import dataclasses

import numpy as np

from cost_jax.experiments import pipeline, profiles, stages


METHODS = ("random", "lsh", "rqvae", "cost", "rqvae+cost")
QUALITY = {"random": 0.01, "lsh": 0.015, "rqvae": 0.02, "cost": 0.025, "rqvae+cost": 0.022,
           "cove": 0.018}


class Fakes:
  """Fake stage functions that record their calls and write what the real ones write."""

  def __init__(self, fail_train=None):
    self.calls = []
    self.fail_train = fail_train

  def fns(self):
    return stages.StageFns(prepare=self.prepare, embed=self.embed, tokenize=self.tokenize,
                              train=self.train, popularity=self.popularity, sasrec=self.sasrec,
                              cove_sasrec=self.cove_sasrec, cove_tokenize=self.cove_tokenize,
                              cove_tokenize_from=self.cove_tokenize_from,
                              transition=self.transition)

  def prepare(self, dataset, output):
    self.calls.append(("prepare", dataset))
    os.makedirs(output)
    for f in pipeline.DATASET_FILES:
      with open(os.path.join(output, f), "w") as fh:
        fh.write(json.dumps({"users": 3, "items": 5, "interactions": 15}) if f == "stats.json"
                 else "x")
    return output

  def embed(self, path, model):
    self.calls.append(("embed", model))
    np.save(os.path.join(path, "embeddings.npy"), np.eye(5, dtype=np.float32))
    with open(os.path.join(path, "embeddings.json"), "w") as f:
      json.dump({"model": model, "dim": 5}, f)

  def tokenize(self, emb, method, output, seed, overrides):
    self.calls.append(("tokenize", method, seed))
    assert emb.shape == (5, 5)
    os.makedirs(output)
    np.save(os.path.join(output, "semantic_ids.npy"), np.arange(15, dtype=np.int32).reshape(5, 3))
    return {"usage_per_level": [1.0, 0.5, 0.25],
            "collisions_before_dedup": {"colliding_items": seed + 2, "largest_group": 2},
            "id_length": 3, "wall_time_s": 0.1}

  def _metrics(self, q):
    m = {f"recall@{k}": q * k / 5 for k in (5, 10, 20, 40)}
    m.update({f"ndcg@{k}": q * k / 10 for k in (5, 10, 20, 40)})
    m.update(invalid_id_rate=0.0, num_users=3)
    return m

  def train(self, dataset_dir, tokenizer_dir, model_dir, seed, **tiger):
    method = json.load(open(os.path.join(os.path.dirname(tokenizer_dir), "DONE")))["config"][
        "method"]
    self.calls.append(("train", method, seed))
    assert re.fullmatch(r"[\w.:#]+", tiger["task"]), tiger["task"]  # a valid SeqIO task name
    assert os.path.isfile(os.path.join(tokenizer_dir, "semantic_ids.npy"))
    assert os.path.isfile(os.path.join(dataset_dir, "embeddings.npy"))
    if self.fail_train == (method, seed):
      raise RuntimeError("boom")
    m = self._metrics(QUALITY[method] + 0.001 * seed)
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "metrics.json"), "w") as f:
      json.dump(m, f)
    return m

  def popularity(self, dataset_dir, output, ks):
    self.calls.append(("popularity",))
    return self._metrics(0.005)

  def transition(self, dataset_dir, output, ks):
    self.calls.append(("transition",))
    return self._metrics(0.04)

  def sasrec(self, dataset_dir, output, seed, ks, **cfg):
    self.calls.append(("sasrec", seed) + ((cfg["loss"],) if "loss" in cfg else ()))
    return self._metrics(0.03 if cfg.get("loss", "softmax") == "softmax" else 0.025)

  def cove_sasrec(self, dataset_dir, output, seed, ks, cove=None, **cfg):
    self.calls.append(("cove_sasrec", seed))
    return self._metrics(0.032)

  def cove_tokenize_from(self, run_dir, output):
    self.calls.append(("tokenize", "cove", "from", os.path.basename(run_dir).split("-")[1]))
    return self.cove_tokenize(None, output, None)

  def cove_tokenize(self, dataset_dir, output, seed, cove=None, **cfg):
    if seed is not None:
      self.calls.append(("tokenize", "cove", seed))
    os.makedirs(output)
    np.save(os.path.join(output, "semantic_ids.npy"), np.arange(15, dtype=np.int32).reshape(5, 3))
    return {"usage_per_level": [1.0, 0.5], "id_length": 3, "wall_time_s": 0.1}


def small_profile(**kw):
  kw.setdefault("methods", METHODS)
  kw.setdefault("baselines", ("popularity", "transition", "sasrec"))
  return dataclasses.replace(profiles.load("cpu"), seeds=(0, 1), **kw)


def gin(prof, *bindings):
  """`prof` with gin bindings on top (what --gin.X=v does on the command line)."""
  return profiles.override(prof, gin_params=list(bindings))


def synthetic_dataset(path, num_users=24, num_items=30, seed=0):
  """A real processed dataset (+ random embeddings) of short cyclic sequences."""
  from cost_jax.data import processed  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  events = {}
  for u in range(num_users):
    start = int(rng.integers(0, num_items))
    n = int(rng.integers(5, 10))
    events[f"u{u}"] = [(t, f"i{(start + t) % num_items}") for t in range(n)]
  fields = {f"i{i}": {"text": f"Item category: c{i % 3}. Title: item {i}."}
            for i in range(num_items)}
  data = processed.Interactions(user_events=events, item_fields=fields, sources=[])
  processed.build_and_write("synthetic", data, str(path), malformed_json={"rows": 0},
                            min_seq_len=None, max_seq_len=None, options={})
  ds = processed.ProcessedDataset.load(str(path))
  np.save(os.path.join(path, "embeddings.npy"),
          rng.normal(size=(ds.num_items, 16)).astype(np.float32))
  return str(path)
