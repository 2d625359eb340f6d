"""cost-jax: generative recommendation with semantic IDs in JAX/Flax.

Stages, one folder each (imports flow downwards only; docs/architecture.md has the module map):
  data/         datasets -> processed leave-one-out splits + item-text embeddings
  tokenizer/    embeddings -> unique semantic IDs (CoST / RQ-VAE / baselines / COVE)
  seq2seq/      SeqIO tasks, the T5X-style encoder-decoder, trie-constrained decoding, the
                built-in trainer and evaluator, TIGER's capability studies
  baselines/    MostPop, SASRec, COVE_SASRec, Semantic_KNN
  experiments/  the one-command reproduction: profiles, stage cache, report, paired tests
Entry points: python -m cost_jax.{data,tokenize,train,evaluate,reproduce}.
"""

__version__ = "0.1.0"
