"""The style loss kinds wired into the objective (targets, blending, kind weights, seeds, guided W2, refusals),
per-layer gradient normalisation against a NumPy transcription of neural-style's rule, iterate averaging against its
closed form, the resolution rule, and the first conv's padding; tiny network, <= 32 px."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import nst_jax
from nst_jax import gradnorm, guided, objective, solvers
from nst_jax import image as I
from nst_jax import style_losses as SL
from nst_jax.config import LossConfig, ProblemSpec, SettingError, SolverConfig

S = I.sample_path
LAYERS = ("relu1_1", "relu2_1", "relu3_1")
KINDS = ("gram", "w2", "sliced", "hist")


def _images(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(32, 32, 3)).astype(np.float32)
    styles = [rng.uniform(size=(32, 32, 3)).astype(np.float32), rng.uniform(size=(24, 32, 3)).astype(np.float32)]
    return x, styles


def _feats(params, img, cfg):
    f = objective.network_features(params, jnp.asarray(img), cfg.style_layers, cfg)
    return {n: np.asarray(v, np.float64).reshape(-1, v.shape[-1]) for n, v in f.items()}


# --- NumPy transcriptions, from the definitions (float64) ---

def _np_sqrtm(a):
    return np.real(scipy.linalg.sqrtm(a))


def _np_gram_term(f, styles, p):
    target = sum(w * s.T @ s / len(s) for w, s in zip(p, styles))
    return np.mean((f.T @ f / len(f) - target) ** 2)


def _np_w2_term(f, styles, p, eps=1e-4):
    """Blend: mean and second raw moment of the styles' mixture; then the Gaussian W2 per channel."""
    m = sum(w * s.mean(0) for w, s in zip(p, styles))
    second = sum(w * (np.cov(s, rowvar=False, bias=True) + np.outer(s.mean(0), s.mean(0))) for w, s in zip(p, styles))
    ct = second - np.outer(m, m) + eps * np.eye(f.shape[1])
    cf = np.cov(f, rowvar=False, bias=True) + eps * np.eye(f.shape[1])
    st = _np_sqrtm(ct)
    return (np.sum((f.mean(0) - m) ** 2) + np.trace(cf + ct - 2 * _np_sqrtm(st @ cf @ st))) / f.shape[1]


def _np_blended_quantiles(columns_list, p, k=None):
    """Each style's sorted columns as a quantile function sampled at K levels (K = the largest count), averaged."""
    k = k or max(len(c) for c in columns_list)
    return sum(w * np.quantile(c, np.linspace(0, 1, k), axis=0) for w, c in zip(p, columns_list))


def _np_sliced_term(f, styles, p, proj):
    ref = _np_blended_quantiles([s @ proj for s in styles], p)
    ref = np.quantile(ref, np.linspace(0, 1, len(f)), axis=0)
    return np.mean((np.sort(f @ proj, axis=0) - ref) ** 2)


def _np_hist_term(f, styles, p, bins):
    levels = np.linspace(0, 1, bins + 1)
    q = _np_blended_quantiles(styles, p, bins + 1)
    remap = np.empty_like(f)
    for c in range(f.shape[1]):
        ranks = np.argsort(np.argsort(f[:, c], kind="stable"), kind="stable")
        remap[:, c] = np.interp(ranks / (len(f) - 1), levels, q[:, c])
    return np.mean((f - remap) ** 2)


def _np_style(kind, fx, fs, p, lw, targets, cfg):
    total = 0.0
    for j, n in enumerate(cfg.style_layers):
        styles = [f[n] for f in fs]
        if kind == "gram":
            v = _np_gram_term(fx[n], styles, p)
        elif kind == "w2":
            v = _np_w2_term(fx[n], styles, p)
        elif kind == "sliced":
            v = _np_sliced_term(fx[n], styles, p, np.asarray(targets.style.sliced_proj[n], np.float64))
        else:
            v = _np_hist_term(fx[n], styles, p, cfg.hist_bins)
        total += lw[j] * v
    return total


