"""The solvers behind ``SolverConfig.name``, behind one interface the runner drives.

A solver binds a value-and-gradient function ``vg(x, *args) -> (f, g, aux)`` (``args``: params, targets, weights;
``aux``: what was evaluated with ``f``, the loss terms) and a box ``box(x, *args) -> (lower, upper)`` (per-element
arrays; or None for the default [0, 1]; a freeze mask sets ``lower = upper = x`` at its pixels, which then never
move: every solver keeps its iterates in the box) and offers::

    state = solver.init(x0, *args)               # evaluates f+g at x0 (counted)
    state = solver.step(state, *args, active=m)  # one iteration; inactive members keep their state
    solver.x(state), solver.value(state), solver.aux(state), solver.nfev(state), solver.failed(state)
    solver.revert(old, new, keep_old)            # old where keep_old (a failed or inactive step)
    solver.trial_point(state, *args)             # where the next step evaluates (to name a non-finite term)

* ``"lbfgs"`` -- :func:`nst_jax.lbfgs.guarded_lbfgs` (one f+g per iteration, exact f+g counts under ``vmap``).
* ``"jaxopt"`` -- ``jaxopt.LBFGSB`` (L-BFGS-B with its line search) with the box as a true bound constraint,
  on the objective scaled by ``c = 1 / max|g(x0)|`` (its step bounds assume unit scale; reported values unscaled).
* ``"optax-lbfgs"`` -- ``optax.lbfgs`` (zoom line search); the iterate is projected onto the box after each update and
  value and gradient are evaluated afresh at the projected point (counted).
* ``"adam"`` -- ``optax.adam`` with projection onto the box (one f+g per iteration).

With ``SolverConfig.ema`` any of them is wrapped in :class:`EMASolver`, whose ``x`` is the exponential moving average
of the iterates (the result) while the wrapped solver steps on as before.

Under ``vmap`` a line search's ``lax.cond`` runs both branches, so the f+g counts of the line-search solvers are
logical evaluations; the count of ``lbfgs`` and ``adam`` is exact in all cases.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from nst_jax import lbfgs
from nst_jax.config import SolverConfig

__all__ = ["make_solver", "unit_box", "LBFGSSolver", "JaxoptLBFGSB", "OptaxSolver", "EMASolver", "EMAState"]


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
        self.opt = lbfgs.guarded_lbfgs(cfg.history, cfg.step, cfg.precondition)

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


class JaxoptLBFGSB(_Fields):
    """``jaxopt.LBFGSB`` on the objective scaled by ``c = 1 / max|g(x0)|`` (a traced number kept in the state)."""

    def __init__(self, vg: Callable, cfg: SolverConfig, box: Callable = unit_box):
        import jaxopt

        def scaled(x, c, *args):
            f, g, aux = vg(x, *args)
            return (f * c, aux), g * c

        self.vg, self.box = vg, box
        self.solver = jaxopt.LBFGSB(fun=scaled, value_and_grad=True, has_aux=True, history_size=cfg.history,
                                    maxiter=10 ** 9, tol=0.0)

    def _bounds(self, x, *args):
        lo, hi = _bounds(self.box, x, *args)
        full = lambda v: jnp.broadcast_to(jnp.asarray(v, x.dtype), x.shape)  # noqa: E731
        return full(lo), full(hi)

    def init(self, x0, *args):
        _, g0, _ = self.vg(x0, *args)
        c = 1.0 / jnp.maximum(jnp.max(jnp.abs(g0)), 1e-30)
        return (x0, self.solver.init_state(x0, self._bounds(x0, *args), c, *args), c)

    def step(self, st, *args, active=True):  # inactive members are reverted by the caller
        x, s, c = st
        x, s = self.solver.update(x, s, self._bounds(x, *args), c, *args)
        return (x, s, c)

    @staticmethod
    def x(st):
        return st[0]

    @staticmethod
    def value(st):
        return st[1].value / st[2]

    @staticmethod
    def aux(st):
        return st[1].aux

    @staticmethod
    def nfev(st):
        # + 1: the f+g at x0 that set the scale (jaxopt counts its own evaluations only)
        return st[1].num_fun_eval.astype(jnp.int32) + 1


class _OptaxState(NamedTuple):
    x: jax.Array
    opt: Any
    value: jax.Array
    grad: jax.Array
    nfev: jax.Array
    aux: Any


class OptaxSolver(_Fields):
    """``optax.lbfgs`` (zoom line search; its value function ``f`` is the loss alone, so a line-search evaluation
    runs no discarded backward pass) or ``optax.adam``, projected onto [0, 1] after each update."""

    def __init__(self, vg: Callable, cfg: SolverConfig, f: Optional[Callable] = None, box: Callable = unit_box):
        import optax

        self.vg, self.adam, self.box = vg, cfg.name == "adam", box
        self.f = f if f is not None else (lambda x, *args: vg(x, *args)[0])
        self.opt = optax.adam(cfg.step) if self.adam else optax.lbfgs(memory_size=cfg.history)

    def init(self, x0, *args):
        f, g, aux = self.vg(x0, *args)
        return _OptaxState(x0, self.opt.init(x0), f, g, jnp.asarray(1), aux)

    def step(self, st: _OptaxState, *args, active=True):  # inactive members are reverted by the caller
        import optax

        if self.adam:
            upd, opt = self.opt.update(st.grad, st.opt, st.x)
            extra = jnp.asarray(0)
        else:
            fn = lambda x: self.f(x, *args)  # noqa: E731
            upd, opt = self.opt.update(st.grad, st.opt, st.x, value=st.value, grad=st.grad, value_fn=fn)
            extra = jnp.asarray(optax.tree_utils.tree_get(opt, "num_linesearch_steps"), jnp.int32)
        x = jnp.clip(optax.apply_updates(st.x, upd), *_bounds(self.box, st.x, *args))
        f, g, aux = self.vg(x, *args)
        return _OptaxState(x, opt, f, g, st.nfev + 1 + extra, aux)


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

    def failed(self, st: EMAState) -> jax.Array:
        return self.inner.failed(st.inner) | ~jnp.all(jnp.isfinite(st.biased))

    def revert(self, old: EMAState, new: EMAState, keep_old):
        return EMAState(self.inner.revert(old.inner, new.inner, keep_old),
                        *_select(keep_old, (old.biased, old.accum), (new.biased, new.accum)))

    def trial_point(self, st: EMAState, *args):
        return self.inner.trial_point(st.inner, *args)


def make_solver(cfg: SolverConfig, vg: Callable, f: Optional[Callable] = None, box: Callable = unit_box):
    """The solver named by ``cfg`` over ``vg(x, *args) -> (f, g, aux)``; ``f(x, *args)``: the value alone (for
    ``optax-lbfgs``'s line search); ``box(x, *args) -> (lower, upper)``: where the iterates stay. With ``cfg.ema``,
    wrapped in :class:`EMASolver`."""
    if cfg.name == "lbfgs":
        solver = LBFGSSolver(vg, cfg, box)
    elif cfg.name == "jaxopt":
        solver = JaxoptLBFGSB(vg, cfg, box)
    else:
        solver = OptaxSolver(vg, cfg, f if cfg.name == "optax-lbfgs" else None, box)
    return solver if cfg.ema is None else EMASolver(solver, cfg.ema)
