"""Labelled image grids and tables (the papers' figures, a sweep's pages) and loss-curve plots.

``labelled_grid`` and ``table_grid`` need only Pillow; labels use only ASCII, which Pillow's default font draws
everywhere (``alpha/beta``, not Greek letters). ``plot_losses`` needs the optional matplotlib extra
(``pip install nst-jax[plot]``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["labelled_grid", "table_grid", "format_number", "format_ratio", "axis_label", "sweep_pages",
           "plot_losses", "PAPER_FIGURES", "LAYER_SETS", "LAYER_RATIOS", "LOSS_PAIRS", "paper_figure",
           "losses_figure", "resolution_comparison", "resolution_figure"]


def format_number(v: float) -> str:
    """A short label for a number: ``1e-03`` for a power of ten (as the 2016 paper writes them), else 3 significant
    digits (labels only; file names use the exact value).

    Example:
      >>> format_number(1e-3), format_number(2.5e-4), format_number(0.0), format_number(1000.0), format_number(7)
      ('1e-03', '0.00025', '0', '1e+03', '7')
    """
    v = float(v)
    short = f"{v:.0e}"
    if v != 0 and float(short) == v and abs(math.log10(abs(v))) >= 3:
        return short
    return f"{v:.3g}"


def format_ratio(r: float) -> str:
    """``1e-3`` -> ``"alpha/beta = 1e-03"``: how the 2016 paper labels its alpha/beta figure (in ASCII).

    Example:
      >>> format_ratio(1e-3)
      'alpha/beta = 1e-03'
    """
    return f"alpha/beta = {format_number(r)}"


def axis_label(name: str, value: Any) -> str:
    """A grid axis value as a figure label (ASCII; see :mod:`nst_jax.grid` for the axes).

    Example:
      >>> axis_label("ratio", 1e-4), axis_label("tv_weight", 0.001), axis_label("seed", 3)
      ('alpha/beta = 1e-04', 'tv = 1e-03', 'seed 3')
      >>> axis_label("style_layers", ["relu1_1"]), axis_label("style_layers", ["relu1_1", "relu2_1", "relu3_1"])
      ('relu1_1', 'relu1_1 .. relu3_1')
      >>> axis_label("style", "/data/starry_night.jpg"), axis_label("layer_weights", [1.0, 0.5])
      ('starry_night', 'layer weights 1, 0.5')
    """
    import os

    if name == "ratio":
        return format_ratio(value)
    short = {"content_weight": "alpha", "style_weight": "beta", "tv_weight": "tv"}
    if name in short:
        return f"{short[name]} = {format_number(value)}"
    if name == "style_layers":
        return value[0] if len(value) == 1 else f"{value[0]} .. {value[-1]}"
    if name in ("style", "content"):
        one = lambda v: os.path.splitext(os.path.basename(str(v)))[0]  # noqa: E731
        return " + ".join(one(v) for v in value) if isinstance(value, list) else one(value)
    if isinstance(value, list):
        return f"{name.replace('_', ' ')} {', '.join(format_number(v) for v in value)}"
    return f"{name.replace('_', ' ')} {value}"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def labelled_grid(images: Sequence[np.ndarray], labels: Sequence[str], *, columns: Optional[int] = None,
                  tile: Optional[int] = None, pad: int = 6, label_height: Optional[int] = None) -> np.ndarray:
    """Tile images ([H, W, 3] in [0, 1], sizes may differ) in a grid with a text label under each.

    Each image is scaled to fit a ``tile`` x ``tile`` box (default: the largest side among the images), centred on
    white; returns the grid as float32 [H_g, W_g, 3] in [0, 1].
    
    Example:
      >>> import numpy as np
      >>> labelled_grid([np.zeros((32, 32, 3))] * 2, ["a", "b"]).shape   # 2 tiles of 32 + 3 pads of 6
      (58, 82, 3)
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not images:
        raise ValueError("no images to put in a grid")
    n = len(images)
    columns = columns or n
    rows = (n + columns - 1) // columns
    tile = tile or max(max(im.shape[:2]) for im in images)
    label_height = label_height or max(14, tile // 10)
    font = _font(max(10, int(label_height * 0.7)))
    W = columns * tile + (columns + 1) * pad
    H = rows * (tile + label_height) + (rows + 1) * pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    for j, (im, label) in enumerate(zip(images, labels)):
        r, c = divmod(j, columns)
        x0 = pad + c * (tile + pad)
        y0 = pad + r * (tile + label_height + pad)
        _paste(canvas, im, x0, y0, tile)
        _text(draw, label, font, x0 + tile // 2, y0 + tile + 2)
    return np.asarray(canvas, np.float32) / 255.0


def _paste(canvas: Image.Image, im, x0: int, y0: int, tile: int) -> None:
    """Paste ``im`` ([H, W, 3] or [H, W] in [0, 1]) scaled to fit a ``tile`` box at (x0, y0), centred."""
    arr = np.clip(np.asarray(im, np.float32), 0, 1)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, -1)
    pil = Image.fromarray(np.round(arr * 255).astype(np.uint8))
    scale = tile / max(pil.size)
    pil = pil.resize((max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale))), Image.LANCZOS)
    canvas.paste(pil, (x0 + (tile - pil.size[0]) // 2, y0 + (tile - pil.size[1]) // 2))


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    bbox = draw.textbbox((0, 0), text, font=font)
    return bbox[2] - bbox[0]


def _text(draw: ImageDraw.ImageDraw, text: str, font, cx: int, y: int) -> None:
    """Draw ``text`` centred on x = ``cx`` from y = ``y``."""
    draw.text((cx - _text_width(draw, text, font) // 2, y), text, fill="black", font=font)


def table_grid(rows: Sequence[Sequence[Optional[np.ndarray]]], row_labels: Sequence[str], col_labels: Sequence[str],
               *, title: Optional[str] = None, tile: Optional[int] = None, pad: int = 6,
               label_height: Optional[int] = None) -> np.ndarray:
    """Images in a table: ``rows[r][c]`` ([H, W, 3] in [0, 1], or None for an empty cell), each scaled to fit a
    ``tile`` box (default: the largest side), row labels on the left, column labels on top, and an optional title
    line above; returns float32 [H_t, W_t, 3] in [0, 1].

    Example:
      >>> import numpy as np
      >>> t = table_grid([[np.zeros((8, 8, 3))] * 3] * 2, ["a", "b"], ["1", "2", "3"], tile=32)
      >>> t.shape[0] > 2 * 32 and t.shape[1] > 3 * 32, float(t[-3, -3, 0])   # white margins
      (True, 1.0)
    """
    if len(rows) != len(row_labels) or any(len(r) != len(col_labels) for r in rows):
        raise ValueError(f"a table of {len(rows)} rows x {[len(r) for r in rows]} cells needs as many row and column "
                         f"labels, got {len(row_labels)} and {len(col_labels)}")
    cells = [im for r in rows for im in r if im is not None]
    if not cells:
        raise ValueError("no images to put in a table")
    tile = tile or max(max(im.shape[:2]) for im in cells)
    label_height = label_height or max(14, tile // 10)
    font = _font(max(10, int(label_height * 0.7)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max([_text_width(measure, t, font) for t in row_labels] + [0]) + (2 * pad if any(row_labels) else 0)
    col_w = max([tile] + [_text_width(measure, t, font) + pad for t in col_labels])  # labels never overlap
    top = label_height + pad + (label_height + pad if title else 0)
    W = left + len(col_labels) * (col_w + pad) + pad
    H = top + len(rows) * (tile + pad) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for c, label in enumerate(col_labels):
        _text(draw, label, font, left + pad + c * (col_w + pad) + col_w // 2, top - label_height)
    for r, (row, label) in enumerate(zip(rows, row_labels)):
        y0 = top + pad + r * (tile + pad)
        draw.text((pad, y0 + (tile - label_height) // 2), label, fill="black", font=font)
        for c, im in enumerate(row):
            if im is not None:
                _paste(canvas, im, left + pad + c * (col_w + pad) + (col_w - tile) // 2, y0, tile)
    return np.asarray(canvas, np.float32) / 255.0


def sweep_pages(sw, tile: Optional[int] = None) -> List[Tuple[Dict[str, Any], np.ndarray]]:
    """A sweep's labelled table(s): rows by the first axis and columns by the second (one row for a single axis,
    and for zipped axes, whose columns are the members); further axes give separate pages. Returns
    ``[(page, image)]`` with ``page`` the further axes' values of that page (``{}`` for a single page)."""
    names = list(sw.axes)
    if sw.zip or len(names) == 1:
        cols = [", ".join(axis_label(n, m[n]) for n in names) for m in sw.members]
        return [({}, table_grid([list(sw.images)], [""], cols, tile=tile))]
    shape = tuple(len(sw.axes[n]) for n in names)
    images = sw.images.reshape(shape + sw.images.shape[1:])
    rows = [axis_label(names[0], v) for v in sw.axes[names[0]]]
    cols = [axis_label(names[1], v) for v in sw.axes[names[1]]]
    pages = []
    for rest in itertools.product(*(range(n) for n in shape[2:])):
        page = {n: sw.axes[n][j] for n, j in zip(names[2:], rest)}
        title = ", ".join(axis_label(n, v) for n, v in page.items()) or None
        block = images[(slice(None), slice(None)) + rest]
        pages.append((page, table_grid([list(r) for r in block], rows, cols, title=title, tile=tile)))
    return pages


def plot_losses(trace: Sequence[Dict[str, float]], path, *, title: str = "loss", seconds: Optional[float] = None):
    """Plot the total loss (log scale) against f+g evaluations (and seconds, if the run time is given) to ``path``.

    ``trace`` is ``Result.loss_trace`` (dicts with ``fg`` and ``loss``; optional per-term keys ``content``, ``style``,
    ``tv`` are drawn too).
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves the user's (e.g. notebook) backend alone
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'nst-jax[plot]'") from None
    fg = np.array([t["fg"] for t in trace], float)
    fig = Figure(figsize=(10 if seconds else 5.5, 4))
    axes = fig.subplots(1, 2 if seconds else 1, squeeze=False)
    keys = [k for k in ("loss", "content", "style", "tv") if k in trace[0]]
    for k in keys:
        y = np.array([t[k] for t in trace], float)
        axes[0, 0].plot(fg, y, label="total" if k == "loss" else k)
        if seconds:
            axes[0, 1].plot(fg / max(fg[-1], 1) * seconds, y, label="total" if k == "loss" else k)
    axes[0, 0].set_xlabel("f+g evaluations")
    if seconds:
        axes[0, 1].set_xlabel("seconds")
    for ax in axes[0]:
        ax.set_yscale("log")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


# ------------------------------------------------------------------------------------------------ paper figures

PAPER_FIGURES = {
    "sweep": "2016 Fig. 4: alpha/beta ratios 1e-4..1e-1 in one vmapped solve",
    "layers": "2016 Fig. 3: style from relu1_1, up to relu2_1, ..., up to relu5_1 (rows) x alpha/beta 1e-5..1e-2 "
              "(columns), one compiled sweep",
    "styles": "2016 Fig. 2: one photo in several paintings' styles, one compiled sweep over the style images",
    "color": "2017 Fig. 3: content, style, plain transfer, luminance-only, colour-matched style",
    "spatial": "2017 Fig. 2: sky and ground styled by different paintings via guided Gram matrices",
    "scale": "2017 Fig. 5: two styles, their mix across scales, and the content stylised with the mix",
    "losses": "the style losses side by side (gram, w2, sliced, hist at their default weights) on three pairs",
    "resolution": "one pair at --size/2 and at --size, the latter without and with the resolution rule "
                  "(--style-ref-size), with the style distance at the common display size",
}

#: The bundled (content, style) pairs of the losses figure and benchmark.
LOSS_PAIRS = (("blue_marble", "great_wave"), ("tetons_snake_river", "starry_night"),
              ("blue_marble", "wheat_field_with_cypresses"))

#: The 2016 paper's Fig. 3 rows: style matched on relu1_1, then on relu1_1 and relu2_1, ..., up to relu5_1.
LAYER_SETS = tuple(tuple(f"relu{b}_1" for b in range(1, top + 1)) for top in range(1, 6))
LAYER_RATIOS = (1e-5, 1e-4, 1e-3, 1e-2)


def _sweep_figure(name: str, kw: dict) -> np.ndarray:
    """The figures that are one compiled sweep each (sweep, layers, styles)."""
    from nst_jax import image as I
    from nst_jax.sweeps import sweep

    sp = I.sample_path
    if name == "sweep":
        sw = sweep(sp("blue_marble"), sp("great_wave"), {"ratio": [1e-4, 1e-3, 1e-2, 1e-1]}, **kw)
        return sweep_pages(sw)[0][1]
    if name == "layers":
        sw = sweep(sp("blue_marble"), sp("starry_night"), {"style_layers": list(LAYER_SETS),
                                                             "ratio": list(LAYER_RATIOS)}, **kw)
        return sweep_pages(sw)[0][1]
    styles = [sp("great_wave"), sp("starry_night"), sp("wheat_field_with_cypresses")]
    sw = sweep(sp("blue_marble"), None, {"style": styles}, **kw)
    size = kw["size"]
    photo = I.load_image(sp("blue_marble"), size=size)
    return table_grid([[None] + [I.load_image(s, size=size) for s in styles], [photo] + list(sw.images)],
                      ["painting", "result"], ["photo"] + [axis_label("style", str(s)) for s in styles])


def paper_figure(name: str, *, size: int = 256, iters: int = 200, weights="auto", progress: bool = True) -> np.ndarray:
    """Reproduce one of :data:`PAPER_FIGURES` on the bundled samples; returns the labelled grid [H, W, 3]."""
    from nst_jax import image as I
    from nst_jax.transfer import stylize

    if name not in PAPER_FIGURES:
        raise ValueError(f"unknown figure {name!r}; choose one of {', '.join(sorted(PAPER_FIGURES))}")
    if isinstance(weights, str):
        from nst_jax.weights import load_weights

        weights, _ = load_weights(weights)
    sp = I.sample_path
    kw = dict(weights=weights, size=size, iters=iters, progress=progress)
    if name in ("sweep", "layers", "styles"):
        return _sweep_figure(name, kw)
    if name == "losses":
        return losses_figure(**kw)
    if name == "resolution":
        return resolution_figure(**kw)
    if name == "color":
        content, style = sp("blue_marble"), sp("starry_night")
        panels = [I.load_image(content, size=size), I.load_image(style, size=size)]
        labels = ["content", "style"]
        for color, label in (("none", "plain transfer"), ("luminance", "luminance only"),
                             ("match-style", "colour-matched style")):
            panels.append(stylize(content, style, color=color, **kw).image)
            labels.append(label)
        return labelled_grid(panels, labels)
    if name == "spatial":
        content = sp("tetons_snake_river")
        sky, ground = sp("starry_night"), sp("great_wave")
        spatial = dict(mode="gram", content_masks={"sky": sp("tetons_snake_river_sky"),
                                                   "ground": sp("tetons_snake_river_nosky")},
                       style_masks=[None, None], region_to_style={"sky": 0, "ground": 1}, propagation="inside")
        plain = stylize(content, [sky, ground], **kw).image
        guided = stylize(content, [sky, ground], spatial=spatial, **kw).image
        panels = [I.load_image(content, size=size), I.load_image(sky, size=size), I.load_image(ground, size=size),
                  plain, guided]
        return labelled_grid(panels, ["content", "sky style", "ground style", "both styles, no control",
                                      "spatial control"])
    from nst_jax import pyramid

    content, coarse, fine = sp("tetons_snake_river"), sp("great_wave"), sp("starry_night")
    mixed = pyramid.mix_styles(coarse, fine, size=size, iters=iters, weights=weights, progress=progress,
                               match_colors_to=I.load_image(content, size=size)).image
    result = stylize(content, mixed, **kw).image
    panels = [I.load_image(coarse, size=size), I.load_image(fine, size=size), mixed, I.load_image(content, size=size),
              result]
    return labelled_grid(panels, ["coarse-scale style", "fine-scale style", "new style (mix)", "content",
                                  "stylised with the mix"])


# ------------------------------------------------------------------------------------------------ beyond the papers

def losses_figure(*, size: int = 256, iters: int = 200, weights="auto", progress: bool = True,
                  kinds: Sequence[str] = ("gram", "w2", "sliced", "hist")) -> np.ndarray:
    """Each style loss kind alone, at its default weight and otherwise the gatys preset, on the pairs of
    :data:`LOSS_PAIRS`: rows are pairs, columns content, style and one result per kind."""
    from nst_jax import image as I
    from nst_jax.transfer import stylize

    rows, labels = [], []
    for content, style in LOSS_PAIRS:
        c, s = I.sample_path(content), I.sample_path(style)
        rows.append([I.load_image(c, size=size), I.load_image(s, size=size)] + [
            stylize(c, s, style_loss=k, size=size, iters=iters, weights=weights, progress=progress).image
            for k in kinds])
        labels.append(f"{content} + {style}")
    return table_grid(rows, labels, ["content", "style"] + [f"--style-loss {k}" for k in kinds],
                      title=f"{size} px, {iters} iterations, gatys preset, each kind at its default weight")


def resolution_comparison(content, style, ref_size: int, size: int, *, iters: int = 200, weights="auto",
                          tilt: Optional[float] = None, more_tilts: Sequence[float] = (),
                          progress: bool = True) -> Dict[str, Any]:
    """The resolution rule's check: one transfer at ``ref_size`` and two at ``size`` (without, and with the rule
    ``style_ref_size=ref_size``), each result resized to the reference's shape and compared with the style as the
    reference run sees it (:func:`nst_jax.objective.style_distances`: Gaussian W2 per style layer). ``tilt``: the
    rule's (default :data:`nst_jax.objective.RESOLUTION_TILT`); ``more_tilts``: further runs at ``size``, named
    ``"tilt T"`` (how the default was chosen, ``benchmarks/bench_resolution.py``).

    Returns ``{"images": {"ref", "plain", "rule", ...}, "look": {run: {layer: W2 at the reference's display size}},
    "native": {run: {layer: W2 against the style at the run's own size}}}``. Same look: ``look["rule"]`` closer to
    ``look["ref"]`` than ``look["plain"]`` is.
    """
    from nst_jax import image as I
    from nst_jax import objective
    from nst_jax.problem import prepare
    from nst_jax.transfer import solve_problem

    ref = prepare(content, style, weights=weights, size=ref_size)
    plain = prepare(content, style, weights=ref.params, size=size)

    def tilted(t):
        factors = objective.resolution_factors(plain.cfg.style_layers, plain.content.shape[:2], ref_size, tilt=t)
        return dataclasses.replace(plain, weights=plain.weights.replace(style_layers=plain.weights.style_layers
                                                                        * factors))

    runs = [("ref", ref), ("plain", plain), ("rule", tilted(objective.RESOLUTION_TILT if tilt is None else tilt))]
    runs += [(f"tilt {t:g}", tilted(t)) for t in more_tilts]
    images, look, native = {}, {}, {}
    for name, p in runs:
        images[name] = solve_problem(p, iters=iters, progress=progress).image
        shown = images[name] if p is ref else I.resize(images[name], ref.content.shape[:2])
        look[name] = objective.style_distances(ref.params, shown, ref.styles_in[0], ref.cfg)
        native[name] = objective.style_distances(p.params, images[name], p.styles_in[0], p.cfg)
    return {"images": images, "look": look, "native": native}


def resolution_figure(*, size: int = 512, iters: int = 200, weights="auto", progress: bool = True,
                      pair: Tuple[str, str] = ("tetons_snake_river", "starry_night")) -> np.ndarray:
    """:func:`resolution_comparison` of a bundled pair at ``size // 2`` and ``size``, as one row of panels labelled
    with the mean over the layers of the look distance's ratio to the reference run's ("rule": ``--style-ref-size
    size // 2``)."""
    from nst_jax import image as I

    c, s = (I.sample_path(n) for n in pair)
    out = resolution_comparison(c, s, size // 2, size, iters=iters, weights=weights, progress=progress)
    look = out["look"]
    ratio = {k: float(np.mean([look[k][n] / look["ref"][n] for n in look["ref"]])) for k in look}
    panels = [I.load_image(s, size=size), out["images"]["ref"], out["images"]["plain"], out["images"]["rule"]]
    labels = ["style", f"{size // 2} px (reference)", f"{size} px: W2 x{ratio['plain']:.2f}",
              f"{size} px, rule: W2 x{ratio['rule']:.2f}"]
    return labelled_grid(panels, labels, tile=size)
