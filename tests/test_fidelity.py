"""Fidelity to the official code (issue 17): each setting against a short NumPy transcription of the official formula.

The official code is the 2017 paper's (leongatys/NeuralImageSynthesis: ``LossLayers.lua`` and the example notebooks),
jcjohnson/neural-style (``neural_style.lua``), and loadcaffe / Caffe's pooling layer. The transcriptions below are
written from their formulas; where a feature map is needed it comes from ``nst_jax.vgg`` (the network is tested in
test_vgg.py; here what is tested is what nst-jax does around it). Tiny network throughout, plus one run with the real
vgg16-hed weights.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage as ndi

import nst_jax
from nst_jax import color, guidance, lbfgs, memory, objective, pyramid, vgg, weights
from nst_jax.config import SOLVERS, ProblemSpec
from nst_jax.image import sample_path
from nst_jax import masks as M
from nst_jax.problem import fit_area, load_input, original_shape, prepare

MEAN_BGR = np.array([103.939, 116.779, 123.68])
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


@functools.partial(jax.jit, static_argnames=("layers", "pooling", "pool_rounding", "padding", "ops", "preprocessed"))
def _features(params, x, layers, pooling="max", pool_rounding="floor", padding="zero", ops="lax",
              preprocessed=False):
    return vgg.features(params, x, layers, pooling=pooling, pool_rounding=pool_rounding, padding=padding, ops=ops,
                        preprocessed=preprocessed)


def features(params, x, layers, **kw):
    return {k: np.asarray(v, np.float64) for k, v in _features(params, jnp.asarray(x, jnp.float32), tuple(layers),
                                                                  **kw).items()}


def _rand(shape, seed):
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _np_gram(f_HWC, divisor):
    f = np.asarray(f_HWC, np.float64).reshape(-1, f_HWC.shape[-1])
    return f.T @ f / divisor


# ----------------------------------------------------------------------------------------------------------------
# 1. guided sums: their own weight, 1e9 / C^2 / R against 1e3 / C^2 for the Gram term (SpatialControl notebook)
# ----------------------------------------------------------------------------------------------------------------

def _official_sums_gram(feats_x, feats_s, guides_x, guides_s, mw=1e9, sw=1e3):
    """SpatialControl "guided sums with Gram" (one style): per layer, MeanMSEGuided with weight mw/C^2 * 1/R per
    region (MSECriterion: mean over C, no 1/2) on M = mean_p(T~ F), T~ = T / sqrt(mean T^2); plus GramMSE with weight
    sw/C^2 on G = F^T F / (H W). Returns (sums term, Gram term), each weighted."""
    sums = gram = 0.0
    for n in STYLE_LAYERS:
        fx, fs = feats_x[n], feats_s[n]
        c = fx.shape[-1]
        r_count = guides_x[n].shape[-1]
        for r in range(r_count):
            tx, ts = guides_x[n][..., r], guides_s[n][..., r]
            if not tx.any() or not ts.any():
                continue
            tx, ts = tx / np.sqrt(np.mean(tx ** 2)), ts / np.sqrt(np.mean(ts ** 2))
            mx = (fx * tx[..., None]).reshape(-1, c).mean(0)
            ms = (fs * ts[..., None]).reshape(-1, c).mean(0)
            sums += mw / c ** 2 / r_count * np.mean((mx - ms) ** 2)
        hw = fx.shape[0] * fx.shape[1]
        gram += sw / c ** 2 * np.mean((_np_gram(fx, hw) - _np_gram(fs, fs.shape[0] * fs.shape[1])) ** 2)
    return sums, gram


def _sums_gram_problem(params, content, style, c_masks, s_masks, size):
    spec = ProblemSpec(weights=params, size=size, spatial=dict(mode="sums+gram", content_masks=c_masks,
                                                               style_masks=[s_masks], propagation="inside"))
    return prepare(content, style, spec)


def _propagated(params, masks_hw, names, layers):
    g = np.stack([masks_hw[n] for n in names], -1).astype(np.float32)
    prop = guidance.propagate_guides(jnp.asarray(g), params, layers, "inside")
    return {n: np.asarray(v, np.float64) for n, v in prop.items()}


@pytest.mark.filterwarnings("ignore:empty guidance channel")  # deep layers of a 32 px image under "inside"
def test_sums_weight_defaults_and_terms_match_the_official_notebook(tiny_params):
    h, w = 32, 32
    content, style, x = _rand((h, w, 3), 0), _rand((h, w, 3), 1), _rand((h, w, 3), 2)
    left = np.zeros((h, w), np.float32)
    left[:, :13] = 1
    top = np.zeros((h, w), np.float32)
    top[:11] = 1
    c_masks, s_masks = {"a": left, "b": 1 - left}, {"a": top, "b": 1 - top}
    p = _sums_gram_problem(tiny_params, content, style, c_masks, s_masks, size=32)
    assert float(p.weights.sums) == 1e9 and float(p.weights.style) == 1e3 and p.settings["sums_weight"] == 1e9
    t = objective.loss_terms(tiny_params, jnp.asarray(x), p.targets, p.weights, p.cfg)
    sums_nst = float(p.weights.sums) * float(p.targets.style.sums_loss(
        objective.network_features(tiny_params, jnp.asarray(x), p.cfg.all_layers, p.cfg), p.weights, p.cfg))
    fx, fs = features(tiny_params, x, STYLE_LAYERS), features(tiny_params, style, STYLE_LAYERS)
    sums, gram = _official_sums_gram(fx, fs, _propagated(tiny_params, c_masks, "ab", STYLE_LAYERS),
                                     _propagated(tiny_params, s_masks, "ab", STYLE_LAYERS))
    np.testing.assert_allclose(sums_nst, sums, rtol=2e-4)
    fc = features(tiny_params, content, ["relu4_2"])["relu4_2"]
    content_term = np.mean((features(tiny_params, x, ["relu4_2"])["relu4_2"] - fc) ** 2)
    np.testing.assert_allclose(float(t["total"]), content_term + sums + gram, rtol=2e-4)
    # the term ratio is the official one: the sums weigh 1e6 x the Gram term's weight (per unit of each loss)
    np.testing.assert_allclose((float(t["total"]) - content_term - sums_nst) / gram, 1.0, rtol=2e-4)
    # one traced weight: a new sums weight changes the total without a recompile, and 0 drops the term
    zero = objective.loss_terms(tiny_params, jnp.asarray(x), p.targets, p.weights.replace(sums=jnp.float32(0)), p.cfg)
    np.testing.assert_allclose(float(zero["total"]), content_term + gram, rtol=2e-4)


@pytest.mark.realweights
@pytest.mark.filterwarnings("ignore:empty guidance channel")  # relu4_1, relu5_1 of a 64 px image under "inside"
def test_real_weights_sums_and_gram_carry_the_official_shares(hed_params):
    """vgg16-hed, tetons (sky / ground) in the wheat-field style with its sky masks: the sums term's share of the
    style objective is the official code's (it dominates; with one beta for both it was ~1e-4), and a short solve
    brings it down."""
    S = sample_path
    c_masks = {"sky": S("tetons_snake_river_sky.png"), "nosky": S("tetons_snake_river_nosky.png")}
    s_masks = {"sky": S("wheat_field_with_cypresses_sky.jpg"), "nosky": S("wheat_field_with_cypresses_nosky.jpg")}
    p = _sums_gram_problem(hed_params, S("tetons_snake_river"), S("wheat_field_with_cypresses"), c_masks, s_masks,
                           size=64)
    x, style_in = p.content_in, p.styles_in[0]
    fx, fs = features(hed_params, x, STYLE_LAYERS), features(hed_params, style_in, STYLE_LAYERS)
    names = ("sky", "nosky")
    cg = M.guides_at(c_masks, x.shape[:2], "content", original_shape(S("tetons_snake_river")))[1]
    sg = M.guides_at(s_masks, style_in.shape[:2], "style", original_shape(S("wheat_field_with_cypresses")))[1]
    sums, gram = _official_sums_gram(fx, fs, _propagated(hed_params, dict(zip(names, np.moveaxis(cg, -1, 0))), names,
                                                         STYLE_LAYERS),
                                     _propagated(hed_params, dict(zip(names, np.moveaxis(sg, -1, 0))), names,
                                                 STYLE_LAYERS))
    share = sums / (sums + gram)
    feats = objective.network_features(hed_params, jnp.asarray(x), p.cfg.all_layers, p.cfg)
    sums_nst = float(p.weights.sums * p.targets.style.sums_loss(feats, p.weights, p.cfg))
    gram_nst = float(p.weights.style * p.targets.style.style_loss(feats, p.weights, p.cfg))
    np.testing.assert_allclose(sums_nst / (sums_nst + gram_nst), share, rtol=1e-3)
    print(f"share of the sums term in the style objective: {share:.4f}")
    assert share > 0.5, share
    r = nst_jax.solve_problem(p, iters=15, progress=False)
    assert r.loss_trace[-1]["loss"] < 0.5 * r.loss_trace[0]["loss"]


# ----------------------------------------------------------------------------------------------------------------
# 2. style mixing across scales (ScaleControl notebook: transfer_texture)
# ----------------------------------------------------------------------------------------------------------------

def _official_match_color(target_img, source_img, eps=1e-5):
    """The notebooks' match_color(target, source, mode='pca'): recolour target to source's mean and covariance."""
    mu_t = target_img.mean(0).mean(0)
    t = (target_img - mu_t).transpose(2, 0, 1).reshape(3, -1)
    ct = t.dot(t.T) / t.shape[1] + eps * np.eye(3)
    mu_s = source_img.mean(0).mean(0)
    s = (source_img - mu_s).transpose(2, 0, 1).reshape(3, -1)
    cs = s.dot(s.T) / s.shape[1] + eps * np.eye(3)
    eva_t, eve_t = np.linalg.eigh(ct)
    qt = eve_t.dot(np.sqrt(np.diag(eva_t))).dot(eve_t.T)
    eva_s, eve_s = np.linalg.eigh(cs)
    qs = eve_s.dot(np.sqrt(np.diag(eva_s))).dot(eve_s.T)
    ts = qs.dot(np.linalg.inv(qt)).dot(t)
    out = ts.reshape(*target_img.transpose(2, 0, 1).shape).transpose(1, 2, 0) + mu_s
    return np.clip(out, 0, 1)


def test_mixed_style_is_the_official_pretransfer(tiny_params):
    content, coarse, fine = _rand((30, 40, 3), 3), _rand((40, 40, 3), 4) ** 2, _rand((36, 40, 3), 5)
    spec = ProblemSpec(weights=tiny_params, size=40)
    r = pyramid.mixed_style(content, coarse, fine, spec, nst_jax.SolveOptions(progress=False), iters=0)
    c_work = load_input(content, "content", 40)  # the content at the working size is the colour reference
    coarse_cm = _official_match_color(np.float64(coarse), np.float64(c_work))
    fine_cm = _official_match_color(np.float64(load_input(fine, "fine", 40)), np.float64(c_work))
    np.testing.assert_allclose(r.image, coarse_cm, atol=2e-5)  # 0 iterations: the colour-matched coarse style
    # GramMSE on relu1_1, relu2_1 (max_pretrans_layer relu2_1 at ~512^2) with weights ptw / len(layers), ptw = 1e3
    low = ("relu1_1", "relu2_1")
    fx, ff = features(tiny_params, coarse_cm, low), features(tiny_params, fine_cm, low)
    ref = sum(1e3 / 2 * np.mean((_np_gram(fx[n], fx[n].shape[0] * fx[n].shape[1])
                                  - _np_gram(ff[n], ff[n].shape[0] * ff[n].shape[1])) ** 2) for n in low)
    assert r.loss_trace[0]["loss"] == pytest.approx(ref, rel=1e-4)
    assert r.settings["mix"] == {"fine_layers": list(low), "colors_matched": True}
    assert r.settings["layer_weights"] == [0.5, 0.5]  # "equal": 1 / L
    assert pyramid.default_fine_layers((1024, 1024))[-1] == "relu4_1"  # the high-resolution re-mix


def test_pyramid_remixes_at_every_level(tiny_params):
    content, coarse, fine = _rand((30, 40, 3), 6), _rand((40, 40, 3), 7), _rand((40, 40, 3), 8)
    r = pyramid.stylize_pyramid(content, coarse, scales=[24, 40], iters_per_scale=[2, 1], mix_with=fine,
                                mix_iters=[3, 2], weights=tiny_params, progress=False)
    assert [m["iters"] for m in r.settings["mix_with"]] == [3, 2]
    assert all(m["colors_matched"] and m["fine_layers"] == ["relu1_1", "relu2_1"] for m in r.settings["mix_with"])
    assert r.image.shape == (30, 40, 3)
    with pytest.raises(ValueError, match="mix_with takes exactly one style"):
        pyramid.stylize_pyramid(content, [coarse, fine], scales=[24, 40], mix_with=fine, weights=tiny_params)


# ----------------------------------------------------------------------------------------------------------------
# 3. "simple" guide propagation (SpatialControl get_fm_guides, mode='simple')
# ----------------------------------------------------------------------------------------------------------------

def _official_simple(guides_HWR, feature_shapes, k=0, th=0.5):
    """get_fm_guides(mode='simple'): scipy.ndimage.zoom of the [R, H, W] pixel guides by (1, h/H, w/W) with
    mode='nearest' (order 3 by default), per layer; with k != 0 binarised (< th -> 0, > th -> 1), then filtered."""
    g = guides_HWR.transpose(2, 0, 1).astype(np.float64)
    out = {}
    for name, (h, w, c) in feature_shapes.items():
        sf = np.asarray((c, h, w), float) / np.asarray(g.shape, float)
        sf[0] = 1
        fm = ndi.zoom(g, sf, mode="nearest")
        if k != 0:
            fm[fm < th] = 0
            fm[fm > th] = 1
            fm = np.stack([_official_filter(m, k) for m in fm])
        out[name] = fm.transpose(1, 2, 0)
    return out


def _official_filter(g, k):
    """get_fm_guides' extra filter of one [h, w] guide: k > 0 extends, k < 0 reduces (uniform_filter, mode reflect)."""
    g = np.asarray(g, np.float64).copy()
    n = 2 * abs(k) + 1
    if k > 0:
        return (ndi.uniform_filter(g, n) >= 1.0 / n ** 2).astype(float)
    g[ndi.uniform_filter(g, n) < 1 - 1.0 / n ** 2] = 0.0
    return g


