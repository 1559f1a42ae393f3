"""The solvers on problems with known answers: a SciPy L-BFGS-B reference on a convex box-constrained quadratic,
monotone descent where a solver is monotone by design, vmapped runs equal to single runs, and the f+g a batched
line search really computes (counted by a callback in the backward pass) against what the solvers report."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nst_jax
from nst_jax import solvers
from nst_jax.config import SOLVERS, SettingError, SolverConfig

N = 8
LINE_SEARCH = ("jaxopt", "jaxopt-lbfgs", "optax-lbfgs")
#: monotone by design: a guarded step (lbfgs) or a line search's sufficient decrease on the loss it reports
MONOTONE = ("lbfgs", "jaxopt", "jaxopt-lbfgs", "optax-lbfgs")  # not adam; not optax-lbfgs with bounds="project"


def _quadratic(seed=0):
    """0.5 (x - c)' A (x - c) with A SPD (condition ~30) and c partly outside [0, 1]: 3 bounds active at the optimum."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(N, N)))
    a = (q * np.linspace(1.0, 30.0, N)) @ q.T
    c = np.array([-0.6, 0.2, 0.45, 1.4, 0.7, 0.35, 1.8, 0.55])
    return a, c


def _scipy_reference(a, c):
    res = scipy.optimize.minimize(lambda x: 0.5 * (x - c) @ a @ (x - c), np.full(N, 0.5), jac=lambda x: a @ (x - c),
                                  method="L-BFGS-B", bounds=[(0.0, 1.0)] * N,
                                  options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
    assert res.success, res.message
    return res.x, res.fun


def _vg(a, c):
    a, c = jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32)

    def vg(x, shift=0.0):
        f, g = jax.value_and_grad(lambda x: 0.5 * (x - c - shift) @ a @ (x - c - shift))(x)
        return f, g, {"total": f}

    return vg


def _run(solver, x0, iters, *args):
    st = solver.init(x0, *args)
    step = jax.jit(solver.step)
    values = [float(solver.value(st))]
    for _ in range(iters):
        st = step(st, *args)
        values.append(float(solver.value(st)))
    return st, np.asarray(values)


def _cfg(name, **kw):
    return SolverConfig(name=name, history=10, lr=0.01 if name == "adam" else None, **kw)


@pytest.mark.parametrize("name", SOLVERS)
def test_matches_scipy_lbfgsb_on_a_box_constrained_quadratic(name):
    a, c = _quadratic()
    x_ref, f_ref = _scipy_reference(a, c)
    assert 0 < np.sum((x_ref <= 1e-9) | (x_ref >= 1 - 1e-9)) < N  # some bounds active, some not
    solver = solvers.make_solver(_cfg(name), _vg(a, c))
    st, values = _run(solver, jnp.full(N, 0.5, jnp.float32), 3000 if name == "adam" else 60)
    x = np.asarray(solver.x(st))
    np.testing.assert_allclose(x, x_ref, atol=1e-4 if name == "adam" else 2e-5)
    np.testing.assert_allclose(values[-1], f_ref, rtol=1e-5 if name == "adam" else 1e-6)
    assert x.min() >= 0.0 and x.max() <= 1.0


@pytest.mark.parametrize("name", MONOTONE)
def test_monotone_solvers_never_raise_the_loss(tiny_params, name):
    rng = np.random.default_rng(3)
    content = rng.uniform(size=(20, 20, 3)).astype(np.float32)
    style = rng.uniform(size=(20, 20, 3)).astype(np.float32)
    r = nst_jax.stylize(content, style, weights=tiny_params, size=20, iters=12, solver=name, history=5,
                        progress=False)
    loss = np.array([e["loss"] for e in r.loss_trace])
    assert np.all(np.diff(loss) <= 1e-6 * loss[:-1]), loss
    assert loss[-1] < 0.5 * loss[0]


def _tapped_vg(a, c, calls):
    """:func:`_vg` whose backward pass calls back (one call per batched pass under ``vmap``)."""
    from synthetic import backward_tap

    a, c = jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32)
    tap = backward_tap(calls)

    def vg(x, shift=0.0):
        f, g = jax.value_and_grad(lambda x: 0.5 * (tap(x) - c - shift) @ a @ (tap(x) - c - shift))(x)
        return f, g, {"total": f}

    def f(x, shift=0.0):  # the value alone (no backward pass): optax-lbfgs's terms at its accepted points
        v = 0.5 * (x - c - shift) @ a @ (x - c - shift)
        return v, {"total": v}

    return vg, f


