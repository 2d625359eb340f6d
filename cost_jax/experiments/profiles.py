"""Profiles of the reproduction: what runs, with which settings (one frozen dataclass each).

A profile states only what it changes: the seq2seq model and schedule default to TIGER's
(cost_jax.seq2seq TrainConfig / TransformerConfig defaults, §4.1.3), the tokenizers to their
presets (cost_jax.tokenizer.config). `--set section.key=value` overrides any value.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import typing
from typing import Any, Mapping, Sequence

from cost_jax.baselines.sasrec import SASRecConfig
from cost_jax.io import UserError
from cost_jax.seq2seq.config import TrainConfig
from cost_jax.seq2seq.network import TransformerConfig
from cost_jax.tokenizer.config import ABLATION_METHODS
from cost_jax.tokenizer.cove import CoveConfig

BASELINES = ("popularity", "sasrec", "cove_sasrec")


@dataclasses.dataclass(frozen=True)
class Profile:
  """Everything the pipeline runs. Section dicts are passed to the stage they name."""

  name: str
  description: str
  dataset: str = "ml100k"
  # cost_jax.data.prepare options of the data stage; "loader" picks the loader when the
  # dataset name is not one (e.g. dataset "beauty" with {"loader": "recbole", "recbole_dir": D}).
  data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  methods: tuple[str, ...] = ABLATION_METHODS + ("cove",)  # + TIGER on COVE's learned IDs
  seeds: tuple[int, ...] = (0, 1, 2)
  baselines: tuple[str, ...] = BASELINES
  ks: tuple[int, ...] = (5, 10, 20, 40)  # CoST Table 2 columns
  # cost_jax.data.embed.embed_dataset kwargs. Papers: Sentence-T5 (768-d), CoST §4.1, TIGER §4.1.3.
  embed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # cost_jax.tokenizer.fit.fit overrides for every method ("*") and per method.
  tokenizer: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  # cost_jax.seq2seq.trainer.train_and_evaluate keyword arguments (model size, steps, decoding).
  tiger: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # cost_jax.baselines.sasrec.SASRecConfig fields (also COVE_SASRec's host and the `cove`
  # tokenizer's host, so that COVE_SASRec is paired with the SASRec row by seed).
  sasrec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # cost_jax.tokenizer.cove.CoveConfig fields (COVE_SASRec and the `cove` tokenizer method).
  cove: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # TIGER's capability studies (cost_jax.experiments.capabilities.DEFAULTS): "studies" picks
  # some of cold_start, diversity, invalid_ids; none by default.
  capabilities: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def tokenizer_overrides(self, method: str) -> dict[str, Any]:
    out = dict(self.tokenizer.get("*", {}))
    out.update(self.tokenizer.get(method, {}))
    return out

  def to_json_dict(self) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(self), default=list))


# The CoST ablation compares losses with one architecture: every neural tokenizer (L_re, L_co,
# L_re + L_co) and the random IDs use CoST's preset (§4.1: latent 96, 3 levels x 64 codes; one
# codebook per level, a deviation from §4.1's shared one (cost_jax.tokenizer.config),
# Adam 1e-4, batch 256, unique IDs by re-assignment). LSH keeps TIGER §4.3.2's hashing (8 bits x
# 4 levels) but resolves collisions the same way as the others (no extra token).
_ABLATION_TOKENIZER = {
    "rqvae": {"preset": "cost"},
    "cost": {"preset": "cost"},
    "rqvae+cost": {"preset": "cost"},
    "random": {"preset": "cost"},
    "lsh": {"dedup": "cost_reassign"},
}

PAPER = Profile(
    name="paper",
    description=("TIGER-size seq2seq model and schedule (TIGER §4.1.3: 4+4 layers, d_model 128, "
                 "6 heads x 64, MLP 1024, ReLU, dropout 0.1, batch 256, lr 0.01 for 10k steps then "
                 "inverse sqrt, 200k steps); tokenizer presets as the papers (CoST §4.1); "
                 "for a GPU/TPU."),
    embed={"model": "all-mpnet-base-v2"},
    tokenizer={**_ABLATION_TOKENIZER, "*": {"epochs": 100}},  # CoST Fig. 3: up to 100 epochs
    # The seq2seq model and schedule are TIGER's: the TrainConfig / TransformerConfig defaults.
    tiger={},
    sasrec={"num_epochs": 200},                                  # SASRec §4
)

CPU = Profile(
    name="cpu",
    description=("small seq2seq model and short schedules so that every method x 3 seeds plus the "
                 "baselines finish in about an hour on 2 CPU cores"),
    embed={"model": "all-MiniLM-L6-v2"},
    tokenizer={**_ABLATION_TOKENIZER, "*": {"epochs": 50}},     # CoST Fig. 3 lowest: 20-50
    tiger={
        "emb_dim": 64, "num_heads": 4, "head_dim": 16,
        "num_encoder_layers": 2, "num_decoder_layers": 2,
        "mlp_dim": 256,
        "max_history": 10,  # TIGER §4.1.1: 20; halves the encoder cost on CPU
        "lr_constant_steps": 300, "num_train_steps": 1200,  # ~3 epochs of ML-100K prefixes
        "num_beams": 40, "topk": 40,
        # no validation runs (the test split is always scored on all users)
        "eval_every": 0, "eval_at_end": False, "checkpoint_every": 300,
    },
    sasrec={"num_epochs": 100},
)

# TIGER's Table 1 / Table 3 on 2 CPU cores (Amazon Beauty-sized data: ~12k items, ~22k users,
# ~131k training prefixes): TIGER at its size (the paper profile's model and optimizer, history
# 20, packed batches) trained to its best validation checkpoint, as public reproductions do:
# validation Recall@10 on a fixed sample of 4,000 validation users every 500 steps (128k
# examples, ~1 epoch of Beauty), stop after 4 validations without a better one or at the time
# budget, test scored from the best checkpoint. Each single run (tokenizer, training, test
# decode) is sized to fit 2.5 hours on 2 idle cores from the measured rates (Beauty: ~0.85
# packed steps of 256 per second; 4 min per beam-50 decode of 22k users, ~45 s for 4,000).
# Table 3's ID methods plus residual k-means (the IDs public reproductions use), one seed;
# SASRec to its best epoch (full softmax) and MostPop as context.
TIGER_CPU = dataclasses.replace(
    PAPER,
    name="tiger-cpu",
    description=("TIGER at its size on 2 CPU cores, each run trained to its best validation "
                 "checkpoint in at most ~2 hours (Table 1 and Table 3's ID methods: random, LSH, "
                 "RQ-VAE with TIGER's preset, residual k-means, CoST), one seed, MostPop and "
                 "SASRec to its best epoch"),
    methods=("random", "lsh", "rqvae", "rqkmeans", "cost"),
    seeds=(0,),
    baselines=("popularity", "sasrec"),
    tokenizer={**_ABLATION_TOKENIZER, "rqvae": {"preset": "tiger"},
               "rqkmeans": {"preset": "tiger"},
               "cost": {"preset": "cost", "epochs": 400}},  # RQ-VAE: the preset's epochs
    tiger={"num_train_steps": 20_000, "eval_every": 500, "eval_num_users": 4000,
           "patience": 4, "time_budget_min": 110.0, "checkpoint_every": 500},
    sasrec={"num_epochs": 200, "patience": 10},
)

PROFILES = {"cpu": CPU, "paper": PAPER, "tiger-cpu": TIGER_CPU}


def parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _section_fields(section: str) -> dict[str, Any] | None:
  """{field: type} of the dataclasses a section's values go to (None: untyped section)."""
  classes = {"tiger": (TrainConfig, TransformerConfig), "sasrec": (SASRecConfig,),
             "cove": (CoveConfig,)}.get(section)
  if classes is None:
    return None
  out: dict[str, Any] = {}
  for cls in classes:
    out.update(typing.get_type_hints(cls))
  return out


