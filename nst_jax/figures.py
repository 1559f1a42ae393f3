"""Labelled image grids (the papers' figures) and loss-curve plots.

``labelled_grid`` needs only Pillow; ``plot_losses`` needs the optional matplotlib extra (``pip install nst-jax[plot]``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["labelled_grid", "format_ratio", "plot_losses"]


def format_ratio(r: float) -> str:
    """``1e-3`` -> ``"α/β = 1e-03"``: how the 2016 paper labels its α/β figure.

    Example:
      >>> format_ratio(1e-3)
      'α/β = 1e-03'
    """
    return f"α/β = {r:.0e}"


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
        arr = np.clip(np.asarray(im, np.float32), 0, 1)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, -1)
        pil = Image.fromarray(np.round(arr * 255).astype(np.uint8))
        scale = tile / max(pil.size)
        pil = pil.resize((max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale))), Image.LANCZOS)
        x0 = pad + c * (tile + pad)
        y0 = pad + r * (tile + label_height + pad)
        canvas.paste(pil, (x0 + (tile - pil.size[0]) // 2, y0 + (tile - pil.size[1]) // 2))
        bbox = draw.textbbox((0, 0), label, font=font)
        tw = bbox[2] - bbox[0]
        draw.text((x0 + (tile - tw) // 2, y0 + tile + 2), label, fill="black", font=font)
    return np.asarray(canvas, np.float32) / 255.0


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
    "color": "2017 Fig. 3: content, style, plain transfer, luminance-only, colour-matched style",
    "spatial": "2017 Fig. 2: sky and ground styled by different paintings via guided Gram matrices",
    "scale": "2017 Fig. 5: two styles, their mix across scales, and the content stylised with the mix",
}


def paper_figure(name: str, *, size: int = 256, iters: int = 200, weights="auto", progress: bool = True) -> np.ndarray:
    """Reproduce one of :data:`PAPER_FIGURES` on the bundled samples; returns the labelled grid [H, W, 3]."""
    from nst_jax import image as I
    from nst_jax.sweeps import sweep
    from nst_jax.transfer import stylize

    if name not in PAPER_FIGURES:
        raise ValueError(f"unknown figure {name!r}; choose one of {', '.join(sorted(PAPER_FIGURES))}")
    if isinstance(weights, str):
        from nst_jax.weights import load_weights

        weights, _ = load_weights(weights)
    sp = I.sample_path
    kw = dict(weights=weights, size=size, iters=iters, progress=progress)
    if name == "sweep":
        ratios = [1e-4, 1e-3, 1e-2, 1e-1]
        sw = sweep(sp("blue_marble"), sp("great_wave"), ratios, **kw)
        return labelled_grid(list(sw.images), [format_ratio(r) for r in ratios])
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
