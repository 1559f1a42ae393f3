"""The solvers behind ``SolverConfig.name``, behind one interface the runner drives.

A solver binds a value-and-gradient function ``vg(x, *args) -> (f, g, aux)`` (``args``: params, targets, weights;
``aux``: what was evaluated with ``f``, the loss terms) and a box ``box(x, *args) -> (lower, upper)`` (per-element
arrays; or None for the default [0, 1]; a freeze mask sets ``lower = upper = x`` at its pixels, which then never
move: every solver keeps its iterates in the box) and offers::

    state = solver.init(x0, *args)               # evaluates f+g at x0 (counted)
    state = solver.step(state, *args, active=m)  # one iteration; inactive members keep their state
    solver.x(state), solver.value(state), solver.aux(state), solver.nfev(state), solver.failed(state)
    solver.nfev_run(state), solver.probe(state)  # f+g computed (see below); diagnostics (step size, pairs)
    solver.revert(old, new, keep_old)            # old where keep_old (a failed or inactive step)
    solver.trial_point(state, *args)             # where the next step evaluates (to name a non-finite term)

* ``"lbfgs"`` -- :func:`nst_jax.lbfgs.guarded_lbfgs` (one f+g per iteration, exact f+g counts under ``vmap``).
* ``"jaxopt"`` -- ``jaxopt.LBFGSB`` (L-BFGS-B with its zoom line search), the box as a true bound constraint.
* ``"jaxopt-lbfgs"`` -- ``jaxopt.LBFGS`` (zoom line search) on the clamp reparametrisation (:func:`clamped`).
* ``"optax-lbfgs"`` -- ``optax.lbfgs`` (zoom line search), clamped, or projected after each line search.
* ``"adam"`` -- ``optax.adam`` with projection onto the box (one f+g per iteration).

With ``SolverConfig.ema`` any of them is wrapped in :class:`EMASolver`, whose ``x`` is the exponential moving average
of the iterates (the result) while the wrapped solver steps on as before.

The three library solvers run on a scaled problem (:func:`scales`: the first step moves no pixel by more than about
``first_step``, the loss at unit scale for the line searches' tolerances), their line searches start from step 1
every iteration (the quasi-Newton step), and ``jaxopt-lbfgs`` / ``optax-lbfgs`` take the default solver's smoothing
preconditioner as a change of variables (:class:`Variables`). Which of them reach the benchmark's bar, and why the
others do not: :data:`CAVEATS` and ``benchmarks/RESULTS.md``.

f+g counts: ``nfev`` is what a member needs alone (logical); ``nfev_run`` what the program computed for it. They
differ only for a line search under ``vmap`` (a sweep), where a batched ``lax.cond`` runs both branches and a batched
``while_loop`` runs until its last member is done; :func:`make_solver`'s ``axis_name`` lets the solvers count that.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from nst_jax import lbfgs
from nst_jax.config import SolverConfig

__all__ = ["make_solver", "settings", "caveat", "scales", "clamped", "clamped_value", "Variables", "unit_box",
           "DEFAULTS", "CAVEATS", "MEMBER_AXIS", "LBFGSSolver", "JaxoptSolver", "OptaxLBFGS", "OptaxSolver",
           "EMASolver", "EMAState"]

#: The ``vmap`` axis name of a sweep's members (the runner's).
MEMBER_AXIS = "members"

#: Per-solver defaults of the solver-specific settings (chosen on the many-pair benchmark, benchmarks/RESULTS.md).
DEFAULTS = {
    "jaxopt": {"first_step": 0.1, "max_linesearch": 20},
    "jaxopt-lbfgs": {"first_step": 0.1, "max_linesearch": 20, "bounds": "clamp"},
    "optax-lbfgs": {"first_step": 0.1, "max_linesearch": 20, "bounds": "clamp"},
}


def _select(keep_old, old, new):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(keep_old, a, b), old, new)


def unit_box(x, *args):
    """The default box: None, i.e. [0, 1]."""
    return None


def _bounds(box: Callable, x, *args):
    """``box``'s (lower, upper), [0, 1] when it says None."""
    b = box(x, *args)
    return (0.0, 1.0) if b is None else b


