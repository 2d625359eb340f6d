"""cost-jax: generative recommendation with semantic IDs in JAX/Flax.

Stages (one module, one job):
  data/         datasets -> processed leave-one-out splits + item-text embeddings
  tokenize      embeddings -> semantic IDs (CoST / RQ-VAE / baselines)
  vocabulary    semantic IDs -> seqio.Vocabulary token layout
  network       T5X-style Flax encoder-decoder (TIGER size by default)
  decoding      trie-constrained beam search
  train/evaluate  built-in trainer and evaluator (T5X users use t5x/train.py)
"""

__version__ = "0.1.0"
