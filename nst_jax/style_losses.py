"""Style losses beyond the Gram matrix, as pure functions of one image's features.

Three distribution-matching losses, each split into a ``*_target`` function (run once on the style's features; its
outputs are plain arrays, so under ``jit`` they are traced arguments, never constants baked into the program) and a
loss of the generated image's ``feats_HWC`` ([H, W, C], N = H*W positions):

* **Gaussian 2-Wasserstein** (as crowsonkb/style-transfer-pytorch's ``StyleLossW2``): fit a Gaussian (mean, population
  covariance) to the features and take ``(|m - m_t|^2 + tr(C + C_t - 2 (C_t^1/2 C C_t^1/2)^1/2)) / C`` — the squared
  W2 distance between the two Gaussians per channel, i.e. the mean over channels as that code does
  (``mean`` of the mean term, ``mean`` of the diagonal), so that layers with 64 and 512 channels have comparable
  losses. ``eps * I`` (default 1e-4, as there) is added to both covariances. The cross term is taken from a QR of the
  centred features times ``C_t^1/2`` rather than from a matrix square root of ``C_t^1/2 C C_t^1/2``, which squares the
  condition number and is inaccurate in float32 (see :func:`w2_loss`).
* **Sliced Wasserstein** (Heitz et al., CVPR 2021): project the features on P random unit directions, sort each
  projection over the positions and take the mean squared difference to the style's sorted projections (the 1-D
  optimal transport cost, averaged over projections and positions). P = C by default, as in the paper's code.
* **Histogram loss** (Risser et al. 2017): remap every channel of the features so that its histogram matches the
  style's, and take the mean squared distance to the remapped features, which are a constant
  (``jax.lax.stop_gradient``; histogram matching is piecewise constant in the features, so nothing is lost).

Quantile convention (sliced and histogram losses): a sorted list of K values is the quantile function sampled at the
levels ``k / (K - 1)``, linearly interpolated in between (NumPy's default ``np.quantile`` method). A target with K
sorted values is brought to N positions by sampling that function at ``r / (N - 1)``
(:func:`resample_quantiles`; the identity when K = N), which is how a style and a generated image of different
sizes are compared.

Spatial guidance (guides ``guides_HWR_normalized`` from ``normalize_guides``, in :mod:`nst_jax.guided`):

* W2: both :func:`w2_target` and :func:`w2_loss` take soft per-position ``weights_HW`` (a weighted mean and covariance,
  weights normalised by their sum, so their scale does not matter). ``weights_HW = guides[..., r] ** 2`` weighs the
  positions as the guided Gram does (``G^r = sum_p T~^r(p)^2 f_p f_p^T / N``); for binary guides any power gives the
  region's own statistics. An all-zero weight map gives zero statistics (no NaN); skip such regions with the valid
  flags of ``normalize_guides`` as the guided Gram losses do.
* Sliced: no weighted variant (sorting a soft-weighted point set would need weighted quantiles). Two static-shape
  ways work under ``jit``: (a) Heitz et al.'s spatial tags — concatenate ``s * guides`` to the features of both images
  before :func:`sliced_target` / :func:`sliced_loss` (soft guides allowed, fully differentiable); (b) hard regions —
  the content's guides are fixed during a solve, so the positions of a region (e.g. guide > 0.5) can be found once on
  the host (``np.nonzero``) and gathered inside the step as ``feats_HWC.reshape(-1, C)[idx][:, None, :]``, a
  [n_r, 1, C] map with a static n_r; the N-resampling then compares regions of different sizes.
* Histogram: no weighted variant, same reason; use (b).

Several styles (blend weights ``b_s``, normalised to sum 1; traced, so a blend is a sweep axis): the Gram targets
blend linearly; the W2 targets blend their means and second raw moments (:func:`w2_blend`, which takes the blended
covariance's square root inside the step); the sliced and histogram targets average their quantile functions
(:func:`blend_quantiles` after :func:`stack_quantiles`: per 1-D projection or channel this is the quantile function
of the 2-Wasserstein barycentre of the styles' distributions). :func:`mix_kinds` sums the kinds' terms with their
weights.
"""