@pytest.mark.parametrize("name", ("lbfgs",) + LINE_SEARCH)
def test_vmapped_solver_equals_single_runs_and_counts_what_it_computes(name):
    a, c = _quadratic(1)
    calls = []
    vg, f = _tapped_vg(a, c, calls)
    shifts = jnp.asarray([0.0, 0.3, -0.2], jnp.float32)
    x0 = jnp.full((3, N), 0.5, jnp.float32)
    batched = solvers.make_solver(_cfg(name), vg, f, axis_name=solvers.MEMBER_AXIS)
    init = jax.jit(jax.vmap(batched.init, axis_name=solvers.MEMBER_AXIS))
    step = jax.jit(jax.vmap(batched.step, axis_name=solvers.MEMBER_AXIS))
    jax.block_until_ready(step(init(x0, shifts), shifts))  # compiled (the callback runs at execution only)
    del calls[:]
    st = init(x0, shifts)
    for _ in range(5):  # before the optimum, where float32 rounding differences would be amplified
        st = step(st, shifts)
    jax.block_until_ready(st)
    computed = np.asarray(batched.nfev_run(st))
    # each tap call is one batched backward pass (two taps per evaluation): what every member computed
    assert len(calls) // 2 == computed[0] and np.all(computed == computed[0]), (len(calls), computed)
    single = solvers.make_solver(_cfg(name), _vg(a, c))
    for k in range(3):
        s, _ = _run(single, x0[k], 5, shifts[k])
        member = jax.tree_util.tree_map(lambda v: v[k], st)
        np.testing.assert_allclose(np.asarray(batched.x(member)), np.asarray(single.x(s)), atol=1e-5)
        assert int(batched.nfev(member)) == int(single.nfev(s))  # logical: what the member alone needs
        assert int(single.nfev_run(s)) == int(single.nfev(s)) <= int(computed[k])
    if name != "lbfgs":  # both branches of each zoom step's lax.cond, every member's trips
        assert computed[0] > max(int(batched.nfev(jax.tree_util.tree_map(lambda v: v[k], st))) for k in range(3))


def test_sweep_reports_logical_and_computed_fg(tiny_params, grad_calls):
    rng = np.random.default_rng(5)
    content = rng.uniform(size=(16, 16, 3)).astype(np.float32)
    style = rng.uniform(size=(16, 16, 3)).astype(np.float32)
    sw = nst_jax.sweep(content, style, [1e-2, 1e1, 1e4], weights=tiny_params, size=16, iters=4,
                       solver="optax-lbfgs", history=5, progress=False, members="vmap")
    computed = [r.n_fg_computed for r in sw.results]
    assert len(grad_calls) == max(computed), (len(grad_calls), computed)  # one callback per batched pass
    assert all(r.n_fg <= c for r, c in zip(sw.results, computed)) and sw.n_fg < sw.n_fg_computed
    assert sw.n_fg == sum(r.n_fg for r in sw.results) and sw.n_fg_computed == sum(computed)


def test_solver_settings_are_validated():
    with pytest.raises(SettingError, match="bounds"):
        SolverConfig(name="lbfgs", bounds="clamp")
    with pytest.raises(SettingError, match="max_linesearch"):
        SolverConfig(name="optax-lbfgs", max_linesearch=0)
    with pytest.raises(SettingError, match="first_step"):
        SolverConfig(first_step=0.0)
    assert solvers.settings(SolverConfig(name="optax-lbfgs")).bounds == "clamp"


def test_scales_set_the_first_step():
    g = jnp.asarray(np.random.default_rng(0).normal(size=(32, 32, 3)), jnp.float32) * 1e6
    sigma, c = solvers.scales(g, 0.1)
    assert float(jnp.log2(sigma)) == round(float(jnp.log2(sigma)))  # a power of two: x / sigma * sigma is exact
    first = float(jnp.max(jnp.abs(sigma * (c * sigma) * g)))  # the move of the step -grad F in x
    assert 0.1 / np.sqrt(2) <= first <= 0.1 * np.sqrt(2)
    np.testing.assert_allclose(float(jnp.linalg.norm(c * sigma * g)), 1.0, rtol=1e-5)


def test_only_solvers_that_miss_the_bar_warn_with_their_figures(capsys):
    import re
    import warnings

    from nst_jax import runner
    from nst_jax.cli import args as cli_args
    from nst_jax.cli import build_parser
    from nst_jax.config import LossConfig

    assert set(solvers.CAVEATS) <= set(LINE_SEARCH)
    for name in SOLVERS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner.Solve(LossConfig(), SolverConfig(name=name))
        said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        assert said == ([solvers.CAVEATS[name]] if name in solvers.CAVEATS else []), (name, said)
    for name, note in solvers.CAVEATS.items():
        assert re.search(r"\d+(\.\d+)?x", note) and "f+g" in note, note  # the measured figures, not a vague word
        ns = build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", "--solver", name])
        cli_args.solve_options(ns)
        assert f"nst-jax: warning: {note}" in capsys.readouterr().err
