"""The non-Gram style losses (Gaussian W2, sliced Wasserstein, histogram) against float64 NumPy references written
from their formulas, their zeros, finite-difference gradients (float64), the N-resampling path and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from nst_jax import style_losses as SL


def _feats(seed, shape=(6, 5, 4)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _np_sqrtm(a):
    return np.real(scipy.linalg.sqrtm(np.asarray(a, np.float64)))


# --- NumPy references (float64), written from the definitions ---


def _np_w2(f, style, eps=1e-4, w_f=None, w_s=None):
    """(|m - m_t|^2 + tr(C + C_t - 2 (C_t^1/2 C C_t^1/2)^1/2)) / C, weighted population moments, C += eps I."""
    def stats(x, w):
        x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        aw = None if w is None else np.asarray(w, np.float64).ravel()
        m = np.average(x, axis=0, weights=aw)
        cov = np.atleast_2d(np.cov(x, rowvar=False, bias=True, aweights=aw)) + eps * np.eye(x.shape[1])
        return m, cov

    (m, c), (mt, ct) = stats(f, w_f), stats(style, w_s)
    st = _np_sqrtm(ct)
    return (np.sum((m - mt) ** 2) + np.trace(c + ct - 2 * _np_sqrtm(st @ c @ st))) / c.shape[0]


def _np_sliced(f, style, proj):
    """mean over projections and positions of (sorted projected f - style's quantiles at the same levels)^2."""
    a = np.sort(np.asarray(f, np.float64).reshape(-1, f.shape[-1]) @ proj, axis=0)
    b = np.sort(np.asarray(style, np.float64).reshape(-1, style.shape[-1]) @ proj, axis=0)
    b = np.quantile(b, np.linspace(0, 1, a.shape[0]), axis=0)  # linear interpolation of the quantile function
    return np.mean((a - b) ** 2)


def _np_hist_remap(f, style, n_bins):
    """Per channel: rank r of N -> the style's piecewise-linear quantile function (knots at k / n_bins) at r/(N-1)."""
    x = np.asarray(f, np.float64).reshape(-1, f.shape[-1])
    s = np.asarray(style, np.float64).reshape(-1, style.shape[-1])
    n = x.shape[0]
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        levels = np.linspace(0, 1, s.shape[0] if n_bins is None else n_bins + 1)
        knots = np.quantile(s[:, c], levels)
        ranks = np.argsort(np.argsort(x[:, c], kind="stable"), kind="stable")
        out[:, c] = np.interp(ranks / (n - 1), levels, knots)
    return out.reshape(f.shape)


def _np_hist(f, style, n_bins):
    return np.mean((np.asarray(f, np.float64) - _np_hist_remap(f, style, n_bins)) ** 2)


# --- matrix square root ---


def test_sqrtm_psd_matches_scipy_including_rank_deficient():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(5, 5))
    spd = b @ b.T + 0.1 * np.eye(5)
    low = b[:, :2] @ b[:, :2].T  # rank 2: three (numerically) zero eigenvalues
    for a, atol in ((spd, 1e-4), (low, 2e-3)):  # float32 sqrt of eigenvalues ~1e-7 * lam_max -> ~3e-4 * sqrt(lam_max)
        np.testing.assert_allclose(SL.sqrtm_psd(jnp.asarray(a, jnp.float32)), _np_sqrtm(a), rtol=1e-4, atol=atol)
    with jax.enable_x64(True):
        np.testing.assert_allclose(SL.sqrtm_psd(jnp.asarray(spd)), _np_sqrtm(spd), rtol=1e-10)