class _Fields:
    """Accessors for solvers whose state names its iterate, loss and f+g count ``x``, ``value``, ``nfev``."""

    @staticmethod
    def x(st):
        return st.x

    @staticmethod
    def value(st):
        return st.value

    @staticmethod
    def nfev(st):
        return st.nfev

    @staticmethod
    def aux(st):
        return st.aux

    def nfev_run(self, st):
        """f+g the (batched) program computed for this member: ``nfev`` unless a line search runs under ``vmap``."""
        return self.nfev(st)

    def probe(self, st) -> dict:
        """Diagnostics read from the state (step size, curvature pairs); {} where the solver keeps none."""
        return {}

    def failed(self, st) -> jax.Array:
        """True when the step produced a non-finite loss or iterate (the run then stops, keeping the old state)."""
        return ~jnp.isfinite(self.value(st)) | ~jnp.all(jnp.isfinite(self.x(st)))

    @staticmethod
    def revert(old, new, keep_old):
        """``old`` where ``keep_old`` else ``new`` (a whole-state select)."""
        return _select(keep_old, old, new)

    def trial_point(self, st, *args):
        """Where the next step evaluates the loss."""
        return self.x(self.step(st, *args))


class LBFGSSolver(_Fields):
    """:func:`nst_jax.lbfgs.guarded_lbfgs` bound to ``vg``."""

    def __init__(self, vg: Callable, cfg: SolverConfig, box: Callable = unit_box):
        self.vg, self.box = vg, box
        self.opt = lbfgs.guarded_lbfgs(cfg.history, cfg.step, cfg.precondition,
                                       first_step=settings(cfg).first_step)

    def init(self, x0, *args):
        f, g, aux = self.vg(x0, *args)
        return self.opt.init(x0, f, g, aux)

    def _propose(self, st, *args):
        bounds = self.box(st.x, *args)
        return self.opt.propose(st) if bounds is None else self.opt.propose(st, bounds)

    def step(self, st, *args, active=True):
        xt = self._propose(st, *args)
        ft, gt, aux = self.vg(xt, *args)
        return self.opt.update(st, xt, ft, gt, active, aux)

    def failed(self, st) -> jax.Array:
        return self.opt.failed(st)

    @staticmethod
    def revert(old, new, keep_old):
        # the histories need no select: a rejected, failed or inactive step never writes them
        kept = ("s_hist", "y_hist")
        return new._replace(**{f: _select(keep_old, getattr(old, f), getattr(new, f))
                               for f in lbfgs.LBFGSState._fields if f not in kept})

    def trial_point(self, st, *args):
        return self._propose(st, *args)

    @staticmethod
    def probe(st) -> dict:
        """Diagnostics: the step multiplier and the curvature pairs stored (rejected trials store none)."""
        return {"stepsize": st.step, "pairs": st.count, "skipped": jnp.asarray(0), "nonpositive": jnp.asarray(0)}


def scales(g0: jax.Array, first_step: float):
    """``(sigma, c)`` of the scaled problem the line-search solvers see: ``v = x / sigma``, ``F(v) = c f(sigma v)``.

    ``sigma`` (a power of two, so ``x0 / sigma * sigma == x0`` exactly) is ``first_step |g0|_2 / max|g0|`` rounded,
    ``c = 1 / (sigma |g0|_2)``: then ``|grad F(v0)|_2 = 1`` and the libraries' first step ``-grad F`` (jaxopt's
    ``gamma = 1``, optax's unit-ball cap) moves no pixel by more than about ``first_step``. L-BFGS is invariant to a
    scalar scaling of ``x`` and ``f`` after its first step (``gamma`` adapts), so this sets the first step and brings
    the raw Gatys losses (1e5-1e10) to unit scale for the line searches' tolerances."""
    gn = jnp.sqrt(jnp.sum(jnp.square(g0.astype(jnp.float32))))
    gm = jnp.max(jnp.abs(g0))
    ok = (gm > 0) & jnp.isfinite(gn)
    sigma = jnp.where(ok, jnp.exp2(jnp.round(jnp.log2(first_step * gn / jnp.where(ok, gm, 1.0)))), 1.0)
    c = jnp.where(ok, 1.0 / (sigma * jnp.where(ok, gn, 1.0)), 1.0)
    return sigma.astype(jnp.float32), c.astype(jnp.float32)


