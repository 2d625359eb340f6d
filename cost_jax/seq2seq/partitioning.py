"""How the train state lies on the ('data', 'model') mesh: T5X's logical axis rules.

The network names every parameter axis with a logical name (cost_jax.seq2seq.layers:
`vocab`, `embed`, `mlp`, `heads`, `kv`, `relpos_buckets`, ...). `LOGICAL_AXIS_RULES` maps those
names to mesh axes. It is T5X's standard table (t5x.partitioning.standard_logical_axis_rules
with one parameter and one activation partitioning dimension): the vocabulary, MLP and head axes
are split over 'model', everything else is replicated, and batches are split over 'data'. The
built-in trainer reads it here; T5X reads the same table through gin
(gin/t5x/partitioning.gin: `PjitPartitioner.logical_axis_rules = @partitioning.logical_axis_rules()`).

Pure functions: abstract shapes and names in, `NamedSharding`s out.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import jax
import numpy as np
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# (logical axis name, mesh axis or None): T5X's standard rules (parameter_partitioning_dims=1).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("joined_kv", "model"),
    ("relpos_buckets", None),
    ("abspos_buckets", None),
    ("length", None),
    ("layers", None),
    ("stack", None),
    ("mlp_activations", None),
)


def logical_axis_rules() -> tuple[tuple[str, str | None], ...]:
  """The rules table (for gin: T5X's PjitPartitioner.logical_axis_rules)."""
  return LOGICAL_AXIS_RULES


def logical_param_specs(module: nn.Module, lengths: Mapping[str, int]) -> Any:
  """Pytree (like the params) of PartitionSpecs of logical axis names, from the module's
  "params_axes" collection; nothing is computed (jax.eval_shape)."""
  enc = jax.ShapeDtypeStruct((1, int(lengths["inputs"])), np.int32)
  dec = jax.ShapeDtypeStruct((1, int(lengths["targets"])), np.int32)
  variables = jax.eval_shape(
      lambda e, d: module.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
                               e, d, d, enable_dropout=False), enc, dec)
  return flax.core.unfreeze(nn_partitioning.get_axis_names(variables["params_axes"]))


def mesh_spec(logical: P, shape: tuple[int, ...], mesh: Any,
              rules=LOGICAL_AXIS_RULES) -> P:
  """A logical PartitionSpec -> the mesh PartitionSpec for an array of `shape`.

  A dimension that the mesh axis does not divide stays replicated (T5X would refuse it; here a
  small vocabulary on many devices still trains).
  """
  axes = tuple(nn.logical_to_mesh_axes(tuple(logical), rules))
  out = []
  for dim, axis in zip(shape, axes + (None,) * (len(shape) - len(axes))):
    size = 1 if axis is None else int(np.prod([mesh.shape[a] for a in
                                               (axis if isinstance(axis, tuple) else (axis,))]))
    out.append(axis if size > 1 and dim % size == 0 else None)
  return P(*out)


def _dict_path(path) -> tuple[str, ...]:
  return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def state_shardings(abstract_state: Mapping[str, Any], logical_specs: Any, mesh: Any,
                    rules=LOGICAL_AXIS_RULES) -> dict[str, Any]:
  """NamedShardings for the trainer state {"params", "opt_state", "step", "dropout_rng"}.

  Params follow their logical names. An optimizer-state leaf (optax keeps trees shaped like
  the params inside its states) takes the sharding of the parameter whose path ends its own
  and whose shape it has (Adam's moments, Adafactor's unfactored second moments); factored or
  scalar leaves are small and replicated.
  """
  replicated = NamedSharding(mesh, P())
  params = abstract_state["params"]
  param_shardings = jax.tree.map(
      lambda spec, leaf: NamedSharding(mesh, mesh_spec(spec, leaf.shape, mesh, rules)),
      logical_specs, params, is_leaf=lambda x: isinstance(x, P))
  by_path = {_dict_path(path): (leaf.shape, sharding) for (path, leaf), sharding in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(param_shardings))}

  def opt_leaf(path, leaf):
    names = _dict_path(path)
    for i in range(len(names)):
      hit = by_path.get(names[i:])
      if hit is not None and tuple(hit[0]) == tuple(leaf.shape):
        return hit[1]
    return replicated

  out = {k: jax.tree.map(lambda _: replicated, v) for k, v in abstract_state.items()}
  out["params"] = param_shardings
  out["opt_state"] = jax.tree_util.tree_map_with_path(opt_leaf, abstract_state["opt_state"])
  return out


def sharded_fraction(state: Any) -> dict[str, float]:
  """Per top-level key of a placed state: the share of its elements in arrays that are split
  over more than one device (for logs and tests)."""
  out = {}
  for key, tree in state.items():
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "sharding")]
    total = sum(int(np.prod(x.shape)) for x in leaves) or 1
    split = sum(int(np.prod(x.shape)) for x in leaves if not x.sharding.is_fully_replicated)
    out[key] = split / total
  return out