@pytest.mark.parametrize("shape", [(27, 19), (33, 17)])
def test_simple_propagation_is_the_official_cubic_zoom(tiny_params, shape):
    g = _rand(shape + (2,), 9)
    shapes = memory.feature_shapes("tiny19", shape, STYLE_LAYERS, pool_rounding="ceil")  # Caffe's sizes
    shapes = {n: shapes[n] for n in STYLE_LAYERS}
    got = guidance.propagate_guides(jnp.asarray(g), tiny_params, STYLE_LAYERS, "simple", pool_rounding="ceil")
    want = _official_simple(g, shapes)
    for n in STYLE_LAYERS:
        assert got[n].shape == want[n].shape
        np.testing.assert_allclose(got[n], want[n], atol=2e-6, err_msg=n)
    if shape == (33, 17):  # 2^k + 1 sides: corner-aligned cubic interpolation lands on the pixels, exactly
        np.testing.assert_allclose(got["relu2_1"], g[::2, ::2], atol=1e-6)
        np.testing.assert_allclose(got["relu3_1"], g[::4, ::4], atol=1e-6)


def test_simple_propagation_is_unclipped_and_binarises_before_erosion(tiny_params):
    step = np.zeros((32, 24, 1), np.float32)
    step[:, :11] = 1
    soft = guidance.propagate_guides(jnp.asarray(step), tiny_params, STYLE_LAYERS, "simple")
    assert min(float(v.min()) for v in soft.values()) < -1e-3 and max(float(v.max()) for v in soft.values()) > 1.001
    g = _rand((32, 24, 2), 10)
    shapes = memory.feature_shapes("tiny19", (32, 24), STYLE_LAYERS)
    for k in (2, -1):  # official k = -erode
        got = guidance.propagate_guides(jnp.asarray(g), tiny_params, STYLE_LAYERS, "simple", erode=-k)
        want = _official_simple(g, {n: shapes[n] for n in STYLE_LAYERS}, k=k)
        if k > 0:  # extension: exactly the official rule
            for n in STYLE_LAYERS:
                np.testing.assert_array_equal(np.asarray(got[n]), want[n], err_msg=n)
        else:  # reduction: a subset of the official one (see the erosion test)
            assert all(np.all(np.asarray(got[n]) <= want[n]) for n in STYLE_LAYERS)


