"""tools/fit_gap.py: per-level teacher-forced losses of a trained model on training prefixes and
validation users, batched with padding, against a one-batch recomputation."""

import json
import os
import sys

import jax
import numpy as np
import pytest

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _TESTS)
sys.path.insert(0, os.path.join(os.path.dirname(_TESTS), "tools"))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position
import fit_gap  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax.baselines import sasrec, sasrec_train  # noqa: E402
from cost_jax.data.processed import ProcessedDataset  # noqa: E402
from cost_jax.experiments import breakdown  # noqa: E402
from cost_jax.seq2seq import model, run_dir, splits  # noqa: E402
from cost_jax.seq2seq import trainer as train  # noqa: E402


def test_levels_items_and_the_gap_over_checkpoints(tmp_path, capsys):
  os.environ.setdefault("COST_JAX_COMPILATION_CACHE", str(tmp_path / "jax_cache"))
  ds, tok = toy.write_processed(str(tmp_path / "toyds")), toy.write_tokenizer(str(tmp_path / "tok"))
  settings = dict(toy.tiny_model_overrides(), dropout_rate=0.3,
                  **toy.fast_train_overrides(num_train_steps=60))
  train.train_and_evaluate(model_dir=str(tmp_path / "m"), dataset_dir=ds, tokenizer_dir=tok,
                           eval_at_end=False, eval_test=False, show_progress=False, **settings)
  # 50 examples in batches of 16: the last batch is padded, and padding must not count.
  loo = ProcessedDataset.load(ds).leave_one_out()
  sasrec_cfg = sasrec.SASRecConfig(num_items=toy.NUM_ITEMS, max_len=8, emb_dim=16, num_blocks=1,
                                   batch_size=16, num_epochs=3)
  sasrec_dir = str(tmp_path / "sasrec")
  sasrec_train.train_and_evaluate(loo, toy.NUM_ITEMS, sasrec_cfg, output_dir=sasrec_dir)
  rows = fit_gap.main(["--model_dir", str(tmp_path / "m"), "--steps", "20,60", "--num", "50",
                       "--batch", "16", "--sasrec_dir", sasrec_dir])
  assert [r["step"] for r in rows] == [20, 60]
  for r in rows:
    assert r["num_train"] == 50 and r["num_valid"] == 50
    assert r["train_nats_per_item"] == pytest.approx(np.sum(r["train_nll"]), rel=1e-12)
    assert all(v > 0 for v in r["train_nll"] + r["valid_nll"])
  # The toy's next item is a function of the last one: 40 more steps lower the training loss.
  assert rows[1]["train_nats_per_item"] < rows[0]["train_nats_per_item"]
  # Dropout (0.3) on gives another loss than off, on the same examples.
  assert not np.allclose(rows[1]["train_nll"], rows[1]["train_nll_dropout"])

  # The validation losses at step 60, recomputed in one batch of all 50 users.
  run = run_dir.load_run(str(tmp_path / "m"), step=60)
  valid = splits.eval_subset(run.split_arrays("validation"), 50, 0)
  feats = valid.model_batch(np.arange(len(valid)))
  logits = model._forward(run.module, run.params, feats, False, None)  # pylint: disable=protected-access
  logp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
  tgt, w = feats["decoder_target_tokens"], feats["decoder_loss_weights"].astype(np.float64)
  nll = -np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
  expected = (nll * w).sum(0) / np.maximum(w.sum(0), 1.0)
  np.testing.assert_allclose(rows[1]["valid_nll"], expected, rtol=1e-4, atol=1e-6)

  # SASRec's losses on the same 50 users, from the parameters its run scored, by hand.
  config, params, _ = sasrec_train.load_scored_params(sasrec_dir)
  rows_of = {int(u): i for i, u in enumerate(loo.user_index)}
  users = [rows_of[int(u)] for u in valid.user_index]
  logits = sasrec.SASRec(config).apply(
      {"params": params}, sasrec.left_pad([loo.train[i] for i in users], config.max_len),
      method=sasrec.SASRec.score_last)
  lp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
  want = -lp[np.arange(len(users)), loo.valid_target[users]]
  assert rows[1]["sasrec_valid_nats_per_item"] == pytest.approx(want.mean(), rel=1e-5)
  # The buckets partition the users: their user-weighted means give the overall mean.
  counts = breakdown.train_counts(loo.train, toy.NUM_ITEMS)
  share = np.bincount(breakdown.buckets(counts, loo.valid_target[users]),
                      minlength=len(rows[1]["buckets"]))
  total = sum(n * v for n, v in zip(share, rows[1]["sasrec_by_bucket"]) if v is not None)
  assert total / share.sum() == pytest.approx(want.mean(), rel=1e-5)
  tiger = sum(n * v for n, v in zip(share, rows[1]["tiger_by_bucket"]) if v is not None)
  assert tiger / share.sum() == pytest.approx(rows[1]["valid_nats_per_item"], rel=1e-5)

  out = capsys.readouterr().out
  summary = json.loads(out.strip().splitlines()[-1][len("summary: "):])
  assert [s["step"] for s in summary] == [20, 60]
  assert "step 60: nats per item" in out and "50 validation users" in out