class Variables(NamedTuple):
    """The change of variables ``u = sigma S v`` of the line-search solvers: ``S = P^(1/2)`` the square root of
    :func:`nst_jax.lbfgs.smoother`'s filter (so L-BFGS in ``v`` from ``gamma I`` is L-BFGS in ``u`` from
    ``gamma sigma^2 P``, the default solver's preconditioner) or the identity; ``S_inv`` its inverse."""

    S: Callable
    S_inv: Callable

    @staticmethod
    def of(shape, precondition: bool) -> "Variables":
        if not precondition:
            return Variables(lambda v: v, lambda v: v)
        return Variables(lbfgs.smoother(shape, 0.5), lbfgs.smoother(shape, -0.5))


def clamped(vg: Callable, box: Callable, v, sigma, c, *args, S: Callable = lambda v: v):
    """``(F, grad F, aux)`` of the clamp reparametrisation at ``v``: the loss at ``x = clip(u, lower, upper)``,
    ``u = sigma S v``, scaled by ``c``; its gradient in ``v`` is ``c sigma S^T m g`` with ``m`` 1 where ``lower <= u
    <= upper`` (bounds included, as PyTorch's ``clamp``) and 0 outside, so a pixel pushed out of the box stays there
    until the L-BFGS direction brings it back. ``S`` symmetric (a circular filter)."""
    u = sigma * S(v)
    lo, hi = _bounds(box, u, *args)
    f, g, aux = vg(jnp.clip(u, lo, hi), *args)
    inside = (u >= lo) & (u <= hi)
    return c * f, (c * sigma) * S(jnp.where(inside, g, jnp.zeros((), g.dtype))), aux


def clamped_value(f: Callable, box: Callable, v, sigma, c, *args, S: Callable = lambda v: v):
    """``(F, aux)`` of :func:`clamped` from ``f(x, *args) -> (f, aux)``: one forward pass, no gradient."""
    u = sigma * S(v)
    value, aux = f(jnp.clip(u, *_bounds(box, u, *args)), *args)
    return c * value, aux


def _variables(box: Callable, x, precondition: bool, *args) -> Variables:
    """:class:`Variables` for iterates like ``x``: preconditioned unless the box is per-pixel (a freeze mask, whose
    pixels a filter would move)."""
    return Variables.of(x.shape, precondition and box(x, *args) is None)


def _member_max(n, axis_name):
    """The largest ``n`` over the members of a vmapped program (``n`` itself outside ``vmap``)."""
    return n if axis_name is None else jax.lax.pmax(n, axis_name)


class _JaxoptState(NamedTuple):
    x: jax.Array  # the image: clip(sigma S v) into the box
    v: jax.Array  # the library's variable
    opt: Any  # jaxopt's state
    sigma: jax.Array
    c: jax.Array
    nfev: jax.Array  # f+g this member needed (logical)
    nfev_run: jax.Array  # f+g the program computed for it (under vmap: both branches of each lax.cond, every trip)


