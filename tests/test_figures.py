"""Labelled grids and loss plots."""

import numpy as np
from PIL import Image

from nst_jax.figures import PAPER_FIGURES, labelled_grid, paper_figure, plot_losses


def test_labelled_grid_places_tiles_and_labels():
    red = np.zeros((20, 10, 3), np.float32)
    red[..., 0] = 1
    g = labelled_grid([red, np.ones((10, 20, 3), np.float32) * 0.5], ["left", "right"], tile=20, pad=4)
    assert g.shape == (4 + 20 + 14 + 4, 4 + 20 + 4 + 20 + 4, 3)
    # the red tile is centred in its 20x20 box: column 4+5 .. 4+15 is red, the margin white
    assert np.allclose(g[10, 10], [1, 0, 0]) and np.allclose(g[10, 5], [1, 1, 1])
    label_band = g[4 + 20:4 + 20 + 14, 4:24]
    assert label_band.min() < 0.5  # some dark text pixels under the tile


def test_plot_losses_writes_png(tmp_path):
    trace = [{"iter": i, "fg": i + 1, "loss": 100.0 / (i + 1)} for i in range(20)]
    path = plot_losses(trace, tmp_path / "loss.png", seconds=3.0)
    im = Image.open(path)
    assert im.format == "PNG" and im.size[0] >= 500


def test_paper_figure_names():
    assert set(PAPER_FIGURES) == {"sweep", "color", "spatial", "scale"}
    try:
        paper_figure("nope")
    except ValueError as e:
        assert "unknown figure" in str(e)
    else:
        raise AssertionError("unknown figure name accepted")
