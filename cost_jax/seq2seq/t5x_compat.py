"""Glue between the paper setups (gin/setups/*.gin macros) and the real T5X.

Gin-configurable factories used by gin/t5x/model.gin; T5X (not on PyPI) is
imported inside the functions that need it, so this module imports without it.

  learning_rate_schedule(learning_rate, schedule, constant_steps, decay_steps) -> step -> lr
      "rsqrt": lr * sqrt(c / max(step, c)), i.e. constant for c steps then inverse
      square root decay (TIGER §4.1.3: 0.01 for 10k steps); "constant": lr.
      The same formula as the built-in trainer (cost_jax.seq2seq.optim).
  optimizer(name, learning_rate_fn, weight_decay) -> a T5X OptimizerDef
      "adafactor": t5x.adafactor.Adafactor with T5X's base.gin defaults (the learning
      rate comes from trainer.Trainer.learning_rate_fn); "adamw": optax.adamw in
      t5x.optimizers.OptaxWrapper (the schedule is given to optax).
  constrained_decode_fn(vocabulary | tokenizer_dir) -> T5X decode_fn with the item trie
      bound (cost_jax.seq2seq.decoding.t5x_beam_search), for models.EncoderDecoderModel.decode_fn.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import gin
from cost_jax.io import UserError
from cost_jax.seq2seq import decoding, optim
from cost_jax.seq2seq.trie import ItemTrie, load_trie


@gin.configurable
def learning_rate_schedule(learning_rate: float = gin.REQUIRED, schedule: str = gin.REQUIRED,
                           constant_steps: int = gin.REQUIRED,
                           decay_steps: int = gin.REQUIRED) -> Callable[[Any], Any]:
  """step -> learning rate: cost_jax.seq2seq.optim's formula, bound from the setup's macros."""
  return optim.learning_rate_schedule(learning_rate, schedule, constant_steps, decay_steps)


def adafactor_factor_rules():
  """T5X's standard Adafactor factor rules plus the unnamed axis of our fused projections.

  cost_jax.seq2seq.network annotates the q/k/v (and gated-MLP) stacking axis of its fused
  kernels as None (e.g. ("embed", None, "heads", "kv")); T5X maps its own fused axes
  ("q_wi_fused", "kv_fused", "mlp_activations") to COLUMN, and so do we.
  """
  from flax.core import freeze  # pylint: disable=g-import-not-at-top
  from t5x import adafactor  # pylint: disable=g-import-not-at-top
  rules = dict(adafactor.standard_logical_factor_rules())
  rules[None] = adafactor.FactorDim.COLUMN
  return freeze(rules)


@gin.configurable
def optimizer(name: str = "adafactor", learning_rate_fn: Callable[[Any], Any] | None = None,
              weight_decay: float = 0.0):
  """A T5X OptimizerDef for the setup's optimizer name (see module doc)."""
  if name == "adafactor":
    from t5x import adafactor  # pylint: disable=g-import-not-at-top
    # T5X's defaults (t5x/examples/t5/t5_1_1/base.gin): decay_rate 0.8, step_offset 0.
    return adafactor.Adafactor(decay_rate=0.8, step_offset=0,
                               logical_factor_rules=adafactor_factor_rules())
  if name == "adamw":
    import optax  # pylint: disable=g-import-not-at-top
    from t5x import optimizers  # pylint: disable=g-import-not-at-top
    if learning_rate_fn is None:
      raise UserError("optimizer: adamw needs learning_rate_fn (gin: @t5x_compat.learning_rate_schedule())")
    lr = learning_rate_fn
    return optimizers.OptaxWrapper(optax.adamw(learning_rate=lr, weight_decay=weight_decay))
  raise UserError(f"optimizer: name must be one of {optim.OPTIMIZERS}, got {name!r}")


def tokenizer_dir_of(vocabulary: Any = None, tokenizer_dir: str | None = None) -> str:
  """The tokenizer dir (cost_jax.tokenizer.artifact) given directly or behind a SemanticIDVocabulary."""
  if tokenizer_dir is None:
    tokenizer_dir = getattr(vocabulary, "tokenizer_dir", None)
  if not tokenizer_dir:
    raise UserError("constrained_decode_fn: give tokenizer_dir or a SemanticIDVocabulary "
                    "built from a tokenizer dir")
  return os.fspath(tokenizer_dir)


def make_t5x_decode_fn(tokenizer_dir: str | None = None, trie: ItemTrie | None = None,
                       constrained: bool = True,
                       score_over: str = decoding.DEFAULT_SCORE_OVER) -> Callable[..., Any]:
  """t5x_beam_search bound to a trie (given, or loaded from a tokenizer directory)."""
  if trie is None:
    if tokenizer_dir is None:
      raise ValueError("make_t5x_decode_fn needs tokenizer_dir or trie")
    trie = load_trie(os.fspath(tokenizer_dir))
  return functools.partial(decoding.t5x_beam_search, trie=trie, constrained=constrained,
                           score_over=score_over)


class ConstrainedDecodeFn:
  """T5X decode_fn: cost_jax.seq2seq.decoding.t5x_beam_search with the tokenizer dir's item trie.

  The trie is loaded on the first call (at trace time), so a model can be built and
  trained before the decoder is needed.
  """

  def __init__(self, vocabulary: Any = None, tokenizer_dir: str | None = None,
               constrained: bool = True, decode_kwargs: dict | None = None):
    self.vocabulary = vocabulary
    self.tokenizer_dir = tokenizer_dir
    self.constrained = constrained
    self.decode_kwargs = dict(decode_kwargs or {})

  @functools.cached_property
  def _fn(self) -> Callable[..., Any]:
    tokenizer_dir = tokenizer_dir_of(self.vocabulary, self.tokenizer_dir)
    fn = make_t5x_decode_fn(tokenizer_dir=tokenizer_dir, constrained=self.constrained)
    return functools.partial(fn, **self.decode_kwargs) if self.decode_kwargs else fn

  def __call__(self, *, inputs, cache, tokens_to_logits, eos_id, num_decodes, **kwargs):
    # No `initial_index` in this signature: T5X then skips prompt prefilling, which
    # fixed-length semantic-ID decoding does not use.
    return self._fn(inputs=inputs, cache=cache, tokens_to_logits=tokens_to_logits, eos_id=eos_id,
                    num_decodes=num_decodes, **kwargs)


@gin.configurable
def constrained_decode_fn(vocabulary: Any = None, tokenizer_dir: str | None = None,
                          constrained: bool = True, **decode_kwargs) -> ConstrainedDecodeFn:
  """T5X decode_fn: beam search restricted to valid item IDs (prefix trie of the catalogue).

  Bound in gin as models.EncoderDecoderModel.decode_fn; T5X calls it like
  t5x.decoding.beam_search(inputs=, cache=, tokens_to_logits=, eos_id=, num_decodes=, ...)
  and expects (decodes [B, num_decodes, L] sorted by increasing score, scores [B, num_decodes]).
  """
  return ConstrainedDecodeFn(vocabulary, tokenizer_dir, constrained, decode_kwargs)