class JaxoptSolver(_Fields):
    """``jaxopt.LBFGSB`` (``"jaxopt"``: the box as a true bound constraint) or ``jaxopt.LBFGS`` (``"jaxopt-lbfgs"``:
    the clamp reparametrisation) on the scaled problem of :func:`scales`, its line search starting from step 1
    every iteration (``linesearch_init="max"``, the natural quasi-Newton step).

    f+g counts: jaxopt's line search also evaluates the loss once at the current point per iteration, to carry
    ``aux`` (the loss terms); it is given ``f`` for that, so the pass has no backward pass and is not counted (jaxopt
    counts it as a gradient evaluation). Under ``vmap`` a batched ``lax.cond`` runs both branches and a batched
    ``while_loop`` runs every member's body until the last member is done, so each zoom step computes 3 f+g per
    member (its two search phases and the safe step), except the first, which jaxopt unrolls before its loop and
    whose phase predicate is not yet batched (2 f+g): ``3 T - 1`` per iteration, ``T`` the most steps a member's
    line search took (``nfev_run``)."""

    def __init__(self, vg: Callable, cfg: SolverConfig, f: Optional[Callable] = None, box: Callable = unit_box,
                 axis_name: Optional[str] = None):
        import jaxopt

        self.vg, self.box, self.axis_name, self.bounded = vg, box, axis_name, cfg.name == "jaxopt"
        self.cfg = settings(cfg)
        self.precondition = cfg.precondition and not self.bounded  # L-BFGS-B's bounds are per element of v
        f = f if f is not None else (lambda x, *args: vg(x, *args)[::2])

        def fun(v, sigma, c, *args):
            return clamped_value(f, box, v, sigma, c, *args, S=self._vars(v, *args).S)

        def fun_and_grad(v, sigma, c, *args):
            value, g, aux = clamped(vg, box, v, sigma, c, *args, S=self._vars(v, *args).S)
            return (value, aux), g

        kind = jaxopt.LBFGSB if self.bounded else jaxopt.LBFGS
        self.solver = kind(fun=fun, value_and_grad=fun_and_grad, has_aux=True, history_size=cfg.history,
                           maxiter=10 ** 9,
                           tol=0.0, linesearch="zoom", maxls=self.cfg.max_linesearch,
                           linesearch_init="max")

    def _lib_args(self, v, sigma, *args):
        if not self.bounded:
            return ()
        lo, hi = _bounds(self.box, sigma * v, *args)
        full = lambda b: jnp.broadcast_to(jnp.asarray(b, v.dtype) / sigma, v.shape)  # noqa: E731
        return ((full(lo), full(hi)),)

    def _vars(self, v, *args) -> Variables:
        return _variables(self.box, v, self.precondition, *args)

    def init(self, x0, *args):
        one = jnp.ones((), jnp.float32)
        # one f+g at x0 (v = S^-1 x0) with sigma = c = 1, then the state rescaled (value by c, gradient by c sigma)
        v1 = self._vars(x0, *args).S_inv(x0)
        opt = self.solver.init_state(v1, *self._lib_args(v1, one, *args), one, one, *args)
        sigma, c = scales(opt.grad, self.cfg.first_step)
        opt = opt._replace(value=opt.value * c, grad=opt.grad * (c * sigma))
        n = jnp.asarray(1, jnp.int32)
        return _JaxoptState(x0, v1 / sigma, opt, sigma, c, n, n)

    def step(self, st: _JaxoptState, *args, active=True):  # inactive members are reverted by the caller
        v, opt = self.solver.update(st.v, st.opt, *self._lib_args(st.v, st.sigma, *args), st.sigma, st.c, *args)
        u = st.sigma * self._vars(v, *args).S(v)
        x = jnp.clip(u, *_bounds(self.box, u, *args))
        fg = (opt.num_grad_eval - st.opt.num_grad_eval).astype(jnp.int32) - 1  # less the aux forward pass
        trips = (opt.num_linesearch_iter - st.opt.num_linesearch_iter).astype(jnp.int32)
        run = _member_max(trips, self.axis_name)
        run = jnp.where(self.axis_name is None, fg, 3 * run - 1)
        return _JaxoptState(x, v, opt, st.sigma, st.c, st.nfev + fg, st.nfev_run + run)

    @staticmethod
    def value(st):
        return st.opt.value / st.c

    @staticmethod
    def aux(st):
        return st.opt.aux

    @staticmethod
    def nfev_run(st):
        return st.nfev_run

    def probe(self, st) -> dict:
        """Diagnostics: the last step size, the curvature pairs stored and those among them with ``s.y <= 0``."""
        o = st.opt
        u = st.sigma * Variables.of(st.v.shape, self.precondition).S(st.v)  # (no freeze mask in diagnostics)
        out = {"outside": jnp.mean((u < 0) | (u > 1))}
        if self.bounded:
            stored = o.num_updates
            return dict(out, stepsize=o.stepsize, pairs=jnp.minimum(stored, o.s_history.shape[0]),
                        skipped=o.iter_num - stored, nonpositive=jnp.asarray(0))
        m = o.rho_history.shape[0]
        used = jnp.arange(m) < jnp.minimum(o.iter_num, m)
        return dict(out, stepsize=o.stepsize, pairs=jnp.minimum(o.iter_num, m), skipped=jnp.asarray(0),
                    nonpositive=jnp.sum(used & (o.rho_history <= 0)))


