"""`python -m cost_jax.reproduce`: the entry point; the code lives in cost_jax.experiments.cli."""

from cost_jax.experiments.cli import main as main

if __name__ == "__main__":
  raise SystemExit(main())