def test_sqrtm_psd_derivative_solves_lyapunov_and_is_finite_when_degenerate():
    """JVP: X dX + dX X = dA (float64, against central differences too); the gradient is finite for a rank-deficient
    matrix and for coinciding eigenvalues (at A = I it is exactly G_sym / 2 for tr(G X))."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        b = rng.normal(size=(4, 4))
        a = jnp.asarray(b @ b.T + 0.5 * np.eye(4))
        d = rng.normal(size=(4, 4))
        da = jnp.asarray(d + d.T)
        x, dx = jax.jvp(SL.sqrtm_psd, (a,), (da,))
        np.testing.assert_allclose(x @ dx + dx @ x, da, atol=1e-10)
        h = 1e-6
        fd = (SL.sqrtm_psd(a + h * da) - SL.sqrtm_psd(a - h * da)) / (2 * h)
        np.testing.assert_allclose(dx, fd, atol=1e-7)

        g = jnp.asarray(rng.normal(size=(4, 4)))
        loss = lambda m: jnp.sum(g * SL.sqrtm_psd(m))  # noqa: E731
        np.testing.assert_allclose(jax.grad(loss)(jnp.eye(4)), 0.25 * (g + g.T), atol=1e-12)
    for m in (b[:, :1] @ b[:, :1].T, np.zeros((4, 4))):  # rank 1 (three equal zero eigenvalues) and rank 0
        grad = jax.grad(lambda m: jnp.sum(SL.sqrtm_psd(m)))(jnp.asarray(m, jnp.float32))
        assert np.all(np.isfinite(grad))


# --- Gaussian W2 ---


def test_feature_stats_match_numpy_weighted_and_guided():
    f = _feats(2)
    w = np.random.default_rng(3).uniform(size=(6, 5)).astype(np.float32)
    x = f.reshape(30, 4).astype(np.float64)
    for weights, aw in ((None, None), (w, w.ravel())):
        m, c = SL.feature_stats(f, None if weights is None else jnp.asarray(weights))
        np.testing.assert_allclose(m, np.average(x, axis=0, weights=aw), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, np.cov(x, rowvar=False, bias=True, aweights=aw), rtol=1e-5, atol=1e-6)
    # all-ones weights = unweighted; a binary region = the statistics of its own positions; empty -> zeros, no NaN
    for a, b in zip(SL.feature_stats(f, jnp.full((6, 5), 3.0)), SL.feature_stats(f)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    mask = np.zeros((6, 5), np.float32)
    mask[:, :2] = 1.0
    for a, b in zip(SL.feature_stats(f, jnp.asarray(mask)), SL.feature_stats(f[:, :2])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    m0, c0 = SL.feature_stats(f, jnp.zeros((6, 5)))
    assert not np.any(m0) and not np.any(c0)
    with pytest.raises(ValueError):
        SL.feature_stats(f, jnp.ones((5, 6)))


def test_w2_loss_matches_numpy_zero_on_style_positive_otherwise():
    f, style = _feats(4), _feats(5, (7, 5, 4)) * 1.5 + 0.3  # a different N (35 vs 30) changes nothing here
    target = SL.w2_target(jnp.asarray(style))
    np.testing.assert_allclose(SL.w2_loss(f, *target), _np_w2(f, style), rtol=1e-4)
    assert float(SL.w2_loss(f, *target)) > 0.1
    assert abs(float(SL.w2_loss(style, *target))) < 1e-5
    assert abs(float(SL.w2_loss(style[::-1, ::-1], *target))) < 1e-5  # a permutation: same mean and covariance


def test_w2_guided_soft_and_binary_regions():
    f, style = _feats(6), _feats(7)
    rng = np.random.default_rng(8)
    w_f, w_s = rng.uniform(size=(6, 5)), rng.uniform(size=(6, 5))
    target = SL.w2_target(jnp.asarray(style), jnp.asarray(w_s, jnp.float32))
    got = SL.w2_loss(f, *target, weights_HW=jnp.asarray(w_f, jnp.float32))
    np.testing.assert_allclose(got, _np_w2(f, style, w_f=w_f, w_s=w_s), rtol=1e-4)
    mask = np.zeros((6, 5), np.float32)
    mask[2:, :] = 1.0  # binary region of the generated image = its gathered positions
    np.testing.assert_allclose(SL.w2_loss(f, *target, weights_HW=jnp.asarray(mask)),
                               SL.w2_loss(f[2:], *target), rtol=1e-5)


def test_w2_gradient_matches_central_differences_and_is_finite_when_rank_deficient():
    rng = np.random.default_rng(9)
    with jax.enable_x64(True):
        f, style = jnp.asarray(rng.normal(size=(3, 4, 3))), jnp.asarray(rng.normal(size=(4, 3, 3)))
        target = SL.w2_target(style)
        _check_directional_derivatives(lambda x: SL.w2_loss(x, *target), f, rng)
    # N = 3 positions < C = 4 channels, no regularisation: both covariances singular (rank 2)
    f_low, style_low = _feats(10, (1, 3, 4)), _feats(11, (3, 1, 4))
    target = SL.w2_target(jnp.asarray(style_low), eps=0.0)
    grad = jax.grad(lambda x: SL.w2_loss(x, *target, eps=0.0))(jnp.asarray(f_low))
    assert np.all(np.isfinite(grad)) and np.any(grad)
    dup = np.concatenate([f_low[..., :2], f_low[..., :2]], axis=-1)  # duplicated channels: coinciding eigenvalues
    assert np.all(np.isfinite(jax.grad(lambda x: SL.w2_loss(x, *target, eps=0.0))(jnp.asarray(dup))))


def test_w2_keeps_float32_accuracy_for_ill_conditioned_covariances():
    """Channel variances spanning ~1e-9: the cross term via QR of D C_t^1/2 stays accurate in float32 (an eigh of
    C_t^1/2 C C_t^1/2 is off by ~1 here: -1.05 at the optimum, 23.2 instead of 24.2), value and gradient."""
    def ill(seed):
        r = np.random.default_rng(seed)
        z = r.normal(size=(8, 8, 6)) @ r.normal(size=(6, 6))
        return (z * np.exp(-2.0 * np.arange(6)) * 30).astype(np.float32)

    style, f = ill(1), ill(2)
    target = SL.w2_target(jnp.asarray(style))
    assert abs(float(SL.w2_loss(style, *target))) < 1e-3
    np.testing.assert_allclose(SL.w2_loss(f, *target), _np_w2(f, style), rtol=1e-4)
    g32 = np.asarray(jax.grad(SL.w2_loss)(jnp.asarray(f), *target))
    with jax.enable_x64(True):
        target64 = SL.w2_target(jnp.asarray(style, jnp.float64))
        g64 = np.asarray(jax.grad(SL.w2_loss)(jnp.asarray(f, jnp.float64), *target64))
    assert np.linalg.norm(g32 - g64) < 2e-3 * np.linalg.norm(g64)


def _check_directional_derivatives(loss, x, rng, n_dirs=3, h=1e-6, rtol=1e-6):
    """grad . v against (L(x + h v) - L(x - h v)) / 2h for a few random directions (float64)."""
    g = jax.grad(loss)(x)
    assert np.all(np.isfinite(g))
    for _ in range(n_dirs):
        v = jnp.asarray(rng.normal(size=x.shape))
        fd = (loss(x + h * v) - loss(x - h * v)) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(g, v), fd, rtol=rtol, atol=1e-9)


# --- sliced Wasserstein ---


def test_resample_quantiles_is_numpy_linear_quantile():
    s = np.sort(np.random.default_rng(12).normal(size=(7, 3)), axis=0).astype(np.float32)
    for n in (1, 4, 7, 13):
        np.testing.assert_allclose(SL.resample_quantiles(jnp.asarray(s), n),
                                   np.quantile(s, np.linspace(0, 1, n), axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(SL.resample_quantiles(jnp.asarray(s), 7), s)


def test_sliced_loss_matches_numpy_same_and_resampled_sizes():
    key = jax.random.PRNGKey(0)
    f = _feats(13)
    for style_shape in ((6, 5, 4), (4, 4, 4), (9, 7, 4)):  # N_style = N, smaller (upsampled), larger (downsampled)
        style = _feats(14, style_shape)
        proj, sorted_t = SL.sliced_target(jnp.asarray(style), key, n_proj=6)
        assert proj.shape == (4, 6) and sorted_t.shape == (style_shape[0] * style_shape[1], 6)
        np.testing.assert_allclose(np.linalg.norm(proj, axis=0), 1.0, rtol=1e-6)
        np.testing.assert_allclose(SL.sliced_loss(f, proj, sorted_t),
                                   _np_sliced(f, style, np.asarray(proj, np.float64)), rtol=1e-4)


def test_sliced_target_deterministic_for_a_key_and_changes_with_it():
    style = jnp.asarray(_feats(15))
    p0, t0 = SL.sliced_target(style, jax.random.PRNGKey(0))
    p0b, t0b = jax.jit(SL.sliced_target, static_argnums=2)(style, jax.random.PRNGKey(0), None)  # traced key
    p1, _ = SL.sliced_target(style, jax.random.PRNGKey(1))
    assert p0.shape == (4, 4)  # default P = C
    np.testing.assert_allclose(p0b, p0, rtol=1e-6)
    np.testing.assert_allclose(t0b, t0, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p0, p1)
    f = _feats(16)
    t1 = SL.sliced_target(style, jax.random.PRNGKey(1))[1]
    assert float(SL.sliced_loss(f, p0, t0)) != float(SL.sliced_loss(f, p1, t1))


def test_sliced_zero_on_style_positive_otherwise():
    style = jnp.asarray(_feats(17))
    target = SL.sliced_target(style, jax.random.PRNGKey(2), n_proj=8)
    assert float(SL.sliced_loss(style, *target)) == 0.0
    assert float(SL.sliced_loss(jnp.transpose(style, (1, 0, 2)), *target)) == 0.0  # positions permuted, N the same
    assert float(SL.sliced_loss(style * 1.1, *target)) > 1e-3
    # a style twice as large made of each position twice: its quantile function resampled to N is not the same
    # piecewise-linear function's nodes, but matches closely
    big = jnp.concatenate([style, style], axis=0)
    assert float(SL.sliced_loss(style, *SL.sliced_target(big, jax.random.PRNGKey(2), n_proj=8))) < 0.05


def test_sliced_guided_by_gathered_region_and_by_tags():
    """The two static-shape guided variants of the module docstring: a hard region gathered with host-computed
    indices (sizes differ between style and generated image), and guide channels appended as tags."""
    f, style = _feats(26), _feats(27, (7, 5, 4))
    g_f = np.zeros((6, 5), np.float32)
    g_f[:, :3] = 1.0  # 18 positions
    g_s = np.zeros((7, 5), np.float32)
    g_s[:4] = 1.0  # 20 positions
    idx_f, idx_s = np.nonzero(g_f.ravel() > 0.5)[0], np.nonzero(g_s.ravel() > 0.5)[0]
    region = lambda x, idx: x.reshape(-1, x.shape[-1])[idx][:, None, :]  # noqa: E731
    target = SL.sliced_target(region(jnp.asarray(style), idx_s), jax.random.PRNGKey(5))
    got = jax.jit(lambda x: SL.sliced_loss(region(x, idx_f), *target))(jnp.asarray(f))
    np.testing.assert_allclose(got, _np_sliced(f[:, :3], style[:4], np.asarray(target[0], np.float64)), rtol=1e-4)
    tagged = lambda x, g: jnp.concatenate([x, 3.0 * g[..., None]], axis=-1)  # noqa: E731
    tag_target = SL.sliced_target(tagged(jnp.asarray(style), g_s), jax.random.PRNGKey(6))
    assert float(SL.sliced_loss(tagged(jnp.asarray(style), g_s), *tag_target)) == 0.0
    assert float(SL.sliced_loss(tagged(jnp.asarray(style), 1.0 - g_s), *tag_target)) > 1e-2  # tags disagree


def test_sliced_gradient_matches_central_differences():
    rng = np.random.default_rng(18)
    with jax.enable_x64(True):
        f, style = jnp.asarray(rng.normal(size=(3, 4, 3))), jnp.asarray(rng.normal(size=(5, 3, 3)))
        target = SL.sliced_target(style, jax.random.PRNGKey(3), n_proj=5)
        assert target[0].dtype == jnp.float64
        _check_directional_derivatives(lambda x: SL.sliced_loss(x, *target), f, rng)


# --- histogram ---


@pytest.mark.parametrize("n_bins", [None, 8, 256])
def test_hist_remap_and_loss_match_numpy(n_bins):
    f, style = _feats(19), _feats(20, (7, 5, 4)) * 2.0 + 1.0
    q = SL.hist_target(jnp.asarray(style), n_bins)
    assert q.shape == ((35 if n_bins is None else n_bins + 1), 4)
    np.testing.assert_allclose(SL.hist_remap(f, q), _np_hist_remap(f, style, n_bins), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(SL.hist_loss(f, q), _np_hist(f, style, n_bins), rtol=1e-4)


def test_hist_zero_on_style_positive_otherwise_and_equals_axis_sliced():
    style = jnp.asarray(_feats(21))  # N = 30
    for n_bins in (None, 58):  # 58 = 2 (N - 1): the knots include every r / (N - 1), the match is exact
        q = SL.hist_target(style, n_bins)
        assert float(SL.hist_loss(style, q)) < 1e-10
        assert float(SL.hist_loss(style[::-1], q)) < 1e-10
    q = SL.hist_target(style, None)
    f = _feats(22)
    assert float(SL.hist_loss(f, q)) > 1e-2
    # value = the sliced loss along the C coordinate axes
    np.testing.assert_allclose(SL.hist_loss(f, q), SL.sliced_loss(f, jnp.eye(4), q), rtol=1e-6)


def test_hist_gradient_is_the_stop_gradient_one_and_matches_central_differences():
    f, style = _feats(23), _feats(24)
    q = SL.hist_target(jnp.asarray(style), 16)
    g = jax.grad(SL.hist_loss)(jnp.asarray(f), q)
    np.testing.assert_allclose(g, 2 * (f - SL.hist_remap(f, q)) / f.size, rtol=1e-5, atol=1e-8)
    rng = np.random.default_rng(25)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(3, 4, 3)))
        q64 = SL.hist_target(jnp.asarray(rng.normal(size=(4, 4, 3))), 5)
        _check_directional_derivatives(lambda y: SL.hist_loss(y, q64), x, rng)


# --- batching ---


def test_vmap_over_a_batch_equals_per_item():
    batch = jnp.asarray(np.stack([_feats(30 + i) for i in range(3)]))
    style = jnp.asarray(_feats(40, (7, 5, 4)))
    weights = jnp.asarray(np.random.default_rng(41).uniform(size=(6, 5)), jnp.float32)
    w2_t = SL.w2_target(style)
    sl_t = SL.sliced_target(style, jax.random.PRNGKey(4))
    h_t = SL.hist_target(style, 16)
    losses = {
        "w2": lambda x: SL.w2_loss(x, *w2_t),
        "w2_guided": lambda x: SL.w2_loss(x, *w2_t, weights_HW=weights),
        "sliced": lambda x: SL.sliced_loss(x, *sl_t),
        "hist": lambda x: SL.hist_loss(x, h_t),
    }
    for name, loss in losses.items():
        batched = jax.vmap(loss)(batch)
        np.testing.assert_allclose(batched, [loss(x) for x in batch], rtol=1e-5, atol=1e-7, err_msg=name)
        grads = jax.vmap(jax.grad(loss))(batch)
        np.testing.assert_allclose(grads, np.stack([jax.grad(loss)(x) for x in batch]), rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    # targets as traced arguments of one compiled function, vmapped over styles as well
    styles = jnp.stack([style, style * 2.0])
    per_style = jax.jit(jax.vmap(lambda s: SL.w2_loss(batch[0], *SL.w2_target(s))))(styles)
    np.testing.assert_allclose(per_style, [SL.w2_loss(batch[0], *SL.w2_target(s)) for s in styles], rtol=1e-4)
