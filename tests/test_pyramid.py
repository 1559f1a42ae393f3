"""Scale control (2017 paper, Section 6): schedules, coarse-to-fine runs, style mixing across scales (tiny19)."""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import image as I
from nst_jax import pyramid as P
from nst_jax import objective
from nst_jax.config import DEFAULT_STYLE_LAYERS
from nst_jax import vgg

from nst_jax.problem import prepare
from synthetic import blobs, stripes

SOLVE = dict(history=5, chunk=4, progress=False)






def _np_gram(f_HWC):
    f = np.asarray(f_HWC, np.float64)
    h, w, c = f.shape
    m = f.reshape(h * w, c)
    return m.T @ m / (h * w)


def _np_grams(params, img, layers):
    feats = vgg.features(params, jnp.asarray(img), layers)
    return {n: _np_gram(feats[n]) for n in layers}


# --------------------------------------------------------------------------------------------------- schedule

def test_schedule_explicit_sizes_follow_fit_shape():
    assert P.scale_schedule((600, 800), scales=[256, 512]) == [(192, 256), (384, 512)]
    assert P.scale_schedule((801, 401), scales=[100, 300]) == [I.fit_shape((801, 401), size=100),
                                                                I.fit_shape((801, 401), size=300)]


def test_schedule_paper_default_is_two_levels_by_area():
    shapes = P.scale_schedule((1500, 2000))
    assert len(shapes) == 2
    for (h, w), area in zip(shapes, P.PAPER_AREAS):
        assert 0 <= h * w / area - 1 < 0.01  # ~512^2 then ~1024^2 pixels, sides rounded up
        assert abs(h / w - 0.75) < 0.01  # aspect ratio kept
    assert P.scale_schedule((600, 800))[1] == (600, 800)  # 600 x 800 < 1024^2: never upscaled


def test_schedule_auto_steps_by_factor_from_min_size():
    with pytest.warns(UserWarning, match="upscale the 800x600 px content"):
        assert [max(s) for s in P.scale_schedule((600, 800), size=1024, auto_scales=True)] == [256, 512, 1024]
    assert [max(s) for s in P.scale_schedule((1200, 1600), size=1000, auto_scales=True)] == [500, 1000]
    with pytest.warns(UserWarning, match="upscale"):
        assert [max(s) for s in P.scale_schedule((10, 10), size=900, auto_scales=True, factor=3, min_size=100)] == \
            [100, 300, 900]
    assert P.scale_schedule((600, 800), size=200, auto_scales=True) == [(150, 200)]  # below min_size: one level
    assert [max(s) for s in P.scale_schedule((600, 800), size=64)] == [32, 64]  # size only: size/2 then size


@pytest.mark.parametrize("kwargs, match", [
    (dict(scales=[512, 256]), "increase"),
    (dict(scales=[8, 64]), ">= 16"),
    (dict(scales=[]), "non-empty"),
    (dict(auto_scales=True), "needs size"),
    (dict(size=64, factor=1.0), "factor"),
    (dict(scales=[32, 64], size=128), "must equal size"),
])
def test_schedule_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.scale_schedule((600, 800), **kwargs)


# --------------------------------------------------------------------------------------------------- pyramid

@pytest.fixture(scope="module")
def images():
    return {"content": blobs(48, 40, 1), "style": stripes(40, 40, 2), "content2": blobs(48, 40, 3)}


def test_two_level_pyramid_continues_from_upsampled_first_level(tiny_params, images, capsys, compiles):
    r = P.stylize_pyramid(images["content"], images["style"], scales=[24, 48], iters_per_scale=[6, 8],
                          weights=tiny_params, history=5, chunk=4, progress=True)
    err = capsys.readouterr().err
    assert "level 1/2 20x24" in err and "level 2/2 40x48" in err
    lv1, lv2 = r.levels
    assert lv1.image.shape == (24, 20, 3) and lv2.image.shape == (48, 40, 3) and r.image.shape == (48, 40, 3)
    assert np.array_equal(r.image, lv2.image)
    # level 1 starts from the content at its size, level 2 from level 1's result resized to level 2's size
    np.testing.assert_allclose(r.inits[0], I.resize_longest(images["content"], 24), atol=1e-6)
    np.testing.assert_allclose(r.inits[1], I.resize(lv1.image, (48, 40)), atol=1e-6)
    # its first loss value is the level-2 loss of that image, evaluated directly
    prob2 = prepare(images["content"], images["style"], weights=tiny_params, size=48)
    direct = float(objective.loss_terms(prob2.params, jnp.asarray(r.inits[1]), prob2.targets, prob2.weights,
                                prob2.cfg)["total"])
    assert lv2.loss_trace[0]["loss"] == pytest.approx(direct, rel=1e-5)
    assert lv2.loss_trace[-1]["loss"] < 0.9 * lv2.loss_trace[0]["loss"]
    assert lv1.loss_trace[-1]["loss"] < lv1.loss_trace[0]["loss"]
    # the whole run's trace: both levels, cumulative iterations and f+g, totals
    assert [e["level"] for e in r.loss_trace] == [0] * 7 + [1] * 9
    assert [e["iter"] for e in r.loss_trace] == list(range(16))
    assert r.n_fg == lv1.n_fg + lv2.n_fg == 7 + 9
    assert [lv["shape"] for lv in r.settings["levels"]] == [[24, 20], [48, 40]]
    assert r.settings["iters_per_scale"] == [6, 8] and r.settings["scales"] == [24, 48]

    # a second pyramid at the same sizes (new images) compiles nothing: one compile per level size
    with compiles() as c:
        r2 = P.stylize_pyramid(images["content2"], images["style"], scales=[24, 48], iters_per_scale=[6, 8],
                               weights=tiny_params, **SOLVE)
    assert c.compiles == 0 and r2.compile_seconds == 0.0
    assert not np.allclose(r2.image, r.image)


