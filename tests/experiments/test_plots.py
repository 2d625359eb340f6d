"""cost_jax.experiments.plots: PNGs written whole (atomically), nothing for nothing."""

import os

from cost_jax.experiments import plots


def test_learning_curves_png_is_written_atomically(tmp_path):
  path = str(tmp_path / "curves.png")
  curves = {"TIGER rqvae s0": [{"step": 500, "recall@10": 0.03},
                               {"step": 1000, "recall@10": 0.05, "best": True}],
            "SASRec s0": [{"epoch": 1, "recall@10": 0.02}, {"epoch": 2, "recall@10": 0.04}]}
  assert plots.plot_learning_curves(curves, path)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(tmp_path) == ["curves.png"]  # no temp file left beside it
  assert not plots.plot_learning_curves({}, str(tmp_path / "none.png"))
  assert not os.path.exists(tmp_path / "none.png")
