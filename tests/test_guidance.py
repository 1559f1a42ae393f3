"""Spatial control (Gatys et al. 2017, Sec. 4): guides, propagation, guided Gram / sums / stacked Gram, targets."""

from __future__ import annotations

import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from nst_jax import guidance, guided, losses, masks, vgg

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nst_jax", "samples")


_features_jit = jax.jit(vgg.features, static_argnames=("layers", "pooling", "preprocessed"))


def features(params, image, layers, **kw):
    """vgg.features compiled once per shape (op-by-op dispatch is slow on a loaded 2-core machine)."""
    return _features_jit(params, image, tuple(layers), **kw)


_propagate_jit = jax.jit(guidance.propagate_guides, static_argnums=(1, 2, 3, 4, 6))
_prepare_jit = jax.jit(guidance.prepare_guides, static_argnums=(1, 2, 3, 4, 6))


def propagate(guides, layers, mode="simple", erode=0, threshold=0.5, global_channel=False):
    """guidance.propagate_guides on tiny19, compiled (the eager function is tested separately)."""
    return _propagate_jit(jnp.asarray(guides, jnp.float32), "tiny19", tuple(layers), mode, erode, threshold,
                          global_channel)


def prepare(guides, layers, mode="simple", erode=0, threshold=0.5, global_channel=False):
    return _prepare_jit(jnp.asarray(guides, jnp.float32), "tiny19", tuple(layers), mode, erode, threshold,
                        global_channel)


_guided_style_loss_jit = jax.jit(guided.guided_style_loss, static_argnames=("layers", "norm"))


def guided_style_loss(feats, targets, guides, layers, *args, **kw):
    return _guided_style_loss_jit(feats, targets, guides, tuple(layers), *args, **kw)


@pytest.fixture
def params(tiny_params):
    """The shared tiny19 network (conftest)."""
    return tiny_params


def _np_gram(f_NC):
    f = np.asarray(f_NC, np.float64)
    return f.T @ f


def _write_png(path, a_uint8):
    Image.fromarray(np.asarray(a_uint8, np.uint8)).save(path)
    return str(path)


# ------------------------------------------------------------------------------------------------ guided Gram


def test_all_ones_guide_gives_plain_gram_and_style_loss(params):
    rng = np.random.default_rng(0)
    img = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    style = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    layers = ["relu1_1", "relu2_1", "relu3_1"]
    feats = features(params, img, layers)
    sfeats = features(params, style, layers)
    guides, valid = prepare(jnp.ones((16, 16, 1)), layers)
    sguides = guides
    w_L = jnp.asarray([1.0, 0.5, 0.25])
    for n in layers:
        np.testing.assert_allclose(guided.guided_gram(feats[n], guides[n])[0], losses.gram(feats[n]), rtol=1e-6)
    targets = {n: guided.guided_gram(sfeats[n], sguides[n]) for n in layers}
    plain_targets = {n: losses.gram(sfeats[n]) for n in layers}
    got = guided_style_loss(feats, targets, guides, layers, w_L, valid_LR=valid)
    want = losses.style_loss(feats, plain_targets, layers, w_L)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert bool(jnp.all(valid))