def test_pyramid_keeps_luminance_control_at_every_level(tiny_params, images):
    from nst_jax import color as C

    # shallow layers: a small network to compile (the point here is the colour handling between levels)
    r = P.stylize_pyramid(images["content"], images["style"], scales=[24, 48], iters_per_scale=3,
                          weights=tiny_params, color="luminance", content_layers=["relu2_1"],
                          style_layers=["relu1_1", "relu2_1"], **SOLVE)
    assert [x.shape[-1] for x in r.inits] == [1, 1]  # the variable is luminance at both levels
    assert all(lv.settings["color"] == "luminance" for lv in r.levels) and r.settings["color"] == "luminance"
    # level 2 starts from level 1's optimised luminance (= the Y of its recombined output, except where that RGB
    # output was clipped to [0, 1]: a few out-of-gamut pixels), resized
    y1 = np.asarray(C.luminance(r.levels[0].image))
    diff = np.abs(r.inits[1][..., 0] - I.resize(y1, (48, 40)))
    assert np.mean(diff > 2e-3) < 0.01 and diff.max() < 0.01, (np.mean(diff > 2e-3), diff.max())
    # the output keeps the content's chrominance (I, Q of YIQ) at full size
    iq_out = np.asarray(C.rgb_to_yiq(r.image))[..., 1:]
    iq_content = np.asarray(C.rgb_to_yiq(I.resize(images["content"], (48, 40))))[..., 1:]
    assert np.abs(iq_out - iq_content).mean() < 0.02


def test_pyramid_bad_inputs(tiny_params, images):
    with pytest.raises(ValueError, match="one per level"):
        P.stylize_pyramid(images["content"], images["style"], scales=[24, 48], iters_per_scale=[5],
                          weights=tiny_params, **SOLVE)
    with pytest.raises(ValueError, match=">= 0"):
        P.stylize_pyramid(images["content"], images["style"], scales=[24, 48], iters_per_scale=-1,
                          weights=tiny_params, **SOLVE)


# --------------------------------------------------------------------------------------------------- mixing

def test_default_fine_layers_by_area():
    assert P.default_fine_layers((512, 512)) == ("relu1_1", "relu2_1")
    assert P.default_fine_layers((1024, 1024)) == ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def _two_tone(h, w):
    """Large-scale structure only: a smooth left-to-right transition from dark blue to bright yellow."""
    xx = np.mgrid[0:h, 0:w][1]
    t = (1 / (1 + np.exp(-(xx - w / 2) / 3.0)))[..., None]
    return ((1 - t) * np.array([0.15, 0.2, 0.6]) + t * np.array([0.9, 0.8, 0.2])).astype(np.float32)


