"""The default optimiser: projected, preconditioned L-BFGS with one f+g per iteration and a monotone guard.

A pure ``init / propose / update`` triple (the optax shape, with the one f+g per iteration made explicit), so it
drops into any loop, ``lax.while_loop`` included::

    opt = guarded_lbfgs(history=20)
    f, g = value_and_grad(x0)
    state = opt.init(x0, f, g)
    def body(state):
        x_trial = opt.propose(state)
        f, g = value_and_grad(x_trial)
        return opt.update(state, x_trial, f, g)

Each iteration evaluates one trial point ``x_t = clip(x + t d, lower, upper)`` with ``d = -H g`` the two-loop
direction and ``t = lr * step``. Elements on a bound whose gradient pushes them outward are held: their gradient
entries are zeroed before the two-loop recursion and their entries of ``d`` after it (two-metric projection,
Bertsekas 1982), so ``d`` is a descent direction that moves no held element and short steps are never cut by the
box; without it the projected step can stop short of a box-constrained minimum, every shrunken trial rejected. While the history is empty ``d = -P g`` and ``t`` is scaled so that the first move
changes no pixel by more than ``first_step`` (scale-free: loss scales differ by orders of magnitude between presets
and layer weightings). The trial is accepted when ``f(x_t) <= f(x) + 1e-4 g.(x_t - x)`` (Armijo); then ``step``
doubles (up to 1) and the pair ``(x_t - x, g_t - g)`` enters the circular history if its curvature ``s.y > 1e-10``.
Otherwise ``x`` and the history stay and ``step`` shrinks to the minimiser of the quadratic through ``f(x)``, the
slope ``g.(x_t - x)`` and ``f(x_t)``, kept within 0.1-0.5 of its value (0.5 when the fit has no minimum). Every
branch is a ``jnp.where``, so under ``vmap`` each member pays exactly one f+g per iteration.

Preconditioning (images [H, W, C] only): the two-loop recursion starts from ``H0 = gamma P`` instead of
``gamma I``, ``P`` a fixed circular smoothing filter (:func:`smoothing_spectrum`: gain 1 at the lowest frequency,
falling as 1/|f| to 0.2), ``gamma = s.y / y.P y``. Pixel gradients of a VGG loss are dominated by high frequencies
while much of the loss sits in broad structure; damping the former in the first guess of the inverse Hessian lets
the early iterations move the latter. Its effect on the benchmark is recorded in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LBFGSState", "GuardedLBFGS", "guarded_lbfgs", "smoothing_spectrum", "smoother", "two_loop",
           "SMOOTHING_FLOOR", "ARMIJO", "FIRST_STEP"]

SMOOTHING_FLOOR = 0.2  # high-frequency gain of the preconditioner (1 at the lowest frequency)
ARMIJO = 1e-4  # sufficient-decrease constant of the accept test
FIRST_STEP = 0.1  # largest pixel change of the first (gradient) step, images in [0, 1]


class LBFGSState(NamedTuple):
    """State of :func:`guarded_lbfgs` (a pytree; ``m`` = history)."""

    x: jax.Array  # the accepted iterate (what the user gets)
    value: jax.Array  # f(x)
    grad: jax.Array  # grad f(x)
    s_hist: jax.Array  # [m, *x.shape]
    y_hist: jax.Array  # [m, *x.shape]
    rho: jax.Array  # [m]: 1 / s.y
    head: jax.Array  # next slot to write
    count: jax.Array  # pairs stored (<= m)
    it: jax.Array  # iterations done
    nfev: jax.Array  # f+g evaluations (init counts one)
    step: jax.Array  # step multiplier in (0, 1]: shrunk when a trial is rejected, doubled (up to 1) when accepted
    trial: jax.Array  # f at the last trial point (non-finite: the caller stops)
    aux: Any = None  # what the caller evaluated with f at x (e.g. the loss terms), kept with the accepted point


class GuardedLBFGS(NamedTuple):
    """The optimiser as pure functions (see the module docstring).

    ``init(x0, f0, g0, aux=None) -> state``; ``propose(state, bounds=None) -> x_trial`` (``bounds``: per-element
    ``(lower, upper)`` overriding the box of :func:`guarded_lbfgs`, e.g. a freeze mask's); ``update(state, x_trial, f,
    g, active=True, aux=None) -> state`` (an inactive update accepts nothing: used for members of a batch that already
    stopped); ``failed(state)``: the last evaluation or the iterate is not finite. ``aux``: any pytree evaluated with
    ``f`` (e.g. the loss terms), kept in the state with the accepted point.
    """

    init: Callable
    propose: Callable
    update: Callable
    failed: Callable


def _vdot(a, b):
    return jnp.sum(a * b, dtype=jnp.float32)


def smoothing_spectrum(shape_HW: Tuple[int, int], floor: float = SMOOTHING_FLOOR) -> np.ndarray:
    """Spectrum of the preconditioner ``P`` for [H, W, C] images, [H, W // 2 + 1] (``rfft2`` layout).

    ``p(f) = floor + (1 - floor) f0 / max(|f|, f0)`` with ``|f|`` in cycles per pixel and ``f0 = 1 / max(H, W)``:
    1 for the lowest frequency, falling as ``1/|f|`` (the 1/f spectrum of natural images) to ``floor`` at the
    highest. ``P v = irfft2(p * rfft2(v))`` per channel (circular) is symmetric positive definite, so ``gamma P`` is
    a valid initial inverse Hessian for L-BFGS.

    Example:
      >>> p = smoothing_spectrum((4, 6))
      >>> p.shape, float(p[0, 0]), bool(p.min() >= SMOOTHING_FLOOR)
      ((4, 4), 1.0, True)
    """
    h, w = int(shape_HW[0]), int(shape_HW[1])
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f0 = 1.0 / max(h, w)
    radius = np.sqrt(fy ** 2 + fx ** 2)
    return (floor + (1.0 - floor) * f0 / np.maximum(radius, f0)).astype(np.float32)


def smoother(shape, power: float = 1.0) -> Callable[[jax.Array], jax.Array]:
    """``v -> P^power v`` for iterates of ``shape`` ([H, W, C] images, H and W >= 2); the identity for any other
    shape (``power`` 0.5 and -0.5: the square root and its inverse, for a change of variables ``x = P^(1/2) v``)."""
    if len(shape) != 3 or min(shape[:2]) < 2:
        return lambda v: v
    h, w = shape[:2]
    spec = (smoothing_spectrum((h, w)) ** power)[:, :, None]

    def apply(v):
        return jnp.fft.irfft2(jnp.fft.rfft2(v, axes=(0, 1)) * spec, s=(h, w), axes=(0, 1)).astype(v.dtype)

    return apply


def two_loop(g, s_hist, y_hist, rho, head, count, precond=lambda v: v):
    """``H g`` for the L-BFGS inverse-Hessian approximation of a circular history, started from ``H0 = gamma P``
    (``precond``: ``v -> P v``, symmetric positive definite; ``gamma = s.y / y.P y`` of the newest pair, 1 while
    the history is empty).

    Both loops run ``count`` times (a traced trip count), not ``m``, so unused slots cost nothing; under ``vmap``
    the loop runs to the largest member's count and masks the others, which is the same arithmetic."""
    m = s_hist.shape[0]

    def back(j, carry):
        q, alpha = carry
        idx = (head - 1 - j) % m
        a = rho[idx] * _vdot(s_hist[idx], q)
        return q - a * y_hist[idx], alpha.at[idx].set(a)

    q, alpha = jax.lax.fori_loop(0, count, back, (g, jnp.zeros_like(rho)))
    newest = (head - 1) % m
    sy = _vdot(s_hist[newest], y_hist[newest])
    yPy = _vdot(y_hist[newest], precond(y_hist[newest]))
    gamma = jnp.where((count > 0) & (yPy > 0), sy / jnp.where(yPy > 0, yPy, 1.0), 1.0)
    r = gamma * precond(q)

    def fwd(j, r):
        idx = (head - count + j) % m
        b = rho[idx] * _vdot(y_hist[idx], r)
        return r + s_hist[idx] * (alpha[idx] - b)

    return jax.lax.fori_loop(0, count, fwd, r)


def guarded_lbfgs(history: int = 100, lr: float = 1.0, precondition: bool = True, lower: float = 0.0,
                  upper: float = 1.0, first_step: float = FIRST_STEP) -> GuardedLBFGS:
    """The projected L-BFGS of the module docstring on the box ``[lower, upper]``.

    Args:
      history: pairs kept (m). lr: step multiplier (1 takes the full L-BFGS step). precondition: use ``gamma P``
        (images only). first_step: the first (gradient) step's largest move per element.

    Example (a box-constrained quadratic whose minimiser lies partly outside [0, 1]):
      >>> c = jnp.array([-0.5, 0.3, 0.8, 1.7])
      >>> vg = jax.value_and_grad(lambda x: jnp.sum((x - c) ** 2))
      >>> opt = guarded_lbfgs(history=5)
      >>> st = opt.init(jnp.full(4, 0.5), *vg(jnp.full(4, 0.5)))
      >>> for _ in range(30):
      ...     xt = opt.propose(st)
      ...     st = opt.update(st, xt, *vg(xt))
      >>> [round(float(v), 3) for v in st.x], int(st.nfev)
      ([0.0, 0.3, 0.8, 1.0], 31)
    """

    def init(x0, f0, g0, aux=None) -> LBFGSState:
        z = jnp.zeros((history,) + x0.shape, x0.dtype)
        return LBFGSState(x0, f0, g0, z, z, jnp.zeros(history, jnp.float32), jnp.asarray(0), jnp.asarray(0),
                          jnp.asarray(0), jnp.asarray(1), jnp.asarray(1.0, jnp.float32), f0, aux)

    def propose(st: LBFGSState, bounds=None) -> jax.Array:
        precond = smoother(st.x.shape) if precondition else (lambda v: v)
        lo, hi = (lower, upper) if bounds is None else bounds
        # elements held at a bound by their gradient take no part in the step (two-metric projection)
        free = ~(((st.x <= lo) & (st.grad > 0)) | ((st.x >= hi) & (st.grad < 0)))
        zero = jnp.zeros((), st.grad.dtype)
        d = -two_loop(jnp.where(free, st.grad, zero), st.s_hist, st.y_hist, st.rho, st.head, st.count, precond)
        d = jnp.where(free, d, zero)
        first = first_step / jnp.maximum(jnp.max(jnp.abs(d)), 1e-30)
        t = jnp.where(st.count == 0, first, 1.0) * lr * st.step
        return jnp.clip(st.x + t * d, lo, hi)

    def update(st: LBFGSState, xt, ft, gt, active=True, aux=None) -> LBFGSState:
        s, y = xt - st.x, gt - st.grad
        sy = _vdot(s, y)
        gs = _vdot(st.grad, s)  # directional derivative along the (projected) trial step
        accept = (ft <= st.value + ARMIJO * gs) & active  # False for NaN too
        ok = (sy > 1e-10) & accept
        # write one slot (in place when the state is donated); a skipped pair rewrites the slot with its old contents
        s_hist = st.s_hist.at[st.head].set(jnp.where(ok, s, st.s_hist[st.head]))
        y_hist = st.y_hist.at[st.head].set(jnp.where(ok, y, st.y_hist[st.head]))
        rho = st.rho.at[st.head].set(jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), st.rho[st.head]))
        head = jnp.where(ok, (st.head + 1) % history, st.head)
        count = jnp.where(ok, jnp.minimum(st.count + 1, history), st.count)
        # rejected: the minimiser of the quadratic through f, its slope and f_t, within [0.1, 0.5] x the step
        curv = ft - st.value - gs
        shrink = jnp.where(curv > 0, -gs / (2.0 * jnp.where(curv > 0, curv, 1.0)), 0.5)
        shrink = jnp.clip(jnp.where(jnp.isfinite(shrink), shrink, 0.5), 0.1, 0.5)
        step = jnp.where(accept, jnp.minimum(2.0 * st.step, 1.0), shrink * st.step)
        kept_aux = st.aux if aux is None else jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), aux, st.aux)
        return LBFGSState(jnp.where(accept, xt, st.x), jnp.where(accept, ft, st.value),
                          jnp.where(accept, gt, st.grad), s_hist, y_hist, rho, head, count, st.it + 1, st.nfev + 1,
                          step, ft, kept_aux)

    def failed(st: LBFGSState) -> jax.Array:
        return (~jnp.isfinite(st.trial) | ~jnp.isfinite(st.value) | ~jnp.all(jnp.isfinite(st.grad))
                | ~jnp.all(jnp.isfinite(st.x)))

    return GuardedLBFGS(init, propose, update, failed)