# ----------------------------------------------------------------------------------------------------------------
# 4. erosion sign: official k = -erode (get_fm_guides' uniform_filter rules)
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3])
def test_erode_maps_to_the_official_k(tiny_params, k):
    rng = np.random.default_rng(20 + k)
    g = (rng.uniform(size=(30, 26)) > 0.3).astype(np.float32)
    g[8:22, 6:20] = 1  # a solid block, so erosion leaves something
    n = 2 * k + 1

    def nst(erode):  # "simple" at relu1_1 is the identity, so only the extra filter acts (on a binary guide)
        return np.asarray(guidance.propagate_guides(jnp.asarray(g[..., None]), tiny_params, ["relu1_1"], "simple",
                                                    erode=erode)["relu1_1"][..., 0])

    # official k > 0 (extend) is exactly nst-jax erode = -k
    np.testing.assert_array_equal(nst(-k), _official_filter(g, k))
    # official -k (reduce) clears a unit when its mirrored-border window holds >= 2 zeros (float rule transcribed);
    # nst-jax erode = k clears it when its in-image window holds >= 1 zero
    official, mine = _official_filter(g, -k), nst(k)
    zeros = np.rint(ndi.uniform_filter(1.0 - g, n) * n * n)  # zeros in the window, mirrored ones counted twice
    assert np.all(mine <= official)
    np.testing.assert_array_equal(mine[zeros != 1], official[zeros != 1])
    assert np.any(mine[zeros == 1] != official[zeros == 1])  # the one place they differ occurs
    np.testing.assert_array_equal(mine, ndi.minimum_filter(g, size=n, mode="nearest"))  # = in-image erosion


