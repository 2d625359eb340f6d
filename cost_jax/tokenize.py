"""`python -m cost_jax.tokenize`: the entry point; the code lives in cost_jax.tokenizer.cli."""

from cost_jax import io

io.quiet_tensorflow_logs()  # before TensorFlow loads
from cost_jax.tokenizer.cli import main as main  # noqa: E402

if __name__ == "__main__":
  raise SystemExit(main())
