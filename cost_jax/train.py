"""`python -m cost_jax.train`: the entry point; the code lives in cost_jax.seq2seq.cli."""

from cost_jax.seq2seq.cli import train_main as main

if __name__ == "__main__":
  raise SystemExit(main())