def _two_texture_image(h=32, w=32):
    """Left half: horizontal stripes; right half: random noise. Guides: the two halves."""
    rng = np.random.default_rng(1)
    img = np.zeros((h, w, 3), np.float32)
    yy = np.arange(h)[:, None]
    img[:, : w // 2] = (0.5 + 0.4 * np.sin(yy * 1.3))[..., None] * np.array([1.0, 0.6, 0.2])
    img[:, w // 2:] = rng.uniform(size=(h, w - w // 2, 3))
    left = np.zeros((h, w), np.float32)
    left[:, : w // 2] = 1
    return jnp.asarray(img), np.stack([left, 1 - left], -1)


def test_complementary_guides_give_gram_of_each_regions_features(params):
    img, guides_HWR = _two_texture_image()
    layers = ["conv1_1", "relu2_1"]  # full resolution and after one pooling (16x16, halves stay exact)
    feats = features(params, img, layers)
    prop = propagate(jnp.asarray(guides_HWR), layers, mode="area")
    for n in layers:
        g_norm, valid = guided.normalize_guides(prop[n])
        assert bool(jnp.all(valid))
        got = np.asarray(guided.guided_gram(feats[n], g_norm))
        f = np.asarray(feats[n])
        for r in range(2):
            mask = np.asarray(prop[n][..., r]) > 0.5
            assert set(np.unique(np.asarray(prop[n]))) <= {0.0, 1.0}
            f_r = f[mask]  # the region's own feature vectors
            np.testing.assert_allclose(got[r], _np_gram(f_r) / len(f_r), rtol=2e-5, atol=1e-5)
        # the two textures differ, so the two region Grams do too
        assert not np.allclose(got[0], got[1], rtol=0.1)


def test_guided_style_loss_matches_numpy_with_soft_guides_and_weights(params):
    rng = np.random.default_rng(2)
    img = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    layers = ["relu1_1", "relu2_1"]
    feats = features(params, img, layers)
    soft = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    guides, valid = prepare(soft, layers, mode="area")
    targets = {n: jnp.asarray(rng.normal(size=(3, feats[n].shape[-1], feats[n].shape[-1])), jnp.float32)
               for n in layers}
    w_L = jnp.asarray([0.3, 2.0])
    w_R = jnp.asarray([0.2, 0.5, 0.3])
    got = guided_style_loss(feats, targets, guides, layers, w_L, w_R, valid)
    want = 0.0
    soft_np = np.asarray(soft, np.float64)
    pooled = soft_np.reshape(8, 2, 8, 2, 3).mean(axis=(1, 3))  # relu2_1 comes after one 2x2 pooling
    for j, n in enumerate(layers):
        f = np.asarray(feats[n], np.float64)
        h, w, c = f.shape
        t = soft_np if n == "relu1_1" else pooled
        for r in range(3):
            tn = t[..., r] / np.sqrt(np.mean(t[..., r] ** 2))
            fr = (f * tn[..., None]).reshape(-1, c)
            g = fr.T @ fr / (h * w)
            want += float(w_L[j]) * float(w_R[r]) * np.mean((g - np.asarray(targets[n][r])) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # default region weights are 1/R
    np.testing.assert_allclose(
        guided.guided_style_loss(feats, targets, guides, layers, w_L),  # eager, default weights and validity
        guided_style_loss(feats, targets, guides, layers, w_L, jnp.full((3,), 1 / 3), valid), rtol=1e-6)


def test_normalised_guides_have_unit_mean_square_and_empty_channels_stay_zero():
    rng = np.random.default_rng(3)
    t = rng.uniform(size=(9, 7, 3)).astype(np.float32)
    t[..., 1] = 0.0  # empty
    t[..., 2] = (t[..., 2] > 0.8) * 0.7  # sparse binary-ish
    tn, valid = guided.normalize_guides(jnp.asarray(t))
    assert list(np.asarray(valid)) == [True, False, True]
    ms = np.mean(np.asarray(tn, np.float64) ** 2, axis=(0, 1))
    np.testing.assert_allclose(ms[[0, 2]], 1.0, rtol=1e-5)
    assert np.all(np.asarray(tn[..., 1]) == 0) and np.all(np.isfinite(np.asarray(tn)))
    # proportional to the input
    np.testing.assert_allclose(np.asarray(tn[..., 0]) / t[..., 0], np.asarray(tn[0, 0, 0]) / t[0, 0, 0], rtol=1e-5)


def test_empty_region_is_skipped_with_warning_and_no_nan(params):
    rng = np.random.default_rng(4)
    img = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    layers = ["relu1_1", "relu2_1", "relu3_1"]
    g = np.zeros((16, 16, 2), np.float32)
    g[..., 0] = 1.0
    g[7:9, 7:9, 1] = 1.0  # a 2x2 region: no 3x3 receptive field fits inside it
    guides, valid = prepare(jnp.asarray(g), layers, mode="inside")
    v = np.asarray(valid)
    assert v[:, 0].all() and not v[:, 1].any()  # 2x2 region does not survive a 3x3 erosion
    with pytest.warns(UserWarning, match=r"region 'small' at relu1_1, relu2_1, relu3_1"):
        empty = guided.report_empty_regions(valid, layers, ["all", "small"])
    assert empty == [("small", "relu1_1"), ("small", "relu2_1"), ("small", "relu3_1")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert guided.report_empty_regions(np.ones((3, 2), bool), layers, ["a", "b"]) == []
    with pytest.raises(ValueError, match="shape"):
        guided.report_empty_regions(np.ones((2, 2), bool), layers, ["a", "b"])

    feats = features(params, img, layers)
    targets = {n: jnp.stack([losses.gram(feats[n]) * 1.1, jnp.ones_like(losses.gram(feats[n]))]) for n in layers}
    w_L = jnp.asarray([1.0, 1.0, 1.0])

    @jax.jit
    @jax.value_and_grad
    def loss(x, targets):
        return guided.guided_style_loss(features(params, x, layers), targets, guides, layers, w_L, valid_LR=valid)

    val, grad = loss(img, targets)
    only_first = sum(0.5 * jnp.mean((losses.gram(feats[n]) - targets[n][0]) ** 2) for n in layers)
    np.testing.assert_allclose(val, only_first, rtol=1e-5)
    assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(grad)))
    assert np.abs(np.asarray(grad)).sum() > 0
    # the same with a NaN target for the empty region: jnp.where keeps value and gradient finite
    targets_nan = {n: targets[n].at[1].set(jnp.nan) for n in layers}
    val2, grad2 = loss(img, targets_nan)
    np.testing.assert_allclose(val2, val, rtol=1e-6)
    np.testing.assert_allclose(grad2, grad, rtol=1e-6)


def test_guided_loss_gradient_vanishes_outside_the_receptive_field_of_the_guides(params):
    rng = np.random.default_rng(5)
    H, W = 28, 24
    img = jnp.asarray(rng.uniform(size=(H, W, 3)), jnp.float32)
    region = np.zeros((H, W, 1), np.float32)
    region[4:10, 3:8, 0] = 1.0
    layers = ["relu1_2", "relu2_1"]
    guides, valid = prepare(jnp.asarray(region), layers, mode="area")
    targets = {n: jnp.zeros((1, c, c)) for n, c in zip(layers, (4, 6))}

    grad = jax.jit(jax.grad(lambda x: guided.guided_style_loss(
        features(params, x, layers), targets, guides, layers, jnp.ones(2), valid_LR=valid)))(img)
    gmag = np.abs(np.asarray(grad)).sum(-1)

    # Pixel p can influence unit u iff u is in the "all" propagation of the one-hot image of p: propagate all H*W
    # one-hot images at once (as H*W guide channels) and intersect with the units the guides weigh.
    onehots = jnp.eye(H * W, dtype=jnp.float32).reshape(H, W, H * W)
    reach = propagate(onehots, layers, mode="all")
    influence = np.zeros(H * W, bool)
    for n in layers:
        support = np.asarray(guides[n][..., 0]) > 0
        influence |= np.asarray(reach[n])[support].any(axis=0) > 0
    influence = influence.reshape(H, W)
    assert (~influence).sum() > 0.5 * H * W  # the check is not vacuous
    assert np.all(gmag[~influence] == 0.0)
    inside = region[..., 0] > 0
    assert np.mean(gmag[inside] > 0) > 0.9  # non-zero inside (a dead ReLU may zero a pixel now and then)


# ------------------------------------------------------------------------------------------------ propagation


def _positive_params(params):
    return {k: {"kernel": jnp.abs(v["kernel"]) + 0.01, "bias": jnp.abs(v["bias"]) + 0.1} for k, v in params.items()}


@functools.partial(jax.jit, static_argnums=2)
def _linear_net_jacobian(params, x_HW3, layers):
    return jax.jacfwd(lambda x: vgg.features(params, x, layers, pooling="avg", preprocessed=True))(x_HW3)


@pytest.mark.parametrize("seed", [0, 1])
def test_inside_and_all_equal_brute_force_receptive_fields(params, seed):
    """Jacobian sparsity of a linearised net (positive weights/biases/input, avg pooling: every ReLU is the identity
    and no dependence cancels) = the exact receptive fields; compare with the propagated binary guides."""
    H, W = 12, 10
    pos = _positive_params(params)
    layers = ["conv1_1", "relu1_2", "pool1", "conv2_1", "pool2", "conv3_1", "relu3_2"]
    x0 = jnp.asarray(np.random.default_rng(seed).uniform(0.1, 1.0, size=(H, W, 3)), jnp.float32)
    jac = _linear_net_jacobian(pos, x0, tuple(layers))

    rng = np.random.default_rng(10 + seed)
    soft = rng.uniform(size=(H, W, 2)).astype(np.float32)
    soft[2:9, 1:8, 0] = 0.9  # a solid block so "inside" is not empty at the first layers
    soft[..., 1] = 1.0  # the full image: stays full under "inside" (padding counts as inside)
    region = soft >= 0.5
    inside = propagate(jnp.asarray(soft), layers, mode="inside", threshold=0.5)
    touch = propagate(jnp.asarray(soft), layers, mode="all", threshold=0.5)
    for n in layers:
        dep = np.abs(np.asarray(jac[n])).sum(axis=(2, 5)) > 0  # [h, w, H, W]
        assert dep.any(axis=(2, 3)).all()
        h, w = dep.shape[:2]
        assert inside[n].shape == (h, w, 2) and touch[n].shape == (h, w, 2)
        for r in range(2):
            reg = region[..., r]
            ref_inside = np.all(~dep | reg[None, None], axis=(2, 3))
            ref_all = np.any(dep & reg[None, None], axis=(2, 3))
            np.testing.assert_array_equal(np.asarray(inside[n][..., r]) > 0, ref_inside, err_msg=f"inside {n} r={r}")
            np.testing.assert_array_equal(np.asarray(touch[n][..., r]) > 0, ref_all, err_msg=f"all {n} r={r}")
        assert np.all(np.asarray(inside[n][..., 1]) == 1.0)
    assert np.asarray(inside["conv1_1"][..., 0]).sum() > 0


def test_area_propagation_sizes_and_values(params):
    H, W = 27, 19  # odd sizes: pools floor
    rng = np.random.default_rng(6)
    g = rng.uniform(size=(H, W, 2)).astype(np.float32)
    layers = vgg.layer_names("tiny19")[:-1]
    prop = propagate(g, layers, mode="area")
    feats = features(params, jnp.zeros((H, W, 3)), layers)
    for n in layers:
        assert prop[n].shape == feats[n].shape[:2] + (2,), n
    # pool1 = 2x2 block means of the input (soft values stay soft)
    ref = g[: H // 2 * 2, : W // 2 * 2].reshape(H // 2, 2, W // 2, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(prop["pool1"], ref, rtol=1e-6)
    np.testing.assert_allclose(prop["relu1_2"], g)
    ref2 = ref[: 12, : 8].reshape(6, 2, 4, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(prop["pool2"], ref2, rtol=1e-6)
    # a spec name works like params; jit with static structure gives the same
    by_name = guidance.propagate_guides(jnp.asarray(g), "tiny19", ["pool2"], "area")
    np.testing.assert_allclose(by_name["pool2"], prop["pool2"])
    eager = guidance.propagate_guides(jnp.asarray(g), params, ["pool2"], "inside", 1)
    np.testing.assert_array_equal(eager["pool2"], propagate(g, ["pool2"], "inside", 1)["pool2"])


def test_extra_erosion_dilation_and_global_channel(params):
    rng = np.random.default_rng(7)
    g = (rng.uniform(size=(16, 14, 1)) > 0.4).astype(np.float32)
    base = np.asarray(propagate(jnp.asarray(g), ["relu1_1"], mode="all")["relu1_1"])[..., 0]
    ero = propagate(jnp.asarray(g), ["relu1_1"], mode="all", erode=2)["relu1_1"]
    dil = propagate(jnp.asarray(g), ["relu1_1"], mode="all", erode=-1)["relu1_1"]
    np.testing.assert_array_equal(ero[..., 0], ndi.minimum_filter(base, size=5, mode="constant", cval=1.0))
    np.testing.assert_array_equal(dil[..., 0], ndi.maximum_filter(base, size=3, mode="constant", cval=0.0))
    glob = propagate(jnp.asarray(g), ["relu1_1"], mode="all", erode=2, global_channel=True)
    assert glob["relu1_1"].shape == (16, 14, 2)
    np.testing.assert_array_equal(glob["relu1_1"][..., 0], ero[..., 0])
    assert np.all(np.asarray(glob["relu1_1"][..., 1]) == 1.0)
    np.testing.assert_array_equal(guidance.add_global_channel(ero), glob["relu1_1"])


def test_propagation_bad_inputs(params):
    with pytest.raises(ValueError, match="mode"):
        guidance.propagate_guides(jnp.ones((8, 8, 1)), params, ["relu1_1"], mode="nearest")
    with pytest.raises(ValueError, match="unknown layer"):
        guidance.propagate_guides(jnp.ones((8, 8, 1)), params, ["relu9_1"])
    with pytest.raises(ValueError, match=r"\[H, W, R\]"):
        guidance.propagate_guides(jnp.ones((8, 8)), params, ["relu1_1"])
    with pytest.raises(ValueError, match="propagate"):
        guided.guided_gram(jnp.ones((8, 8, 4)), jnp.ones((4, 4, 1)))


# ------------------------------------------------------------------------------------------------ sums, stacked


def test_guided_sum_and_loss_match_numpy(params):
    rng = np.random.default_rng(8)
    f = rng.normal(size=(6, 5, 4)).astype(np.float32)
    t = rng.uniform(size=(6, 5, 3)).astype(np.float32)
    tn, _ = guided.normalize_guides(jnp.asarray(t))
    got = np.asarray(guided.guided_sum(jnp.asarray(f), tn))
    tn_np = t / np.sqrt(np.mean(t.astype(np.float64) ** 2, axis=(0, 1)))
    want = np.einsum("hwr,hwc->rc", tn_np, f.astype(np.float64)) / 30
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # binary region of area fraction a: sqrt(a) * the region's mean feature
    b = np.zeros((6, 5, 1), np.float32)
    b[:2] = 1
    bn, _ = guided.normalize_guides(jnp.asarray(b))
    np.testing.assert_allclose(guided.guided_sum(jnp.asarray(f), bn)[0], np.sqrt(10 / 30) * f[:2].mean(axis=(0, 1)),
                               rtol=1e-5)

    img = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    layers = ["relu1_1", "relu2_1"]
    feats = features(params, img, layers)
    guides, valid = prepare(jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32), layers)
    tgt = {n: jnp.asarray(rng.normal(size=(3, feats[n].shape[-1])), jnp.float32) for n in layers}
    w_L = jnp.asarray([1.0, 3.0])
    got = guided.guided_sum_loss(feats, tgt, guides, layers, w_L, valid_LR=valid)
    want = 0.0
    for j, n in enumerate(layers):
        fn = np.asarray(feats[n], np.float64)
        gn = np.asarray(guides[n], np.float64)
        m = np.einsum("hwr,hwc->rc", gn, fn) / (fn.shape[0] * fn.shape[1])
        want += float(w_L[j]) * np.mean((m - np.asarray(tgt[n])) ** 2, axis=1).sum() / 3
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_stacked_gram_matches_numpy():
    rng = np.random.default_rng(9)
    f = rng.normal(size=(7, 6, 5)).astype(np.float32)
    t = rng.uniform(size=(7, 6, 2)).astype(np.float32)
    s = 3.5
    got = np.asarray(guided.stacked_gram(jnp.asarray(f), jnp.asarray(t), guide_scale=s))
    st = np.concatenate([f, s * t], axis=-1).reshape(42, 7).astype(np.float64)
    want = st.T @ st / 42
    assert got.shape == (7, 7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:5, :5], losses.gram(jnp.asarray(f)), rtol=1e-6)
    # traced scale under jit
    jitted = jax.jit(guided.stacked_gram)(jnp.asarray(f), jnp.asarray(t), jnp.float32(s))
    np.testing.assert_allclose(jitted, got, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ reading, pairing


def test_load_guides_reads_first_channel_and_resizes_same_aspect(tmp_path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:4, :, 0] = 255
    rgb[..., 1] = 100  # ignored: only the first channel is read
    p_rgb = _write_png(tmp_path / "a.png", rgb)
    big = np.zeros((16, 20), np.uint8)
    big[:, :5] = 255
    big[0, 0] = 0
    p_big = _write_png(tmp_path / "b.png", big)
    with pytest.warns(UserWarning, match=r"b\.png.*20x16.*10x8"):
        names, g = masks.load_guides({"top": p_rgb, "left": p_big}, (8, 10))
    assert names == ("top", "left") and g.shape == (8, 10, 2) and g.dtype == np.float32
    np.testing.assert_array_equal(g[..., 0], (rgb[..., 0] / 255.0).astype(np.float32))
    ref = (big / 255.0).reshape(8, 2, 10, 2).mean(axis=(1, 3))  # area resampling
    np.testing.assert_allclose(g[..., 1], ref, atol=1e-6)
    assert 0 < g[0, 0, 1] < 1  # soft values kept
    # shape None: the masks' own size
    names, g2 = masks.load_guides({"top": p_rgb}, None)
    assert g2.shape == (8, 10, 1)


def test_load_guides_errors(tmp_path):
    p = _write_png(tmp_path / "wide.png", np.zeros((8, 16), np.uint8))
    with pytest.raises(ValueError, match=r"wide\.png.*16x8.*10x8"):
        masks.load_guides({"sky": p}, (8, 10))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        masks.load_guides({"sky": str(tmp_path / "missing.png")}, (8, 10))
    with pytest.raises(ValueError, match="no guide masks"):
        masks.load_guides({}, (8, 10))
    # within 2 % aspect: resized; 3 % off: error
    ok = _write_png(tmp_path / "ok.png", np.zeros((50, 101), np.uint8))
    with pytest.warns(UserWarning):
        assert masks.load_guides({"a": ok}, (100, 200))[1].shape == (100, 200, 1)
    bad = _write_png(tmp_path / "bad.png", np.zeros((50, 103), np.uint8))
    with pytest.raises(ValueError, match="aspect"):
        masks.load_guides({"a": bad}, (100, 200))


def test_pair_regions():
    assert guidance.pair_regions(["sky", "ground"], [["ground", "sky"]]) == ((0, 1), (0, 0))
    with pytest.raises(ValueError, match=r"'ground' is missing for style 0"):
        guidance.pair_regions(["sky", "ground"], [["sky"]])
    with pytest.raises(ValueError, match=r"style 0 has region\(s\) \['water'\]"):
        guidance.pair_regions(["sky"], [["sky", "water"]])
    # several styles: explicit choice, by name or by index
    two = [["sky", "ground"], ["sky", "ground"]]
    assert guidance.pair_regions(["sky", "ground"], two, {"sky": 1, "ground": 0}) == ((1, 0), (0, 1))
    assert guidance.pair_regions(["sky", "ground"], [["ground"], ["sky"]]) == ((1, 0), (0, 0))
    assert guidance.pair_regions(["sky", "ground"], [["ground"], ["sky"]], [1, 0]) == ((1, 0), (0, 0))
    with pytest.raises(ValueError, match="region_to_style"):
        guidance.pair_regions(["sky", "ground"], two)
    with pytest.raises(ValueError, match=r"'sky' is missing for style 0"):
        guidance.pair_regions(["sky", "ground"], [["ground"], ["sky"]], {"sky": 0, "ground": 0})
    with pytest.raises(ValueError, match="no style for content region"):
        guidance.pair_regions(["sky", "ground"], two, {"sky": 0})
    with pytest.raises(ValueError, match="2 styles"):
        guidance.pair_regions(["sky"], [["sky"], ["sky"]], [2])
    with pytest.raises(ValueError, match="more than once"):
        guidance.pair_regions(["sky", "sky"], [["sky"]])


def test_label_image_and_legend_parsing(tmp_path):
    lab = np.zeros((6, 8, 3), np.uint8)
    lab[:2] = (255, 0, 0)
    lab[2:4] = (0, 255, 0)
    lab[4:] = (10, 20, 250)  # near (0, 0, 255): matched within tol
    p = _write_png(tmp_path / "lab.png", lab)
    for legend in ({"sky": (255, 0, 0), "trees": "#00ff00", "water": "0,0,255"},
                   "sky=#ff0000; trees=#00FF00; water=#0000ff"):
        names, g = masks.guides_from_label_image(p, legend, (6, 8))
        assert names == ("sky", "trees", "water")
        want = np.zeros((6, 8, 3), np.float32)
        want[:2, :, 0] = want[2:4, :, 1] = want[4:, :, 2] = 1
        np.testing.assert_array_equal(g, want)
    # resized (same aspect): soft partition of unity
    with pytest.warns(UserWarning, match="lab.png"):
        _, g = masks.guides_from_label_image(p, {"sky": (255, 0, 0), "trees": "#00ff00", "water": "#0000ff"},
                                                (3, 4))
    np.testing.assert_allclose(g.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(g[1, :, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(g[1, :, 1], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"match no legend colour.*\(10, 20, 250\)"):
        masks.guides_from_label_image(p, {"sky": (255, 0, 0), "trees": (0, 255, 0)}, (6, 8))
    with pytest.raises(ValueError, match="share the legend colour"):
        masks.parse_legend({"a": "#ff0000", "b": (255, 0, 0)})
    with pytest.raises(ValueError, match="not '#rrggbb'"):
        masks.parse_legend({"a": "#ff00"})
    with pytest.raises(ValueError, match="0..255"):
        masks.parse_legend({"a": (256, 0, 0)})
    with pytest.raises(ValueError, match="name=#rrggbb"):
        masks.parse_legend("sky #ff0000")
    with pytest.raises(ValueError, match="empty legend"):
        masks.parse_legend({})
    with pytest.raises(ValueError, match="smaller tol"):
        masks.guides_from_label_image(p, {"a": (0, 0, 0), "b": (20, 20, 20)}, (6, 8))


def test_bundled_tetons_masks():
    shape = (600, 749)
    names, g = masks.load_guides(
        {"sky": os.path.join(SAMPLES, "tetons_snake_river_sky.png"),
         "nosky": os.path.join(SAMPLES, "tetons_snake_river_nosky.png")}, shape)
    assert names == ("sky", "nosky") and g.shape == shape + (2,)
    assert set(np.unique(g)) == {0.0, 1.0}
    np.testing.assert_array_equal(g.sum(-1), 1.0)
    assert g[0, :, 0].all() and not g[-1, :, 0].any()  # sky on top, ground at the bottom
    frac = g[..., 0].mean()
    assert 0.2 < frac < 0.45
    # every column is sky above one skyline row, ground below it (one boundary per column)
    assert np.all(np.diff(g[..., 0], axis=0) <= 0)


# ------------------------------------------------------------------------------------------------ targets


def test_guided_targets_several_styles(params):
    rng = np.random.default_rng(11)
    s0 = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    s1 = jnp.asarray(rng.uniform(size=(24, 12, 3)), jnp.float32)
    g0 = np.zeros((16, 16, 2), np.float32)
    g0[:8, :, 0] = 1
    g0[8:, :, 1] = 1
    g1 = np.zeros((24, 12, 2), np.float32)
    g1[:, :6, 0] = 1
    g1[:, 6:, 1] = 1
    pairs = guidance.pair_regions(["sky", "ground"], [["sky", "ground"], ["ground", "sky"]], {"sky": 1, "ground": 0})
    assert pairs == ((1, 1), (0, 1))
    layers = ["relu1_1", "relu2_1"]
    out = guidance.guided_targets(params, [s0, s1], [g0, g1], pairs, layers, mode="inside", global_channel=True)
    f0 = features(params, s0, layers)
    f1 = features(params, s1, layers)

    def inside_np(mask_HW):
        """NumPy "inside" propagation: erosion per conv (padding inside), 2x2 min per pool."""
        erode = lambda m: ndi.minimum_filter(m, size=3, mode="constant", cval=1.0)  # noqa: E731
        m1 = erode(mask_HW)  # relu1_1
        m = erode(m1)  # relu1_2
        h, w = m.shape[0] // 2, m.shape[1] // 2
        m = m[: 2 * h, : 2 * w].reshape(h, 2, w, 2).min(axis=(1, 3))  # pool1
        return {"relu1_1": m1, "relu2_1": erode(m)}

    # sky <- style 1 channel 1 (its right half), ground <- style 0 channel 1 (its bottom half)
    for n in layers:
        c = f0[n].shape[-1]
        assert out["grams"][n].shape == (3, c, c) and out["sums"][n].shape == (3, c)
        for r, (f, mask) in enumerate([(f1, inside_np(g1[..., 1])), (f0, inside_np(g0[..., 1]))]):
            fn = np.asarray(f[n], np.float64)
            sel = mask[n] > 0
            assert 0 < sel.sum() < sel.size
            fr = fn[sel]
            np.testing.assert_allclose(out["grams"][n][r], fr.T @ fr / len(fr), rtol=1e-5, atol=1e-6)
            frac = sel.mean()
            np.testing.assert_allclose(out["sums"][n][r], np.sqrt(frac) * fr.mean(0), rtol=1e-5, atol=1e-6)
        plain = sum(np.asarray(losses.gram(f[n]), np.float64) for f in (f0, f1)) / 2
        np.testing.assert_allclose(out["global_grams"][n], plain, rtol=1e-5)
        np.testing.assert_allclose(out["grams"][n][2], plain, rtol=1e-5)
        np.testing.assert_allclose(out["sums"][n][2], (f0[n].mean((0, 1)) + f1[n].mean((0, 1))) / 2, rtol=1e-5)
    assert out["valid_LR"].shape == (2, 3) and bool(jnp.all(out["valid_LR"]))
    with pytest.raises(ValueError, match="guides"):
        guidance.guided_targets(params, [s0], [g1], [0, 0], layers)
