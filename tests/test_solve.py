"""The compiled solve: solvers lower the loss, f+g counts are right, nothing recompiles, sweeps equal single runs."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import lbfgs, objective, runner, solvers
from nst_jax.config import LossConfig, SolverConfig, SOLVERS
from nst_jax.sweeps import sweep
from nst_jax.transfer import stylize

SIZE = 24


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    c = rng.uniform(size=(SIZE, SIZE, 3)).astype(np.float32)
    s = np.clip(rng.normal(0.5, 0.3, size=(28, 20, 3)), 0, 1).astype(np.float32)
    return c, s


@pytest.fixture(scope="module")
def problem(tiny_params, images):
    cfg = LossConfig()
    t = objective.compute_targets(tiny_params, images[0], [images[1]], cfg)
    w = objective.make_weights(cfg, tiny_params, content_weight=1.0, style_weight=1e-3)
    return cfg, t, w


@pytest.mark.parametrize("name", SOLVERS)
def test_each_solver_lowers_loss_and_counts_fg(tiny_params, images, problem, grad_calls, name):
    """Count the backward passes really executed (a host callback, ``grad_calls``) and compare with the f+g the
    solver reports (forward passes without a gradient, e.g. the line searches' loss terms, are no f+g)."""
    cfg, t, w = problem
    run = runner.Solve(cfg, SolverConfig(name=name, history=5, chunk=4, lr=0.005 if name == "adam" else None))
    out = run(tiny_params, t, w, images[0], 10)
    assert out.values[-1] < 0.85 * out.values[0], (name, out.values)
    assert np.all(np.diff(out.nfevs) >= 1)
    assert out.image.min() >= 0.0 and out.image.max() <= 1.0
    np.testing.assert_allclose(out.terms["total"], out.values[-1], rtol=1e-4)
    assert len(grad_calls) == out.nfevs[-1] == out.nfev_run, (name, len(grad_calls), out.nfevs[-1], out.nfev_run)
    if name in ("lbfgs", "adam"):
        assert out.nfevs[-1] == 11  # one at the start, one per iteration


def test_second_call_compiles_nothing(tiny_params, images, problem, compiles):
    cfg, t, w = problem
    run = runner.Solve(cfg, SolverConfig(history=5, chunk=5))
    run(tiny_params, t, w, images[0], 7)
    # new images of the same size, new weights, a new Solve: no compile
    rng = np.random.default_rng(9)
    c2 = rng.uniform(size=images[0].shape).astype(np.float32)
    s2 = rng.uniform(size=images[1].shape).astype(np.float32)
    t2 = objective.compute_targets(tiny_params, c2, [s2], cfg)
    w2 = objective.make_weights(cfg, tiny_params, content_weight=3.0, style_weight=7.0, layer_weights=[1, 2, 3, 4, 5])
    with compiles() as c:
        out = runner.Solve(cfg, SolverConfig(history=5, chunk=5))(tiny_params, t2, w2, c2, 13)
    assert c.compiles == 0 and out.compile_seconds == 0.0


def test_stylize_second_call_does_not_recompile(tiny_params, images, compiles):
    kw = dict(weights=tiny_params, size=SIZE, iters=4, progress=False, history=5)
    r1 = stylize(images[0], images[1], **kw)
    with compiles() as c:
        r2 = stylize(1.0 - images[0], images[1][::-1], style_weight=5.0, content_weight=0.5, **kw)
    assert c.compiles == 0 and r2.compile_seconds == 0.0
    assert r1.n_fg == 5 and len(r1.loss_trace) == 5


def test_log_compiles_is_silent_on_second_call(tiny_params, images, problem, caplog):
    cfg, t, w = problem
    runner.Solve(cfg, SolverConfig(history=5, chunk=5, loop="while"))(tiny_params, t, w, images[0], 3)
    with jax.log_compiles(True):
        caplog.clear()
        with caplog.at_level("WARNING"):
            runner.Solve(cfg, SolverConfig(history=5, chunk=5, loop="while"))(tiny_params, t, w, images[0] * 0.5, 3)
    compiles = [r for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiles, [r.getMessage() for r in compiles]


def test_sweep_member_equals_single_solve(tiny_params, images):
    ratios = [1e-1, 1e2, 1e4]
    kw = dict(weights=tiny_params, size=SIZE, iters=8, progress=False, history=5, content_weight=1.0)
    sw = sweep(images[0], images[1], ratios, **kw)
    assert sw.images.shape == (3, SIZE, SIZE, 3)
    for r, res in zip(ratios, sw.results):
        single = stylize(images[0], images[1], style_weight=1.0 / r, **kw)
        np.testing.assert_allclose(res.loss_trace[-1]["loss"], single.loss_trace[-1]["loss"], rtol=2e-4)
        np.testing.assert_allclose(res.image, single.image, atol=2e-4)
        assert res.n_fg == single.n_fg == 9
    # different ratios really give different images
    assert np.abs(sw.images[0] - sw.images[2]).mean() > 1e-3


SHARDED = textwrap.dedent("""
    import json, sys, numpy as np, jax
    from nst_jax import vgg
    from nst_jax.sweeps import sweep
    p = vgg.init_params(0, "tiny19")
    rng = np.random.default_rng(0)
    c = rng.uniform(size=(20, 20, 3)).astype(np.float32)
    s = rng.uniform(size=(20, 20, 3)).astype(np.float32)
    sw = sweep(c, s, [1e-1, 1.0, 10.0], weights=p, size=20, iters=5, progress=False, history=4)
    print(json.dumps({"devices": len(jax.devices()), "images": sw.images.tolist(),
                      "fg": [r.n_fg for r in sw.results]}))
""")


def _run_sweep_subprocess(ndev):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ndev}".strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_sweep_equals_unsharded():
    one = _run_sweep_subprocess(1)
    four = _run_sweep_subprocess(4)
    assert one["devices"] == 1 and four["devices"] == 4
    assert len(four["images"]) == 3  # K=3 padded to 4 for 4 devices, padding dropped
    np.testing.assert_allclose(np.array(four["images"]), np.array(one["images"]), atol=1e-5)
    assert four["fg"] == one["fg"] == [6, 6, 6]


def test_nonfinite_loss_stops_and_keeps_last_finite(tiny_params, images, problem):
    cfg, t, w = problem
    # an absurd step makes the iterate explode only if unprojected; use a NaN weight inside the traced weights instead
    w_bad = w.replace(tv=jnp.asarray(np.nan, jnp.float32))
    out = runner.Solve(cfg, SolverConfig(history=5, chunk=5))(tiny_params, t, w_bad, images[0], 10)
    assert out.stopped_nonfinite
    assert np.isfinite(out.image).all()


def test_init_modes_and_errors(tiny_params, images, tmp_path):
    from nst_jax import image as I

    kw = dict(weights=tiny_params, size=SIZE, iters=0, progress=False, history=3)
    r = stylize(images[0], images[1], init="content", **kw)
    np.testing.assert_allclose(r.image, images[0], atol=1e-6)
    a = stylize(images[0], images[1], init="noise", seed=1, **kw).image
    b = stylize(images[0], images[1], init="noise", seed=1, **kw).image
    c = stylize(images[0], images[1], init="noise", seed=2, **kw).image
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    path = tmp_path / "init.png"
    I.save_image(path, images[1][:SIZE, :SIZE])
    r = stylize(images[0], images[1], init=str(path), **kw)
    assert r.image.shape == (SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="init"):
        stylize(images[0], images[1], init="bogus", **kw)
    with pytest.raises(ValueError, match="solver"):
        stylize(images[0], images[1], solver="sgd", **kw)
    with pytest.raises(ValueError, match="unknown layer"):
        stylize(images[0], images[1], style_layers=["relu9_1"], **kw)
    with pytest.raises(ValueError, match="grid axis 'ratio' takes finite numbers > 0"):
        sweep(images[0], images[1], [0.0], **kw)


def test_host_loop_equals_while_loop(tiny_params, images, problem):
    """Both ways of running a chunk compute the same iterates (the host loop is the CPU default)."""
    cfg, t, w = problem
    a = runner.Solve(cfg, SolverConfig(history=5, chunk=4, loop="host"))(tiny_params, t, w, images[0], 9)
    b = runner.Solve(cfg, SolverConfig(history=5, chunk=4, loop="while"))(tiny_params, t, w, images[0], 9)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-4)
    np.testing.assert_allclose(a.image, b.image, atol=1e-4)
    assert list(a.nfevs) == list(b.nfevs) == list(range(1, 11))
    with pytest.raises(ValueError, match="loop"):
        SolverConfig(loop="python")


