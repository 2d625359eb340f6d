"""Stage 2, the generative recommender: semantic-ID sequences -> TIGER encoder-decoder ->
trie-constrained beam search.

vocabulary (SeqIO) | layers -> network (Flax, T5X's contract) -> model (loss, state, the one
train step) | optim | splits, batching | checkpoints | trie -> decoding (pure) | t5x_compat (gin)
| config -> task -> run_dir -> trainer, evaluator -> cli.
"""
