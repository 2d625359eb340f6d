"""Tokenizer configuration: one frozen dataclass, two paper presets, overrides.

Precedence: dataclass defaults < preset < overrides (the gin bindings of `TokenizerConfig`,
cost_jax.gin_cli, or a dict). The preset is chosen by the method unless given (`preset` key):
cost, rqvae+cost, rqkmeans, random -> "cost"; rqvae, lsh -> "tiger".
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from cost_jax import gin_cli
from cost_jax.io import UserError

# The method registry: every tokenizer method, in the order tables list them.
METHODS = ("cost", "rqvae", "rqvae+cost", "rqkmeans", "lsh", "random", "cove")
NEURAL_METHODS = ("cost", "rqvae", "rqvae+cost")
# Methods that learn IDs from interactions, not from item embeddings (no `python -m
# cost_jax.tokenize`): COVE's codes, learned inside SASRec (cost_jax.baselines.cove_sasrec).
INTERACTION_METHODS = ("cove",)
# CoST RecSys'24 Table 2's ablation rows (the reproduction's default methods).
ABLATION_METHODS = ("random", "lsh", "rqvae", "cost", "rqvae+cost")
DEDUP_MODES = ("cost_reassign", "tiger_extra_token", "none")


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """Every hyperparameter of the tokenizer. Defaults = CoST (RecSys'24 §4.1) unless noted."""

  preset: str = "cost"
  # Objective: rqvae = L_mse + L_rq (CoST eq. 1, TIGER §3.1.1); cost = alpha L_cl + L_rq (eq. 5);
  # rqvae+cost = their sum. Set from --method.
  loss: str = "cost"
  # Encoder hidden layers, ReLU (CoST §4.1, TIGER §4.1.3: 512, 256, 128). Decoder mirrors them.
  hidden_dims: tuple[int, ...] = (512, 256, 128)
  latent_dim: int = 96            # CoST §4.1: 96; TIGER §4.1.3: 32
  codebook_size: int = 64         # K. CoST §4.1: 64; TIGER §4.1.3: 256
  num_levels: int = 3             # M. CoST §4.1 and TIGER §4.1.3: 3
  # One codebook shared by all levels (True) or one per level (False, TIGER §3.1.1 and CoST
  # preprint §3.1.1 "distinct codebooks of size K for each of the m levels"). CoST RecSys'24
  # §4.1 / preprint §4.1 say "shared"; DEVIATION: the `cost` preset uses per-level codebooks,
  # because with a shared one the deeper levels' (smaller) residuals reach only part of the codes:
  # measured per-level usage 0.84/0.72/0.56 on the acceptance data (20k clustered items, 50
  # epochs), failing the >= 80% target. Set shared_codebook=True for the §4.1 wording.
  shared_codebook: bool = False
  # How ||.||^2 in L_mse and L_rq is reduced over features: "sum" (the papers' formula) or
  # "mean" (per element, as common RQ-VAE code does). With "mean" the reconstruction term of
  # 768-d unit-norm embeddings is ~1e-3 and barely trains the encoder (see the `tiger` preset).
  loss_reduction: str = "sum"
  beta: float = 0.25              # commitment weight in L_rq. CoST §4.1, TIGER §4.1.3: 0.25
  alpha: float = 0.1              # weight of L_cl in L_co. CoST §4.1: 0.1
  tau: float = 0.1                # InfoNCE temperature. CoST §4.1: 0.1 (Fig. 3 also 0.5, 1.0)
  optimizer: str = "adam"         # CoST §4.1: Adam; TIGER §4.1.3: Adagrad (see PRESETS)
  learning_rate: float = 1e-4     # CoST §4.1: 1e-4; TIGER §4.1.3: 0.4 (see PRESETS)
  batch_size: int = 256           # CoST §4.1: 256; TIGER §4.1.3: 1024
  # Epochs. Papers: CoST Fig. 3 trains 20/50/100 epochs; TIGER §4.1.3 trains 20k epochs.
  # Default here: 50 (cost) / 100 (tiger), which finish in a few minutes on 2 CPU cores
  # for ~20k items (see README / tools/bench_tokenizer.py).
  epochs: int = 50
  kmeans_init: bool = True        # k-means init on the first batch (CoST §3.1.1, TIGER §3.1.1)
  kmeans_iters: int = 100         # CoST preprint §3.1.1: 100 iterations
  # Dead-code remedy (not in the papers; keeps usage high, cf. TIGER's ">= 80% usage" §4.1.3):
  # every `dead_code_window` steps, codes unused at their level during the window are re-seeded
  # from random current residuals of that level.
  dead_code_remedy: bool = True
  dead_code_window: int = 100
  # Unique IDs: cost_reassign (CoST preprint §4.1 "no items share the same code"; colliding items
  # move to the nearest free last-level code), tiger_extra_token (TIGER §3.1.3 / §4.1.3), none.
  dedup: str = "cost_reassign"
  lsh_bits: int = 8               # h hyperplanes per level, TIGER §4.3.2: 8 (codes 0..2^h-1)
  lsh_levels: int = 4             # m levels, TIGER §4.3.2: 4
  neighbor_k: int = 10            # K of neighbour precision@K (CoST preprint §4.1 "Top-K
                                  # precision"; the paper does not give K)
  neighbor_sample: int = 5000     # items sampled for neighbour precision when N is larger
  log_every_s: float = 2.0        # progress line interval (seconds)
  # Catalogues larger than memory (not in the papers): an embeddings .npy larger than this many
  # GB is memory-mapped and streamed (training batches, the k-means sample, ID assignment) in
  # pieces of `stream_chunk_rows` rows, so memory does not grow with the catalogue beyond the
  # IDs (cost_jax.tokenizer.embeddings.EmbeddingStream); 0 = always stream.
  stream_above_gb: float = 2.0
  stream_chunk_rows: int = 65536

  def validate(self) -> "TokenizerConfig":
    if self.loss not in ("rqvae", "cost", "rqvae+cost"):
      raise UserError(f"config: loss must be rqvae, cost or rqvae+cost, got {self.loss!r}")
    if self.dedup not in DEDUP_MODES:
      raise UserError(f"config: dedup must be one of {DEDUP_MODES}, got {self.dedup!r}")
    if self.loss_reduction not in ("sum", "mean"):
      raise UserError(f"config: loss_reduction must be sum or mean, got {self.loss_reduction!r}")
    if self.optimizer not in ("adam", "adagrad", "sgd"):
      raise UserError(f"config: optimizer must be adam, adagrad or sgd, got {self.optimizer!r}")
    for name in ("latent_dim", "codebook_size", "num_levels", "batch_size", "kmeans_iters",
                 "dead_code_window", "lsh_bits", "lsh_levels", "neighbor_k", "neighbor_sample",
                 "stream_chunk_rows"):
      if getattr(self, name) < 1:
        raise UserError(f"config: {name} must be >= 1, got {getattr(self, name)}")
    if self.stream_above_gb < 0:
      raise UserError(f"config: stream_above_gb must be >= 0, got {self.stream_above_gb}")
    if self.epochs < 0:
      raise UserError(f"config: epochs must be >= 0, got {self.epochs}")
    if any(int(h) < 1 for h in self.hidden_dims):
      raise UserError(f"config: hidden_dims must all be >= 1, got {tuple(self.hidden_dims)}")
    for name in ("tau", "learning_rate"):
      if not float(getattr(self, name)) > 0:
        raise UserError(f"config: {name} must be > 0, got {getattr(self, name)}")
    for name in ("alpha", "beta"):
      if not float(getattr(self, name)) >= 0:
        raise UserError(f"config: {name} must be >= 0, got {getattr(self, name)}")
    if not 1 <= self.lsh_bits <= 30:
      raise UserError(f"config: lsh_bits must be in 1..30, got {self.lsh_bits}")
    return self

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["hidden_dims"] = list(self.hidden_dims)
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TokenizerConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in d.items() if k in known}
    if "hidden_dims" in kw:
      kw["hidden_dims"] = tuple(kw["hidden_dims"])
    return cls(**kw)