def _typed(item: str, section: str, key: str, value: Any) -> Any:
  """A --set value checked against its field's type here, not deep inside a stage."""
  fields = _section_fields(section)
  if fields is None:
    return value
  if key not in fields:
    raise UserError(f"--set {item!r}: {section} has no field {key!r} (known: "
                    f"{', '.join(sorted(fields))})")
  t = fields[key]
  origin = typing.get_origin(t)
  ok = True
  if t is bool:
    ok = isinstance(value, bool)
  elif t is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif t is float:  # an int stays an int: the stage's config (and its hash) is as written
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif t is str:
    value = str(value)
  elif origin is tuple:
    ok = isinstance(value, (tuple, list))
    value = tuple(value) if ok else value
  if not ok:
    name = getattr(t, "__name__", str(t))
    raise UserError(f"--set {item!r}: {section}.{key} expects {name}, got {value!r}")
  return value


def apply_overrides(profile: Profile, items: Sequence[str]) -> Profile:
  """--set key=value: methods/seeds/baselines/ks/dataset, tiger.X, sasrec.X, embed.X,
  tokenizer.X (every method) or tokenizer.<method>.X."""
  changes: dict[str, Any] = {}
  sections = {f: copy.deepcopy(dict(getattr(profile, f)))
              for f in ("data", "embed", "tokenizer", "tiger", "sasrec", "cove", "capabilities")}
  for item in items:
    if "=" not in item:
      raise UserError(f"--set {item!r}: expected key=value")
    key, raw = (s.strip() for s in item.split("=", 1))
    value = parse_value(raw)
    parts = key.split(".")
    if parts[0] in ("methods", "seeds", "baselines", "ks") and len(parts) == 1:
      vals = value if isinstance(value, (list, tuple)) else [value] if not isinstance(
          value, str) else [v.strip() for v in value.split(",") if v.strip()]
      if parts[0] in ("seeds", "ks"):
        vals = [int(v) for v in vals]
      changes[parts[0]] = tuple(vals)
    elif parts[0] in ("dataset", "description") and len(parts) == 1:
      changes[parts[0]] = str(value)
    elif parts[0] in ("data", "tiger", "sasrec", "embed", "cove", "capabilities") and \
        len(parts) == 2:
      sections[parts[0]][parts[1]] = _typed(item, parts[0], parts[1], value)
    elif parts[0] == "tokenizer" and len(parts) in (2, 3):
      method, field = ("*", parts[1]) if len(parts) == 2 else (parts[1], parts[2])
      sections["tokenizer"].setdefault(method, {})[field] = value
    else:
      raise UserError(f"--set {item!r}: unknown key {key!r} (expected methods, seeds, baselines, "
                      "ks, dataset, tiger.X, sasrec.X, cove.X, embed.X, capabilities.X, tokenizer.X or "
                      "tokenizer.M.X)")
  return dataclasses.replace(profile, **changes, **sections)
