"""Helpers shared by test modules: small synthetic images and a backward-pass counter."""

from __future__ import annotations

import numpy as np


def blobs(h, w, seed):
    """A smooth image: a few large Gaussian blobs of random colours (large-scale structure, little texture)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.full((h, w, 3), 0.5, np.float32)
    for _ in range(4):
        cy, cx, r = rng.random(3) * [1, 1, 0.3] + [0, 0, 0.15]
        img += (rng.random(3) - 0.5)[None, None] * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2)[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def stripes(h, w, seed):
    """A fine texture: high-frequency noisy stripes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.4 * np.sin(1.7 * xx + 0.9 * yy)[..., None] * np.array([1.0, -0.6, 0.3])
    return np.clip(base + 0.15 * rng.random((h, w, 3)), 0, 1).astype(np.float32)


def backward_tap(calls: list):
    """An identity whose backward pass appends to ``calls`` (a host callback: one call per pass really executed,
    one per batched pass under ``vmap``)."""
    import jax

    @jax.custom_vjp
    def tap(x):
        return x

    def bwd(_, ct):
        jax.debug.callback(lambda: calls.append(1))
        return (ct,)

    tap.defvjp(lambda x: (x, None), bwd)
    return tap