from __future__ import annotations

from functools import partial
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "sqrtm_psd",
    "feature_stats",
    "w2_target",
    "w2_target_from_stats",
    "w2_loss",
    "resample_quantiles",
    "sliced_projections",
    "sliced_target",
    "sliced_loss",
    "hist_target",
    "hist_remap",
    "hist_loss",
    "w2_blend",
    "stack_quantiles",
    "blend_quantiles",
    "mix_kinds",
]

_HI = jax.lax.Precision.HIGHEST


def _flat(feats_HWC: jax.Array) -> jax.Array:
    h, w, c = feats_HWC.shape
    return feats_HWC.reshape(h * w, c)


# --- Gaussian 2-Wasserstein ---


def _clamped_eigh(a_CxC: jax.Array, eps: Optional[float]) -> Tuple[jax.Array, jax.Array]:
    """Eigenvectors and clamped square roots of the eigenvalues, ``s = sqrt(max(lam, eps * lam_max) + tiny)``."""
    lam, v = jnp.linalg.eigh(a_CxC)
    finfo = jnp.finfo(a_CxC.dtype)
    rel = float(finfo.eps) if eps is None else eps
    floor = rel * jnp.maximum(lam[-1], 0.0) + float(finfo.tiny)  # eigh sorts ascending: lam[-1] is the largest
    return v, jnp.sqrt(jnp.maximum(lam, floor))


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sqrtm_sym(a_CxC: jax.Array, eps: Optional[float]) -> jax.Array:
    v, s = _clamped_eigh(a_CxC, eps)
    return jnp.matmul(v * s, v.T, precision=_HI)


@_sqrtm_sym.defjvp
def _sqrtm_sym_jvp(eps, primals, tangents):
    (a_CxC,), (da_CxC,) = primals, tangents
    v, s = _clamped_eigh(a_CxC, eps)
    x = jnp.matmul(v * s, v.T, precision=_HI)
    # X dX + dX X = dA (the Lyapunov equation) in the eigenbasis: dX~_ij = dA~_ij / (s_i + s_j). Only sums of square
    # roots appear, never differences of eigenvalues, so coinciding eigenvalues are harmless, and s >= sqrt(floor).
    da_eig = jnp.matmul(jnp.matmul(v.T, da_CxC, precision=_HI), v, precision=_HI)
    dx_eig = da_eig / (s[:, None] + s[None, :])
    return x, jnp.matmul(jnp.matmul(v, dx_eig, precision=_HI), v.T, precision=_HI)


def sqrtm_psd(a_CxC: jax.Array, eps: Optional[float] = None) -> jax.Array:
    """Square root of a symmetric positive semi-definite matrix, [C, C] -> [C, C], differentiable everywhere.

    Eigen-decomposition ``A = V diag(lam) V^T`` (of ``(A + A^T) / 2``), eigenvalues clamped from below at
    ``eps * lam_max`` (``eps`` defaults to the dtype's machine epsilon: below it ``eigh`` cannot resolve them anyway),
    ``X = V diag(sqrt(lam)) V^T``. Its derivative solves ``X dX + dX X = dA``, ``dX = V [(V^T dA V) / (s_i + s_j)] V^T``
    with ``s = sqrt(lam)``: finite for coinciding or (numerically) zero eigenvalues, which is why it is written by hand
    (differentiating ``eigh`` divides by eigenvalue gaps). Clamped directions get the derivative of ``sqrt`` at the
    floor, a bounded surrogate for the infinite true one.

    Example:
      >>> import jax.numpy as jnp
      >>> x = sqrtm_psd(jnp.array([[4.0, 0.0], [0.0, 9.0]]))
      >>> [round(float(t), 4) for t in x.ravel()]
      [2.0, 0.0, 0.0, 3.0]
      >>> a = jnp.array([[2.0, 1.0], [1.0, 2.0]])
      >>> bool(jnp.allclose(sqrtm_psd(a) @ sqrtm_psd(a), a, atol=1e-5))
      True
    """
    return _sqrtm_sym(0.5 * (a_CxC + a_CxC.T), eps)


