"""`python -m cost_jax.reproduce`: the entry point; the code lives in cost_jax.experiments.cli."""

from cost_jax import io

io.quiet_tensorflow_logs()  # before TensorFlow loads
from cost_jax.experiments.cli import main as main  # noqa: E402

if __name__ == "__main__":
  raise SystemExit(main())
