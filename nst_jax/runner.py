"""The runner: one compiled solve, run in chunks, with progress, checkpoints, interruption and resume.

::

    run = Solve(loss_cfg, solver_cfg)                          # light: compiled programs live in jit's cache
    out = run(params, targets, weights, x0_HWC, iters)         # SolveOutput: image, trace, terms, timings

A sweep is the same program under ``jax.vmap`` over a leading K axis of ``x0`` and ``weights`` (and of ``targets``
with ``Members(targets=0)``); one compile serves all K. The jitted pieces (:func:`init_state`, :func:`step`,
:func:`run_chunk`, :func:`final_terms`) take the configs as static arguments, so every ``Solve`` with equal configs
shares them, and new images or weights of the same shapes compile nothing.

A chunk runs ``SolverConfig.chunk`` iterations as one ``lax.while_loop`` (``loop="while"``) or as that many
dispatches of one compiled, donated step read back once at the chunk's end (``loop="host"``); both compute the same
iterates. Between chunks the runner reports progress, calls the hooks and polls ``stop``. A non-finite loss stops
a member where it happened, keeping its last finite state.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import backend, batching, distributed, objective, solvers, vgg
from nst_jax.config import LossConfig, SolverConfig

__all__ = ["Members", "SolveOutput", "Solve", "init_state", "step", "run_chunk", "final_terms", "CompileClock"]


class Members(NamedTuple):
    """Which arguments carry the leading K axis of a sweep (0) and which are shared (None); ``x0`` always does.

    ``sharded``: the K axis lies across every device JAX sees (a mesh over ``jax.devices()``, all processes' in a
    multi-process run; K a multiple of the device count) and each device runs its members in a ``jax.shard_map``:
    the per-member computations, FFTs included, stay on their device (a plain ``jit`` over sharded inputs would
    gather every member's FFT onto every device; XLA:CPU refuses some of those gathers' layouts)."""

    targets: Optional[int] = None
    weights: Optional[int] = 0
    sharded: bool = False


class ChunkOut(NamedTuple):
    state: Any
    values: jax.Array  # [chunk] loss after each iteration (NaN past the end)
    nfevs: jax.Array  # [chunk] cumulative f+g after each iteration
    terms: Dict[str, jax.Array]  # {term: [chunk]} the unweighted loss terms after each iteration
    done: jax.Array  # iterations run before a non-finite loss (or all of them)
    bad: jax.Array  # a non-finite loss stopped the run (the state is the last finite one)


class SolveOutput(NamedTuple):
    """Result of a compiled solve. With a sweep, arrays carry a leading K axis."""

    image: np.ndarray  # [H, W, C] (or [K, H, W, C]) in [0, 1]
    values: np.ndarray  # [T] (or [K, T]) loss after each iteration, entry 0 the initial image
    nfevs: np.ndarray  # [T] (or [K, T]) cumulative f+g evaluations
    terms: Dict[str, np.ndarray]  # final content / style / tv / total ([] or [K])
    terms_trace: Dict[str, np.ndarray]  # {content, style, tv: [T] (or [K, T])} unweighted terms after each iteration
    seconds: np.ndarray  # [T] solve seconds (compile excluded) when each iteration was done; measured at chunk ends
    #                     and interpolated linearly within a chunk
    compile_seconds: float
    run_seconds: float
    stopped_nonfinite: np.ndarray  # bool [] (or [K]): a non-finite loss stopped the member
    nonfinite_term: Any  # the first non-finite term's name (a list per member for a sweep), None if none
    interrupted: bool = False  # ``stop()`` ended the run early
    iters_done: Any = 0  # iterations run ([] or [K]; including those before a resume; a stopped member's stop there)
    nfev_run: Any = None  # f+g the program computed ([] or [K]); above ``nfevs[..., -1]`` only for a line search
    #                      under vmap, where both branches of its lax.cond and every member's trips run


class CompileClock:
    """Context manager measuring the seconds JAX spends tracing, lowering and compiling (or fetching from its
    persistent cache) while it is active, from ``jax.monitoring`` duration events: ``seconds`` is the length of the
    union of the events' time spans (nested traces count once), ``compiles`` the number of backend compilations and
    cache fetches."""

    _EVENTS = ("/jax/core/compile/", "/jax/compilation_cache/cache_retrieval")

    def __init__(self):
        self.compiles, self._spans = 0, []

    def _listen(self, event: str, duration: float, **_):
        if event.startswith(self._EVENTS):
            end = time.perf_counter()
            self._spans.append((end - duration, end))
            self.compiles += event.endswith("backend_compile_duration") or "cache_retrieval" in event

    @property
    def seconds(self) -> float:
        total, reach = 0.0, -np.inf
        for start, end in sorted(self._spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def __enter__(self) -> "CompileClock":
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


# --------------------------------------------------------------------------------------------------- compiled pieces

def _solver(loss_cfg: LossConfig, solver_cfg: SolverConfig, batched: bool = False):
    f = functools.partial(objective.total_and_terms, cfg=loss_cfg)
    vg_aux = jax.value_and_grad(functools.partial(objective.total_and_terms, cfg=loss_cfg), has_aux=True)

    def vg(x, params, targets, weights):
        (value, terms), grad = vg_aux(x, params, targets, weights)
        return value, objective.free_gradient(grad, targets), terms

    def box(x, params, targets, weights):
        return None if targets.frozen is None else objective.feasible_box(x, targets)

    if solver_cfg.members == "unroll" and solver_cfg.name != "optax-lbfgs":  # its line search differentiates f
        vg = batching.unrolled_over_members(vg)
    return solvers.make_solver(solver_cfg, vg, f, box, solvers.MEMBER_AXIS if batched else None)


def _one_at_a_time(fn, axes):
    """``fn`` over the arguments' member axes (0 or None per argument) one member after another (``lax.map``)."""
    def mapped(*args):
        picked = [i for i, a in enumerate(axes) if a is not None]

        def one(member_args):
            full = list(args)
            for i, a in zip(picked, member_args):
                full[i] = a
            return fn(*full)

        return jax.lax.map(one, [args[i] for i in picked])

    return mapped