# ----------------------------------------------------------------------------------------------------------------
# 5. pooling at odd sizes: Caffe's ceil (pooling_layer.cpp; loadcaffe adds :ceil() to every pool)
# ----------------------------------------------------------------------------------------------------------------

def _caffe_pool(x_HWC, pooling, k=2, s=2, pad=0):
    """Caffe PoolingLayer forward: pooled size ceil((H + 2 pad - k) / s) + 1; max over the in-image part; average
    divided by pool_size = (hend - hstart)(wend - wstart) computed before clipping to the image (pad = 0: the
    in-image count)."""
    H, W, C = x_HWC.shape
    ph_n, pw_n = int(math.ceil((H + 2 * pad - k) / s)) + 1, int(math.ceil((W + 2 * pad - k) / s)) + 1
    out = np.zeros((ph_n, pw_n, C))
    for ph in range(ph_n):
        for pw in range(pw_n):
            hs, ws = ph * s - pad, pw * s - pad
            he, we = min(hs + k, H + pad), min(ws + k, W + pad)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
            win = x_HWC[hs:he, ws:we].reshape(-1, C)
            out[ph, pw] = win.max(0) if pooling == "max" else win.sum(0) / size
    return out


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("ops", ["lax", "lean"])
def test_ceil_pooling_is_caffes(tiny_params, pooling, ops):
    x = _rand((21, 19, 3), 11)
    layers = ("relu1_2", "pool1", "relu3_1", "pool3", "relu5_1")
    f = features(tiny_params, x, layers, pooling=pooling, pool_rounding="ceil", ops=ops)
    np.testing.assert_allclose(f["pool1"], _caffe_pool(f["relu1_2"], pooling), rtol=1e-6, atol=1e-6)
    sizes = vgg.layer_sizes("tiny19", (21, 19), "ceil")
    shapes = memory.feature_shapes("tiny19", (21, 19), layers, pool_rounding="ceil")
    for n in layers:
        assert f[n].shape[:2] == sizes[n] == shapes[n][:2], n
    assert f["relu5_1"].shape[:2] == (2, 2) and vgg.layer_sizes("tiny19", (21, 19))["relu5_1"] == (1, 1)
    for mode in ("area", "inside", "all"):  # every guide propagation follows the network's sizes
        prop = guidance.propagate_guides(jnp.ones((21, 19, 1)), tiny_params, layers, mode, pool_rounding="ceil")
        assert all(prop[n].shape[:2] == sizes[n] for n in layers), mode
        assert all(bool(jnp.all(prop[n] == 1.0)) for n in layers), mode  # a full image stays full (ceil windows)


