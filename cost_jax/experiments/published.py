"""TIGER's published numbers (NeurIPS '23, Table 1 and Table 3), to print beside ours.

Leave-one-out, full ranking; Recall@5, NDCG@5, Recall@10, NDCG@10. Keyed by the dataset name
the loaders give (the RecBole file stem for TIGER's Beauty cut: "beauty"), then by the row
of ours it compares with (a method or baseline name of the reproduction).
"""

from __future__ import annotations

from typing import Mapping, Sequence

METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def _row(*values: float) -> dict[str, float]:
  return dict(zip(METRICS, values))


# (source, our row or rows, published row). TIGER's SASRec row is SASRec with its paper's loss
# (BCE, one sampled negative): our `sasrec_bce` row; the `sasrec` row (full softmax) beside it.
PUBLISHED: dict[str, list[tuple[str, str | tuple[str, ...], dict[str, float]]]] = {
    "beauty": [
        ("TIGER Table 1: TIGER (RQ-VAE IDs)", "rqvae", _row(.0454, .0321, .0648, .0384)),
        ("TIGER Table 3: LSH Semantic ID", "lsh", _row(.0379, .0259, .0533, .0309)),
        ("TIGER Table 3: Random ID", "random", _row(.0296, .0205, .0434, .0250)),
        ("TIGER Table 1: SASRec", ("sasrec_bce", "sasrec"), _row(.0387, .0249, .0605, .0318)),
    ],
    "sports": [
        ("TIGER Table 1: TIGER (RQ-VAE IDs)", "rqvae", _row(.0264, .0181, .0400, .0225)),
        ("TIGER Table 3: LSH Semantic ID", "lsh", _row(.0215, .0146, .0321, .0180)),
        ("TIGER Table 3: Random ID", "random", _row(.007, .005, .0116, .0063)),
        ("TIGER Table 1: SASRec", ("sasrec_bce", "sasrec"), _row(.0233, .0154, .0350, .0192)),
    ],
    "toys": [
        ("TIGER Table 1: TIGER (RQ-VAE IDs)", "rqvae", _row(.0521, .0371, .0712, .0432)),
        ("TIGER Table 3: LSH Semantic ID", "lsh", _row(.0412, .0299, .0566, .0349)),
        ("TIGER Table 3: Random ID", "random", _row(.0362, .0270, .0448, .0298)),
        ("TIGER Table 1: SASRec", ("sasrec_bce", "sasrec"), _row(.0463, .0306, .0675, .0374)),
    ],
}


def markdown(dataset: str, ours: Mapping[str, Mapping[str, tuple]],
             label=lambda m: m) -> list[str]:
  """Published rows beside our means (`ours`: {method: {metric: (mean, std, n)}}), with the
  difference ours - published; nothing for a dataset TIGER did not report."""
  rows = PUBLISHED.get(dataset.lower())
  if not rows:
    return []
  md = ["## Against TIGER's published numbers", "",
        "Ours: the mean over seeds of the table above; Δ = ours − published. See the deviations "
        "below (text fields, embedding model, training budget) before reading a gap as a "
        "defect.", "",
        "| published row | ours | " + " | ".join(
            f"{m} (pub. / ours / Δ)" for m in METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS)]
  for source, methods, pub in rows:
    methods = (methods,) if isinstance(methods, str) else methods
    for method in [m for m in methods if m in ours] or [None]:
      mine = ours.get(method) if method else None
      cells = []
      for m in METRICS:
        v = (mine or {}).get(m)
        if v is None:
          cells.append(f"{pub[m]:.4f} / - / -")
        else:
          cells.append(f"{pub[m]:.4f} / {v[0]:.4f} / {v[0] - pub[m]:+.4f}")
      md.append(f"| {source} | {label(method) if mine else 'not run'} | " + " | ".join(cells)
                + " |")
  return md + [""]


def datasets() -> Sequence[str]:
  return tuple(PUBLISHED)