def _high_freq_energy(x):
    """Mean squared residual after a 4x box low-pass: the energy of the fine-scale detail."""
    h, w = x.shape[:2]
    low = I.resize(I.resize(x, (h // 4, w // 4), resample="box"), (h, w), resample="bilinear")
    return float(np.mean((x - low) ** 2))


# All mixing tests share one loss structure (relu1_1, relu2_1; no content) and one size (48 x 40): one compile.
MIX = dict(size=48, fine_layers="relu2_1", **SOLVE)


def test_mix_identical_styles_is_a_fixed_point(tiny_params):
    a = blobs(48, 40, 5)
    same = P.mix_styles(a, a, iters=4, weights=tiny_params, **MIX)
    other = P.mix_styles(a, stripes(48, 40, 6), iters=0, weights=tiny_params, **MIX)
    assert same.loss_trace[0]["loss"] <= 1e-6 * other.loss_trace[0]["loss"]
    assert np.abs(same.image - a).max() < 1e-3
    assert same.terms["content"] == 0.0 and same.settings["content_weight"] == 0.0


def test_mix_styles_takes_fine_texture_and_keeps_coarse_layout(tiny_params):
    coarse, fine = _two_tone(48, 40), stripes(48, 40, 8)
    low = ("relu1_1", "relu2_1")
    r = P.mix_styles(coarse, fine, iters=20, weights=tiny_params, **MIX)
    assert r.settings["style_layers"] == list(low) and r.settings["content_layers"] == []
    start = P.mix_styles(coarse, fine, iters=0, weights=tiny_params, **MIX)
    np.testing.assert_allclose(start.image, coarse, atol=1e-6)  # the synthesis starts from the coarse image
    # the starting loss is beta / L * sum_l mean((G_l(coarse) - G_l(fine))^2) on the low layers only (NumPy): equal
    # layer weights as in the official code
    gc, gf = _np_grams(tiny_params, coarse, low), _np_grams(tiny_params, fine, low)
    ref = 1e3 / len(low) * sum(np.mean((gc[n] - gf[n]) ** 2) for n in low)
    assert r.loss_trace[0]["loss"] == pytest.approx(ref, rel=1e-4)
    # the lower-layer Gram loss to the fine style falls ...
    assert r.loss_trace[-1]["loss"] < 0.05 * r.loss_trace[0]["loss"]
    # ... fine-scale detail appears where the coarse image had none ...
    assert _high_freq_energy(coarse) < 1e-4 and _high_freq_energy(r.image) > 0.05 * _high_freq_energy(fine)
    # ... while the large-scale layout (an 8x box low-pass) stays the coarse image's
    lp = lambda x: I.resize(x, (6, 5), resample="box")  # noqa: E731
    assert np.abs(lp(r.image) - lp(coarse)).mean() < 0.7 * np.abs(lp(r.image) - lp(fine)).mean()


def test_mix_styles_colour_matching_to_content(tiny_params):
    from nst_jax import color as C

    coarse, fine, content = blobs(48, 40, 9), stripes(48, 40, 10), blobs(48, 40, 11)[..., ::-1].copy()
    r = P.mix_styles(coarse, fine, iters=0, match_colors_to=content, weights=tiny_params, **MIX)
    # with 0 iterations the output is the coarse image recoloured to the content's colour mean and covariance
    want = np.clip(np.asarray(C.match_color(coarse, content, "pca")[0]), 0, 1)
    np.testing.assert_allclose(r.image, want, atol=1e-5)
    # the Gram targets come from the recoloured fine image
    fine_m = np.clip(np.asarray(C.match_color(fine, content, "pca")[0]), 0, 1)
    low = ("relu1_1", "relu2_1")
    gc, gf = _np_grams(tiny_params, want, low), _np_grams(tiny_params, fine_m, low)
    ref = 1e3 / len(low) * sum(np.mean((gc[n] - gf[n]) ** 2) for n in low)
    assert r.loss_trace[0]["loss"] == pytest.approx(ref, rel=1e-3)
    assert r.settings["mix"]["colors_matched"]


def test_mix_styles_bad_layer(tiny_params):
    a = blobs(32, 32, 0)
    with pytest.raises(ValueError, match="unknown fine layer 'relu9_1'"):
        P.mix_styles(a, a, size=32, fine_layers="relu9_1", iters=1, weights=tiny_params, **SOLVE)
    with pytest.raises(ValueError, match="empty"):
        P.mix_styles(a, a, size=32, fine_layers=(), iters=1, weights=tiny_params, **SOLVE)


def test_mixed_targets_take_fine_grams_shallow_and_coarse_grams_deep(tiny_params):
    # 48 x 40 with the default loss structure: the same compiled programs as the pyramid's second level
    content, coarse, fine = blobs(48, 40, 12), blobs(48, 40, 13), stripes(48, 40, 14)
    r = P.mixed_targets_transfer(content, coarse, fine, split_layer="relu2_1", size=48, iters=0,
                                 weights=tiny_params, **SOLVE)
    assert r.settings["mix"]["fine_layers"] == ["relu1_1", "relu2_1"]
    assert r.settings["mix"]["coarse_layers"] == ["relu3_1", "relu4_1", "relu5_1"]
    # NumPy reference of the initial loss (x0 = content): alpha * content (0 here) + beta * per-layer Gram terms
    layers = DEFAULT_STYLE_LAYERS
    gx, gc, gf = (_np_grams(tiny_params, x, layers) for x in (content, coarse, fine))
    target = {n: (gf if n in ("relu1_1", "relu2_1") else gc)[n] for n in layers}
    ref = 1e3 * sum(np.mean((gx[n] - target[n]) ** 2) / gx[n].shape[0] ** 2 for n in layers)
    assert r.loss_trace[0]["loss"] == pytest.approx(ref, rel=1e-4)
    swapped = {n: (gc if n in ("relu1_1", "relu2_1") else gf)[n] for n in layers}
    assert abs(ref - 1e3 * sum(np.mean((gx[n] - swapped[n]) ** 2) / gx[n].shape[0] ** 2 for n in layers)) > \
        1e-3 * ref
    with pytest.raises(ValueError, match="style_blend"):
        P.mixed_targets_transfer(content, coarse, fine, style_blend=[1, 1], weights=tiny_params, size=32, iters=0)
    with pytest.raises(ValueError, match="unknown split layer"):
        P.mixed_targets_transfer(content, coarse, fine, split_layer="relu2_9", weights=tiny_params, size=32,
                                 iters=0, progress=False)