def _reference_guarded_lbfgs(fg, x0, iters, m, lr, P=lambda v: v):
    """NumPy float64 reference of the default solver: projected L-BFGS, one trial per iteration, Armijo guard;
    ``P``: the preconditioner (H0 = gamma P, gamma = s.y / y.P y). Elements on a bound whose gradient points
    outward are held (two-metric projection): zero in the gradient the recursion sees and in the direction."""
    x = x0.astype(np.float64)
    dot = lambda a, b: float(np.sum(a * b))  # noqa: E731
    f, g = fg(x)
    S_, Y_, step, values, accepted = [], [], 1.0, [f], []
    for _ in range(iters):
        free = ~(((x <= 0.0) & (g > 0)) | ((x >= 1.0) & (g < 0)))
        q, alphas = np.where(free, g, 0.0), []
        for s, y in reversed(list(zip(S_, Y_))):
            a = dot(s, q) / dot(s, y)
            alphas.append(a)
            q -= a * y
        r = P(q) * (dot(S_[-1], Y_[-1]) / dot(Y_[-1], P(Y_[-1])) if S_ else 1.0)
        for (s, y), a in zip(zip(S_, Y_), reversed(alphas)):
            r += s * (a - dot(y, r) / dot(s, y))
        r = np.where(free, r, 0.0)
        t = (0.1 / np.abs(r).max() if not S_ else 1.0) * lr * step
        xt = np.clip(x - t * r, 0.0, 1.0)
        ft, gt = fg(xt)
        s, y = xt - x, gt - g
        ok = ft <= f + 1e-4 * dot(g, s)
        accepted.append(ok)
        if ok:
            if dot(s, y) > 1e-10:
                S_, Y_ = (S_ + [s])[-m:], (Y_ + [y])[-m:]
            x, f, g, step = xt, ft, gt, min(2.0 * step, 1.0)
        else:
            curv = ft - f - dot(g, s)
            step *= float(np.clip(-dot(g, s) / (2 * curv), 0.1, 0.5)) if curv > 0 else 0.5
        values.append(f)
    return x, np.asarray(values), accepted