class _OptaxState(NamedTuple):
    x: jax.Array
    opt: Any
    value: jax.Array
    grad: jax.Array
    nfev: jax.Array
    aux: Any


class OptaxSolver(_Fields):
    """``optax.adam`` with projection onto the box after each update (one f+g per iteration)."""

    def __init__(self, vg: Callable, cfg: SolverConfig, box: Callable = unit_box):
        import optax

        self.vg, self.box = vg, box
        self.opt = optax.adam(cfg.step)

    def init(self, x0, *args):
        f, g, aux = self.vg(x0, *args)
        return _OptaxState(x0, self.opt.init(x0), f, g, jnp.asarray(1), aux)

    def step(self, st: _OptaxState, *args, active=True):  # inactive members are reverted by the caller
        import optax

        upd, opt = self.opt.update(st.grad, st.opt, st.x)
        x = jnp.clip(optax.apply_updates(st.x, upd), *_bounds(self.box, st.x, *args))
        f, g, aux = self.vg(x, *args)
        return _OptaxState(x, opt, f, g, st.nfev + 1, aux)

    @staticmethod
    def nfev_run(st):
        return st.nfev


class _OptaxLBFGSState(NamedTuple):
    x: jax.Array  # the image: clip(sigma S v) into the box
    v: jax.Array  # the library's variable
    opt: Any
    value: jax.Array  # F(v) (scaled)
    grad: jax.Array  # grad F(v)
    aux: Any
    sigma: jax.Array
    c: jax.Array
    nfev: jax.Array
    nfev_run: jax.Array