def _weighted_centered(feats_HWC: jax.Array, weights_HW: Optional[jax.Array]):
    """``(p_N, mean_C, F - mean)``: position weights normalised to sum 1 (zeros if they sum to 0) and centred [N, C]."""
    h, w, _ = feats_HWC.shape
    f_NC = _flat(feats_HWC)
    if weights_HW is None:
        p_N = jnp.full((h * w,), 1.0 / (h * w), f_NC.dtype)
    else:
        if weights_HW.shape != (h, w):
            raise ValueError(f"weights_HW has shape {weights_HW.shape}, the features are {(h, w)}")
        wt_N = weights_HW.reshape(h * w).astype(f_NC.dtype)
        total = jnp.sum(wt_N)
        p_N = jnp.where(total > 0, wt_N / jnp.where(total > 0, total, 1.0), 0.0)
    mean_C = jnp.matmul(p_N, f_NC, precision=_HI)
    return p_N, mean_C, f_NC - mean_C


def feature_stats(feats_HWC: jax.Array, weights_HW: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
    """Mean and population covariance of the features over the positions: [H, W, C] -> ([C], [C, C]).

    ``m = sum_p w_p f_p``, ``Cov = sum_p w_p (f_p - m)(f_p - m)^T`` with ``w = weights_HW / sum(weights_HW)``
    (``w_p = 1 / N`` when ``weights_HW`` is None): the Gaussian fit of the 2-Wasserstein loss, with soft weights for a
    guided region. An all-zero weight map returns zeros (no NaN). Centred before the product, for float32 accuracy.

    Example:
      >>> import jax.numpy as jnp
      >>> f = jnp.array([[[0.0, 1.0], [2.0, 1.0]]])                    # H=1, W=2, C=2
      >>> m, cov = feature_stats(f)
      >>> m.tolist(), cov.tolist()                                     # channel 0: values 0, 2 -> variance 1
      ([1.0, 1.0], [[1.0, 0.0], [0.0, 0.0]])
      >>> feature_stats(f, jnp.array([[1.0, 0.0]]))[0].tolist()        # weight only the first position
      [0.0, 1.0]
    """
    p_N, mean_C, d_NC = _weighted_centered(feats_HWC, weights_HW)
    return mean_C, jnp.matmul((p_N[:, None] * d_NC).T, d_NC, precision=_HI)


@jax.custom_jvp
def _nuclear_norm_tall(m_MxC: jax.Array) -> jax.Array:
    """Sum of the singular values of a tall [M, C] matrix (M >= C): those of R, ``M = Q R`` (no Gram is formed)."""
    return jnp.sum(jnp.linalg.svd(jnp.linalg.qr(m_MxC, mode="r"), compute_uv=False))


@_nuclear_norm_tall.defjvp
def _nuclear_norm_tall_jvp(primals, tangents):
    (m_MxC,), (dm_MxC,) = primals, tangents
    q, r = jnp.linalg.qr(m_MxC)
    u, s, vt = jnp.linalg.svd(r, full_matrices=False)
    # d sum(s) = tr(U^T dM V) with M = (Q u) diag(s) V^T: the gradient Q u V^T has spectral norm 1, bounded even for
    # zero or repeated singular values (QR and SVD are only evaluated here, never differentiated).
    dm_v = jnp.matmul(jnp.matmul(q.T, dm_MxC, precision=_HI), vt.T, precision=_HI)
    return jnp.sum(s), jnp.sum(u * dm_v)


def w2_target_from_stats(mean_C: jax.Array, cov_CxC: jax.Array, eps: float = 1e-4):
    """``(m_t, C_t + eps I, (C_t + eps I)^1/2)`` from a style's mean [C] and covariance [C, C].

    Use it for blended targets: blend the means and the second raw moments ``C + m m^T`` of several styles (these
    combine linearly, the covariances do not), then pass ``mean`` and ``srm - mean mean^T``.

    Example:
      >>> import jax.numpy as jnp
      >>> m, c, c_sqrt = w2_target_from_stats(jnp.zeros(2), jnp.diag(jnp.array([4.0, 9.0])), eps=0.0)
      >>> jnp.diag(c_sqrt).tolist()
      [2.0, 3.0]
    """
    cov_CxC = cov_CxC + eps * jnp.eye(cov_CxC.shape[0], dtype=cov_CxC.dtype)
    return mean_C, cov_CxC, sqrtm_psd(cov_CxC)


def w2_target(feats_HWC: jax.Array, weights_HW: Optional[jax.Array] = None, eps: float = 1e-4):
    """The style's ``(mean_C, cov_CxC, cov_sqrt_CxC)`` for :func:`w2_loss`, the covariance regularised by ``eps * I``.

    The square root (:func:`sqrtm_psd`, one ``eigh``) is computed here, once per style; the loss only multiplies by it.

    Example:
      >>> import jax.numpy as jnp
      >>> m, c, c_sqrt = w2_target(jnp.arange(12.0).reshape(2, 3, 2))  # both channels: 0, 2, ..., 10 (+1)
      >>> c.shape, bool(jnp.allclose(c_sqrt @ c_sqrt, c, rtol=1e-5))
      ((2, 2), True)
    """
    return w2_target_from_stats(*feature_stats(feats_HWC, weights_HW), eps=eps)


def w2_loss(
    feats_HWC: jax.Array,
    target_mean_C: jax.Array,
    target_cov_CxC: jax.Array,
    target_cov_sqrt_CxC: jax.Array,
    weights_HW: Optional[jax.Array] = None,
    eps: float = 1e-4,
) -> jax.Array:
    """Squared 2-Wasserstein distance between the Gaussian fits of the features and of the style, per channel.

    ``(|m - m_t|^2 + tr(Cov + C_t - 2 (C_t^1/2 Cov C_t^1/2)^1/2)) / C`` with ``(m, Cov)`` from :func:`feature_stats`
    (``weights_HW`` for a guided region), ``Cov += eps * I`` (as the target's, see :func:`w2_target`): the normalisation
    of crowsonkb/style-transfer-pytorch's ``StyleLossW2`` (means over channels), so its size does not grow with C.

    The cross term is computed without forming ``C_t^1/2 Cov C_t^1/2``: with ``D = [sqrt(w) (F - m); sqrt(eps) I]``
    ([N + C, C], ``D^T D = Cov``), ``tr((C_t^1/2 Cov C_t^1/2)^1/2)`` is the sum of the singular values of
    ``D C_t^1/2``, taken from its QR factor R ([C, C]). The product squares the condition number, and in float32
    an ``eigh`` of it loses every direction with less than ~3e-4 of the largest variance (on ReLU features: errors of
    ~2 on a true loss of 5, negative losses at the optimum); QR + SVD stays at float32 accuracy. The gradient
    (``Q U V^T``) is bounded, also for rank-deficient covariances. Weights are data: not differentiated.

    Example:
      >>> import jax.numpy as jnp
      >>> style = jnp.arange(12.0).reshape(2, 3, 2)
      >>> target = w2_target(style)
      >>> abs(float(w2_loss(style, *target))) < 1e-4                   # the style's own statistics
      True
      >>> round(float(w2_loss(style + 3.0, *target)), 3)               # shifted by 3: |m - m_t|^2 / C = 18 / 2
      9.0
    """
    c = feats_HWC.shape[-1]
    p_N, mean_C, d_NC = _weighted_centered(feats_HWC, weights_HW)
    p_N = jax.lax.stop_gradient(p_N)
    sqrt_p_N = jnp.where(p_N > 0, jnp.sqrt(jnp.where(p_N > 0, p_N, 1.0)), 0.0)
    d_MxC = jnp.concatenate([sqrt_p_N[:, None] * d_NC, jnp.sqrt(eps) * jnp.eye(c, dtype=d_NC.dtype)], axis=0)
    cross = _nuclear_norm_tall(jnp.matmul(d_MxC, target_cov_sqrt_CxC, precision=_HI))
    cov_term = jnp.sum(jnp.square(d_MxC)) + jnp.trace(target_cov_CxC) - 2.0 * cross
    return (jnp.sum(jnp.square(mean_C - target_mean_C)) + cov_term) / c


# --- Sorted (quantile) matching: sliced Wasserstein and histogram losses ---


def resample_quantiles(sorted_KxP: jax.Array, n: int) -> jax.Array:
    """The quantile function given by K sorted values per column, sampled at N = ``n`` levels: [K, P] -> [n, P].

    Row ``k`` is the quantile at level ``k / (K - 1)``; the result's row ``r`` is its linear interpolation at
    ``r / (n - 1)`` (``np.quantile(values, np.linspace(0, 1, n))``). Brings a style's sorted values to the generated
    image's number of positions; the identity when K = n. Interpolation weights are static (K and n are shapes).

    Example:
      >>> import jax.numpy as jnp
      >>> resample_quantiles(jnp.array([[0.0], [10.0]]), 3)[:, 0].tolist()     # 2 values -> 3 quantiles
      [0.0, 5.0, 10.0]
      >>> resample_quantiles(jnp.array([[0.0], [1.0], [5.0]]), 2)[:, 0].tolist()  # min and max
      [0.0, 5.0]
    """
    k = sorted_KxP.shape[0]
    if k == n:
        return sorted_KxP
    if k == 1:
        return jnp.broadcast_to(sorted_KxP, (n,) + sorted_KxP.shape[1:])
    pos = np.arange(n, dtype=np.float64) * (k - 1) / max(n - 1, 1)
    lo = np.minimum(np.floor(pos).astype(np.int32), k - 2)
    frac = jnp.asarray((pos - lo)[:, None], sorted_KxP.dtype)
    return sorted_KxP[lo] * (1.0 - frac) + sorted_KxP[lo + 1] * frac


def _sorted_match(values_NxP: jax.Array, sorted_targets_KxP: jax.Array) -> jax.Array:
    """``mean((sort(values) - quantiles of the target at N levels)^2)`` over positions and columns."""
    ref = resample_quantiles(sorted_targets_KxP, values_NxP.shape[0])
    return jnp.mean(jnp.square(jnp.sort(values_NxP, axis=0) - ref))


def sliced_projections(key: jax.Array, c: int, n_proj: int, dtype=jnp.float32) -> jax.Array:
    """``n_proj`` random unit directions in R^C, [C, P]: normalised standard normals, i.e. uniform on the sphere.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = sliced_projections(jax.random.PRNGKey(0), 4, 3)
      >>> p.shape, bool(jnp.allclose(jnp.linalg.norm(p, axis=0), 1.0))
      ((4, 3), True)
    """
    g = jax.random.normal(key, (c, n_proj), dtype)
    return g / jnp.linalg.norm(g, axis=0, keepdims=True)


def sliced_target(
    feats_HWC: jax.Array, key: jax.Array, n_proj: Optional[int] = None
) -> Tuple[jax.Array, jax.Array]:
    """Projections and the style's sorted projected features for :func:`sliced_loss`: ([C, P], [N_style, P]).

    ``P = n_proj`` (static; default C, as in Heitz et al.'s code) directions from :func:`sliced_projections` with
    ``key``, so the same key gives the same target. For projections re-drawn at every step (the paper's code), call
    it inside the step on the style's features with ``jax.random.fold_in(key, step)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> proj, sorted_t = sliced_target(jnp.ones((2, 3, 4)), jax.random.PRNGKey(0), n_proj=5)
      >>> proj.shape, sorted_t.shape                                   # [C, P], [H*W, P]
      ((4, 5), (6, 5))
    """
    f_NC = _flat(feats_HWC)
    c = f_NC.shape[1]
    proj_CxP = sliced_projections(key, c, c if n_proj is None else n_proj, f_NC.dtype)
    return proj_CxP, jnp.sort(jnp.matmul(f_NC, proj_CxP, precision=_HI), axis=0)


def sliced_loss(feats_HWC: jax.Array, projections_CxP: jax.Array, sorted_targets_MxP: jax.Array) -> jax.Array:
    """Sliced Wasserstein loss (Heitz et al. 2021): ``mean_{r, j} (sort(F w_j)_r - Q_j(r / (N - 1)))^2``.

    The features [N, C] are projected on the P unit directions ``w_j`` (columns of ``projections_CxP``), each
    projection is sorted over the N positions and compared with the style's quantile function ``Q_j`` (its M sorted
    projections, resampled to N by :func:`resample_quantiles` when M != N). Mean over projections and positions, as
    the paper's code; zero iff every projection's distribution equals the style's. Cost: a [N, C] x [C, P] product
    and a sort of [N, P].

    Example:
      >>> import jax, jax.numpy as jnp
      >>> style = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 2))
      >>> target = sliced_target(style, jax.random.PRNGKey(0))
      >>> float(sliced_loss(style[::-1, ::-1], *target))                # a permutation of the positions
      0.0
      >>> float(sliced_loss(style[:, :2], *target)) > 0.0               # a different distribution, N = 6 vs 12
      True
    """
    return _sorted_match(jnp.matmul(_flat(feats_HWC), projections_CxP, precision=_HI), sorted_targets_MxP)


def hist_target(feats_HWC: jax.Array, n_bins: Optional[int] = 256) -> jax.Array:
    """The style's per-channel histogram for :func:`hist_loss`: its quantiles at ``k / n_bins``, [n_bins + 1, C].

    Equal-mass bins: the quantile function is stored at ``n_bins + 1`` evenly spaced levels (default 256 bins), the
    bin edges of a histogram whose bins hold equal shares of the positions. Unlike the equal-width bins over
    [min, max] of the usual binned remap, no bin is wasted on empty ranges (post-ReLU activations put a large mass at
    0 and a long tail above), and the remap reduces to exact matching as the bins get finer.
    ``n_bins=None`` keeps all N_style sorted values, i.e. exact sort-based histogram matching.

    Example:
      >>> import jax.numpy as jnp
      >>> q = hist_target(jnp.arange(10.0).reshape(1, 10, 1), n_bins=2)   # quantiles at 0, 1/2, 1
      >>> q[:, 0].tolist()
      [0.0, 4.5, 9.0]
    """
    sorted_NC = jnp.sort(_flat(feats_HWC), axis=0)
    return sorted_NC if n_bins is None else resample_quantiles(sorted_NC, n_bins + 1)


def hist_remap(feats_HWC: jax.Array, quantiles_KxC: jax.Array) -> jax.Array:
    """Histogram matching of every channel to the style's: [H, W, C] -> [H, W, C].

    The position of rank r (0-based, over the N positions of its channel; ties by position) gets the style's quantile
    at ``r / (N - 1)``, linearly interpolated between the stored quantiles (:func:`resample_quantiles`): the inverse
    of the style's piecewise-linear CDF applied to each value's empirical CDF. Depends on the features only through
    their ranks, hence piecewise constant.

    Example:
      >>> import jax.numpy as jnp
      >>> q = jnp.array([[0.0], [10.0]])                                 # style channel: uniform on [0, 10]
      >>> hist_remap(jnp.array([[[3.0], [-1.0], [7.0]]]), q)[0, :, 0].tolist()   # ranks 1, 0, 2
      [5.0, 0.0, 10.0]
    """
    h, w, c = feats_HWC.shape
    f_NC = _flat(feats_HWC)
    order_NC = jnp.argsort(f_NC, axis=0)
    matched_NC = resample_quantiles(quantiles_KxC, h * w)  # value of rank r, per channel
    out_NC = jnp.zeros_like(f_NC).at[order_NC, jnp.arange(c)[None, :]].set(matched_NC)
    return out_NC.reshape(h, w, c)


def hist_loss(feats_HWC: jax.Array, quantiles_KxC: jax.Array) -> jax.Array:
    """Histogram loss (Risser et al. 2017): ``mean((F - R(F))^2)`` with ``R`` = :func:`hist_remap`, a constant.

    Mean over positions and channels; ``R(F)`` is wrapped in ``jax.lax.stop_gradient`` as in the paper (it is locally
    constant in F, so the gradient ``2 (F - R(F)) / (N C)`` is the exact one wherever the ranks do not tie). The value
    equals the sliced loss with the C coordinate axes as projections. Cost: an argsort of [N, C] and a scatter.

    Example:
      >>> import jax.numpy as jnp
      >>> style = jnp.arange(6.0).reshape(2, 3, 1)
      >>> q = hist_target(style, n_bins=None)
      >>> float(hist_loss(style[::-1], q)), float(hist_loss(2.0 * style, q))   # same values; each one doubled
      (0.0, 9.166666984558105)
    """
    return jnp.mean(jnp.square(feats_HWC - jax.lax.stop_gradient(hist_remap(feats_HWC, quantiles_KxC))))


# --- several styles and several kinds ---


def _normalised(blend_S: jax.Array) -> jax.Array:
    return blend_S / jnp.sum(blend_S)


def w2_blend(means_SxC: jax.Array, covs_SxCxC: jax.Array, blend_S: jax.Array, eps: float = 1e-4):
    """The W2 target ``(mean, cov + eps I, sqrt)`` of S styles blended by ``blend_S``: means and second raw moments
    ``C_s + m_s m_s^T`` are averaged with the normalised weights and the covariance recovered from them (the moments
    of the styles' mixture distribution). Takes one :func:`sqrtm_psd` (an ``eigh`` of [C, C]).

    Example:
      >>> import jax.numpy as jnp
      >>> m, c, _ = w2_blend(jnp.array([[0.0], [2.0]]), jnp.zeros((2, 1, 1)), jnp.array([1.0, 1.0]), eps=0.0)
      >>> float(m[0]), float(c[0, 0])          # half the mass at 0, half at 2: mean 1, variance 1
      (1.0, 1.0)
    """
    p_S = _normalised(blend_S)
    mean_C = jnp.matmul(p_S, means_SxC, precision=_HI)
    second = jnp.einsum("s,scd->cd", p_S, covs_SxCxC + means_SxC[:, :, None] * means_SxC[:, None, :],
                        precision=_HI)
    return w2_target_from_stats(mean_C, second - jnp.outer(mean_C, mean_C), eps=eps)


def stack_quantiles(sorted_list) -> jax.Array:
    """Sorted values (quantile functions) of S styles, [K_s, P] each, resampled to the largest K and stacked:
    [S, K, P] (:func:`resample_quantiles`; the identity when all K_s are equal)."""
    k = max(int(a.shape[0]) for a in sorted_list)
    return jnp.stack([resample_quantiles(a, k) for a in sorted_list])


def blend_quantiles(sorted_SxKxP: jax.Array, blend_S: jax.Array) -> jax.Array:
    """``sum_s b_s Q_s / sum_s b_s``: the blended quantile functions [K, P] of :func:`stack_quantiles`'s output.

    Example:
      >>> import jax.numpy as jnp
      >>> blend_quantiles(jnp.array([[[0.0], [1.0]], [[2.0], [5.0]]]), jnp.array([3.0, 1.0]))[:, 0].tolist()
      [0.5, 2.0]
    """
    return jnp.einsum("s,skp->kp", _normalised(blend_S), sorted_SxKxP, precision=_HI)


def mix_kinds(terms, kind_weights_K: jax.Array, kinds) -> jax.Array:
    """``sum_k w_k terms[kind_k]``: the style loss of several kinds (``kinds``: their names, in the order of
    ``kind_weights_K``). A kind without a term is an error naming it (its targets were not computed).

    Example:
      >>> import jax.numpy as jnp
      >>> float(mix_kinds({"gram": 2.0, "w2": 3.0}, jnp.array([1.0, 0.5]), ("gram", "w2")))
      3.5
    """
    missing = [k for k in kinds if k not in terms]
    if missing:
        raise ValueError(f"no targets for the style loss kind(s) {', '.join(missing)}; compute the targets with the "
                         "same style_losses as the loss (objective.compute_targets)")
    total = jnp.zeros((), jnp.float32)
    for j, kind in enumerate(kinds):
        total = total + kind_weights_K[j] * terms[kind]
    return total