def test_loss_terms_of_each_kind_and_their_mix_equal_numpy_with_two_blended_styles(tiny_params):
    x, styles = _images()
    cfg = LossConfig(content_layers=(), style_layers=LAYERS, style_losses=KINDS, hist_bins=16,
                     sliced_projections=6)
    targets = objective.compute_targets(tiny_params, None, styles, cfg, sliced_seed=3)
    kind_w = np.array([2.0, 3.0, 5.0, 7.0])
    w = objective.make_weights(cfg, tiny_params, layer_weights=[1.0, 0.5, 0.25], blend=[1.0, 3.0], n_styles=2,
                               style_loss_weights=kind_w)
    fx, fs = _feats(tiny_params, x, cfg), [_feats(tiny_params, s, cfg) for s in styles]
    p = np.array([0.25, 0.75])
    refs = {k: _np_style(k, fx, fs, p, [1.0, 0.5, 0.25], targets, cfg) for k in KINDS}
    feats = objective.network_features(tiny_params, jnp.asarray(x), cfg.style_layers, cfg)
    got = targets.style.style_terms(feats, w, cfg)
    for k in KINDS:
        np.testing.assert_allclose(got[k], refs[k], rtol=2e-4, err_msg=k)
    terms = objective.loss_terms(tiny_params, jnp.asarray(x), targets, w, cfg)
    np.testing.assert_allclose(terms["style"], sum(kind_w[j] * refs[k] for j, k in enumerate(KINDS)), rtol=2e-4)
    assert targets.style.sliced_proj["relu2_1"].shape == (6, 6) and targets.style.hist["relu1_1"].shape == (2, 17, 4)
    assert targets.style.sliced_sorted["relu1_1"].shape == (2, 32 * 32, 6)  # styles resampled to the larger N
    assert not targets.style.w2_sqrt  # a blend's square root is taken in the step


def test_each_kind_is_zero_on_the_style_itself_and_gram_targets_unchanged(tiny_params):
    _, (style, _) = _images(1)
    cfg = LossConfig(content_layers=(), style_layers=LAYERS, style_losses=KINDS, hist_bins=None)
    targets = objective.compute_targets(tiny_params, None, [style], cfg)
    w = objective.make_weights(cfg, tiny_params, layer_weights="ones", style_loss_weights=[1, 1, 1, 1])
    feats = objective.network_features(tiny_params, jnp.asarray(style), cfg.style_layers, cfg)
    terms = targets.style.style_terms(feats, w, cfg)
    assert float(terms["gram"]) == 0.0 and float(terms["sliced"]) == 0.0 and float(terms["hist"]) == 0.0
    other = _images(2)[1][0]  # the W2 tolerance relative to the loss of another image
    scale = float(objective.loss_terms(tiny_params, jnp.asarray(other), targets, w, cfg)["style"])
    assert abs(float(terms["w2"])) < 1e-4 * scale and scale > 0
    assert targets.style.w2_sqrt["relu1_1"].shape == (1, 4, 4)  # one style: the root is precomputed
    plain = objective.compute_targets(tiny_params, None, [style], LossConfig(content_layers=(), style_layers=LAYERS))
    assert set(jax.tree_util.tree_leaves(plain.style.w2_mean)) == set() and set(plain.style.grams) == set(LAYERS)
    np.testing.assert_array_equal(plain.style.grams["relu2_1"], targets.style.grams["relu2_1"])