class OptaxLBFGS(_Fields):
    """``optax.lbfgs`` with its zoom line search (starting from step 1) on the scaled problem of :func:`scales`.

    ``bounds="clamp"``: the line search runs on the clamp reparametrisation (:func:`clamped`, one f+g per line-search
    step, value and gradient reused from its state); the loss terms at the accepted point take one forward pass (no
    gradient, not counted as f+g), optax's line search carrying no ``aux``. ``bounds="project"``: the iterate is
    projected onto the box after each line search and value and gradient are evaluated afresh there (one more f+g).
    Under ``vmap`` each zoom step computes both branches of its ``lax.cond`` (2 f+g per member, ``nfev_run``)."""

    def __init__(self, vg: Callable, cfg: SolverConfig, f: Optional[Callable] = None, box: Callable = unit_box,
                 axis_name: Optional[str] = None):
        import optax

        self.vg, self.box, self.axis_name = vg, box, axis_name
        self.cfg = settings(cfg)
        self.project = self.cfg.bounds == "project"
        self.f = f if f is not None else (lambda x, *args: vg(x, *args)[::2])
        ls = optax.scale_by_zoom_linesearch(max_linesearch_steps=self.cfg.max_linesearch, initial_guess_strategy="one")
        self.opt = optax.lbfgs(memory_size=cfg.history, linesearch=ls)

    def _value_fn(self, sigma, c, args, S):
        if self.project:  # autodiff of the loss alone at the unprojected trial point
            return lambda v: c * self.f(sigma * S(v), *args)[0]

        @jax.custom_vjp
        def fn(v, sigma, c, args):
            return clamped(self.vg, self.box, v, sigma, c, *args, S=S)[0]

        def fwd(v, sigma, c, args):
            f, g, _ = clamped(self.vg, self.box, v, sigma, c, *args, S=S)
            return f, (g, sigma, c, args)

        def bwd(res, ct):
            g, sigma, c, args = res
            zeros = jax.tree_util.tree_map(jnp.zeros_like, (sigma, c, args))
            return (ct * g,) + zeros

        fn.defvjp(fwd, bwd)
        return lambda v: fn(v, sigma, c, args)

    def init(self, x0, *args):
        f, g, aux = self.vg(x0, *args)
        var = _variables(self.box, x0, self.cfg.precondition, *args)
        g1 = var.S(g)  # the gradient in v with sigma = c = 1 (x0 is in the box)
        sigma, c = scales(g1, self.cfg.first_step)
        v0 = var.S_inv(x0) / sigma
        n = jnp.asarray(1, jnp.int32)
        return _OptaxLBFGSState(x0, v0, self.opt.init(v0), c * f, (c * sigma) * g1, aux, sigma, c, n, n)

    def step(self, st: _OptaxLBFGSState, *args, active=True):  # inactive members are reverted by the caller
        import optax

        var = _variables(self.box, st.v, self.cfg.precondition, *args)
        fn = self._value_fn(st.sigma, st.c, args, var.S)
        upd, opt = self.opt.update(st.grad, st.opt, st.v, value=st.value, grad=st.grad, value_fn=fn)
        trips = jnp.asarray(optax.tree_utils.tree_get(opt, "num_linesearch_steps"), jnp.int32)
        v = optax.apply_updates(st.v, upd)
        u = st.sigma * var.S(v)
        x = jnp.clip(u, *_bounds(self.box, u, *args))
        if self.project:
            f, g, aux = self.vg(x, *args)
            v, value, grad, extra = var.S_inv(x) / st.sigma, st.c * f, (st.c * st.sigma) * var.S(g), 1
        else:
            value = optax.tree_utils.tree_get(opt, "value")
            grad = optax.tree_utils.tree_get(opt, "grad")
            aux = self.f(x, *args)[1]  # the terms: one forward pass, no gradient
            extra = 0
        run = jnp.where(self.axis_name is None, trips, 2 * _member_max(trips, self.axis_name)) + extra
        return _OptaxLBFGSState(x, v, opt, value, grad, aux, st.sigma, st.c, st.nfev + trips + extra,
                                st.nfev_run + run)

    @staticmethod
    def value(st):
        return st.value / st.c

    @staticmethod
    def nfev_run(st):
        return st.nfev_run

    def probe(self, st) -> dict:
        """Diagnostics: the last step size, the curvature pairs stored and those among them with ``s.y <= 0``."""
        import optax

        lbfgs_state = st.opt[0]
        m = lbfgs_state.weights_memory.shape[0]
        stored = jnp.minimum(jnp.maximum(lbfgs_state.count - 1, 0), m)
        used = jnp.arange(m) < stored
        u = st.sigma * Variables.of(st.v.shape, self.cfg.precondition).S(st.v)  # (no freeze mask in diagnostics)
        return {"outside": jnp.mean((u < 0) | (u > 1)),
                "stepsize": optax.tree_utils.tree_get(st.opt, "learning_rate"), "pairs": stored,
                "skipped": jnp.asarray(0), "nonpositive": jnp.sum(used & (lbfgs_state.weights_memory <= 0))}


#: Solvers that miss the bar (PyTorch's 100-f+g loss within 1.5x the default solver's f+g on the many-pair
#: benchmark), with the measured figures; ``runner.Solve`` warns when one is chosen.
CAVEATS = {
    "jaxopt": ("jaxopt (jaxopt.LBFGSB) misses the benchmark bar: on 4 pairs at 256 px it had not reached PyTorch's "
               "100-f+g loss after 1.6x the f+g the default lbfgs needs (20-91 f+g), its best loss still 5-197x the "
               "target; choose lbfgs (default), jaxopt-lbfgs or optax-lbfgs (within 0.98-1.12x of the default's f+g)"),
}


class EMAState(NamedTuple):
    inner: Any  # the wrapped solver's state
    biased: jax.Array  # sum_k (1 - d) d^(n - k) x_k over the iterates so far (x_0 included)
    accum: jax.Array  # d^(n + 1): 1 - accum is the sum of the weights in ``biased``