def _batched(fn, members: Optional[Members], shared_before: int = 0, extra: Tuple = (), sequential: bool = False):
    """``fn(member_args..., params, targets, weights, *extra)`` vmapped over the member axes (identity if None);
    with ``members.sharded``, each device's members in a ``shard_map`` over the mesh of all devices.

    ``sequential``: members one after another (``lax.map``) instead of ``vmap``, for one-off forward evaluations:
    the peak memory of one member, and it avoids an XLA:CPU deadlock (jaxlib 0.10.2: a vmapped forward loss with both
    the Gram and the W2 terms never finished at 64 px; the same program member by member does)."""
    if members is None:
        return fn
    axes = (0,) * shared_before + (None, members.targets, members.weights) + (None,) * len(extra)
    if sequential:
        batched = _one_at_a_time(fn, axes)
    else:
        batched = jax.vmap(fn, in_axes=axes, axis_name=solvers.MEMBER_AXIS)
    if not members.sharded:
        return batched
    from jax.sharding import Mesh, PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("k",))
    specs = tuple(P() if a is None else P("k") for a in axes)
    # members are independent (no collectives): no replication checks, which loop carries started from constants
    # would fail
    return jax.shard_map(batched, mesh=mesh, in_specs=specs, out_specs=P("k"), check_vma=False)


def _guarded(solver, st, params, targets, weights, active=True):
    """One solver step that refuses a non-finite result: (state, bad, value, nfev, terms); on ``bad`` (or when the
    member is not ``active``) the state is the previous one and value and terms are NaN."""
    new = solver.step(st, params, targets, weights, active=active)
    bad = solver.failed(new) & active
    keep = bad | ~jnp.asarray(active)
    nfev = jnp.where(active, solver.nfev(new), solver.nfev(st))  # an inactive member evaluates nothing
    terms = jax.tree_util.tree_map(lambda t: jnp.where(keep, jnp.nan, t), solver.aux(new))
    return solver.revert(st, new, keep), bad, jnp.where(keep, jnp.nan, solver.value(new)), nfev, terms


