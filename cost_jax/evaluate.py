"""`python -m cost_jax.evaluate`: the entry point; the code lives in cost_jax.seq2seq.cli."""

from cost_jax import io

io.quiet_tensorflow_logs()  # before TensorFlow loads
from cost_jax.seq2seq.cli import evaluate_main as main  # noqa: E402

if __name__ == "__main__":
  raise SystemExit(main())
