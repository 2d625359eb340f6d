"""cost_jax.experiments.published: TIGER's rows beside ours, with the difference."""

from cost_jax.experiments import published


def test_rows_beside_ours_with_the_difference():
  ours = {"rqvae": {"recall@5": (0.04, 0.0, 1), "ndcg@5": (0.03, 0.0, 1),
                    "recall@10": (0.05, 0.0, 1), "ndcg@10": (0.0284, 0.0, 1)}}
  md = "\n".join(published.markdown("Beauty", ours))
  # TIGER Table 1, Beauty: Recall@10 .0648, NDCG@10 .0384.
  assert "| TIGER Table 1: TIGER (RQ-VAE IDs) | rqvae |" in md
  assert "0.0648 / 0.0500 / -0.0148" in md and "0.0384 / 0.0284 / -0.0100" in md
  assert "| TIGER Table 3: LSH Semantic ID | not run | 0.0379 / - / -" in md
  assert published.markdown("ml100k", ours) == []  # TIGER did not report it
  assert set(published.datasets()) == {"beauty", "sports", "toys"}
  # TIGER's SASRec row (BCE, its paper's loss) beside each SASRec row of ours that ran
  sas = {"recall@5": (0.04, 0.0, 1), "ndcg@5": (0.025, 0.0, 1), "recall@10": (0.0661, 0.0, 1),
         "ndcg@10": (0.0335, 0.0, 1)}
  md = "\n".join(published.markdown("toys", {"sasrec": sas, "sasrec_bce": sas}, label=str.upper))
  assert "| TIGER Table 1: SASRec | SASREC_BCE | 0.0463 / 0.0400 / -0.0063" in md
  assert "| TIGER Table 1: SASRec | SASREC | 0.0463 / 0.0400 / -0.0063" in md
  md = "\n".join(published.markdown("beauty", {"sasrec": sas}))
  assert md.count("TIGER Table 1: SASRec") == 1 and "0.0605 / 0.0661 / +0.0056" in md
