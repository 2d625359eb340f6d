"""cost_jax/experiments/notes.py: the report's setup and deviation lines say what ran."""

import os

import pandas as pd

from cost_jax.data import processed
from cost_jax.experiments import notes


def test_schedule_is_described_as_run():
  assert notes._schedule_desc({"lr_schedule": "rsqrt", "lr_constant_steps": 10000}) == (
      "10000 constant steps, then inverse sqrt")
  assert notes._schedule_desc({"lr_schedule": "wsd", "lr_constant_steps": 2500,
                               "lr_decay_steps": 1500}) == (
      "constant for 2500 steps, then linear to 0 over 1500 (wsd)")
  assert notes._schedule_desc({"lr_schedule": "constant"}) == "constant"


def _items(path, **fields):
  os.makedirs(path, exist_ok=True)
  n = len(next(iter(fields.values())))
  pd.DataFrame({"item_index": range(n), "item_id": [f"i{i}" for i in range(n)],
                "text": ["t"] * n, **fields}).to_parquet(os.path.join(path, processed.ITEMS_FILE))
  return str(path)


def test_text_coverage_counts_non_empty_values(tmp_path):
  d = _items(tmp_path / "a", title=["x", "", " ", None], keywords=["k", "k", "k", "k"])
  assert notes.text_coverage(d) == (4, {"title": 1, "keywords": 4})


def test_a_tiger_cut_with_few_titles_is_reported_not_comparable(tmp_path):
  # Sports-like: titles for 1 of 4 items.
  lines = notes._coverage_notes((4, {"title": 1, "keywords": 4}), True, "sports")
  assert lines[0] == "Item text fields (items with a value): title 1 of 4 (25%), keywords 4 of 4 (100%)."
  assert lines[1].startswith("NOT COMPARABLE with TIGER's sports row: a title for 25% of the items")
  # Beauty-like: 12,094 of 12,101 titles is comparable; another dataset never gets the warning.
  assert len(notes._coverage_notes((12101, {"title": 12094, "brand": 9979}), True, "beauty")) == 1
  assert len(notes._coverage_notes((4, {"title": 1}), False, "mine")) == 1
  assert "a title for no item" in notes._coverage_notes((4, {"keywords": 4}), True, "toys")[1]


def test_tokenizer_notes_describe_each_method_as_it_ran():
  from cost_jax.experiments import profiles
  tiger = notes.tokenizer_notes(profiles.load("tiger-cpu"))
  rqvae = next(line for line in tiger if line.startswith("IDs of rqvae:"))
  # The tiger preset's shape and budget, not CoST's architecture.
  assert "preset `tiger`: latent 32, 3 levels x 256 codes" in rqvae and "300 epochs" in rqvae
  assert "a 4th token" in rqvae
  assert "Tokenizer epochs: rqvae 300, cost 400 (" in "\n".join(tiger)
  assert not any("only the loss differs" in line for line in tiger)  # rqvae and cost differ
  cpu = profiles.load("cpu")
  lines = notes.tokenizer_notes(cpu)
  assert lines[-1] == "rqvae, cost, rqvae+cost share one architecture, so only the loss differs " \
      "between them."
  assert any(line.startswith("IDs of lsh: 4 levels x 8 hyperplanes") for line in lines)


def test_the_reports_command_reads_back_as_it_was_typed():
  import shlex  # pylint: disable=import-outside-toplevel
  args = ["--methods", "", "--baselines", "sasrec,cove_sasrec",
          "--gin.TrainConfig.optimizer='adamw'", "--output", "/tmp/a b", "--gin.X=\"q\""]
  line = " ".join(notes.shell_arg(a) for a in args)
  assert line.startswith("--methods '' --baselines sasrec,cove_sasrec "
                         "\"--gin.TrainConfig.optimizer='adamw'\" ")
  assert shlex.split(line) == args