def test_gradient_of_the_mixed_loss_matches_central_differences(tiny_params):
    """Gram + W2 + content through the network (float64). The sorting kinds are left out here: ReLU zeros tie in
    their sorts, where the loss has only one-sided derivatives; their gradients are checked on smooth features in
    test_style_losses.py."""
    x, styles = _images(2)
    cfg = LossConfig(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"), style_losses=("gram", "w2"))
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tiny_params)
        targets = objective.compute_targets(params, jnp.asarray(x, jnp.float64), [jnp.asarray(styles[0], jnp.float64)],
                                            cfg)
        w = objective.make_weights(cfg, params, layer_weights="ones", style_loss_weights=[1e-3, 1.0])
        w = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), w)
        loss = lambda v: objective.total_loss(v, params, targets, w, cfg)  # noqa: E731
        x0 = jnp.asarray(x, jnp.float64) * 0.9 + 0.05
        g = jax.grad(loss)(x0)
        rng = np.random.default_rng(0)
        for _ in range(2):
            v = jnp.asarray(rng.normal(size=x.shape))
            h = 1e-5
            fd = (loss(x0 + h * v) - loss(x0 - h * v)) / (2 * h)
            np.testing.assert_allclose(jnp.vdot(g, v), fd, rtol=1e-4)


def test_sliced_projections_are_fixed_by_the_seed(tiny_params):
    _, styles = _images(3)
    cfg = LossConfig(content_layers=(), style_layers=LAYERS, style_losses=("sliced",))
    a = objective.compute_targets(tiny_params, None, styles[:1], cfg, sliced_seed=7).style
    b = objective.compute_targets(tiny_params, None, styles[:1], cfg, sliced_seed=7).style
    c = objective.compute_targets(tiny_params, None, styles[:1], cfg, sliced_seed=8).style
    for n in LAYERS:
        np.testing.assert_array_equal(a.sliced_proj[n], b.sliced_proj[n])
        np.testing.assert_array_equal(a.sliced_sorted[n], b.sliced_sorted[n])
        assert not np.allclose(a.sliced_proj[n], c.sliced_proj[n])
    index = nst_jax.layer_names("tiny19").index("relu2_1")  # the layer's directions: the seed and its index only
    np.testing.assert_allclose(a.sliced_proj["relu2_1"], SL.sliced_projections(
        jax.random.fold_in(jax.random.PRNGKey(7), index), 6, 6), rtol=1e-6)
    kw = dict(weights=tiny_params, size=32, iters=3, progress=False, style_loss="sliced")
    r1, r2 = (nst_jax.stylize(S("blue_marble"), S("great_wave"), sliced_seed=5, **kw) for _ in range(2))
    np.testing.assert_array_equal(r1.image, r2.image)
    assert r1.settings["sliced_seed"] == 5 and r1.settings["style_loss"] == ["sliced"]


