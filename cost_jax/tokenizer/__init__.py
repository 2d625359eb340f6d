"""Stage 1, the semantic tokenizer: item embeddings -> unique semantic IDs (a tokenizer dir).

config (the method registry and presets) -> quantizer, kmeans, losses, rqvae (the math) ->
trainer (the RQ-VAE / CoST training loop), id_baselines (random, LSH, residual k-means),
dedup (unique IDs) -> fit (fit / encode) -> artifact (the tokenizer dir) -> cli.
"""
