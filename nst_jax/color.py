"""Colour control for style transfer (Gatys et al. 2017, "Controlling Perceptual Factors", Section 5).

Two ways to keep the content image's colours:

* **Luminance-only transfer**: run style transfer on luminance (Y of YIQ) images only, after matching the style's
  luminance statistics to the content's (2017 Eq. 6), then recombine the result's Y with the content's I and Q.
* **Colour histogram matching**: before transfer, recolour the style image with an affine map ``x' = A x + b`` per
  pixel so that its RGB mean and 3x3 covariance equal the content's (or vice versa).

Everything here is a pure, jit-compatible function of ``image_HW3`` arrays (RGB, nominally in [0, 1]); mode names are
static Python strings, ``eps`` may be a traced scalar. No function clips except the wiring hooks
:func:`prepare_color` / :func:`finish_color` (``clip=True``).

Conventions:

* statistics are over all H*W pixels; covariance is the **population** covariance (divide by N = H*W);
* arithmetic is at least float32 (inputs are promoted), matrix products use ``Precision.HIGHEST``;
* symmetric matrices are symmetrised ``(S + S^T) / 2`` before ``eigh`` and their eigenvalues clamped to ``>= eps``
  (the regularised covariances ``Sigma + eps I`` have all eigenvalues ``>= eps`` in exact arithmetic).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from nst_jax.config import COLOR_MODES, LUM_MATCH_MODES, MATCH_MODES

__all__ = [
    "RGB_TO_YIQ",
    "YIQ_TO_RGB",
    "COLOR_MODES",
    "MATCH_MODES",
    "LUM_MATCH_MODES",
    "rgb_to_yiq",
    "yiq_to_rgb",
    "luminance",
    "match_luminance",
    "recombine_luminance",
    "original_colors",
    "color_stats",
    "color_affine",
    "match_color",
    "prepare_color",
    "finish_color",
    "check_choice",
]

_HI = jax.lax.Precision.HIGHEST

# NTSC YIQ (FCC): rows are Y, I, Q as linear combinations of R, G, B (same values as skimage.color.yiq_from_rgb).
#   Y = 0.299      R + 0.587      G + 0.114      B
#   I = 0.59590059 R - 0.27455667 G - 0.32134392 B
#   Q = 0.21153661 R - 0.52273617 G + 0.31119955 B
_RGB_TO_YIQ_64 = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.59590059, -0.27455667, -0.32134392],
        [0.21153661, -0.52273617, 0.31119955],
    ],
    dtype=np.float64,
)
# Exact matrix inverse computed once in float64 (not the rounded textbook inverse), so yiq_to_rgb(rgb_to_yiq(x)) == x
# to float32 rounding.
_YIQ_TO_RGB_64 = np.linalg.inv(_RGB_TO_YIQ_64)

RGB_TO_YIQ = _RGB_TO_YIQ_64.astype(np.float32)
"""[3, 3] float32, ``yiq = RGB_TO_YIQ @ rgb`` per pixel."""
YIQ_TO_RGB = _YIQ_TO_RGB_64.astype(np.float32)
"""[3, 3] float32, ``np.linalg.inv(RGB_TO_YIQ)`` computed in float64."""
RGB_TO_YIQ.setflags(write=False)
YIQ_TO_RGB.setflags(write=False)


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------


def check_choice(kind: str, value, choices: Sequence[str]) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (a one-line ``ValueError`` naming ``kind``)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


def _as_image(name: str, image) -> jax.Array:
    x = jnp.asarray(image)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be an RGB image of shape [H, W, 3], got shape {tuple(x.shape)}")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _as_plane(name: str, plane) -> jax.Array:
    x = jnp.asarray(plane)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a single-channel image of shape [H, W], got shape {tuple(x.shape)}")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _apply_matrix(m64: np.ndarray, image_HW3: jax.Array) -> jax.Array:
    m = jnp.asarray(m64, dtype=image_HW3.dtype)
    return jnp.einsum("hwc,dc->hwd", image_HW3, m, precision=_HI)


# ----------------------------------------------------------------------------------------------------------------
# colour spaces
# ----------------------------------------------------------------------------------------------------------------


def rgb_to_yiq(image_HW3) -> jax.Array:
    """RGB ``[H, W, 3]`` -> YIQ ``[H, W, 3]`` with the NTSC matrix :data:`RGB_TO_YIQ` (no clipping, no offset).

    Y = 0.299 R + 0.587 G + 0.114 B is in [0, 1] for RGB in [0, 1]; I and Q are signed (about +-0.6 / +-0.52).
    
    Example:
      >>> import numpy as np
      >>> x = np.random.default_rng(0).random((4, 4, 3), dtype=np.float32)
      >>> bool(np.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5))
      True
      >>> round(float(luminance(np.ones((1, 1, 3), np.float32))[0, 0]), 6)   # Y of white
      1.0
    """
    return _apply_matrix(_RGB_TO_YIQ_64, _as_image("image_HW3", image_HW3))


def yiq_to_rgb(image_HW3) -> jax.Array:
    """YIQ ``[H, W, 3]`` -> RGB ``[H, W, 3]`` with the exact inverse :data:`YIQ_TO_RGB` (no clipping).

    Example:
      >>> import numpy as np
      >>> grey = np.array([[[0.5, 0.0, 0.0]]], np.float32)       # Y = 0.5 with no chroma (I = Q = 0)
      >>> [round(float(v), 4) for v in yiq_to_rgb(grey)[0, 0]]   # is mid grey
      [0.5, 0.5, 0.5]
    """
    return _apply_matrix(_YIQ_TO_RGB_64, _as_image("image_HW3", image_HW3))


def luminance(image_HW3) -> jax.Array:
    """Luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` of an RGB ``[H, W, 3]`` image, shape ``[H, W]``.

    Identical to ``rgb_to_yiq(image_HW3)[..., 0]``.
    """
    x = _as_image("image_HW3", image_HW3)
    w = jnp.asarray(_RGB_TO_YIQ_64[0], dtype=x.dtype)
    return jnp.einsum("hwc,c->hw", x, w, precision=_HI)


# ----------------------------------------------------------------------------------------------------------------
# luminance-only transfer
# ----------------------------------------------------------------------------------------------------------------


def match_luminance(style_Y, content_Y, mode: str = "meanstd", eps=1e-5) -> jax.Array:
    """Match the style luminance ``[H_s, W_s]`` to the content luminance ``[H_c, W_c]`` statistics.

    * ``"meanstd"`` (2017 paper, Eq. 6): ``L_s' = sigma_c / sigma_s * (L_s - mu_s) + mu_c``, with ``sigma_s``
      replaced by ``max(sigma_s, eps)`` so a constant style image stays finite. Exact mean and std for
      ``sigma_s > eps``.
    * ``"mean"`` (the shift in the paper's published code): ``L_s' = L_s - mu_s + mu_c``.
    * ``"none"``: identity.

    mu and sigma are the mean and population standard deviation over all pixels. Returns ``[H_s, W_s]``; no clipping.

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> style_Y = rng.random((8, 8), dtype=np.float32)
      >>> content_Y = 0.5 + 0.2 * rng.random((6, 6), dtype=np.float32)
      >>> out = match_luminance(style_Y, content_Y)                # "meanstd": the content's mean and std
      >>> [bool(np.isclose(a, b, atol=1e-5)) for a, b in [(out.mean(), content_Y.mean()), (out.std(), content_Y.std())]]
      [True, True]
      >>> flat = match_luminance(np.full((4, 4), 0.7, np.float32), content_Y)   # constant style: finite, = mu_c
      >>> bool(np.allclose(flat, content_Y.mean(), atol=1e-6))
      True
    """
    check_choice("luminance match mode", mode, LUM_MATCH_MODES)
    ls = _as_plane("style_Y", style_Y)
    lc = _as_plane("content_Y", content_Y)
    if mode == "none":
        return ls
    mu_s, mu_c = jnp.mean(ls), jnp.mean(lc)
    if mode == "mean":
        return ls - mu_s + mu_c
    # two-pass centring: removes the rounding error of mu_s, so a constant style gives exactly zero deviations
    # (otherwise float32 rounding noise ~1e-8 would be amplified by sigma_c / eps).
    d_s = ls - mu_s
    d_s = d_s - jnp.mean(d_s)
    sigma_s = jnp.sqrt(jnp.mean(jnp.square(d_s)))
    sigma_c = jnp.sqrt(jnp.mean(jnp.square(lc - mu_c)))
    scale = sigma_c / jnp.maximum(sigma_s, jnp.asarray(eps, ls.dtype))
    return scale * d_s + mu_c


def recombine_luminance(result_Y, content_HW3) -> jax.Array:
    """RGB ``[H, W, 3]`` whose YIQ has Y = ``result_Y`` ``[H, W]`` and I, Q of ``content_HW3`` ``[H, W, 3]``.

    This is the last step of luminance-only transfer (2017 paper, Section 5.1). No clipping inside: the result can
    leave [0, 1] (callers clip, e.g. :func:`finish_color` with ``clip=True``).
    """
    y = _as_plane("result_Y", result_Y)
    yiq = rgb_to_yiq(content_HW3)
    if y.shape != yiq.shape[:2]:
        raise ValueError(
            f"result_Y shape {tuple(y.shape)} must equal the content's [H, W] {tuple(yiq.shape[:2])}; "
            "resize one of them"
        )
    dtype = jnp.promote_types(y.dtype, yiq.dtype)
    yiq = jnp.concatenate([y[..., None].astype(dtype), yiq[..., 1:].astype(dtype)], axis=-1)
    return yiq_to_rgb(yiq)


def original_colors(result_HW3, content_HW3) -> jax.Array:
    """Post-hoc colour preservation (neural-style's ``-original_colors 1``): keep the luminance of ``result_HW3``,
    take I and Q from ``content_HW3`` (both ``[H, W, 3]``). No clipping inside.

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> result, content = rng.random((4, 4, 3), dtype=np.float32), rng.random((4, 4, 3), dtype=np.float32)
      >>> out = original_colors(result, content)
      >>> bool(np.allclose(luminance(out), luminance(result), atol=1e-5))            # the result's Y
      True
      >>> bool(np.allclose(rgb_to_yiq(out)[..., 1:], rgb_to_yiq(content)[..., 1:], atol=1e-5))  # content's I, Q
      True
    """
    return recombine_luminance(luminance(result_HW3), content_HW3)


# ----------------------------------------------------------------------------------------------------------------
# colour histogram matching (affine map matching mean and covariance)
# ----------------------------------------------------------------------------------------------------------------


def color_stats(image_HW3) -> tuple[jax.Array, jax.Array]:
    """Mean ``[3]`` and **population** covariance ``[3, 3]`` (divide by N = H*W) of the pixels of ``image_HW3``."""
    x = _as_image("image_HW3", image_HW3)
    x_N3 = x.reshape(-1, 3)
    mean_3 = jnp.mean(x_N3, axis=0)
    d_N3 = x_N3 - mean_3
    cov_3x3 = jnp.einsum("nc,nd->cd", d_N3, d_N3, precision=_HI) / x_N3.shape[0]
    return mean_3, 0.5 * (cov_3x3 + cov_3x3.T)


def _sym(m):
    return 0.5 * (m + m.T)


def _sqrt_and_inv_sqrt(s_3x3, floor):
    """Symmetric square root and inverse square root of an SPD matrix via one ``eigh`` (eigenvalues >= floor)."""
    lam, v = jnp.linalg.eigh(_sym(s_3x3))
    lam = jnp.maximum(lam, floor)
    r = jnp.sqrt(lam)
    sqrt = jnp.einsum("ik,k,jk->ij", v, r, v, precision=_HI)
    inv_sqrt = jnp.einsum("ik,k,jk->ij", v, 1.0 / r, v, precision=_HI)
    return _sym(sqrt), _sym(inv_sqrt)


def color_affine(mean_s, cov_s, mean_t, cov_t, mode: str = "pca", eps=1e-5) -> tuple[jax.Array, jax.Array]:
    """Affine map ``x' = A x + b`` taking (mean_s ``[3]``, cov_s ``[3, 3]``) to (mean_t, cov_t); returns ``(A, b)``.

    With ``S = cov_s + eps I`` and ``T = cov_t + eps I`` (so singular covariances, e.g. greyscale images, are defined):

    * ``"chol"``: ``A = L_T L_S^{-1}`` with Cholesky factors ``S = L_S L_S^T``, ``T = L_T L_T^T``;
    * ``"pca"``: ``A = T^{1/2} S^{-1/2}`` (symmetric square roots via ``eigh``);
    * ``"sym"``: ``A = S^{-1/2} (S^{1/2} T S^{1/2})^{1/2} S^{-1/2}`` (the symmetric optimal-transport / Monge map);

    and ``b = mean_t - A mean_s``. Every mode gives ``A S A^T = T`` exactly; they differ by a rotation.
    ``eps`` must be > 0 for singular covariances; it may be a traced scalar. ``mode`` is static.
    """
    check_choice("colour match mode", mode, MATCH_MODES)
    mean_s, cov_s = jnp.asarray(mean_s), jnp.asarray(cov_s)
    mean_t, cov_t = jnp.asarray(mean_t), jnp.asarray(cov_t)
    for name, v, shape in (("mean_s", mean_s, (3,)), ("cov_s", cov_s, (3, 3)),
                           ("mean_t", mean_t, (3,)), ("cov_t", cov_t, (3, 3))):
        if v.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(v.shape)}")
    dtype = jnp.result_type(mean_s, cov_s, mean_t, cov_t, jnp.float32)
    eps = jnp.asarray(eps, dtype)
    eye = jnp.eye(3, dtype=dtype)
    s = _sym(cov_s.astype(dtype)) + eps * eye
    t = _sym(cov_t.astype(dtype)) + eps * eye
    floor = jnp.maximum(eps, jnp.finfo(dtype).tiny)
    if mode == "chol":
        l_s = jnp.linalg.cholesky(s)
        l_t = jnp.linalg.cholesky(t)
        # A L_S = L_T  <=>  L_S^T A^T = L_T^T
        a = jsl.solve_triangular(l_s.T, l_t.T, lower=False).T
    elif mode == "pca":
        _, s_isqrt = _sqrt_and_inv_sqrt(s, floor)
        t_sqrt, _ = _sqrt_and_inv_sqrt(t, floor)
        a = jnp.matmul(t_sqrt, s_isqrt, precision=_HI)
    else:  # "sym"
        s_sqrt, s_isqrt = _sqrt_and_inv_sqrt(s, floor)
        m = jnp.matmul(jnp.matmul(s_sqrt, t, precision=_HI), s_sqrt, precision=_HI)
        m_sqrt, _ = _sqrt_and_inv_sqrt(m, floor * floor)
        a = _sym(jnp.matmul(jnp.matmul(s_isqrt, m_sqrt, precision=_HI), s_isqrt, precision=_HI))
    b = mean_t.astype(dtype) - jnp.matmul(a, mean_s.astype(dtype), precision=_HI)
    return a, b


def match_color(source_HW3, target_HW3, mode: str = "pca", eps=1e-5) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Colour histogram matching (2017 paper, Section 5.2): recolour ``source_HW3`` so its pixel mean and population
    covariance equal those of ``target_HW3`` (the two images may differ in size).

    Returns ``(recoloured_source_HW3, A_3x3, b_3)`` with ``x' = A x + b`` applied to every source pixel; ``A`` from
    :func:`color_affine` (``mode`` in :data:`MATCH_MODES`, static under jit; ``eps * I`` added to each covariance).
    No clipping is done here: the recoloured image can leave [0, 1]; :func:`prepare_color` clips afterwards when asked.
    With ``eps > 0`` the recoloured covariance is ``cov_t + eps (I - A A^T)``, i.e. exact up to O(eps).
    
    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(1)
      >>> src, tgt = rng.random((16, 16, 3), dtype=np.float32), rng.random((16, 16, 3), dtype=np.float32) ** 2
      >>> out = match_color(src, tgt, "pca")[0]     # same RGB mean and covariance as tgt
      >>> all(bool(np.allclose(a, b, atol=1e-4)) for a, b in zip(color_stats(out), color_stats(tgt)))
      True
    """
    check_choice("colour match mode", mode, MATCH_MODES)
    src = _as_image("source_HW3", source_HW3)
    tgt = _as_image("target_HW3", target_HW3)
    mean_s, cov_s = color_stats(src)
    mean_t, cov_t = color_stats(tgt)
    a, b = color_affine(mean_s, cov_s, mean_t, cov_t, mode=mode, eps=eps)
    out = jnp.einsum("hwc,dc->hwd", src.astype(a.dtype), a, precision=_HI) + b
    return out, a, b


# ----------------------------------------------------------------------------------------------------------------
# wiring hooks for stylize / sweep
# ----------------------------------------------------------------------------------------------------------------


def _grey3(y_HW) -> jax.Array:
    return jnp.repeat(y_HW[..., None], 3, axis=-1)


def _maybe_clip(x, clip: bool):
    return jnp.clip(x, 0.0, 1.0) if clip else x


def prepare_color(
    content_HW3,
    styles: Sequence,
    color: str,
    *,
    match_mode: str = "pca",
    lum_match: str = "meanstd",
    eps=1e-5,
    clip: bool = True,
) -> tuple[jax.Array, list[jax.Array]]:
    """Transform the inputs of style transfer for colour control; returns ``(content_in_HW3, styles_in)``.

    ``styles`` is a list of ``[H_s, W_s, 3]`` images. ``color`` (static) in :data:`COLOR_MODES`:

    * ``"luminance"``: content -> its luminance; each style -> its luminance matched to the content's with
      :func:`match_luminance` (``lum_match``); all replicated to 3 channels ``[H, W, 3]`` (R = G = B = Y);
    * ``"match-style"``: each style recoloured to the content's colour statistics (:func:`match_color`,
      ``match_mode``) -- the 2017 paper's colour histogram matching;
    * ``"match-content"``: the content recoloured to the first style's colour statistics;
    * ``"none"`` / ``"original"``: unchanged (``"original"`` acts only in :func:`finish_color`).

    ``clip=True`` clips every returned image to [0, 1] (the identity for in-range inputs). Clipping after matching
    perturbs the matched mean/covariance (or luminance mean/std) slightly wherever values left [0, 1].
    Pure and jit-compatible with ``color``, ``match_mode``, ``lum_match`` and ``clip`` static.
    """
    check_choice("colour mode", color, COLOR_MODES)
    check_choice("colour match mode", match_mode, MATCH_MODES)
    check_choice("luminance match mode", lum_match, LUM_MATCH_MODES)
    content = _as_image("content_HW3", content_HW3)
    styles_in = [_as_image(f"styles[{i}]", s) for i, s in enumerate(styles)]
    if color == "luminance":
        content_y = luminance(content)
        styles_in = [_grey3(match_luminance(luminance(s), content_y, lum_match, eps)) for s in styles_in]
        content = _grey3(content_y)
    elif color == "match-style":
        styles_in = [match_color(s, content, match_mode, eps)[0] for s in styles_in]
    elif color == "match-content":
        if not styles_in:
            raise ValueError("color='match-content' needs at least one style image; pass styles or use another mode")
        content = match_color(content, styles_in[0], match_mode, eps)[0]
    return _maybe_clip(content, clip), [_maybe_clip(s, clip) for s in styles_in]


def finish_color(result_HW3, content_HW3, color: str, *, clip: bool = True) -> jax.Array:
    """Post-process the optimised image ``result_HW3`` ``[H, W, 3]`` with the original ``content_HW3`` (same shape).

    * ``"luminance"``: :func:`recombine_luminance` of the result's Y with the original content's I, Q;
    * ``"original"``: :func:`original_colors` (the same formula, applied to a full-colour result);
    * ``"none"`` / ``"match-style"`` / ``"match-content"``: identity.

    ``clip=True`` clips to [0, 1] at the end (for every mode). Pure and jit-compatible with ``color``/``clip`` static.
    """
    check_choice("colour mode", color, COLOR_MODES)
    result = _as_image("result_HW3", result_HW3)
    if color in ("luminance", "original"):
        content = _as_image("content_HW3", content_HW3)
        if content.shape != result.shape:
            raise ValueError(
                f"content shape {tuple(content.shape)} must equal the result shape {tuple(result.shape)}; "
                "resize the content to the result size"
            )
        result = original_colors(result, content)
    return _maybe_clip(result, clip)