def test_guided_w2_equals_numpy_weighted_statistics_per_region():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(6, 5, 3)).astype(np.float32)
    guides = np.zeros((6, 5, 2), np.float32)
    guides[:, :2, 0], guides[:, 2:, 1] = 1.0, rng.uniform(0.2, 1.0, size=(6, 3))
    t, valid = guided.normalize_guides(jnp.asarray(guides))
    styles = [rng.normal(size=(20, 3)) * 2 + 1, rng.normal(size=(30, 3))]
    stats = jax.vmap(SL.w2_target_from_stats)(jnp.asarray([s.mean(0) for s in styles], jnp.float32),
                                              jnp.asarray([np.cov(s, rowvar=False, bias=True) for s in styles],
                                                          jnp.float32))
    got = guided.guided_w2_loss({"a": jnp.asarray(f)}, {"a": stats}, {"a": t}, ["a"], jnp.array([2.0]),
                                jnp.array([0.3, 0.7]), valid[None])
    ref = 0.0
    for r, (s, wr) in enumerate(zip(styles, (0.3, 0.7))):
        wp = np.asarray(t)[..., r].ravel() ** 2
        x = f.reshape(-1, 3).astype(np.float64)
        m, cf = np.average(x, axis=0, weights=wp), np.cov(x, rowvar=False, bias=True, aweights=wp) + 1e-4 * np.eye(3)
        ct = np.cov(s, rowvar=False, bias=True) + 1e-4 * np.eye(3)
        st = _np_sqrtm(ct)
        ref += wr * (np.sum((m - s.mean(0)) ** 2) + np.trace(cf + ct - 2 * _np_sqrtm(st @ cf @ st))) / 3
    np.testing.assert_allclose(got, 2.0 * ref, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:empty guidance channel")  # 32 px: the sky vanishes in the deep layers
def test_guided_w2_runs_through_spatial_control_and_unguided_kinds_are_refused(tiny_params):
    spatial = dict(mode="gram", content_masks={"sky": S("tetons_snake_river_sky"),
                                               "ground": S("tetons_snake_river_nosky")},
                   style_masks=[None, None], region_to_style={"sky": 0, "ground": 1}, propagation="inside")
    p = nst_jax.prepare(S("tetons_snake_river"), [S("starry_night"), S("great_wave")], weights=tiny_params,
                        size=32, spatial=spatial, style_loss="gram,w2")
    mean, cov, sqrt = p.targets.style.w2["relu3_1"]
    assert mean.shape == (2, 8) and cov.shape == sqrt.shape == (2, 8, 8)
    np.testing.assert_allclose(np.asarray(sqrt[0] @ sqrt[0]), cov[0], rtol=1e-3, atol=1e-3)
    r = nst_jax.solve_problem(p, iters=3, progress=False)
    assert r.loss_trace[-1]["loss"] < r.loss_trace[0]["loss"]
    for kind, mode, words in (("sliced", "gram", "no guided variant"), ("hist", "gram", "weighted quantiles"),
                              ("w2", "sums", "does not combine")):
        with pytest.raises(SettingError) as e:
            ProblemSpec(style_loss=kind, spatial=dict(spatial, mode=mode))
        assert words in str(e.value) and "\n" not in e.value.for_flag() and "--style-loss" in e.value.for_flag()
    for bad in ("gram,gram", "sinkhorn", ""):
        with pytest.raises(SettingError, match="distinct kinds"):
            ProblemSpec(style_loss=bad)
    with pytest.raises(SettingError, match="2 style loss weights given for 1"):
        nst_jax.prepare(S("blue_marble"), S("great_wave"), weights=tiny_params, size=32, style_loss_weights=[1, 2])


# --- gradient normalisation ---

def _np_gram_grad(f, a):
    """d mean((F^T F / N - A)^2) / dF = 4 F (G - A) / (N C^2) for [N, C] features and symmetric A."""
    n, c = f.shape
    return 4.0 * f @ (f.T @ f / n - a) / (n * c * c)


def test_normalized_gradient_is_neural_styles_rule_per_layer_and_term(tiny_params):
    """Each term's gradient at its layer: weight * g / (sum|g| + 1e-8), g the term's own (NumPy) gradient; the
    image gradient is the network's VJP of those."""
    x, styles = _images(5)
    cfg = LossConfig(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"), style_losses=("gram", "hist"),
                     hist_bins=None, normalize_gradients=True)
    targets = objective.compute_targets(tiny_params, x * 0.5, styles[:1], cfg)
    w = objective.make_weights(cfg, tiny_params, content_weight=3.0, style_weight=10.0, layer_weights=[2.0, 0.5],
                               style_loss_weights=[1.5, 4.0])
    feats = objective.network_features(tiny_params, jnp.asarray(x), cfg.all_layers, cfg)
    f64 = {n: np.asarray(v, np.float64).reshape(-1, v.shape[-1]) for n, v in feats.items()}
    fs = _feats(tiny_params, styles[0], cfg)
    expect = {n: np.zeros_like(v) for n, v in f64.items()}
    norm = lambda g: g / (np.abs(g).sum() + 1e-8)  # noqa: E731
    p_c = np.asarray(targets.content["relu2_1"], np.float64).reshape(f64["relu2_1"].shape)
    expect["relu2_1"] += 3.0 * norm(2 * (f64["relu2_1"] - p_c) / p_c.size)
    for j, n in enumerate(cfg.style_layers):
        f, s = f64[n], fs[n]
        expect[n] += 10.0 * 1.5 * [2.0, 0.5][j] * norm(_np_gram_grad(f, s.T @ s / len(s)))
        remap = np.sort(s, axis=0)[np.argsort(np.argsort(f, axis=0, kind="stable"), axis=0, kind="stable"),
                                   np.arange(f.shape[1])]
        expect[n] += 10.0 * 4.0 * [2.0, 0.5][j] * norm(2 * (f - remap) / f.size)

    def from_feats(fd):
        content = w.content * w.content_layers[0] * gradnorm.term(True, nst_jax.losses.content_loss, fd["relu2_1"],
                                                                  targets.content["relu2_1"])
        return content + w.style * targets.style.style_loss(fd, w, cfg)

    got = jax.grad(from_feats)(dict(feats))
    for n in expect:
        np.testing.assert_allclose(np.asarray(got[n]).reshape(expect[n].shape), expect[n], rtol=1e-3,
                                   atol=1e-6 * np.abs(expect[n]).max())
    # through the network: the image gradient is the features' VJP of the normalised cotangents
    _, vjp = jax.vjp(lambda v: objective.network_features(tiny_params, v, cfg.all_layers, cfg), jnp.asarray(x))
    cot = {n: jnp.asarray(expect[n].reshape(feats[n].shape), jnp.float32) for n in feats}
    image_grad = jax.grad(lambda v: objective.total_loss(v, tiny_params, targets, w, cfg))(jnp.asarray(x))
    np.testing.assert_allclose(image_grad, vjp(cot)[0], rtol=1e-3, atol=1e-7)
    # the value is the loss's own, normalised or not
    plain = dataclasses.replace(cfg, normalize_gradients=False)
    np.testing.assert_allclose(objective.total_loss(jnp.asarray(x), tiny_params, targets, w, cfg),
                               objective.total_loss(jnp.asarray(x), tiny_params, targets, w, plain), rtol=1e-6)


def test_default_solver_with_normalized_gradients_only_accepts_lower_losses(tiny_params):
    r = nst_jax.stylize(S("blue_marble"), S("great_wave"), weights=tiny_params, size=32, iters=12, progress=False,
                        normalize_gradients=True, style_loss="gram,w2")
    losses = [e["loss"] for e in r.loss_trace]
    assert all(b <= a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0]
    assert r.settings["normalize_gradients"] is True


# --- iterate averaging ---

def test_ema_equals_its_closed_form_on_a_quadratic():
    """x_EMA after n steps = sum_k d^(n-k) x_k / sum_k d^(n-k), k = 0..n (x_0 the start), for lbfgs and adam."""
    c = jnp.array([0.2, 0.9, 0.4])
    vg = lambda x: (jnp.sum((x - c) ** 2), 2 * (x - c), {})  # noqa: E731
    d, n = 0.7, 6
    for name in ("lbfgs", "adam"):
        inner = solvers.make_solver(SolverConfig(name=name, history=3, lr=0.1 if name == "adam" else None), vg)
        ema = solvers.make_solver(SolverConfig(name=name, history=3, ema=d, lr=0.1 if name == "adam" else None), vg)
        assert isinstance(ema, solvers.EMASolver)
        st, st_e = inner.init(jnp.zeros(3)), ema.init(jnp.zeros(3))
        xs = [np.asarray(inner.x(st))]
        for _ in range(n):
            st, st_e = inner.step(st), ema.step(st_e)
            xs.append(np.asarray(inner.x(st)))
        weights = d ** np.arange(n, -1, -1, dtype=np.float64)
        np.testing.assert_allclose(ema.x(st_e), (weights[:, None] * np.stack(xs)).sum(0) / weights.sum(), rtol=1e-6)
        np.testing.assert_allclose(ema.value(st_e), inner.value(st), rtol=1e-6)  # the iterate's own loss
        np.testing.assert_allclose(ema.inner.x(st_e.inner), xs[-1], rtol=1e-6)


def test_ema_result_through_the_runner_averages_the_iterates(tiny_params):
    xs = []
    p = nst_jax.prepare(S("blue_marble"), S("great_wave"), weights=tiny_params, size=32)
    run = nst_jax.Solve(p.cfg, SolverConfig(history=4, chunk=1))
    x0 = nst_jax.problem.initial_image(p, "content")
    plain = run(p.params, p.targets, p.weights, x0, 4, callback=lambda i, x, v: xs.append(np.asarray(x)))
    averaged = nst_jax.Solve(p.cfg, SolverConfig(history=4, chunk=1, ema=0.5))(p.params, p.targets, p.weights, x0, 4)
    np.testing.assert_allclose(averaged.values, plain.values, rtol=1e-6)  # the same iterates
    weights = 0.5 ** np.arange(4, -1, -1, dtype=np.float64)
    expect = (weights[:, None, None, None] * np.stack([x0] + xs)).sum(0) / weights.sum()
    np.testing.assert_allclose(averaged.image, expect, atol=1e-6)
    r = nst_jax.stylize(S("blue_marble"), S("great_wave"), weights=tiny_params, size=32, iters=2, progress=False,
                        ema=0.5)
    assert r.settings["ema"] == 0.5
    with pytest.raises(SettingError, match="between 0 and 1"):
        SolverConfig(ema=1.0)


@pytest.mark.parametrize("name", ["jaxopt-lbfgs", "optax-lbfgs"])
def test_ema_wraps_the_line_search_solvers(tiny_params, name):
    """The line-search solvers (their own f+g counts and probes) run under the average as they run alone: the same
    loss trace and f+g counts; the result is the average of their iterates, inside the box."""
    p = nst_jax.prepare(S("blue_marble"), S("great_wave"), weights=tiny_params, size=32)
    x0 = nst_jax.problem.initial_image(p, "content")
    plain = nst_jax.Solve(p.cfg, SolverConfig(name=name, history=4, chunk=1))(p.params, p.targets, p.weights, x0, 3)
    averaged = nst_jax.Solve(p.cfg, SolverConfig(name=name, history=4, chunk=1, ema=0.5))(
        p.params, p.targets, p.weights, x0, 3)
    np.testing.assert_allclose(averaged.values, plain.values, rtol=1e-5)
    np.testing.assert_array_equal(averaged.nfevs, plain.nfevs)
    assert averaged.nfev_run == plain.nfev_run
    assert 0.0 <= float(np.min(averaged.image)) and float(np.max(averaged.image)) <= 1.0
    assert float(np.max(np.abs(np.asarray(averaged.image) - np.asarray(plain.image)))) > 1e-4


# --- resolution rule and padding ---

def test_resolution_rule_tilts_the_layer_weights_by_the_working_size(tiny_params):
    kw = dict(weights=tiny_params, layer_weights=[1.0, 1.0, 1.0, 1.0, 1.0])
    ref = nst_jax.prepare(S("blue_marble"), S("great_wave"), size=32, style_ref_size=32, **kw)
    big = nst_jax.prepare(S("blue_marble"), S("great_wave"), size=64, style_ref_size=32, **kw)
    np.testing.assert_allclose(ref.weights.style_layers, 1.0)
    np.testing.assert_allclose(big.weights.style_layers, 2.0 ** (np.arange(5) - 2.0), rtol=1e-6)
    assert big.settings["layer_weights"] == pytest.approx([0.25, 0.5, 1.0, 2.0, 4.0])


@pytest.mark.parametrize("padding", ["reflect-first", "replicate-first"])
def test_first_conv_padding_removes_the_border_of_a_flat_image(tiny_params, padding):
    """A flat grey image has no edges; zero padding makes the first conv see one at the border (its relu1_1 map
    varies there), reflect / replicate padding does not. Only the first conv: conv1_2 still zero-pads."""
    flat = jnp.full((16, 16, 3), 0.4)

    def spread(pad, layer):
        f = nst_jax.features(tiny_params, flat, [layer], padding=pad)[layer]
        return float(jnp.max(jnp.abs(f - f[8, 8])))

    assert spread("zero", "relu1_1") > 1e-3
    assert spread(padding, "relu1_1") < 1e-5
    assert spread(padding, "conv1_2") > 1e-3 and spread(padding.split("-")[0], "conv1_2") < 1e-5


# --- the command line ---

@pytest.mark.slow
def test_cli_flags_reach_the_run_and_bad_values_are_one_line_errors(tmp_path, capsys):
    import json

    from nst_jax.cli import main

    tiny = ["--weights", "tiny19", "--no-progress", "--size", "32", "--iters", "2"]
    out = tmp_path / "o.png"
    assert main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(out), "--style-loss", "gram,sliced",
                 "--style-loss-weights", "1,500", "--sliced-projections", "3", "--sliced-seed", "4",
                 "--hist-bins", "none", "--normalize-gradients", "--style-ref-size", "16",
                 "--padding", "replicate-first", "--ema", "0.9", *tiny]) == 0
    meta = I.read_png_metadata(out)
    assert json.loads(meta["style_loss"]) == ["gram", "sliced"] and json.loads(meta["style_loss_weights"]) == [1, 500]
    assert meta["sliced_projections"] == "3" and meta["sliced_seed"] == "4" and meta["padding"] == "replicate-first"
    assert meta["normalize_gradients"] == "true" and meta["style_ref_size"] == "16" and float(meta["ema"]) == 0.9
    sweep = tmp_path / "sw"
    assert main(["sweep", str(S("blue_marble")), str(S("great_wave")), "--style-loss", "gram,w2", "--grid",
                 "style-loss-weights=1,0|0,1e3", "-o", str(sweep), *tiny]) == 0
    members = json.loads((sweep / "sweep.json").read_text())["members"]
    assert [m["settings"]["style_loss_weights"] for m in members] == [[1, 0], [0, 1000]]
    capsys.readouterr()
    for bad, flag in ((["--style-loss", "sinkhorn"], "--style-loss"), (["--style-loss-weights", "1,2"],
                                                                       "--style-loss-weights"),
                      (["--ema", "1.5"], "--ema"), (["--hist-bins", "0"], "--hist-bins")):
        assert main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(tmp_path / "b.png"),
                     *bad, *tiny]) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0], (bad, err)


