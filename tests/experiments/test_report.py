"""Tests for cost_jax.report: exact table values, Impr., orderings, CSV columns, PNGs."""

import csv
import io
import os

import numpy as np
import pytest

from cost_jax.experiments import report

KEYS = ["recall@5", "recall@10", "recall@20", "recall@40", "ndcg@5", "ndcg@10", "ndcg@20",
        "ndcg@40", "invalid_id_rate", "num_users"]


def _row(method, seed, base):
  # recall@k = base * k / 5, ndcg@k = base * k / 10
  r = {"method": method, "seed": seed}
  for k in (5, 10, 20, 40):
    r[f"recall@{k}"] = base * k / 5
    r[f"ndcg@{k}"] = base * k / 10
  r["invalid_id_rate"] = 0.0
  r["num_users"] = 943
  return r


def fake_rows():
  rows = []
  for seed, delta in zip((0, 1, 2), (-0.001, 0.0, 0.001)):
    rows.append(_row("random", seed, 0.010 + delta))
    rows.append(_row("lsh", seed, 0.015 + delta))
    rows.append(_row("rqvae", seed, 0.020 + delta))
    rows.append(_row("cost", seed, 0.025 + delta))
    rows.append(_row("rqvae+cost", seed, 0.022 + delta))
  rows.append(_row("popularity", 0, 0.005))
  return rows


def test_summarize_mean_and_sample_std():
  s = report.summarize(fake_rows())
  mean, std, n = s["rqvae"]["recall@5"]
  assert (mean, n) == (pytest.approx(0.020), 3)
  assert std == pytest.approx(0.001)  # sample std of (-1, 0, 1) * 1e-3
  assert s["popularity"]["ndcg@10"] == (pytest.approx(0.005), 0.0, 1)
  assert list(s) == ["random", "lsh", "rqvae", "cost", "rqvae+cost", "popularity"]


def test_table2_exact_values_and_impr():
  s = report.summarize(fake_rows())
  md = report.table2_markdown(s)
  lines = md.splitlines()
  assert lines[0] == "| Methods | Metrics | @5 | @10 | @20 | @40 |"
  # rqvae rows: NDCG = 0.02 * k/10, Recall = 0.02 * k/5, std 0.001 * k/10 and 0.001 * k/5
  i = next(j for j, l in enumerate(lines) if l.startswith("| L_re (RQ-VAE)"))
  assert lines[i] == ("| L_re (RQ-VAE) (n=3) | NDCG | 0.0100 ± 0.0005 | 0.0200 ± 0.0010 | "
                      "0.0400 ± 0.0020 | 0.0800 ± 0.0040 |")
  assert lines[i + 1] == ("|  | Recall | 0.0200 ± 0.0010 | 0.0400 ± 0.0020 | 0.0800 ± 0.0040 | "
                          "0.1600 ± 0.0080 |")
  # Impr. = (0.025 - 0.020) / 0.020 = +25% at every k, NDCG and Recall.
  assert lines[-2] == "| Impr. | NDCG | +25.00% | +25.00% | +25.00% | +25.00% |"
  assert lines[-1] == "|  | Recall | +25.00% | +25.00% | +25.00% | +25.00% |"
  # single seed: no ± part
  pop = next(l for l in lines if l.startswith("| MostPop"))  # in the same table when asked
  assert pop == "| MostPop (n=1) | NDCG | 0.0025 | 0.0050 | 0.0100 | 0.0200 |"


def test_impr_uses_means_not_ratio_of_seeds():
  rows = [_row("rqvae", 0, 0.01), _row("rqvae", 1, 0.03), _row("cost", 0, 0.03),
          _row("cost", 1, 0.03)]
  md = report.table2_markdown(report.summarize(rows))
  assert "| Impr. | NDCG | +50.00% |" in md  # 0.03 / mean(0.01, 0.03) - 1


def test_orderings_computed_from_numbers():
  rows = fake_rows()
  checks = {(c["better"], c["worse"]): c for c in report.check_orderings(report.summarize(rows))}
  assert checks[("cost", "rqvae")]["verdict"] == "held"
  assert checks[("rqvae", "random")]["held"] == 8
  assert checks[("rqvae", "lsh")]["verdict"] == "held"
  # flip lsh above rqvae on recall only
  for r in rows:
    if r["method"] == "lsh":
      for k in (5, 10, 20, 40):
        r[f"recall@{k}"] = 1.0
  checks = {(c["better"], c["worse"]): c for c in report.check_orderings(report.summarize(rows))}
  c = checks[("rqvae", "lsh")]
  assert (c["verdict"], c["held"], c["total"]) == ("partly held", 4, 8)
  assert not c["per_metric"]["recall@5"] and c["per_metric"]["ndcg@5"]


