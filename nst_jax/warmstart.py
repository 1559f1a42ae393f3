"""Multi-resolution warm start of a single-size run (``SolveOptions.warm_start``, ``--warm-start``).

A plain run solves at its size from its initial image. A warm-started one first solves the same problem at 1/4 and
1/2 of the size (an f+g there costs ~1/16 and ~1/4 of one at full size), each level starting from the previous
level's result, and then runs the requested ``iters`` at full size: it does at least a plain run's work at full size,
and reaches a given loss there sooner when the coarse levels pay for themselves (``benchmarks/RESULTS.md``).

* :func:`schedule` -- the levels of a run: ``[Level(side, iters), ..., Level(None, iters)]``, coarsest first; the
  last is the run's own size (``side`` None) with the requested iterations.
* :func:`handoff` -- how a level starts from the previous one: the previous level's *change* to its initial image,
  resized, added to this level's initial image (:func:`detail_handoff`), so the fine level keeps the fine detail of
  its own initial image (e.g. the content's) that a resized coarse result has lost; frozen pixels (a freeze mask)
  keep this level's initial values exactly.

The levels are solved by :func:`nst_jax.transfer.solve_levels`: each level re-prepares the problem at its size
(targets, colour and spatial control, freeze mask), and the L-BFGS history and preconditioner start afresh at every
level (carrying the history over, resampled and rescaled, measured no better: ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple

import numpy as np

from nst_jax import image as I
from nst_jax.config import WARM_STARTS

__all__ = ["Level", "WARM_STARTS", "MIN_COARSE_SIDE", "FACTORS", "schedule", "handoff", "detail_handoff"]

#: The coarse levels' sizes relative to the run's, coarsest first.
FACTORS = (4, 2)
#: No coarse level whose longest side is below this (px): below it an f+g costs little less (fixed overheads) and
#: the level's style statistics describe little of the full-size image.
MIN_COARSE_SIDE = 64
#: Shortest side of a coarse level (px), so that the deepest default layer keeps a few units.
MIN_COARSE_SHORT = 32
#: Iterations of each coarse level (coarsest first) as a fraction of the run's ``iters``, and at most.
COARSE_FRACTION = (0.5, 0.25)
COARSE_MAX = (100, 50)


class Level(NamedTuple):
    """One level of a run: its longest side in px (None: the run's own size) and its iterations."""

    side: Optional[int]
    iters: int


def schedule(shape_HW: Tuple[int, int], iters: int, mode: str = "auto") -> List[Level]:
    """The levels of a run of ``iters`` iterations at ``shape_HW``, coarsest first (the last: ``Level(None, iters)``).

    ``"off"``: that level alone. ``"auto"``: before it, a level at 1/4 and one at 1/2 of the longest side, each
    kept when its longest side is at least :data:`MIN_COARSE_SIDE` and its shortest :data:`MIN_COARSE_SHORT` px,
    with ``COARSE_FRACTION`` of ``iters`` iterations, at most ``COARSE_MAX`` (a level given none is dropped).

    Example:
      >>> schedule((192, 256), 300)
      [Level(side=64, iters=100), Level(side=128, iters=50), Level(side=None, iters=300)]
      >>> schedule((96, 128), 40), schedule((192, 256), 300, "off")
      ([Level(side=64, iters=10), Level(side=None, iters=40)], [Level(side=None, iters=300)])
    """
    if mode not in WARM_STARTS:
        raise ValueError(f"warm_start must be one of {', '.join(WARM_STARTS)}, got {mode!r}")
    final = Level(None, int(iters))
    if mode == "off":
        return [final]
    h, w = int(shape_HW[0]), int(shape_HW[1])
    levels = []
    for factor, frac, cap in zip(FACTORS, COARSE_FRACTION, COARSE_MAX):
        side = int(round(max(h, w) / factor))
        short = I.fit_shape((h, w), size=side)
        n = min(cap, int(round(frac * iters)))
        if side >= MIN_COARSE_SIDE and min(short) >= MIN_COARSE_SHORT and n > 0:
            levels.append(Level(side, n))
    return levels + [final]


def detail_handoff(problem, raw_HWC: np.ndarray, previous, init, seed: int) -> np.ndarray:
    """Level k's initial variable: its own initial image plus the previous level's change to its initial image,
    resized: ``x0_k = clip(I_k + resize(x_{k-1} - I_{k-1}), 0, 1)`` with ``I_j`` the initial image of ``init`` at
    level j (:func:`nst_jax.problem.initial_image`); pixels frozen at level k keep ``I_k``."""
    from nst_jax.problem import initial_image

    here = initial_image(problem, init, seed)
    there = initial_image(previous, init, seed)
    change = np.asarray(raw_HWC, np.float32) - there
    x0 = np.clip(here + I.resize(change, here.shape[:2], clip=False)[..., :here.shape[-1]], 0.0, 1.0)
    frozen = getattr(problem.targets, "frozen", None)
    if frozen is not None:
        x0 = np.where(np.asarray(frozen) > 0, here, x0)
    return x0.astype(np.float32)


def handoff(options) -> Callable:
    """The hand-off of a warm start with these :class:`~nst_jax.config.SolveOptions`: :func:`detail_handoff` with
    its ``init`` and ``seed``."""
    return lambda problem, raw, previous: detail_handoff(problem, raw, previous, options.init, options.seed)
