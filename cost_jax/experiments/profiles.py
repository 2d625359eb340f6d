"""Profiles of the reproduction: what runs, with which settings.

A profile is a gin file, gin/profiles/<name>.gin, that states only what it changes: the seq2seq
model and schedule default to TIGER's (the TrainConfig / TransformerConfig defaults, §4.1.3), the
tokenizers to their presets (cost_jax.tokenizer.config), SASRec and COVE to theirs. The bindings
of each class fill the `Profile` section that its stage reads (`override`), so the stage configs
(and their cache hashes) hold exactly what was changed. More gin files and `--gin.X=v` bindings
on the command line change any value the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from cost_jax import gin_cli
from cost_jax.baselines.sasrec import SASRecConfig
from cost_jax.experiments.capabilities import CapabilityConfig
from cost_jax.io import UserError
from cost_jax.results import KS
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq.network import TransformerConfig
from cost_jax.tokenizer.config import ABLATION_METHODS, METHODS, TokenizerConfig, task_prefix
from cost_jax.tokenizer.cove import CoveConfig

# The SASRec rows: baseline name -> its loss (None: the profile's SASRecConfig.loss). TIGER's
# Table 1 quotes SASRec trained with its paper's loss (BCE, one sampled negative per position);
# our default row uses full-softmax cross-entropy, the stronger setting most recent work uses.
SASREC_ROWS = {"sasrec": None, "sasrec_bce": "bce"}
DEFAULT_BASELINES = ("popularity", "transition", "sasrec", "cove_sasrec")
BASELINES = DEFAULT_BASELINES + ("sasrec_bce",)
PROFILE_DIR = os.path.join("gin", "profiles")


@dataclasses.dataclass(frozen=True)
class Profile:
  """Everything the pipeline runs. Section dicts are passed to the stage they name."""

  name: str
  description: str
  title: str = "CoST ablation"  # the report's title: "<title> on <dataset> (profile: <name>)"
  dataset: str = "ml100k"
  # cost_jax.data.prepare options of the data stage; "loader" picks the loader when the
  # dataset name is not one (e.g. dataset "beauty" with {"loader": "recbole", "recbole_dir": D}).
  data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  methods: tuple[str, ...] = ABLATION_METHODS + ("cove",)  # + TIGER on COVE's learned IDs
  seeds: tuple[int, ...] = (0, 1, 2)
  baselines: tuple[str, ...] = DEFAULT_BASELINES
  ks: tuple[int, ...] = KS  # CoST Table 2 columns
  # cost_jax.data.embed.embed_dataset kwargs. Papers: Sentence-T5 (768-d), CoST §4.1, TIGER §4.1.3.
  embed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # The sections below are filled from other classes' gin bindings (see `override`).
  # cost_jax.tokenizer.fit.fit overrides for every method ("*") and per method.
  tokenizer: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  # cost_jax.seq2seq.trainer.train_and_evaluate keyword arguments (model size, steps, decoding).
  tiger: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # cost_jax.baselines.sasrec.SASRecConfig fields (also COVE_SASRec's host and the `cove`
  # tokenizer's host, so that COVE_SASRec is paired with the SASRec row by seed).
  sasrec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # SASRecConfig fields of one SASRec row only, from `<row>/SASRecConfig.X` bindings (e.g.
  # `sasrec_bce/SASRecConfig.patience = 30`): {row: {field: value}}.
  sasrec_rows: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  # cost_jax.tokenizer.cove.CoveConfig fields (COVE_SASRec and the `cove` tokenizer method).
  cove: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # TIGER's capability studies (cost_jax.experiments.capabilities.DEFAULTS): "studies" picks
  # some of cold_start, diversity, invalid_ids; none by default.
  capabilities: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def sasrec_settings(self, row: str) -> dict[str, Any]:
    """The SASRecConfig fields of SASRec row `row` (a key of SASREC_ROWS): the profile's,
    the row's loss, then the row's own bindings."""
    loss = SASREC_ROWS[row]
    return {**self.sasrec, **({"loss": loss} if loss else {}), **self.sasrec_rows.get(row, {})}

  def tokenizer_overrides(self, method: str) -> dict[str, Any]:
    out = dict(self.tokenizer.get("*", {}))
    out.update(self.tokenizer.get(method, {}))
    return out

  def to_json_dict(self) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(self), default=list))


# Profile fields filled from the bindings of other classes, never bound on Profile itself.
DERIVED = {"tiger": "TrainConfig.X / TransformerConfig.X", "sasrec": "SASRecConfig.X",
           "sasrec_rows": "<row>/SASRecConfig.X (row: one of the SASREC_ROWS)",
           "cove": "CoveConfig.X", "tokenizer": "TokenizerConfig.X or <method>/TokenizerConfig.X",
           "capabilities": "CapabilityConfig.X"}


def register() -> None:
  gin_cli.register(Profile, TrainConfig, TransformerConfig, TokenizerConfig, SASRecConfig,
                   CoveConfig, CapabilityConfig)


def names() -> list[str]:
  """The profiles: gin/profiles/<name>.gin (files starting with _ are pieces they include)."""
  d = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   PROFILE_DIR)
  return sorted(f[:-4] for f in os.listdir(d) if f.endswith(".gin") and not f.startswith("_"))


def override(base: Profile, gin_files: Sequence[str] = (),
             gin_params: Sequence[str] = ()) -> Profile:
  """`base` updated by the bindings of gin files + params (each class's bindings update the
  section it feeds: TrainConfig/TransformerConfig -> tiger, SASRecConfig -> sasrec, ...)."""
  register()
  with gin_cli.fresh():
    gin_cli.parse(gin_files, gin_params)
    top = gin_cli.bindings(Profile)
    wrong = sorted(set(top) & set(DERIVED))
    if wrong:
      raise UserError(f"Profile.{wrong[0]}: set {DERIVED[wrong[0]]} instead")
    tiger = {**gin_cli.bindings(TrainConfig), **gin_cli.bindings(TransformerConfig)}
    sasrec = gin_cli.bindings(SASRecConfig)
    rows = copy.deepcopy({k: dict(v) for k, v in base.sasrec_rows.items()})
    for row in SASREC_ROWS:
      scoped = {k: v for k, v in gin_cli.bindings(SASRecConfig, row).items()
                if k not in sasrec or sasrec[k] != v}
      if scoped:
        rows.setdefault(row, {}).update(scoped)
    cove = gin_cli.bindings(CoveConfig)
    caps = gin_cli.bindings(CapabilityConfig)
    every = gin_cli.bindings(TokenizerConfig)
    tokenizer = copy.deepcopy({k: dict(v) for k, v in base.tokenizer.items()})
    if every:
      tokenizer.setdefault("*", {}).update(every)
    for m in METHODS:
      scoped = {k: v for k, v in gin_cli.bindings(TokenizerConfig, task_prefix(m)).items()
                if k not in every or every[k] != v}
      if scoped:
        tokenizer.setdefault(m, {}).update(scoped)
  return dataclasses.replace(
      base, **top, tiger={**base.tiger, **tiger}, sasrec={**base.sasrec, **sasrec},
      sasrec_rows=rows,
      cove={**base.cove, **cove}, capabilities={**base.capabilities, **caps},
      tokenizer=tokenizer)


def load(name: str, gin_files: Sequence[str] = (), gin_params: Sequence[str] = ()) -> Profile:
  """Profile `name` (gin/profiles/<name>.gin), then more gin files and bindings."""
  if name not in names():
    raise UserError(f"--profile {name!r}: unknown (known: {', '.join(names())})")
  return override(Profile(name=name, description=""),
                  [os.path.join(PROFILE_DIR, f"{name}.gin"), *gin_files], gin_params)


def set_spelling(key: str, value: str) -> str | None:
  """The gin binding that replaces the old `--set key=value` of the reproduction."""
  parts = key.split(".")
  if len(parts) == 1 and parts[0] in ("seeds", "ks", "methods", "baselines"):
    items = [v.strip() for v in value.strip("()[]").split(",") if v.strip()]
    shown = ", ".join(v if v.lstrip("-").isdigit() else repr(v) for v in items)
    return f"Profile.{parts[0]} = ({shown},)" if len(items) == 1 else \
        f"Profile.{parts[0]} = ({shown})"
  if len(parts) == 1 and parts[0] in {f.name for f in dataclasses.fields(Profile)}:
    return f"Profile.{parts[0]} = {value!r}"
  if len(parts) == 2 and parts[0] == "tiger":
    for cls in (TrainConfig, TransformerConfig):
      if parts[1] in gin_cli.field_names(cls):
        return f"{cls.__name__}.{parts[1]} = {value}"
  classes = {"sasrec": SASRecConfig, "cove": CoveConfig, "tokenizer": TokenizerConfig,
             "capabilities": CapabilityConfig}
  if len(parts) == 2 and parts[0] in classes:
    return f"{classes[parts[0]].__name__}.{parts[1]} = {value}"
  if len(parts) == 3 and parts[0] == "tokenizer":
    return f"{task_prefix(parts[1])}/TokenizerConfig.{parts[2]} = {value}"
  if len(parts) == 2 and parts[0] in ("embed", "data"):
    return f"Profile.{parts[0]} = {{'{parts[1]}': {value!r}}}"
  return None
