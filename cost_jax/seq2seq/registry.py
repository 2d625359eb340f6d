"""The built-in SeqIO tasks: importing this module registers one seqio.Task per (tokenizer
method, dataset). A leaf: only the CLIs and the gin files (`import cost_jax.seq2seq.registry`)
import it; the library registers a run's own task from its dirs (cost_jax.seq2seq.task).

  name = f"{METHOD_TASK_PREFIX[method]}_{dataset}"   e.g. cost_mind, rqvae_beauty, rqvae_cost_ml100k

  processed data: cost_jax.paths.dataset_dir(dataset)
  tokenizer:      cost_jax.paths.tokenizer_dir(dataset, method)   (method dir "rqvae+cost" -> task
                  prefix "rqvae_cost": seqio task names allow only [A-Za-z0-9_.])

Paths are resolved at import (set $COST_JAX_DATA_DIR first); files are read at
get_dataset time. Custom dirs: `register_task(name, dataset_dir, tokenizer_dir, max_history)`.
"""

from __future__ import annotations

import gin
import seqio

from cost_jax import paths
from cost_jax.tokenizer.config import METHODS, task_name, task_prefix
from cost_jax.seq2seq.seqrec_task import MAX_HISTORY, register_task, task_source

# Tokenizer method (its output dir name, cost_jax.tokenize --method) -> task-name prefix.
METHOD_TASK_PREFIX = {m: task_prefix(m) for m in METHODS}
DATASETS = tuple(MAX_HISTORY)


def register_builtin_tasks(root: str | None = None) -> list[str]:
  """Registers every {method}_{dataset} task under data root `root` (default data_root())."""
  names = []
  for dataset in DATASETS:
    for method in METHOD_TASK_PREFIX:
      name = task_name(method, dataset)
      register_task(name, paths.dataset_dir(dataset, root),
                    paths.tokenizer_dir(dataset, method, root), max_history=MAX_HISTORY[dataset])
      names.append(name)
  return names


@gin.configurable
def task_vocabulary(task_name: str) -> seqio.Vocabulary:
  """The "targets" vocabulary of a registered task (gin: VOCABULARY = @task_vocabulary())."""
  return seqio.get_mixture_or_task(task_name).output_features["targets"].vocabulary


def task_dirs(name: str) -> tuple[str, str]:
  """(dataset_dir, tokenizer_dir) of a task registered by register_task."""
  source = task_source(name)
  return source.dataset_dir, source.tokenizer_dir


BUILTIN_TASKS = tuple(register_builtin_tasks())