def _np_smoother(h, w, floor=0.2):
    """Independent NumPy form of the preconditioner: full complex FFT, spectrum on the whole [H, W] grid."""
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    f0 = 1.0 / max(h, w)
    p = floor + (1 - floor) * f0 / np.maximum(np.hypot(fy, fx), f0)
    return lambda v: np.real(np.fft.ifft2(np.fft.fft2(v, axes=(0, 1)) * p[:, :, None], axes=(0, 1)))


def test_preconditioner_is_symmetric_positive_definite_and_keeps_flat_images():
    h, w = 7, 10  # odd and even sides
    P = lbfgs.smoother((h, w, 3))
    rng = np.random.default_rng(0)
    v, u = (jnp.asarray(rng.standard_normal((h, w, 3)), jnp.float32) for _ in range(2))
    np.testing.assert_allclose(float(jnp.vdot(v, P(u))), float(jnp.vdot(P(v), u)), rtol=1e-5)
    vPv, vv = float(jnp.vdot(v, P(v))), float(jnp.vdot(v, v))
    assert lbfgs.SMOOTHING_FLOOR * vv * (1 - 1e-5) <= vPv <= vv * (1 + 1e-5)
    np.testing.assert_allclose(P(jnp.full((h, w, 3), 0.7)), 0.7, rtol=1e-6)  # gain 1 at the lowest frequency
    np.testing.assert_allclose(P(v), _np_smoother(h, w)(np.asarray(v, np.float64)), atol=1e-5)
    flat = jnp.arange(6.0)
    assert lbfgs.smoother(flat.shape)(flat) is flat  # not an image: identity