@functools.partial(jax.jit, static_argnames=("loss_cfg", "solver_cfg", "members"))
def init_state(x0, params, targets, weights, loss_cfg: LossConfig, solver_cfg: SolverConfig,
               members: Optional[Members] = None):
    """The solver state at ``x0`` (one f+g)."""
    solver = _solver(loss_cfg, solver_cfg, members is not None)
    return _batched(solver.init, members, 1)(x0, params, targets, weights)


@functools.partial(jax.jit, static_argnames=("loss_cfg", "solver_cfg", "members"), donate_argnums=(0,))
def step(state, bad, params, targets, weights, loss_cfg: LossConfig, solver_cfg: SolverConfig,
         members: Optional[Members] = None):
    """One guarded iteration (the host loop's unit): ``(state, bad, value, nfev, terms)``; a member already ``bad``
    stays."""
    solver = _solver(loss_cfg, solver_cfg, members is not None)

    def one(st, was_bad, params, targets, weights):
        st, new_bad, v, nfev, terms = _guarded(solver, st, params, targets, weights, active=~was_bad)
        return st, was_bad | new_bad, v, nfev, terms

    return _batched(one, members, 2)(state, bad, params, targets, weights)


@functools.partial(jax.jit, static_argnames=("loss_cfg", "solver_cfg", "members"), donate_argnums=(0,))
def run_chunk(state, bad, params, targets, weights, n, loss_cfg: LossConfig, solver_cfg: SolverConfig,
              members: Optional[Members] = None) -> ChunkOut:
    """Up to ``n`` (<= ``solver_cfg.chunk``) iterations in one ``lax.while_loop``, stopping at a non-finite loss;
    a member already ``bad`` runs none."""
    solver = _solver(loss_cfg, solver_cfg, members is not None)
    size = solver_cfg.chunk

    def one(state, was_bad, params, targets, weights, n):
        def cond(c):
            i, _, _, _, _, bad = c
            return (i < n) & ~bad

        def body(c):
            i, st, values, nfevs, terms, _ = c
            st, bad, v, nfev, t = _guarded(solver, st, params, targets, weights)
            terms = {k: terms[k].at[i].set(t[k]) for k in terms}
            return i + 1, st, values.at[i].set(v), nfevs.at[i].set(nfev), terms, bad

        nan = jnp.full((size,), jnp.nan, jnp.float32)
        init = (jnp.asarray(0), state, nan, jnp.zeros((size,), jnp.int32), {k: nan for k in objective.TERMS},
                was_bad)
        i, state, values, nfevs, terms, bad = jax.lax.while_loop(cond, body, init)
        return ChunkOut(state, values, nfevs, terms, i, bad)

    return _batched(one, members, 2, extra=(n,))(state, bad, params, targets, weights, n)


@functools.partial(jax.jit, static_argnames=("loss_cfg", "members"))
def final_terms(x, params, targets, weights, loss_cfg: LossConfig, members: Optional[Members] = None):
    """:func:`nst_jax.objective.loss_terms` of the final image(s), one member after another (a one-off forward)."""
    def terms(x, params, targets, weights):
        return objective.loss_terms(params, x, targets, weights, loss_cfg)

    return _batched(terms, members, 1, sequential=True)(x, params, targets, weights)


# --------------------------------------------------------------------------------------------------- the runner

class _Trace:
    """The trace of a run as it grows chunk by chunk: values, f+g counts, terms, solve seconds ([..., T] arrays)."""

    def __init__(self, values, nfevs, terms, seconds):
        self.values, self.nfevs, self.seconds = [values], [nfevs], [np.asarray(seconds, np.float64)]
        self.terms = {k: [v] for k, v in terms.items()}

    def add(self, out: ChunkOut, k: int, t0: float, t1: float) -> None:
        """The first ``k`` iterations of a chunk that ran from solve second ``t0`` to ``t1``."""
        self.values.append(distributed.fetch(out.values)[..., :k])
        self.nfevs.append(distributed.fetch(out.nfevs)[..., :k])
        for name in self.terms:
            self.terms[name].append(distributed.fetch(out.terms[name])[..., :k])
        self.seconds.append(t0 + (t1 - t0) * np.arange(1, k + 1) / max(k, 1))

    def arrays(self):
        cat = lambda parts: np.concatenate(parts, axis=-1)  # noqa: E731
        return cat(self.values), cat(self.nfevs), {k: cat(v) for k, v in self.terms.items()}, cat(self.seconds)