class EMASolver:
    """Iterate averaging: any solver, with ``x(state)`` the bias-corrected exponential moving average of its
    iterates (crowsonkb/style-transfer-pytorch's ``EMA``): after n steps ``sum_{k=0..n} d^(n-k) x_k / sum_{k=0..n}
    d^(n-k)``, x_0 the initial image, one term per iteration (an iteration whose step was rejected repeats its
    iterate). Loss values, terms and f+g counts are the wrapped solver's (of its iterate); the result image, and the
    final loss terms computed from it, are the average's. The average of points of the box stays in the box."""

    def __init__(self, inner, decay: float):
        self.inner, self.decay = inner, float(decay)

    def _fold(self, biased, accum, x):
        return self.decay * biased + (1.0 - self.decay) * x, self.decay * accum

    def init(self, x0, *args):
        st = self.inner.init(x0, *args)
        x = self.inner.x(st)
        return EMAState(st, *self._fold(jnp.zeros_like(x), jnp.ones((), jnp.float32), x))

    def step(self, st: EMAState, *args, active=True):
        inner = self.inner.step(st.inner, *args, active=active)
        biased, accum = self._fold(st.biased, st.accum, self.inner.x(inner))
        keep = ~jnp.asarray(active)  # an inactive member's average stays
        return EMAState(inner, jnp.where(keep, st.biased, biased), jnp.where(keep, st.accum, accum))

    def x(self, st: EMAState):
        return (st.biased / (1.0 - st.accum)).astype(st.biased.dtype)

    def value(self, st: EMAState):
        return self.inner.value(st.inner)

    def nfev(self, st: EMAState):
        return self.inner.nfev(st.inner)

    def aux(self, st: EMAState):
        return self.inner.aux(st.inner)

    def nfev_run(self, st: EMAState):
        return self.inner.nfev_run(st.inner)

    def probe(self, st: EMAState) -> dict:
        return self.inner.probe(st.inner)

    def failed(self, st: EMAState) -> jax.Array:
        return self.inner.failed(st.inner) | ~jnp.all(jnp.isfinite(st.biased))

    def revert(self, old: EMAState, new: EMAState, keep_old):
        return EMAState(self.inner.revert(old.inner, new.inner, keep_old),
                        *_select(keep_old, (old.biased, old.accum), (new.biased, new.accum)))

    def trial_point(self, st: EMAState, *args):
        return self.inner.trial_point(st.inner, *args)


def caveat(name: str) -> Optional[str]:
    """The warning for a solver that misses the benchmark bar (:data:`CAVEATS`), None for the others."""
    return CAVEATS.get(name)


def settings(cfg: SolverConfig) -> SolverConfig:
    """``cfg`` with the solver's defaults in place of ``None`` / ``"auto"`` (``first_step``, ``max_linesearch``,
    ``bounds``); :data:`DEFAULTS` holds them, their measurements ``benchmarks/RESULTS.md``."""
    d = DEFAULTS.get(cfg.name, {})
    return dataclasses.replace(
        cfg, first_step=cfg.first_step if cfg.first_step is not None else d.get("first_step", lbfgs.FIRST_STEP),
        max_linesearch=cfg.max_linesearch if cfg.max_linesearch is not None else d.get("max_linesearch"),
        bounds=cfg.bounds if cfg.bounds != "auto" else d.get("bounds", "auto"))


def make_solver(cfg: SolverConfig, vg: Callable, f: Optional[Callable] = None, box: Callable = unit_box,
                axis_name: Optional[str] = None):
    """The solver named by ``cfg`` over ``vg(x, *args) -> (f, g, aux)``; ``f(x, *args) -> (f, aux)``: the same
    without the gradient (the line-search solvers' loss terms at the accepted point, and ``optax-lbfgs``'s projected
    mode's line search); ``box(x, *args) -> (lower, upper)``: where the iterates stay; ``axis_name``:
    the ``vmap`` axis of a sweep's members (the line-search solvers count the f+g a batched program computes). With
    ``cfg.ema``, wrapped in :class:`EMASolver`."""
    if cfg.name == "lbfgs":
        solver = LBFGSSolver(vg, cfg, box)
    elif cfg.name in ("jaxopt", "jaxopt-lbfgs"):
        solver = JaxoptSolver(vg, cfg, f, box, axis_name)
    elif cfg.name == "optax-lbfgs":
        solver = OptaxLBFGS(vg, cfg, f, box, axis_name)
    else:
        solver = OptaxSolver(vg, cfg, box)
    return solver if cfg.ema is None else EMASolver(solver, cfg.ema)