def _compiled_vs_reference(shape, seed, precondition=True):
    """12 iterations of the compiled solver (history 4, step 3x too long) and of the NumPy float64 reference on the
    box-constrained quadratic ``sum a (x - c)^2`` whose minimiser lies partly outside [0, 1] (projection active).
    Returns (final state, compiled losses, reference iterate, reference losses, reference accept flags)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 20.0, shape)
    c = rng.uniform(-0.3, 1.3, shape)

    def fg_np(x):
        return float(np.sum(a * (x - c) ** 2)), 2 * a * (x - c)

    vg = jax.value_and_grad(lambda x: jnp.sum(jnp.asarray(a, jnp.float32) * (x - jnp.asarray(c, jnp.float32)) ** 2))
    opt = lbfgs.guarded_lbfgs(history=4, lr=3.0, precondition=precondition)  # the pure init/propose/update
    x0 = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    st = opt.init(jnp.asarray(x0), *vg(jnp.asarray(x0)))

    @jax.jit
    def step(st):
        xt = opt.propose(st)
        return opt.update(st, xt, *vg(xt))

    values = [float(st.value)]
    for _ in range(12):
        st = step(st)
        values.append(float(st.value))
    P = _np_smoother(*shape[:2]) if precondition and len(shape) == 3 else (lambda v: v)
    x_ref, v_ref, accepted = _reference_guarded_lbfgs(fg_np, x0, 12, 4, 3.0, P)
    return st, values, x_ref, v_ref, accepted


@pytest.mark.parametrize("shape, seed, precondition", [((40,), 3, True), ((6, 8, 3), 5, True), ((6, 8, 3), 5, False)])
def test_guarded_lbfgs_equals_numpy_reference_and_is_monotone(shape, seed, precondition):
    """On a box-constrained quadratic with a step 3x too long (so trials get rejected and the step shrinks), the
    compiled solver's accepted iterates and losses equal a NumPy float64 reference, and the loss never rises: a flat
    vector (no preconditioner: not an image), and an image with and without the smoothing preconditioner."""
    st, values, x_ref, v_ref, accepted = _compiled_vs_reference(shape, seed, precondition)
    assert 0 < sum(accepted) < len(accepted), accepted  # both branches were exercised
    np.testing.assert_allclose(values, v_ref, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(st.x), x_ref, atol=1e-4)
    assert np.all(np.diff(values) <= 0), values
    assert int(st.nfev) == 13 and 0 < float(st.step) <= 1.0


def test_rejected_trial_keeps_iterate_and_shrinks_step(tiny_params, images, problem):
    """A huge step multiplier makes the first trials overshoot: the reported loss and image stay at x0, the step
    shrinks per rejection, and each rejection still costs (and counts) one f+g."""
    cfg, t, w = problem
    out = runner.Solve(cfg, SolverConfig(history=5, chunk=3, lr=1e9))(tiny_params, t, w, images[0], 3)
    assert list(out.nfevs) == [1, 2, 3, 4]
    np.testing.assert_array_equal(out.values, np.full(4, out.values[0]))
    np.testing.assert_array_equal(out.image, images[0])


@pytest.mark.parametrize("members", ["unroll", "vmap"])
def test_sweep_members_unrolled_or_vmapped_equal_single_solves(tiny_params, images, problem, members):
    """Both ways of evaluating a sweep's K losses give each member the single solve's trajectory (the unrolled
    members run the single-image graph, fused differently: float32 rounding only)."""
    cfg, t, w = problem
    scales = [0.1, 30.0]
    single_w = [w.replace(style=w.style * jnp.float32(c)) for c in scales]
    batched_w = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *single_w)
    x0_K = np.stack([images[0]] * len(scales))
    scfg = SolverConfig(history=5, chunk=4, members=members)
    out = runner.Solve(cfg, scfg, members=runner.Members())(tiny_params, t, batched_w, x0_K, 10)
    for k, wk in enumerate(single_w):
        one = runner.Solve(cfg, SolverConfig(history=5, chunk=4))(tiny_params, t, wk, images[0], 10)
        np.testing.assert_allclose(out.values[k], one.values, rtol=2e-4)
        np.testing.assert_allclose(out.image[k], one.image, atol=1e-4)
        np.testing.assert_array_equal(out.nfevs[k], one.nfevs)
    with pytest.raises(ValueError, match="members"):
        SolverConfig(members="loop")


def test_custom_sweep_by_vmap_over_a_weights_field(tiny_params, images):
    """The documented way to build a custom sweep with the public API only: ``jax.vmap`` over a field of
    ``Weights`` (the TV weight here), both in a user's own loop around the pure optimiser and through ``Solve``."""
    cfg = nst_jax.LossConfig()
    targets = nst_jax.compute_targets(tiny_params, images[0], [images[1]], cfg)
    tvs = jnp.array([0.0, 30.0, 3e3])
    vg = jax.value_and_grad(nst_jax.total_loss)
    opt = nst_jax.guarded_lbfgs(history=5)

    def solve_one(tv):
        w = nst_jax.make_weights(cfg, tiny_params, style_weight=1e-3, tv_weight=tv)
        x0 = jnp.asarray(images[0])
        st = opt.init(x0, *vg(x0, tiny_params, targets, w, cfg))

        def body(_, st):
            xt = opt.propose(st)
            return opt.update(st, xt, *vg(xt, tiny_params, targets, w, cfg))

        st = jax.lax.fori_loop(0, 6, body, st)
        return st.x, nst_jax.loss_terms(tiny_params, st.x, targets, w, cfg)["tv"]

    xs, tv_terms = jax.jit(jax.vmap(solve_one))(tvs)
    for k in range(len(tvs)):
        np.testing.assert_allclose(xs[k], jax.jit(solve_one)(tvs[k])[0], atol=1e-4)
    assert float(tv_terms[2]) < float(tv_terms[0])  # a larger TV weight gives a smoother image
    ws = jax.vmap(lambda tv: nst_jax.make_weights(cfg, tiny_params, style_weight=1e-3, tv_weight=tv))(tvs)
    out = nst_jax.Solve(cfg, nst_jax.SolverConfig(history=5, loop="while"), members=nst_jax.runner.Members())(
        tiny_params, targets, ws, np.stack([images[0]] * 3), 6)
    np.testing.assert_allclose(out.image, xs, atol=1e-4)


