"""Derive the sky / no-sky masks of ``nst_jax/samples/tetons_snake_river.jpg`` (749x600 greyscale).

Run from the repository root: ``python tests/data/make_tetons_masks.py``. Writes
``nst_jax/samples/tetons_snake_river_{sky,nosky}.png`` (8-bit grey, 0 / 255, white = inside, sky + nosky = 255) and
``nst_jax/samples/tetons_snake_river_labels.png``, the same two regions as one colour-coded label image (RGB: sky
``#87ceeb``, ground ``#228b22``; the README's ``--content-labels`` example with ``--legend 'sky=#87ceeb;ground=#228b22'``).

Method: the skyline is a path y(x), one row per column, found by dynamic programming (a classic skyline detector).
Per-pixel score = vertical edge strength (|Sobel| of the image smoothed with sigma 1.5, clipped) + the increase of
fine texture from the 13 rows above to the 13 rows below (RMS of the image minus its sigma-1.5 blur; mountains are
textured, the sky and the clouds' interiors are smooth). The path maximises the summed score over columns, moving at
most 10 rows between neighbouring columns (cost 0.01 per row), restricted to rows 100..264 (below the clouds' lower
edge ends, above the valley floor). Everything above the path is sky. Checked by eye on an overlay: the line follows
the ridge to within a few pixels; the tips of two low-contrast snowy peaks on the left are cut by up to ~10 px.
Needs scipy (a test dependency), not used by the package.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = os.path.join(ROOT, "nst_jax", "samples")


def skyline(a_HW: np.ndarray, rows=(100, 265), max_step=10, step_cost=0.01) -> np.ndarray:
    """Row index y(x) of the skyline in every column of a grey image in [0, 1]."""
    h, w = a_HW.shape
    edge = np.abs(ndi.sobel(ndi.gaussian_filter(a_HW, 1.5), axis=0))
    edge = np.minimum(edge / np.percentile(edge, 99), 1.5)
    hp = a_HW - ndi.gaussian_filter(a_HW, 1.5)
    tex = np.sqrt(ndi.gaussian_filter(hp ** 2, 3))
    m = ndi.uniform_filter1d(tex, 13, axis=0, mode="nearest")
    d = np.roll(m, -8, axis=0) - np.roll(m, 8, axis=0)  # texture below minus texture above
    d /= np.percentile(np.abs(d), 99)
    score = (edge + d)[rows[0]:rows[1]]
    n = score.shape[0]
    idx = np.arange(n)
    cost = -score[:, 0].copy()
    back = np.zeros((n, w), int)
    for x in range(1, w):
        best = np.full(n, np.inf)
        arg = np.zeros(n, int)
        for step in range(-max_step, max_step + 1):
            src = idx - step
            ok = (src >= 0) & (src < n)
            c = np.full(n, np.inf)
            c[ok] = cost[src[ok]] + step_cost * abs(step)
            better = c < best
            best[better] = c[better]
            arg[better] = src[better]
        cost = best - score[:, x]
        back[:, x] = arg
    y = np.zeros(w, int)
    y[-1] = int(np.argmin(cost))
    for x in range(w - 1, 0, -1):
        y[x - 1] = back[y[x], x]
    return y + rows[0]


def main() -> None:
    a = np.asarray(Image.open(os.path.join(SAMPLES, "tetons_snake_river.jpg")).convert("L"), np.float64) / 255.0
    y_W = skyline(a)
    sky = (np.arange(a.shape[0])[:, None] < y_W[None, :]).astype(np.uint8) * 255
    Image.fromarray(sky, "L").save(os.path.join(SAMPLES, "tetons_snake_river_sky.png"), optimize=True)
    Image.fromarray(255 - sky, "L").save(os.path.join(SAMPLES, "tetons_snake_river_nosky.png"), optimize=True)
    labels = np.where(sky[..., None] > 0, np.uint8([135, 206, 235]), np.uint8([34, 139, 34])).astype(np.uint8)
    Image.fromarray(labels, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(
        os.path.join(SAMPLES, "tetons_snake_river_labels.png"), optimize=True)
    print(f"sky fraction {sky.mean() / 255:.3f}; skyline rows {y_W.min()}..{y_W.max()}")


if __name__ == "__main__":
    main()