def test_csv_columns_and_rows():
  text = report.rows_to_csv(fake_rows())
  reader = csv.DictReader(io.StringIO(text))
  assert reader.fieldnames == ["method", "seed"] + KEYS
  rows = list(reader)
  assert len(rows) == 16
  assert [r["method"] for r in rows[:3]] == ["random"] * 3
  assert [r["seed"] for r in rows[:3]] == ["0", "1", "2"]
  assert float(rows[0]["recall@40"]) == pytest.approx(0.009 * 8)


def test_write_report_files(tmp_path):
  stats = [{"method": m, "seed": s, "usage": [1.0, 0.5 + 0.1 * s, 0.25], "collided_items": 10 * s,
            "largest_group": 2 + s, "id_length": 3}
           for m in ("random", "rqvae", "cost") for s in (0, 1, 2)]
  timings = [{"stage": "data", "status": "ran", "seconds": 3.0},
             {"stage": "train-cost-s0", "status": "cached", "seconds": 61.0}]
  paths = report.write_report(str(tmp_path), fake_rows(), tokenizer_stats=stats, timings=timings,
                              notes=["dataset: ML-100K"], setup=["profile cpu"])
  for name in ("results.md", "results.csv", "metrics.png", "codebook_usage.png", "collisions.png"):
    assert os.path.getsize(paths[name]) > 0, name
    if name.endswith(".png"):
      with open(paths[name], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  md = open(paths["results.md"]).read()
  assert "| Impr. | NDCG | +25.00%" in md
  assert "dataset: ML-100K" in md
  assert "**held**" in md
  assert "| L_co (CoST) | 3 | 1.00 / 0.60 / 0.25 | 10 | 3 | 3 | - | - |" in md
  assert "| train-cost-s0 | cached | 0:01:01 | n/a |" in md
  assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_improvement_zero_base_is_nan():
  assert np.isnan(report.improvement(0.1, 0.0))
  assert report.improvement(0.3, 0.2) == pytest.approx(0.5)


def test_non_numeric_metric_values_are_kept_in_csv_but_not_averaged():
  rows = [dict(_row("cost", 0, 0.02), split="test"), dict(_row("cost", 1, 0.04), split="test")]
  s = report.summarize(rows)
  assert "split" not in s["cost"] and s["cost"]["recall@5"][0] == pytest.approx(0.03)
  lines = report.rows_to_csv(rows).splitlines()
  assert lines[0].endswith(",split") and lines[1].endswith(",test")


def test_orderings_gap_against_spread():
  # cost - rqvae = 0.005 at recall@5; std 0.001 each -> combined 0.0014: a clear gap.
  checks = {(c["better"], c["worse"]): c for c in report.check_orderings(
      report.summarize(fake_rows()))}
  c = checks[("cost", "rqvae")]
  assert (c["clear_held"], c["clear_failed"]) == (8, 0)
  # with a huge spread for rqvae nothing is clear
  rows = fake_rows() + [_row("rqvae", 3, 0.5)]
  c = {(c["better"], c["worse"]): c for c in report.check_orderings(
      report.summarize(rows))}[("cost", "rqvae")]
  assert c["clear_held"] == 0 and c["verdict"] == "did not hold"
  assert "n/a (needs >= 2 seeds)" in report.orderings_markdown(report.check_orderings(
      report.summarize([_row("cost", 0, 0.2), _row("rqvae", 0, 0.1)])))


def test_learning_curves_table_names_the_scored_point_and_the_stop(tmp_path):
  curves = {"TIGER s0": [{"step": 500, "recall@10": 0.05}, {"step": 1000, "recall@10": 0.07,
                                                             "best": True},
                         {"step": 1500, "recall@10": 0.06, "stop_reason": "patience"}],
            "SASRec s0": [{"epoch": 1, "recall@10": 0.02, "best": True},
                          {"epoch": 2, "recall@10": 0.01, "stop_reason": "num_epochs"}]}
  paths = report.write_report(str(tmp_path), fake_rows(), curves=curves)
  md = open(paths["results.md"]).read()
  assert ("| TIGER s0 | 0.0700 at step 1000 | 0.0600 at step 1500 | no better validation for "
          "`patience` validations |") in md
  assert "| SASRec s0 | 0.0200 at epoch 1 | 0.0100 at epoch 2 | its epoch budget |" in md
  assert os.path.getsize(paths["learning_curves.png"]) > 1000


def test_tokenizer_table_prints_counts_as_counts():
  one = [{"method": "rqvae", "seed": 0, "usage": [1.0, 1.0], "collided_items": 1194,
          "largest_group": 18, "id_length": 4}]
  assert "| L_re (RQ-VAE) | 1 | 1.00 / 1.00 | 1194 | 18 | 4 |" in report.tokenizer_table_markdown(one)
  two = one + [{"method": "rqvae", "seed": 1, "usage": [1.0, 0.5], "collided_items": 1195,
                "largest_group": 18, "id_length": 4}]
  assert "| 1.00 / 0.75 | 1194.5 | 18 | 4 |" in report.tokenizer_table_markdown(two)
