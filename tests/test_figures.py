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
    assert set(PAPER_FIGURES) == {"sweep", "layers", "styles", "color", "spatial", "scale", "losses", "resolution"}
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


def test_losses_figure_runs_each_kind_on_each_pair(monkeypatch):
    """``nst-jax figure losses``: one transfer per (pair, kind), that kind alone, the size and iterations passed on."""
    import nst_jax.transfer
    from nst_jax.figures import LOSS_PAIRS
    from nst_jax.transfer import Result

    calls = []

    def fake(content, style, **kw):
        calls.append((content.stem, style.stem, kw["style_loss"], kw["size"], kw["iters"]))
        return Result(np.full((8, 8, 3), 0.5, np.float32), [], 1, 0.0, 0.0, {}, {})

    monkeypatch.setattr(nst_jax.transfer, "stylize", fake)
    fig = paper_figure("losses", size=16, iters=2, weights="tiny19", progress=False)
    kinds = ("gram", "w2", "sliced", "hist")
    assert calls == [(c, s, k, 16, 2) for c, s in LOSS_PAIRS for k in kinds]
    assert len(LOSS_PAIRS) >= 3 and fig.shape[0] > 3 * 16 and fig.shape[1] > 6 * 16


def test_resolution_comparison_applies_the_rule_and_measures_at_the_reference_size(monkeypatch, tiny_params):
    """The rule run's layer weights are those of ``style_ref_size``; every result is measured at the reference's
    shape (look) and at its own (native). Solves replaced by the content image (the measuring is what is tested)."""
    import nst_jax
    import nst_jax.transfer
    from nst_jax import image as I
    from nst_jax import objective
    from nst_jax.figures import resolution_comparison
    from nst_jax.transfer import Result

    seen = []

    def fake(p, **kw):
        seen.append(np.asarray(p.weights.style_layers))
        return Result(np.asarray(p.content_in), [], 1, 0.0, 0.0, {}, {})

    monkeypatch.setattr(nst_jax.transfer, "solve_problem", fake)
    c, s = I.sample_path("tetons_snake_river"), I.sample_path("starry_night")
    out = resolution_comparison(c, s, 32, 64, iters=1, weights=tiny_params, more_tilts=(2.0,), progress=False)
    ruled = nst_jax.prepare(c, s, weights=tiny_params, size=64, style_ref_size=32)
    np.testing.assert_allclose(seen[2], ruled.weights.style_layers, rtol=1e-6)
    np.testing.assert_allclose(seen[2] / seen[1], 2.0 ** (np.arange(5) - 2.0), rtol=1e-6)
    np.testing.assert_allclose(seen[3] / seen[1], 4.0 ** (np.arange(5) - 2.0), rtol=1e-6)  # tilt 2, one doubling
    assert list(out["look"]) == ["ref", "plain", "rule", "tilt 2"]
    assert out["images"]["ref"].shape[:2] == (26, 32) and out["images"]["rule"].shape[:2] == (51, 64)
    ref = nst_jax.prepare(c, s, weights=tiny_params, size=32)
    shown = I.resize(out["images"]["plain"], (26, 32))
    assert out["look"]["plain"] == pytest.approx(objective.style_distances(tiny_params, shown, ref.styles_in[0],
                                                                           ref.cfg))
    assert out["look"]["plain"] == out["look"]["rule"]  # the same image (the content) measured the same way
    assert out["native"]["ref"] == out["look"]["ref"] and set(out["native"]["plain"]) == set(ref.cfg.style_layers)
