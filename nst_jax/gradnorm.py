"""Per-layer gradient normalisation: jcjohnson/neural-style's ``-normalize_gradients``.

In neural_style.lua each loss module (one content or style loss at one layer) computes the gradient of its own,
unweighted criterion with respect to its layer's feature map, divides it by its L1 norm plus 1e-8, and only then
multiplies it by the module's strength and adds it to the gradient flowing back from the deeper layers. Every loss
term therefore pushes on its layer with the same total magnitude (its weight), whatever the scale of its criterion.

:func:`term` gives a loss term that behaviour under ``jax.grad``: its value is the term's own, and its derivative
with respect to the features is ``c * g / (sum|g| + 1e-8)`` with ``g`` the term's gradient and ``c`` the cotangent
arriving from above (the term's weight in the total: layer weight x kind weight x beta). The result is the gradient
of no function, so a solver's line search compares true loss values against a slope computed from the normalised
gradient (see ``LossConfig.normalize_gradients`` in the README for what the default solver does with it).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["EPS", "normalized", "term"]

#: Added to the L1 norm, as neural_style.lua does.
EPS = 1e-8


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def normalized(fn: Callable, feats, *rest):
    """``fn(feats, *rest)`` whose gradient with respect to ``feats`` is divided by its L1 norm (+ :data:`EPS`).

    ``fn``: a scalar loss of one layer's features ``feats`` (any shape) and arguments ``rest`` (targets, guides,
    flags) that are treated as constants: they get no gradient.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda f, t: jnp.sum((f - t) ** 2)                     # gradient 2 (f - t)
      >>> f, t = jnp.array([0.0, 1.0, 3.0]), jnp.ones(3)
      >>> float(normalized(loss, f, t)) == float(loss(f, t))           # the value is the term's own
      True
      >>> [round(v, 5) for v in jax.grad(lambda f: 5.0 * normalized(loss, f, t))(f).tolist()]  # 5 [-2, 0, 4] / 6
      [-1.66667, 0.0, 3.33333]
    """
    return fn(feats, *rest)


def _fwd(fn, feats, *rest):
    return fn(feats, *rest), (feats, rest)


def _bwd(fn, residuals, ct):
    feats, rest = residuals
    g = jax.grad(fn)(feats, *rest)
    scale = ct / (jnp.sum(jnp.abs(g), dtype=jnp.float32) + EPS)
    return (scale.astype(g.dtype) * g,) + tuple(None for _ in rest)


normalized.defvjp(_fwd, _bwd)


def term(normalize: bool, fn: Callable, feats, *rest):
    """``fn(feats, *rest)``, through :func:`normalized` when ``normalize`` (a static flag)."""
    return normalized(fn, feats, *rest) if normalize else fn(feats, *rest)
