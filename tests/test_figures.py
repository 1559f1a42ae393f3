"""Labelled grids and loss plots."""

import numpy as np
import pytest
from PIL import Image

from nst_jax.figures import PAPER_FIGURES, labelled_grid, paper_figure, plot_losses, table_grid


def test_labelled_grid_places_tiles_and_labels():
    red = np.zeros((20, 10, 3), np.float32)
    red[..., 0] = 1
    g = labelled_grid([red, np.ones((10, 20, 3), np.float32) * 0.5], ["left", "right"], tile=20, pad=4)
    assert g.shape == (4 + 20 + 14 + 4, 4 + 20 + 4 + 20 + 4, 3)
    # the red tile is centred in its 20x20 box: column 4+5 .. 4+15 is red, the margin white
    assert np.allclose(g[10, 10], [1, 0, 0]) and np.allclose(g[10, 5], [1, 1, 1])
    label_band = g[4 + 20:4 + 20 + 14, 4:24]
    assert label_band.min() < 0.5  # some dark text pixels under the tile


def test_plot_losses_draws_every_term(tmp_path, monkeypatch):
    """--plot: the total and each term of the trace (content, style, TV), against f+g and against seconds."""
    from matplotlib.figure import Figure

    drawn, real = [], Figure.savefig

    def save(self, *a, **k):
        drawn.extend(sorted(line.get_label() for ax in self.axes for line in ax.get_lines()))
        return real(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", save)
    trace = [{"iter": i, "fg": i + 1, "loss": 100.0 / (i + 1), "content": 60.0 / (i + 1), "style": 30.0 / (i + 1),
              "tv": 10.0 / (i + 1)} for i in range(20)]
    path = plot_losses(trace, tmp_path / "loss.png", seconds=3.0)
    im = Image.open(path)
    assert im.format == "PNG" and im.size[0] >= 500
    assert drawn == sorted(["total", "content", "style", "tv"] * 2)
    drawn.clear()
    plot_losses([{k: v for k, v in t.items() if k in ("fg", "loss")} for t in trace], tmp_path / "total.png")
    assert drawn == ["total"]  # a trace without terms: the total only


def test_paper_figure_names():
    assert set(PAPER_FIGURES) == {"sweep", "layers", "styles", "color", "spatial", "scale"}
    try:
        paper_figure("nope")
    except ValueError as e:
        assert "unknown figure" in str(e)
    else:
        raise AssertionError("unknown figure name accepted")


def test_table_grid_places_rows_columns_and_labels():
    red = np.zeros((20, 20, 3), np.float32)
    red[..., 0] = 1
    t = table_grid([[red, None], [None, red]], ["row a", "row b"], ["col 1", "col 2"], tile=20, pad=4)
    blank = table_grid([[red, red], [red, red]], ["", ""], ["", ""], tile=20, pad=4)
    assert t.shape[0] == blank.shape[0] and t.shape[1] > blank.shape[1]  # the row labels take a left column
    # cell (0, 0) is red, cell (0, 1) empty (white), cell (1, 1) red; labels are dark pixels left of the cells
    left = t.shape[1] - 2 * (20 + 4) - 4
    top = t.shape[0] - 2 * (20 + 4) - 4
    assert np.allclose(t[top + 4 + 10, left + 4 + 10], [1, 0, 0])
    assert np.allclose(t[top + 4 + 10, left + 4 + 24 + 10], [1, 1, 1])
    assert np.allclose(t[top + 4 + 24 + 10, left + 4 + 24 + 10], [1, 0, 0])
    assert t[top:, :left].min() < 0.5 and t[:top, left:].min() < 0.5


def test_labels_are_ascii_so_the_default_font_draws_them():
    from nst_jax.figures import axis_label, format_ratio

    labels = [format_ratio(1e-4), axis_label("content_weight", 2.0), axis_label("style_weight", 1e3),
              axis_label("style_layers", ["relu1_1", "relu5_1"]), axis_label("region_weights", [0.5, 0.5])]
    assert all(label.isascii() for label in labels), labels
    assert labels[:3] == ["alpha/beta = 1e-04", "alpha = 2", "beta = 1e+03"]


def _fake_sweep(calls):
    from nst_jax.sweeps import SweepResult
    from nst_jax.transfer import Result
    from nst_jax import grid as G

    def fake(content, style=None, grid=None, zip=False, **kw):
        g = G.make_grid(grid, zip=zip)
        calls.append((content, style, g))
        res = [Result(np.full((8, 8, 3), 0.5, np.float32), [], 1, 0.0, 0.0, {}, {}) for _ in range(g.size)]
        axes = {a.name: [G.display_value(v) for v in vals] for a, vals in g.axes}
        members = [{n: G.display_value(v) for n, v in m.items()} for m in g.members()]
        return SweepResult(axes, members, res, 0.0, 0.0, g.shape, g.zip)

    return fake


def test_layer_and_style_figures_are_one_sweep_each(monkeypatch):
    """The 2016 paper's Figs. 3 and 2: one sweep call each (5 layer sets x 4 ratios; 3 paintings), no single runs."""
    import nst_jax.sweeps
    import nst_jax.transfer

    calls = []
    monkeypatch.setattr(nst_jax.sweeps, "sweep", _fake_sweep(calls))
    monkeypatch.setattr(nst_jax.transfer, "stylize", lambda *a, **k: pytest.fail("a single run in a sweep figure"))
    fig = paper_figure("layers", size=16, iters=1, weights="tiny19", progress=False)
    (_, _, g), = calls
    assert g.names == ("style_layers", "ratio") and g.shape == (5, 4)
    assert g.values("style_layers")[-1] == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert g.values("ratio") == (1e-5, 1e-4, 1e-3, 1e-2)
    assert fig.shape[0] > 5 * 8 and fig.shape[1] > 4 * 8
    calls.clear()
    paper_figure("styles", size=16, iters=1, weights="tiny19", progress=False)
    (_, style, g), = calls
    assert style is None and g.names == ("style",) and g.size == 3


def test_sweep_pages_one_page_per_further_axis_value():
    from nst_jax.figures import sweep_pages
    from nst_jax import grid as G

    fake = _fake_sweep([])
    sw = fake("c", "s", {"ratio": [1e-3, 1e-2], "tv_weight": [0.0, 1.0, 2.0], "seed": [0, 1]})
    pages = sweep_pages(sw)
    assert [p for p, _ in pages] == [{"seed": 0}, {"seed": 1}]
    assert len(sweep_pages(fake("c", "s", {"ratio": [1e-3, 1e-2], "tv_weight": [0.0, 1.0]}, zip=True))) == 1
    assert G.make_grid({"seed": [0, 1]}).shape == (2,)
