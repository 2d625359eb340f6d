"""`python -m cost_jax.compare`: the entry point; the code lives in cost_jax.experiments.compare."""

from cost_jax.experiments.compare import main as main

if __name__ == "__main__":
  raise SystemExit(main())
