"""cost_jax.gin_cli: T5X's flags, gin's parser, bindings checked against the dataclass fields."""

import argparse
import dataclasses
from typing import Mapping

import pytest

from cost_jax import gin_cli
from cost_jax.io import UserError


@dataclasses.dataclass(frozen=True)
class Knobs:
  steps: int = 10
  rate: float = 0.1
  on: bool = False
  name: str = "x"
  sizes: tuple[int, ...] = (1,)
  extra: Mapping[str, int] = dataclasses.field(default_factory=dict)


gin_cli.register(Knobs)


def _parser():
  p = argparse.ArgumentParser()
  gin_cli.add_flags(p, old_set_example="Knobs.steps=5")
  return p


def test_short_form_becomes_a_binding_and_set_answers_with_the_spelling():
  args = gin_cli.parse_args(_parser(), ["--gin.Knobs.steps=5", "--gin_param", "Knobs.on = True"])
  assert args.gin_param == ["Knobs.on = True", "Knobs.steps = 5"]
  with pytest.raises(UserError, match=r"--set is gone.*--gin\.Knobs\.rate=0\.5"):
    gin_cli.parse_args(_parser(), ["--set", "rate=0.5"],
                       set_spelling=lambda k, v: f"Knobs.{k} = {v}")
  with pytest.raises(SystemExit):
    gin_cli.parse_args(_parser(), ["--bogus"])


def test_bindings_are_typed_at_the_door():
  with gin_cli.fresh():
    gin_cli.parse([], ["Knobs.steps = 5", "Knobs.rate = 1", "Knobs.sizes = [2, 3]",
                       "Knobs.extra = {'a': 1}", "s/Knobs.name = 'y'"])
    assert gin_cli.bindings(Knobs) == {"steps": 5, "rate": 1, "sizes": (2, 3), "extra": {"a": 1}}
    assert gin_cli.bindings(Knobs, "s")["name"] == "y"  # a scope adds to the outer bindings
  for bad, msg in (("Knobs.steps = 2.5", "Knobs.steps expects int, got 2.5"),
                   ("Knobs.on = 1", "Knobs.on expects bool, got 1"),
                   ("Knobs.name = 3", "Knobs.name expects str"),
                   ("Knobs.sizes = 3", "Knobs.sizes expects")):
    with gin_cli.fresh():
      gin_cli.parse([], [bad])
      with pytest.raises(UserError, match=msg):
        gin_cli.bindings(Knobs)
  with gin_cli.fresh(), pytest.raises(UserError, match="gin: .*nope"):
    gin_cli.parse([], ["Knobs.nope = 1"])
  with pytest.raises(UserError, match="gin file not found"):
    gin_cli.parse(["no/such/file.gin"])
