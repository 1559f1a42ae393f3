"""Tests for nst_jax.color: YIQ, luminance-only transfer, colour histogram matching, wiring hooks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads

from nst_jax import color as C

EPS = 1e-5


def _rand(seed, shape=(24, 32, 3)):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _source():
    """Correlated source image with a wide spread of covariance eigenvalues."""
    u = _rand(0, (32, 32, 3))
    mix = np.array([[1.0, 0.3, 0.0], [0.2, 0.5, 0.1], [0.0, 0.4, 0.3]], np.float32)
    return (0.5 + (u - 0.5) @ mix).astype(np.float32)


def _target():
    """Target image of a different size with different mean and covariance."""
    v = _rand(1, (24, 40, 3))
    mix = np.array([[0.6, -0.2, 0.1], [0.1, 0.9, 0.2], [0.3, 0.0, 0.7]], np.float32)
    return (0.4 + (v - 0.5) @ mix).astype(np.float32)


def _np_stats(image_HW3):
    x = np.asarray(image_HW3, np.float64).reshape(-1, 3)
    mu = x.mean(0)
    d = x - mu
    return mu, d.T @ d / x.shape[0]


def _grey(seed, shape=(16, 16)):
    return np.repeat(_rand(seed, shape + (1,)), 3, axis=-1)


# ------------------------------------------------------------------------------------------------ colour spaces


def test_yiq_matrix_inverse_is_exact():
    np.testing.assert_allclose(
        C.YIQ_TO_RGB.astype(np.float64) @ C.RGB_TO_YIQ.astype(np.float64), np.eye(3), atol=2e-7
    )
    # rows: Y weights, and the NTSC I, Q rows (chroma of grey is zero)
    np.testing.assert_allclose(C.RGB_TO_YIQ[0], [0.299, 0.587, 0.114])
    np.testing.assert_allclose(C.RGB_TO_YIQ[1:].sum(axis=1), 0.0, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_yiq_round_trip(seed):
    x = _rand(seed)
    np.testing.assert_allclose(C.yiq_to_rgb(C.rgb_to_yiq(x)), x, atol=1e-6, rtol=0)
    # YIQ -> RGB -> YIQ too (arbitrary YIQ values)
    q = _rand(seed + 10) - 0.5
    np.testing.assert_allclose(C.rgb_to_yiq(C.yiq_to_rgb(q)), q, atol=1e-6, rtol=0)


def test_yiq_matches_numpy_reference():
    x = _rand(3)
    ref = np.einsum("hwc,dc->hwd", x.astype(np.float64), C.RGB_TO_YIQ.astype(np.float64))
    np.testing.assert_allclose(C.rgb_to_yiq(x), ref, atol=1e-6)


def test_known_colours_luminance():
    colours = np.array([[[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], np.float32)  # [1, 5, 3]
    np.testing.assert_allclose(C.luminance(colours)[0], [1.0, 0.0, 0.299, 0.587, 0.114], atol=1e-7)
    yiq = C.rgb_to_yiq(colours)
    np.testing.assert_allclose(yiq[..., 0], C.luminance(colours), atol=0)
    # white and black carry no chroma
    np.testing.assert_allclose(yiq[0, :2, 1:], 0.0, atol=1e-7)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        C.rgb_to_yiq(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        C.luminance(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        C.recombine_luminance(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="resize"):
        C.recombine_luminance(np.zeros((4, 5)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="shape"):
        C.color_affine(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


# ------------------------------------------------------------------------------------------- luminance transfer


def test_match_luminance_meanstd_exact():
    ys = 0.2 + 0.1 * _rand(4, (20, 30))
    yc = 0.7 * _rand(5, (16, 16)) ** 2
    out = np.asarray(C.match_luminance(ys, yc, "meanstd"), np.float64)
    assert out.shape == ys.shape
    np.testing.assert_allclose(out.mean(), yc.astype(np.float64).mean(), atol=1e-6)
    np.testing.assert_allclose(out.std(), yc.astype(np.float64).std(), rtol=1e-5)
    # affine in L_s with positive slope: order preserved, and matches the paper's formula computed in NumPy
    ys64, yc64 = ys.astype(np.float64), yc.astype(np.float64)
    ref = yc64.std() / ys64.std() * (ys64 - ys64.mean()) + yc64.mean()
    np.testing.assert_allclose(out, ref, atol=2e-6)


def test_match_luminance_mean_and_none():
    ys = _rand(6, (10, 12))
    yc = 0.3 * _rand(7, (8, 8))
    out = np.asarray(C.match_luminance(ys, yc, "mean"), np.float64)
    np.testing.assert_allclose(out.mean(), yc.astype(np.float64).mean(), atol=1e-6)
    np.testing.assert_allclose(out - ys, yc.astype(np.float64).mean() - ys.astype(np.float64).mean(), atol=1e-6)
    np.testing.assert_array_equal(C.match_luminance(ys, yc, "none"), ys)


def test_match_luminance_constant_style_is_finite():
    out = C.match_luminance(np.full((8, 8), 0.4, np.float32), _rand(8, (8, 8)), "meanstd")
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.mean(out), np.mean(_rand(8, (8, 8))), atol=1e-5)


def test_recombine_luminance_keeps_content_chroma():
    content = _rand(9)
    result_y = _rand(10, content.shape[:2])
    out = C.recombine_luminance(result_y, content)
    yiq_out, yiq_c = C.rgb_to_yiq(out), C.rgb_to_yiq(content)
    np.testing.assert_allclose(yiq_out[..., 0], result_y, atol=1e-6)
    np.testing.assert_allclose(yiq_out[..., 1:], yiq_c[..., 1:], atol=1e-6)
    # no clipping inside: an extreme luminance leaves [0, 1]
    assert np.max(C.recombine_luminance(result_y + 1.0, content)) > 1.0


def test_original_colors_keeps_result_luminance_and_content_chroma():
    content, result = _rand(11), _rand(12)
    out = C.original_colors(result, content)
    np.testing.assert_allclose(C.luminance(out), C.luminance(result), atol=1e-6)
    np.testing.assert_allclose(C.rgb_to_yiq(out)[..., 1:], C.rgb_to_yiq(content)[..., 1:], atol=1e-6)
    # a greyscale result takes its colour entirely from the content
    np.testing.assert_allclose(C.original_colors(content, content), content, atol=1e-6)


def test_original_colors_gradient_is_luminance_weights():
    # out = M^-1 [Y(result); I_c; Q_c], and column 0 of M^-1 is (1, 1, 1), so
    # d sum(out) / d result = (sum_k M^-1[k, 0]) * (0.299, 0.587, 0.114) = 3 * (0.299, 0.587, 0.114)
    content, result = _rand(13, (6, 7, 3)), _rand(14, (6, 7, 3))
    g = jax.grad(lambda r: jnp.sum(C.original_colors(r, content)))(result)
    np.testing.assert_allclose(g, np.broadcast_to(3.0 * C.RGB_TO_YIQ[0], g.shape), atol=1e-6)
    gc = jax.grad(lambda c: jnp.sum(C.original_colors(result, c)))(content)
    # content enters only through I, Q: sum over RGB of M^-1[:, 1:] times the I, Q rows
    w = C.YIQ_TO_RGB.astype(np.float64).sum(axis=0)[1:] @ C.RGB_TO_YIQ.astype(np.float64)[1:]
    np.testing.assert_allclose(gc, np.broadcast_to(w, gc.shape), atol=1e-6)


# ------------------------------------------------------------------------------------------ histogram matching


def test_color_stats_population_covariance():
    x = _rand(15)
    mu, cov = C.color_stats(x)
    mu_ref, cov_ref = _np_stats(x)
    np.testing.assert_allclose(mu, mu_ref, atol=1e-6)
    np.testing.assert_allclose(cov, cov_ref, atol=1e-6)
    np.testing.assert_allclose(cov, np.cov(x.reshape(-1, 3).T, bias=True), atol=1e-6)


@pytest.mark.parametrize("mode", C.MATCH_MODES)
def test_match_color_matches_mean_and_covariance(mode):
    src, tgt = _source(), _target()
    mu_t, cov_t = _np_stats(tgt)
    # eps = 0 (both covariances are well conditioned): exact match
    out, a, b = C.match_color(src, tgt, mode, eps=0.0)
    assert out.shape == src.shape
    mu_o, cov_o = _np_stats(out)
    np.testing.assert_allclose(mu_o, mu_t, atol=1e-4)
    np.testing.assert_allclose(cov_o, cov_t, atol=1e-4)
    # the affine map is the one returned
    np.testing.assert_allclose(out, src @ np.asarray(a).T + np.asarray(b), atol=1e-5)
    # default eps: A (S + eps I) A^T = T + eps I, so cov_out = cov_t + eps (I - A A^T)
    out, a, _ = C.match_color(src, tgt, mode)
    mu_o, cov_o = _np_stats(out)
    a64 = np.asarray(a, np.float64)
    np.testing.assert_allclose(mu_o, mu_t, atol=1e-4)
    np.testing.assert_allclose(cov_o, cov_t + EPS * (np.eye(3) - a64 @ a64.T), atol=1e-5)
    np.testing.assert_allclose(cov_o, cov_t, atol=1e-3)


def test_modes_agree_on_statistics_but_differ_in_A():
    src, tgt = _source(), _target()
    res = {m: C.match_color(src, tgt, m, eps=0.0) for m in C.MATCH_MODES}
    stats = {m: _np_stats(r[0]) for m, r in res.items()}
    for m in ("pca", "sym"):
        np.testing.assert_allclose(stats[m][0], stats["chol"][0], atol=1e-4)
        np.testing.assert_allclose(stats[m][1], stats["chol"][1], atol=1e-4)
    a = {m: np.asarray(r[1]) for m, r in res.items()}
    assert np.abs(a["chol"] - a["pca"]).max() > 0.05
    assert np.abs(a["chol"] - a["sym"]).max() > 0.05
    assert np.abs(a["pca"] - a["sym"]).max() > 0.05
    # structure: chol is lower triangular, sym is symmetric
    np.testing.assert_allclose(np.triu(a["chol"], 1), 0.0, atol=1e-6)
    np.testing.assert_allclose(a["sym"], a["sym"].T, atol=1e-5)


@pytest.mark.parametrize("mode", C.MATCH_MODES)
def test_match_to_self_is_identity(mode):
    src = _source()
    out, a, b = C.match_color(src, src, mode)
    np.testing.assert_allclose(a, np.eye(3), atol=1e-4)
    np.testing.assert_allclose(b, 0.0, atol=1e-4)
    np.testing.assert_allclose(out, src, atol=1e-4)


# hand-picked SPD covariances and means; references computed in float64 with SciPy
_MU_S = np.array([0.4, 0.5, 0.3])
_COV_S = np.array([[0.05, 0.02, 0.01], [0.02, 0.04, 0.015], [0.01, 0.015, 0.03]])
_MU_T = np.array([0.6, 0.35, 0.45])
_COV_T = np.array([[0.03, -0.01, 0.005], [-0.01, 0.06, 0.02], [0.005, 0.02, 0.025]])


def _ref_affine(mode, eps):
    s = _COV_S + eps * np.eye(3)
    t = _COV_T + eps * np.eye(3)
    if mode == "chol":
        a = scipy.linalg.cholesky(t, lower=True) @ np.linalg.inv(scipy.linalg.cholesky(s, lower=True))
    elif mode == "pca":
        a = np.real(scipy.linalg.sqrtm(t)) @ np.linalg.inv(np.real(scipy.linalg.sqrtm(s)))
    else:
        rs = np.real(scipy.linalg.sqrtm(s))
        irs = np.linalg.inv(rs)
        a = irs @ np.real(scipy.linalg.sqrtm(rs @ t @ rs)) @ irs
    return a, _MU_T - a @ _MU_S


@pytest.mark.parametrize("mode", C.MATCH_MODES)
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_color_affine_hand_computed(mode, eps):
    f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731
    a, b = C.color_affine(f32(_MU_S), f32(_COV_S), f32(_MU_T), f32(_COV_T), mode=mode, eps=eps)
    a_ref, b_ref = _ref_affine(mode, eps)
    np.testing.assert_allclose(a, a_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b, b_ref, rtol=1e-4, atol=1e-5)
    s = _COV_S + eps * np.eye(3)
    np.testing.assert_allclose(a_ref @ s @ a_ref.T, _COV_T + eps * np.eye(3), atol=1e-12)  # reference is right


@pytest.mark.parametrize("mode", C.MATCH_MODES)
def test_color_affine_gradients(mode):
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(v, jnp.float64) for v in (_MU_S, _COV_S, _MU_T, _COV_T))

        def f(mu_s, cov_s, mu_t, cov_t):
            a, b = C.color_affine(mu_s, cov_s, mu_t, cov_t, mode=mode, eps=1e-3)
            return jnp.sum(a * jnp.arange(1.0, 10.0).reshape(3, 3)) + jnp.sum(b * jnp.array([1.0, -2.0, 0.5]))

        check_grads(jax.jit(f), args, order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", C.MATCH_MODES)
def test_greyscale_and_constant_images_are_finite(mode):
    grey, const, tgt = _grey(16), np.full((8, 8, 3), 0.3, np.float32), _target()
    for src, dst in ((grey, tgt), (tgt, grey), (const, tgt), (tgt, const), (grey, grey), (const, grey)):
        out, a, b = C.match_color(src, dst, mode)
        assert all(np.all(np.isfinite(np.asarray(v))) for v in (out, a, b)), (src.shape, dst.shape)
    # recolouring a colourful image to a greyscale target gives (nearly) greyscale output with its mean
    out, _, _ = C.match_color(tgt, grey, mode)
    mu_o, cov_o = _np_stats(out)
    mu_g, cov_g = _np_stats(grey)
    np.testing.assert_allclose(mu_o, mu_g, atol=1e-4)
    np.testing.assert_allclose(cov_o, cov_g, atol=1e-3)
    np.testing.assert_allclose(np.ptp(np.asarray(out), axis=-1), 0.0, atol=0.05)


# ----------------------------------------------------------------------------------------------- jit / tracing


@pytest.mark.parametrize("mode", C.MATCH_MODES)
def test_match_color_jit_no_retrace(mode):
    traces = []

    def f(src, tgt, eps):
        traces.append(1)
        return C.match_color(src, tgt, mode, eps)

    jf = jax.jit(f)
    out1 = jf(_source(), _target(), 1e-5)
    np.testing.assert_allclose(out1[0], C.match_color(_source(), _target(), mode)[0], atol=1e-5)
    src2 = _rand(20, (32, 32, 3))
    tgt2 = _rand(21, (24, 40, 3)) * 0.5
    out2 = jf(src2, tgt2, 2e-5)  # new images (and eps) with the same shapes
    assert len(traces) == 1
    np.testing.assert_allclose(out2[1], C.match_color(src2, tgt2, mode, 2e-5)[1], atol=1e-5)


def test_hooks_jit_with_static_modes():
    traces = []

    def f(content, styles, color):
        traces.append(color)
        c, s = C.prepare_color(content, styles, color, match_mode="sym", lum_match="meanstd")
        return C.finish_color(c, content, color), s

    jf = jax.jit(f, static_argnames="color")
    content, styles = _rand(22), [_rand(23, (16, 20, 3))]
    for color in C.COLOR_MODES:
        got = jf(content, styles, color)
        ref = f(content, styles, color)
        np.testing.assert_allclose(got[0], ref[0], atol=1e-5)
        for g, r in zip(got[1], ref[1]):
            np.testing.assert_allclose(g, r, atol=1e-5)
    n = len(traces)
    jf(_rand(25), [_rand(26, (16, 20, 3))], "luminance")
    assert len(traces) == n  # no retrace for new images of the same shapes


# ----------------------------------------------------------------------------------------------- wiring hooks


def test_prepare_color_luminance():
    content = _rand(30)
    styles = [0.2 + 0.5 * _rand(31, (16, 20, 3)), _rand(32, (12, 12, 3)) ** 2]
    c_in, s_in = C.prepare_color(content, styles, "luminance", lum_match="meanstd", clip=False)
    y_c = np.asarray(C.luminance(content))
    np.testing.assert_allclose(c_in, np.repeat(y_c[..., None], 3, -1), atol=1e-7)
    for s, s_orig in zip(s_in, styles):
        s = np.asarray(s, np.float64)
        assert s.shape == s_orig.shape
        np.testing.assert_array_equal(s[..., 0], s[..., 1])
        np.testing.assert_array_equal(s[..., 0], s[..., 2])
        np.testing.assert_allclose(s[..., 0].mean(), y_c.mean(dtype=np.float64), atol=1e-6)
        np.testing.assert_allclose(s[..., 0].std(), y_c.std(dtype=np.float64), rtol=1e-5)
    # "mean" only shifts
    _, s_mean = C.prepare_color(content, styles, "luminance", lum_match="mean", clip=False)
    np.testing.assert_allclose(np.std(s_mean[0][..., 0]), np.std(C.luminance(styles[0])), rtol=1e-5)


def test_prepare_color_match_style_and_content():
    content = _rand(33) ** 2
    styles = [_source(), _target()]
    # eps=0: both covariances are well conditioned, so the match is exact (default eps leaves an O(eps |A|^2) gap)
    c_in, s_in = C.prepare_color(content, styles, "match-style", match_mode="chol", eps=0.0, clip=False)
    np.testing.assert_array_equal(c_in, content)
    mu_c, cov_c = _np_stats(content)
    for s in s_in:
        mu, cov = _np_stats(s)
        np.testing.assert_allclose(mu, mu_c, atol=1e-4)
        np.testing.assert_allclose(cov, cov_c, atol=2e-4)
    c_in, s_in = C.prepare_color(content, styles, "match-content", match_mode="pca", eps=0.0, clip=False)
    for s, s0 in zip(s_in, styles):
        np.testing.assert_array_equal(s, s0)
    mu, cov = _np_stats(c_in)
    mu_s, cov_s = _np_stats(styles[0])
    np.testing.assert_allclose(mu, mu_s, atol=1e-4)
    np.testing.assert_allclose(cov, cov_s, atol=2e-4)


def test_prepare_color_clip_and_identity_modes():
    content = _rand(34)
    styles = [_source()]
    _, s_unclipped = C.prepare_color(content, styles, "match-style", clip=False)
    assert np.min(s_unclipped[0]) < 0.0 or np.max(s_unclipped[0]) > 1.0  # matching leaves [0, 1] here
    _, s_clipped = C.prepare_color(content, styles, "match-style")
    np.testing.assert_allclose(s_clipped[0], np.clip(s_unclipped[0], 0, 1), atol=0)
    for color in ("none", "original"):
        c_in, s_in = C.prepare_color(content, [np.clip(styles[0], 0, 1)], color)
        np.testing.assert_array_equal(c_in, content)
        np.testing.assert_array_equal(s_in[0], np.clip(styles[0], 0, 1))
    with pytest.raises(ValueError, match="at least one style"):
        C.prepare_color(content, [], "match-content")


def test_finish_color():
    content, result = _rand(35), _rand(36)
    for color in ("luminance", "original"):
        out = C.finish_color(result, content, color, clip=False)
        np.testing.assert_allclose(out, C.original_colors(result, content), atol=0)
        clipped = C.finish_color(result, content, color)
        np.testing.assert_allclose(clipped, np.clip(out, 0, 1), atol=0)
        assert np.min(clipped) >= 0.0 and np.max(clipped) <= 1.0
    # the luminance path: grey result (R = G = B = Y) + content chroma
    grey = np.repeat(np.asarray(C.luminance(result))[..., None], 3, -1)
    out = C.finish_color(grey, content, "luminance", clip=False)
    np.testing.assert_allclose(C.luminance(out), C.luminance(result), atol=1e-6)
    np.testing.assert_allclose(C.rgb_to_yiq(out)[..., 1:], C.rgb_to_yiq(content)[..., 1:], atol=1e-6)
    for color in ("none", "match-style", "match-content"):
        np.testing.assert_array_equal(C.finish_color(result, content, color), result)
        np.testing.assert_array_equal(C.finish_color(result + 1.0, content, color), np.ones_like(result))
    with pytest.raises(ValueError, match="resize"):
        C.finish_color(result, content[:8], "luminance")


def test_unknown_names_raise():
    x, y = _rand(37, (8, 8, 3)), _rand(38, (8, 8))
    with pytest.raises(ValueError, match="colour match mode 'lab'"):
        C.match_color(x, x, "lab")
    with pytest.raises(ValueError, match="colour match mode"):
        C.color_affine(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), mode="cholesky")
    with pytest.raises(ValueError, match="luminance match mode 'std'"):
        C.match_luminance(y, y, "std")
    with pytest.raises(ValueError, match="colour mode 'lum'"):
        C.prepare_color(x, [x], "lum")
    with pytest.raises(ValueError, match="colour match mode"):
        C.prepare_color(x, [x], "match-style", match_mode="svd")
    with pytest.raises(ValueError, match="luminance match mode"):
        C.prepare_color(x, [x], "luminance", lum_match="hist")
    with pytest.raises(ValueError, match="colour mode"):
        C.finish_color(x, x, "preserve")
    assert set(C.COLOR_MODES) == {"none", "luminance", "match-style", "match-content", "original"}
    assert C.MATCH_MODES == ("chol", "pca", "sym") and C.LUM_MATCH_MODES == ("meanstd", "mean", "none")
