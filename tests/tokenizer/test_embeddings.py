"""Catalogues larger than memory: the tokenizer streamed from a memory-mapped .npy.

Streaming reads the same batches with the same keys, so it must give the in-memory run's
parameters and IDs; and it reads pieces, never the whole matrix.
"""

from __future__ import annotations


import numpy as np
import pytest

from cost_jax.io import UserError
from cost_jax.tokenizer import artifact
from cost_jax.tokenizer import dedup as sid
from cost_jax.tokenizer import fit as fit_lib
from cost_jax.tokenizer import quality
from cost_jax.tokenizer import trainer as tt
from cost_jax.tokenizer.embeddings import EmbeddingStream, open_embeddings


def _clustered(n=300, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((12, dim))
  return (centres[rng.integers(0, 12, n)] + 0.3 * rng.standard_normal((n, dim))).astype(
      np.float32)


SMALL = {"codebook_size": 8, "num_levels": 3, "latent_dim": 8, "hidden_dims": [32, 16],
         "epochs": 3, "batch_size": 32, "kmeans_iters": 5, "dead_code_window": 4,
         "neighbor_sample": 50, "stream_chunk_rows": 64}


@pytest.mark.parametrize("method,dedup", [("cost", "cost_reassign"),
                                          ("rqvae", "tiger_extra_token")])
def test_streamed_fit_equals_in_memory_fit(tmp_path, method, dedup):
  x = _clustered()
  path = str(tmp_path / "emb.npy")
  np.save(path, x)
  settings = dict(SMALL, dedup=dedup)
  mem = fit_lib.fit(x, method, str(tmp_path / "mem"), seed=1, overrides=settings, log=False)
  streamed = fit_lib.fit(path, method, str(tmp_path / "stream"), seed=1,
                         overrides=dict(settings, stream_above_gb=0), log=False)
  assert streamed["streamed"] and not mem["streamed"]
  ids_mem = artifact.load_semantic_ids(str(tmp_path / "mem"))[1]
  ids_stream = artifact.load_semantic_ids(str(tmp_path / "stream"))[1]
  np.testing.assert_array_equal(ids_mem, ids_stream)
  # 300 items / batch 32 = 9 steps per epoch, read in pieces of 2 steps: same losses.
  for a, b in zip(mem["training"]["history"], streamed["training"]["history"]):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert a["usage"] == b["usage"]
  assert streamed["reconstruction_cosine"] == pytest.approx(mem["reconstruction_cosine"],
                                                            abs=1e-5)
  # Neighbour precision ranks reconstructions computed in other chunks (the streamed path
  # encodes the sample alone), so their last bits may differ: a pair at the k-th neighbour's
  # distance can then swap. Allowed: exactly the hits that such near-ties can move, counted on
  # the in-memory model's reconstructions of the same sample (0 ties = exact equality).
  tok = fit_lib.load_tokenizer(str(tmp_path / "mem"))
  x_hat = tt.encode(tok.model, tok.params, x, cfg=tok.config)[2]
  sample = SMALL["neighbor_sample"]
  np_mem = mem["neighbor_precision"]
  ties = quality.boundary_ties(x, x_hat, np_mem["k"], sample, seed=1)
  assert ties <= 0.05 * np_mem["sample_size"] * np_mem["k"]  # the figure is still meaningful
  assert quality.neighbor_precision(x, x_hat, np_mem["k"], sample, seed=1)["value"] == \
      np_mem["value"]  # the same reconstructions give the same figure
  assert abs(streamed["neighbor_precision"]["value"] - np_mem["value"]) <= \
      ties / (np_mem["sample_size"] * np_mem["k"]) + 1e-12
  assert streamed["collisions_before_dedup"] == mem["collisions_before_dedup"]


def test_stream_reads_rows_in_the_callers_order_and_chunks(tmp_path):
  x = _clustered(n=100, dim=4)
  path = str(tmp_path / "e.npy")
  np.save(path, x.astype(np.float64))
  s = EmbeddingStream(path)  # float64 on disk: converted per piece
  idx = np.asarray([7, 3, 99, 3, 0])
  np.testing.assert_array_equal(s.rows(idx), x[idx])
  assert s.rows(idx).dtype == np.float32
  parts = list(s.chunks(30))
  assert [start for start, _ in parts] == [0, 30, 60, 90]
  np.testing.assert_array_equal(np.concatenate([p for _, p in parts]), x)


def test_open_embeddings_names_the_bad_row_and_the_file(tmp_path):
  x = _clustered(n=100, dim=4)
  x[71, 2] = np.nan
  path = str(tmp_path / "bad.npy")
  np.save(path, x)
  with pytest.raises(UserError, match=r"bad\.npy: row 71 contains NaN"):
    open_embeddings(path, chunk_rows=32)
  np.save(path, np.zeros((5, 3, 2), np.float32))
  with pytest.raises(UserError, match="expected a 2-D array"):
    open_embeddings(path)


def test_colliding_rows_and_a_partial_residual_scorer():
  codes = np.asarray([[0, 1], [2, 3], [0, 1], [4, 4], [2, 2]])
  np.testing.assert_array_equal(sid.colliding_rows(codes), [0, 2])
  np.testing.assert_array_equal(sid.colliding_rows(codes, existing=np.asarray([[4, 4]])),
                                [0, 2, 3])
  books = [np.eye(2) * 3, np.eye(2)]
  z = np.asarray([[1.0, 0.0], [0.0, 2.0]])
  scorer = sid.ResidualScorer(z, books, rows=np.asarray([0, 2]))
  np.testing.assert_array_equal(scorer.root(2), [0.0, 2.0])
  with pytest.raises(KeyError):
    scorer.root(1)


def test_tiger_extra_token_counts_per_prefix_in_item_order_after_existing_ids():
  codes = np.asarray([[1, 2], [3, 4], [1, 2], [1, 2], [5, 5]])
  ids, info = sid.tiger_extra_token(codes)
  np.testing.assert_array_equal(ids[:, -1], [0, 0, 1, 2, 0])
  assert info["extra_token_size"] == 3
  existing = np.asarray([[1, 2, 0], [1, 2, 4], [5, 5, 0]])
  ids, _ = sid.tiger_extra_token(codes, existing)
  np.testing.assert_array_equal(ids[:, -1], [5, 0, 6, 7, 1])