# A vmapped forward loss with both the Gram and the W2 terms never finished on XLA:CPU (jaxlib 0.10.2; the same at
# any image; not with the tiny network), so a sweep with W2 members hung after its last chunk, in runner.final_terms.
# Run in a subprocess: a regression fails on the timeout instead of hanging the suite.
_FINAL_TERMS = textwrap.dedent("""
    import json
    import jax, numpy as np
    from nst_jax import image, objective, problem, runner
    p = problem.prepare(image.sample_path("blue_marble"), image.sample_path("great_wave"), weights="vgg16-hed",
                        size=64, style_loss="gram,w2", style_weight=10.0)
    two = lambda a: np.stack([np.asarray(a), np.asarray(a)])
    got = runner.final_terms(two(p.content_in), p.params, p.targets, jax.tree_util.tree_map(two, p.weights), p.cfg,
                             runner.Members())
    one = objective.loss_terms(p.params, p.content_in, p.targets, p.weights, p.cfg)
    print(json.dumps({k: [np.asarray(got[k]).tolist(), float(one[k])] for k in got}))
""")


def test_final_terms_of_a_sweep_with_gram_and_w2_members_finish_with_real_weights(hed_params):
    try:
        out = subprocess.run([sys.executable, "-c", _FINAL_TERMS], capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("runner.final_terms of two members with gram and w2 terms hung (the XLA:CPU deadlock is back)")
    assert out.returncode == 0, out.stderr[-2000:]
    terms = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(terms) == {"content", "style", "tv", "total"}
    for name, (members, single) in terms.items():  # each member equals the unbatched evaluation
        np.testing.assert_allclose(members, [single, single], rtol=1e-4, atol=1e-6, err_msg=name)
    assert terms["style"][1] > 0