PRESETS: dict[str, dict[str, Any]] = {
    # CoST RecSys'24 §4.1 (= preprint §4.1).
    # shared_codebook=False is a deviation from §4.1, see the field's comment.
    "cost": dict(latent_dim=96, codebook_size=64, num_levels=3, shared_codebook=False,
                 optimizer="adam", learning_rate=1e-4, batch_size=256, epochs=50,
                 dedup="cost_reassign"),
    # TIGER §4.1.3 (20k epochs in the paper; 300 here). DEVIATION, measured on Beauty's 12,101
    # mpnet item embeddings (neighbour precision@10 after 100 epochs, tools/tokenizer_ablation
    # in README): §4.1.3's Adagrad at lr 0.4 (optax: accumulator starts at 0.1) with the
    # per-element loss .005 (.023 after 1,000 epochs), with the summed loss at lr 0.1 / 0.05
    # .062 / .097 (at 0.4 it diverges); Adam at lr 1e-3 with the summed loss (the papers'
    # formula) .453, above residual k-means' .412. The preset takes Adam 1e-3 and the sum;
    # TokenizerConfig.optimizer='adagrad', learning_rate=0.4, loss_reduction='mean' is §4.1.3.
    "tiger": dict(latent_dim=32, codebook_size=256, num_levels=3, shared_codebook=False,
                  optimizer="adam", learning_rate=1e-3, batch_size=1024, epochs=300,
                  loss_reduction="sum",
                  dedup="tiger_extra_token"),
}

METHOD_PRESET = {"cost": "cost", "rqvae+cost": "cost", "rqkmeans": "cost", "random": "cost",
                 "rqvae": "tiger", "lsh": "tiger"}


def task_prefix(method: str) -> str:
  """The SeqIO-safe name of a method: task names allow [A-Za-z0-9_] ("rqvae+cost" -> "rqvae_cost")."""
  return re.sub(r"[^0-9A-Za-z_]", "_", method)


def task_name(method: str, dataset: str) -> str:
  """The SeqIO task of (tokenizer method, dataset name): `{task_prefix(method)}_{dataset}`."""
  return task_prefix(f"{method}_{dataset}")


def coerce(key: str, value: Any) -> Any:
  """`value` checked against TokenizerConfig field `key` (one line naming it otherwise)."""
  return gin_cli.check_type(TokenizerConfig, key, value, where="config: ")


def make_config(method: str, overrides: Mapping[str, Any] | None = None) -> TokenizerConfig:
  """Preset for `method` (or overrides['preset']), then overrides (typed values)."""
  if method not in METHODS:
    raise UserError(f"--method: unknown method {method!r}; expected one of {', '.join(METHODS)}")
  overrides = dict(overrides or {})
  preset = overrides.pop("preset", None) or METHOD_PRESET[method]
  if preset not in PRESETS:
    raise UserError(f"config: unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
  values: dict[str, Any] = dict(PRESETS[preset])
  values["preset"] = preset
  if method in NEURAL_METHODS:
    values["loss"] = method
    if "loss" in overrides and coerce("loss", overrides["loss"]) != method:
      raise UserError(f"--method {method} and TokenizerConfig.loss={overrides['loss']!r} contradict each "
                      f"other (the method is the loss); use --method {overrides['loss']}")
  for k, v in overrides.items():
    values[k] = coerce(k, v)
  return TokenizerConfig(**values).validate()
