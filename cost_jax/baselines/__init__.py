"""Baselines for context: the most-popular list and SASRec, scored like the seq2seq model."""