class Solve:
    """A compiled solve for one (loss structure, solver) pair; ``members`` (a :class:`Members`) makes it a sweep.

    ``"auto"`` settings are resolved here (:mod:`nst_jax.backend`), so equal settings share compiled programs. Each
    call runs on :func:`nst_jax.vgg.prepare_params` of the params it gets (Winograd kernels transformed once per
    solve, not per f+g).
    """

    def __init__(self, loss_cfg: LossConfig, solver_cfg: SolverConfig = SolverConfig(), *,
                 members: Optional[Members] = None, batched: bool = False):
        self.loss_cfg = dataclasses.replace(loss_cfg, ops=backend.resolve("ops", loss_cfg.ops),
                                            conv=backend.resolve("conv", loss_cfg.conv),
                                            precision=backend.resolve("precision", loss_cfg.precision))
        self.solver_cfg = dataclasses.replace(solver_cfg, loop=backend.resolve("loop", solver_cfg.loop),
                                              members=backend.resolve("members", solver_cfg.members))
        self.members = members if members is not None else (Members() if batched else None)
        self.loop = self.solver_cfg.loop
        if solvers.caveat(solver_cfg.name):
            warnings.warn(solvers.caveat(solver_cfg.name), stacklevel=2)
        self._get = _solver(self.loss_cfg, self.solver_cfg)

    def _member_shape(self, x0) -> Tuple[int, ...]:
        return (int(np.shape(x0)[0]),) if self.members is not None else ()

    def _read(self, fn_name: str, state):
        fn = getattr(self._get, fn_name)
        out = jax.vmap(fn)(state) if self.members is not None else fn(state)
        return jax.tree_util.tree_map(distributed.fetch, out)

    def _resumed_state(self, resume, x0, params, targets, weights, iters):
        """The saved state, checked against the one this solve would build (count, shapes, dtypes), and the trace."""
        lc, sc, mb = self.loss_cfg, self.solver_cfg, self.members
        template = jax.eval_shape(lambda *a: init_state(*a, lc, sc, mb), x0, params, targets, weights)
        t_leaves, treedef = jax.tree_util.tree_flatten(template)
        leaves = list(resume["leaves"])
        if len(leaves) != len(t_leaves):
            raise ValueError(f"the saved solver state has {len(leaves)} arrays but the {sc.name} solver of this run "
                             f"has {len(t_leaves)}; resume with the solver and history it was saved with")
        for j, (a, t) in enumerate(zip(leaves, t_leaves)):
            if tuple(np.shape(a)) != tuple(t.shape) or np.asarray(a).dtype != t.dtype:
                raise ValueError(f"saved solver state array {j} is {np.asarray(a).dtype}{list(np.shape(a))} but this "
                                 f"run needs {t.dtype}{list(t.shape)}; resume with the same size, solver and history")
        done = int(resume["iteration"])
        if done > iters:
            raise ValueError(f"the saved run has already done {done} iterations, more than the {iters} asked for; "
                             f"ask for at least {done}")
        state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a, t.dtype) for a, t in zip(leaves, t_leaves)])
        values = np.asarray(resume["values"], np.float32)
        nan = np.full(values.shape, np.nan, np.float32)
        terms = {k: np.asarray(resume.get("terms", {}).get(k, nan), np.float32) for k in objective.TERMS}
        seconds = np.asarray(resume.get("seconds", np.zeros(values.shape[-1])), np.float64)
        return state, done, _Trace(values, np.asarray(resume["nfevs"], np.int32), terms, seconds)

    def _place(self, members_array):
        """A host array of one value per member, placed as the compiled programs take it."""
        if self.members is not None and self.members.sharded:
            return distributed.place(members_array)
        return jnp.asarray(members_array)

    def _chunk_fn(self, member_shape, stop) -> Callable:
        """``chunk(state, bad, params, targets, weights, n) -> (ChunkOut, iterations run)``."""
        lc, sc, mb = self.loss_cfg, self.solver_cfg, self.members
        if self.loop == "while":
            return lambda state, bad, p, t, w, n: (run_chunk(state, self._place(bad), p, t, w,
                                                             jnp.asarray(n, jnp.int32), lc, sc, mb), n)
        sc_step = dataclasses.replace(sc, chunk=1)  # the step does not depend on the chunk length

        def host_chunk(state, bad, p, t, w, n):
            was_bad, bad = bad, self._place(bad)
            outs = []
            for _ in range(n):
                state, bad, *rest = step(state, bad, p, t, w, lc, sc_step, mb)
                outs.append(rest)
                if stop is not None and jax.process_count() == 1 and stop():  # answer at the next iteration
                    break
            n = len(outs)  # >= 1: a chunk has at least one iteration
            values, nfevs, terms = jax.tree_util.tree_map(lambda *a: np.stack([distributed.fetch(v) for v in a], -1),
                                                          *outs)
            bad = distributed.fetch(bad)
            # iterations run before the first non-finite value, per member (as the while loop reports them)
            done = np.where(bad, np.argmax(~np.isfinite(values), -1), n)
            return ChunkOut(state, values, nfevs, terms, np.where(was_bad, 0, done), bad), n

        return host_chunk

    def _chunk_length(self, dispatched: int, iters: int, every: Sequence[int], per_iter: Optional[float],
                      report_seconds: Optional[float]) -> int:
        """Iterations of the next chunk: about ``report_seconds`` of work (the first chunk: one iteration), at most
        ``SolverConfig.chunk``, ending at every multiple of each of ``every`` and at ``iters``."""
        n = self.solver_cfg.chunk
        if report_seconds is not None:
            n = 1 if per_iter is None else int(np.clip(report_seconds / max(per_iter, 1e-9), 1, n))
        n = min(n, iters - dispatched)
        for e in every:
            n = min(n, e - dispatched % e)
        return n

    def __call__(self, params, targets, weights, x0, iters: int, *, callback: Optional[Callable] = None,
                 progress: Optional[Callable] = None, resume: Optional[Mapping[str, Any]] = None,
                 on_chunk: Optional[Callable] = None, stop: Optional[Callable[[], bool]] = None,
                 every: Sequence[int] = (), report_seconds: Optional[float] = None) -> SolveOutput:
        """Run ``iters`` solver iterations from ``x0`` (or continue a saved run, see ``resume``).

        Args:
          x0: [H, W, C] (or [K, H, W, C] for a sweep) initial image in [0, 1].
          callback: after each chunk, ``callback(done_iters, x, values_so_far)`` (intermediate saves).
          progress: after each chunk, ``progress(done_iters, loss, nfev)`` (progress bars).
          resume: ``{"leaves": [...], "iteration": int, "values": [T], "nfevs": [T]}`` (and optionally
            ``"terms": {name: [T]}``, ``"seconds": [T]``): the saved solver state's leaves in ``tree_leaves`` order,
            the iterations already run and the trace so far (from entry 0). Chunks are the same compiled program
            whatever their length, so the continued run computes exactly what an uninterrupted one would.
          on_chunk: after each chunk, ``on_chunk(done_iters, x, state, trace)`` with ``trace`` a dict of the trace so
            far (``values``, ``nfevs``, ``terms``, ``seconds``) (checkpoints; ``state`` is valid until the next chunk).
          stop: polled after each chunk (and, in the host loop, after each iteration); True ends the run there.
          every: chunks end at every multiple of each of these (saves and checkpoints fall on chunk ends).
          report_seconds: aim for chunks of about this much work (None: ``SolverConfig.chunk`` iterations each).
        """
        if iters < 0:
            raise ValueError(f"iterations must be >= 0, got {iters}")
        lc, sc, mb = self.loss_cfg, self.solver_cfg, self.members
        x0 = jnp.asarray(x0, jnp.float32)
        member_shape = self._member_shape(x0)
        t_start = time.perf_counter()
        with CompileClock() as clock:
            solve_seconds = lambda: time.perf_counter() - t_start - clock.seconds  # noqa: E731
            params = vgg.prepare_params(params, x0.shape[-3:-1], lc.all_layers, conv=lc.conv,
                                        pool_rounding=lc.pool_rounding, padding=lc.padding, dtype=lc.compute_dtype)
            if resume is None:
                state = init_state(x0, params, targets, weights, lc, sc, mb)
                trace = _Trace(self._read("value", state)[..., None], self._read("nfev", state)[..., None],
                               {k: v[..., None] for k, v in self._read("aux", state).items()}, [solve_seconds()])
                dispatched = 0
            else:
                state, dispatched, trace = self._resumed_state(resume, x0, params, targets, weights, iters)
            offset = float(trace.seconds[-1][-1]) - solve_seconds()  # a resumed run's clock continues the saved one
            ran = np.full(member_shape, dispatched)  # iterations each member ran before any non-finite stop
            chunk = self._chunk_fn(member_shape, stop)
            bad, interrupted, per_iter = np.zeros(member_shape, bool), False, None
            while dispatched < iters and not np.all(bad) and not interrupted:
                n = distributed.agree(self._chunk_length(dispatched, iters, every, per_iter, report_seconds))
                t0 = solve_seconds()
                out, n = chunk(state, bad, params, targets, weights, n)  # the host loop may stop early
                state, done = out.state, distributed.fetch(out.done)
                t1 = solve_seconds()
                trace.add(out, int(np.max(done)), offset + t0, offset + t1)
                per_iter = (t1 - t0) / max(n, 1)
                bad, ran, dispatched = bad | distributed.fetch(out.bad), ran + done, dispatched + n
                self._report(dispatched, state, trace, progress, callback, on_chunk)
                interrupted = bool(distributed.agree(stop is not None and stop() and dispatched < iters
                                                     and not np.all(bad)))
            x, nfev_run = self._read("x", state), self._read("nfev_run", state)
            x_dev = jax.vmap(self._get.x)(state) if mb is not None else self._get.x(state)
            terms = {k: distributed.fetch(v) for k, v in final_terms(x_dev, params, targets, weights, lc, mb).items()}
            nonfinite = self._nonfinite_terms(params, targets, weights, state, bad) if np.any(bad) else None
        run_seconds = time.perf_counter() - t_start - clock.seconds
        values, nfevs, terms_trace, seconds = trace.arrays()
        return SolveOutput(x, values, nfevs, terms, terms_trace, seconds, clock.seconds, run_seconds, bad, nonfinite,
                           interrupted, ran, nfev_run)

    def _report(self, done, state, trace: _Trace, progress, callback, on_chunk):
        if progress is not None:
            progress(done, self._read("value", state), self._read("nfev", state))
        if callback is not None or on_chunk is not None:
            x = self._read("x", state)
            values, nfevs, terms, seconds = trace.arrays()
            if callback is not None:
                callback(done, x, values)
            if on_chunk is not None:
                on_chunk(done, x, state, {"values": values, "nfevs": nfevs, "terms": terms, "seconds": seconds})

    def _nonfinite_terms(self, params, targets, weights, state, bad):
        """After a non-finite stop: evaluate the loss at the failing trial point and name its first non-finite term
        ("gradient" when all terms are finite), per member for a sweep (None for members that did not stop)."""
        lc, solver = self.loss_cfg, self._get

        def one(st, params, targets, weights):
            x = solver.trial_point(st, params, targets, weights)
            return objective.loss_terms(params, x, targets, weights, lc)

        mb = self.members
        fn = jax.jit(_batched(one, mb, 1, sequential=True))
        terms = {k: distributed.fetch(v) for k, v in fn(state, params, targets, weights).items()}

        def name(k=None):
            for term in ("content", "style", "tv", "total"):
                v = terms[term] if k is None else terms[term][k]
                if not np.all(np.isfinite(v)):
                    return term
            return "gradient"

        if mb is None:
            return name()
        return [name(k) if bad[k] else None for k in range(len(bad))]