def test_trace_keeps_every_term_and_the_solve_seconds(tiny_params, images):
    """Each trace entry carries the unweighted terms of that iteration's image (their weighted sum is the loss) and
    the solve seconds, which start at >= 0 and never decrease."""
    r = stylize(images[0], images[1], weights=tiny_params, size=SIZE, iters=6, progress=False, history=5,
                content_weight=2.0, style_weight=3e-3, tv_weight=0.5)
    for e in r.loss_trace:
        assert set(e) == {"iter", "fg", "loss", "content", "style", "tv", "seconds"}
        np.testing.assert_allclose(e["loss"], 2.0 * e["content"] + 3e-3 * e["style"] + 0.5 * e["tv"], rtol=1e-5)
    assert r.loss_trace[-1]["style"] == pytest.approx(r.terms["style"], rel=1e-5)
    seconds = [e["seconds"] for e in r.loss_trace]
    assert seconds[0] >= 0 and all(b >= a for a, b in zip(seconds, seconds[1:])) and seconds[-1] <= r.run_seconds


@pytest.mark.parametrize("loop", ["host", "while"])
def test_chunks_sized_by_time_change_nothing_and_answer_stop_quickly(tiny_params, images, problem, loop):
    """Chunks of about ``report_seconds`` of work (1 iteration when tiny, ``chunk`` when huge), cut at the multiples
    of ``every``, give the iterates of fixed chunks; in the host loop ``stop`` is answered after one iteration."""
    cfg, t, w = problem
    run = runner.Solve(cfg, SolverConfig(history=5, chunk=4, loop=loop))
    ends = []
    fixed = run(tiny_params, t, w, images[0], 9, progress=lambda done, *_: ends.append(done))
    assert ends == [4, 8, 9]
    ends.clear()
    timed = run(tiny_params, t, w, images[0], 9, progress=lambda done, *_: ends.append(done), report_seconds=1e-9,
                every=(3,))
    assert ends == list(range(1, 10))
    np.testing.assert_array_equal(timed.values, fixed.values)
    np.testing.assert_array_equal(timed.image, fixed.image)
    ends.clear()
    run(tiny_params, t, w, images[0], 9, progress=lambda done, *_: ends.append(done), report_seconds=1e9, every=(3,))
    assert ends == [1, 3, 6, 9]  # a first 1-iteration chunk measures the speed; then up to 4, cut at multiples of 3
    polls = []
    out = run(tiny_params, t, w, images[0], 9, stop=lambda: polls.append(1) or len(polls) >= 2)
    assert out.interrupted and int(out.iters_done) == (2 if loop == "host" else 8)  # while: at chunk ends (4, 8)