def test_lean_ops_equal_lax_with_ceil_pooling_and_reflect_padding(tiny_params):
    x = jnp.asarray(_rand((19, 17, 3), 12))
    layers = ("pool1", "relu3_1", "relu5_1")

    def grad(ops):
        return jax.jit(jax.grad(lambda v: sum(jnp.sum(jnp.square(f)) for f in vgg.features(
            tiny_params, v, layers, pool_rounding="ceil", padding="reflect", ops=ops).values())))(x)

    a, b = grad("lax"), grad("lean")
    assert float(jnp.max(jnp.abs(a))) > 0
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(a))))


def test_weights_converted_from_caffe_pool_with_ceil(tiny_params, tmp_path):
    keras = tmp_path / "plain.npz"
    weights.params_to_npz(tiny_params, keras)
    out, info = weights.convert(keras, tmp_path / "caffe.npz", caffe=True)
    assert info.pool_rounding == "ceil" and weights.load_weights(str(out), verbose=False)[1].pool_rounding == "ceil"
    assert weights.load_weights(str(keras), verbose=False)[1].pool_rounding == "floor"
    content, style = _rand((21, 17, 3), 13), _rand((21, 21, 3), 14)
    kw = dict(size=21)
    p_caffe = prepare(content, style, weights=str(out), **kw)
    assert p_caffe.cfg.pool_rounding == "ceil" and p_caffe.settings["pool_rounding"] == "ceil"
    assert p_caffe.targets.content["relu4_2"].shape[:2] == vgg.layer_sizes("tiny19", (21, 17), "ceil")["relu4_2"]
    assert prepare(content, style, weights=str(keras), **kw).cfg.pool_rounding == "floor"
    assert prepare(content, style, weights=str(out), pool_rounding="floor", **kw).cfg.pool_rounding == "floor"


# ----------------------------------------------------------------------------------------------------------------
# 6. the neural-style preset = neural_style.lua's loss
# ----------------------------------------------------------------------------------------------------------------

def _official_tv_grad(x_HWC, strength):
    """neural_style.lua TVLoss:updateGradInput (HWC instead of CHW)."""
    g = np.zeros_like(x_HWC)
    x_diff = x_HWC[:-1, :-1] - x_HWC[:-1, 1:]
    y_diff = x_HWC[:-1, :-1] - x_HWC[1:, :-1]
    g[:-1, :-1] += x_diff + y_diff
    g[:-1, 1:] -= x_diff
    g[1:, :-1] -= y_diff
    return g * strength


def test_neural_style_preset_is_neural_style_lua(tiny_params):
    content, style, u = _rand((20, 18, 3), 15), _rand((20, 20, 3), 16), _rand((20, 18, 3), 17)
    p = prepare(content, style, weights=tiny_params, size=20, preset="neural-style")
    assert [float(p.weights.content), float(p.weights.style), float(p.weights.tv)] == pytest.approx([5.0, 100.0, 1e-3])
    layers = ("relu4_2",) + STYLE_LAYERS

    def caffe(img):  # neural_style.lua preprocess: RGB -> BGR, x256, minus the mean pixel
        return 256.0 * jnp.asarray(img, jnp.float32)[..., ::-1] - jnp.asarray(MEAN_BGR, jnp.float32)

    fc = vgg.features(tiny_params, caffe(p.content), layers, preprocessed=True)
    fs = vgg.features(tiny_params, caffe(p.styles_in[0]), layers, preprocessed=True)

    def official_cs(x):  # ContentLoss (5 * MSE) + StyleLoss (100 * MSE of G = F F^T / nElement) per layer
        f = vgg.features(tiny_params, x, layers, preprocessed=True)
        e = 5.0 * jnp.mean(jnp.square(f["relu4_2"] - fc["relu4_2"]))
        for n in STYLE_LAYERS:
            g = lambda a: jnp.einsum("hwc,hwd->cd", a, a) / a.size  # noqa: E731
            e = e + 100.0 * jnp.mean(jnp.square(g(f[n]) - g(fs[n])))
        return e

    x = caffe(u)
    terms = jax.jit(lambda v: objective.loss_terms(tiny_params, v, p.targets, p.weights, p.cfg))(jnp.asarray(u))
    e_x, g_x = jax.jit(jax.value_and_grad(official_cs))(x)
    np.testing.assert_allclose(5.0 * float(terms["content"]) + 100.0 * float(terms["style"]), float(e_x), rtol=1e-5)
    # the gradient, TV included (neural_style.lua defines TV by its gradient only), w.r.t. u = x / 256 (BGR order)
    g_x = np.asarray(g_x, np.float64) + _official_tv_grad(np.asarray(x, np.float64), 1e-3)
    g_u = 256.0 * g_x[..., ::-1]
    g = jax.jit(jax.grad(lambda v: objective.total_loss(v, tiny_params, p.targets, p.weights, p.cfg)))(jnp.asarray(u))
    np.testing.assert_allclose(np.asarray(g), g_u, rtol=2e-4, atol=2e-4 * np.abs(g_u).max())
    # the TV term alone: its value integrates that gradient (tv_weight * 256^2 / 2 * the top-left block's squares)
    u64 = np.float64(u)
    block = u64[:-1, :-1]
    tv = 0.5 * 256 ** 2 * (np.sum((block - u64[:-1, 1:]) ** 2) + np.sum((block - u64[1:, :-1]) ** 2))
    np.testing.assert_allclose(float(terms["tv"]), tv, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# 7. luminance matching (ColourControl cp_mode == 'lum')
# ----------------------------------------------------------------------------------------------------------------

def test_luminance_mean_mode_is_the_official_code_and_meanstd_the_paper():
    content, style = _rand((20, 24, 3), 18), _rand((16, 16, 3), 19) ** 3
    lum = lambda img: np.float64(img) @ np.array([.299, .587, .114])  # noqa: E731  lum_transform
    y_c, y_s = lum(content), lum(style)
    official = np.clip(y_s - y_s.mean() + y_c.mean(), 0, 1)  # shift the mean only, then clip both images
    _, styles_in = color.prepare_color(content, [style], "luminance", lum_match="mean")
    np.testing.assert_allclose(np.asarray(styles_in[0])[..., 0], official, atol=1e-6)
    paper = np.asarray(color.match_luminance(y_s, y_c, "meanstd"))  # 2017 Eq. 6: the content's mean and std
    np.testing.assert_allclose([paper.mean(), paper.std()], [y_c.mean(), y_c.std()], rtol=1e-4)
    # recombination: the official luv2rgb([Y_out, U_c, V_c]) with rounded YUV coefficients vs nst-jax's YIQ
    rgb2luv = np.array([[.299, .587, .114], [-.147, -.288, .436], [.615, -.515, -.1]])
    luv2rgb = np.array([[1, 0, 1.139], [1, -.395, -.580], [1, 2.03, 0]])
    y_out = _rand((20, 24), 20)
    luv = np.float64(content) @ rgb2luv.T
    luv[..., 0] = y_out
    off = np.clip(luv @ luv2rgb.T, 0, 1)
    mine = np.asarray(color.finish_color(np.repeat(y_out[..., None], 3, -1), content, "luminance"))
    assert np.abs(mine - off).max() < 5e-3  # equal up to the official code's rounded coefficients


# ----------------------------------------------------------------------------------------------------------------
# 8. coarse-to-fine sizes: skimage.transform.pyramid_reduce(img, sqrt(H W / S^2)), "no downsampling" on error
# ----------------------------------------------------------------------------------------------------------------

def _official_size(shape_HW, s):
    h, w = shape_HW
    downscale = math.sqrt(float(h * w) / s ** 2)
    if downscale <= 1:  # _check_factor raises; the notebook prints "no downsampling" and keeps the image
        return h, w
    return int(math.ceil(h / downscale)), int(math.ceil(w / downscale))


@pytest.mark.parametrize("shape", [(600, 749), (1200, 1600), (1024, 1024), (2000, 333), (500, 500), (700, 900)])
def test_default_levels_follow_the_official_sizes(shape):
    assert fit_area(shape, 512) == _official_size(shape, 512)
    assert pyramid.scale_schedule(shape) == [_official_size(shape, 512), _official_size(shape, 1024)]


def test_small_content_is_never_upscaled_and_explicit_upscaling_warns(tiny_params):
    content, style = _rand((30, 40, 3), 21), _rand((40, 40, 3), 22)
    r = pyramid.stylize_pyramid(content, style, iters_per_scale=[2, 1], weights=tiny_params, size=None,
                                progress=False)
    assert [lv["shape"] for lv in r.settings["levels"]] == [[30, 40], [30, 40]]
    with pytest.warns(UserWarning, match="upscale the 40x30 px content"):
        pyramid.scale_schedule((30, 40), scales=[32, 64])


# ----------------------------------------------------------------------------------------------------------------
# 9. the normalised network (its notebooks' "norm net" cells)
# ----------------------------------------------------------------------------------------------------------------

def test_normalized_preset_and_pooling_warning(tiny_params, tmp_path):
    path, info, _ = weights.normalize("tiny19", size=32, out=tmp_path / "tiny-norm.npz", verbose=False)
    content, style = _rand((24, 24, 3), 23), _rand((24, 24, 3), 24)
    with pytest.warns(UserWarning, match="calibrated with avg pooling"):
        p = prepare(content, style, weights=str(path), size=24, preset="gatys-normalized")
    # style 1e9 / len(style layers) per layer with no 1/C^2, content 1e6 (BasicStyleTransfer cell 8)
    np.testing.assert_allclose(np.asarray(p.weights.style * p.weights.style_layers), [2e8] * 5, rtol=1e-6)
    assert float(p.weights.content) == 1e6
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(content, style, weights=str(path), size=24, preset="gatys-normalized", pooling="avg")


# ----------------------------------------------------------------------------------------------------------------
# 10. -reflectance (SpatialReflectionPadding before every conv) and -mask_file (frozen pixels)
# ----------------------------------------------------------------------------------------------------------------

def _np_conv(x_HWC, kernel, bias, mode):
    """3x3 conv, stride 1, the input padded by one pixel: zeros, np.pad 'reflect' (Torch's reflection: the edge pixel
    is not repeated) or 'edge'."""
    xp = np.pad(np.float64(x_HWC), ((1, 1), (1, 1), (0, 0)), mode={"zero": "constant"}.get(mode, mode))
    H, W = x_HWC.shape[:2]
    k = np.float64(kernel)
    return sum(xp[i:i + H, j:j + W] @ k[i, j] for i in range(3) for j in range(3)) + np.float64(bias)


@pytest.mark.parametrize("padding, first, second", [("reflect", "reflect", "reflect"),
                                                    ("replicate-first", "edge", "zero"),
                                                    ("zero", "zero", "zero")])
def test_conv_padding_matches_numpy(tiny_params, padding, first, second):
    x = np.float32(_rand((11, 9, 3), 25) * 100 - 50)  # already the network's input
    f = features(tiny_params, x, ("conv1_1", "relu1_1", "conv1_2"), padding=padding, preprocessed=True)
    p1, p2 = tiny_params["conv1_1"], tiny_params["conv1_2"]
    np.testing.assert_allclose(f["conv1_1"], _np_conv(x, p1["kernel"], p1["bias"], first), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(f["conv1_2"], _np_conv(f["relu1_1"], p2["kernel"], p2["bias"], second), rtol=1e-5,
                               atol=1e-4)


def test_inside_and_all_propagation_hold_with_reflect_padding(tiny_params):
    """Reflected pixels are in-image pixels of the same window, so the receptive fields (the Jacobian's sparsity
    of a linearised network) are the ones the binary propagations compute."""
    pos = {k: {"kernel": jnp.abs(v["kernel"]) + 0.01, "bias": jnp.abs(v["bias"]) + 0.1} for k, v in tiny_params.items()}
    layers = ("conv1_1", "relu1_2", "pool1", "relu2_1")
    x0 = jnp.asarray(np.random.default_rng(26).uniform(0.1, 1.0, size=(10, 9, 3)), jnp.float32)
    jac = jax.jit(jax.jacfwd(lambda x: vgg.features(pos, x, layers, pooling="avg", preprocessed=True,
                                                    padding="reflect")))(x0)
    region = np.zeros((10, 9), bool)
    region[2:8, 1:6] = True
    g = jnp.asarray(region[..., None], jnp.float32)
    inside = guidance.propagate_guides(g, pos, layers, "inside")
    touch = guidance.propagate_guides(g, pos, layers, "all")
    for n in layers:
        dep = np.abs(np.asarray(jac[n])).sum(axis=(2, 5)) > 0
        np.testing.assert_array_equal(np.asarray(inside[n][..., 0]) > 0, np.all(~dep | region, axis=(2, 3)), n)
        np.testing.assert_array_equal(np.asarray(touch[n][..., 0]) > 0, np.any(dep & region, axis=(2, 3)), n)


@pytest.mark.parametrize("solver", SOLVERS)
def test_freeze_mask_keeps_pixels_bit_identical_for_every_solver(tiny_params, solver):
    content, style = _rand((24, 20, 3), 27), _rand((24, 24, 3), 28)
    mask = np.zeros((24, 20), np.float32)
    mask[:, :7] = 0.3  # any non-zero value freezes (official: mask:repeatTensor as a boolean index)
    mask[20:, 15:] = 1.0
    r = nst_jax.stylize(content, style, weights=tiny_params, size=24, iters=6, freeze_mask=mask, solver=solver,
                        history=5, progress=False)
    frozen = mask > 0
    np.testing.assert_array_equal(r.image[frozen], content[frozen])
    assert np.abs(r.image - content)[~frozen].max() > 1e-3  # the rest was optimised
    assert r.settings["freeze_mask"] == "array"


def test_preconditioner_moves_pixels_whose_gradient_is_zero_unless_boxed():
    """Why zeroing the gradient (the official rule) is not enough here: the smoothing preconditioner spreads a
    gradient into its zero entries; the per-pixel box keeps them."""
    c = jnp.asarray(_rand((8, 8, 1), 29))
    frozen = jnp.zeros((8, 8, 1)).at[:, :3].set(1.0)
    vg = jax.value_and_grad(lambda x: jnp.sum((x - c) ** 2))

    def fg(x):
        f, g = vg(x)
        return f, jnp.where(frozen > 0, 0.0, g)  # the official -mask_file rule

    opt = lbfgs.guarded_lbfgs(history=3)
    x0 = jnp.full((8, 8, 1), 0.5)
    st = opt.init(x0, *fg(x0))
    free = opt.propose(st)
    boxed = opt.propose(st, objective.feasible_box(st.x, nst_jax.Targets({}, None, frozen)))
    assert float(jnp.max(jnp.abs(free - x0)[:, :3])) > 1e-3
    np.testing.assert_array_equal(np.asarray(boxed)[:, :3], np.asarray(x0)[:, :3])


def test_cli_official_flags(tmp_path):
    from PIL import Image

    from nst_jax import image as I
    from nst_jax.cli import main

    mask = np.zeros((48, 60), np.uint8)
    mask[:, :20] = 255
    Image.fromarray(mask).save(tmp_path / "freeze.png")
    content = tmp_path / "content.png"
    I.save_image(content, _rand((48, 60, 3), 30))
    out = tmp_path / "out.png"
    rc = main(["stylize", str(content), str(sample_path("great_wave")), "-o", str(out), "--size", "30", "--iters", "3",
               "--weights", "tiny19", "--no-progress", "--freeze-mask", str(tmp_path / "freeze.png"), "--padding",
               "reflect-first", "--pool-rounding", "ceil", "--preset", "neural-style", "--layer-weights", "equal"])
    assert rc == 0
    got, want = I.load_image(out), load_input(str(content), "content", 30)
    assert got.shape == (24, 30, 3)
    assert np.abs(got[:, :10] - want[:, :10]).max() <= 1 / 255 + 1e-6  # frozen (to PNG rounding)
    meta = I.read_png_metadata(out)
    assert meta["padding"] == "reflect-first" and meta["pool_rounding"] == "ceil" and meta["input_scale"] == "256.0"
