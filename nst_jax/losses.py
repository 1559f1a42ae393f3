"""Style-transfer losses as pure functions (Gatys et al. 2016, 2017).

Conventions (the ``gatys`` preset; every function states its own):

* feature maps are ``feats_HWC`` of one image, N = H*W positions, C channels;
* Gram matrix ``G = F^T F / N`` ([C, C]), i.e. the 2016 paper's Eq. 3 averaged over positions ("hw" normalisation);
  the ``neural-style`` convention divides by C*N instead ("chw");
* content loss ``mean((F - P)^2)`` over positions and channels (2016 Eq. 1 up to the constant 1/2 and the mean);
* style loss ``sum_l w_l * mean((G_l - A_l)^2)`` (2016 Eqs. 4-5, mean instead of the 1/(4 N^2 M^2) sum), with
  ``w_l = 1 / C_l^2`` by default (the 2017 paper's code);
* total loss ``alpha * content + beta * style + tv_weight * tv`` (2016 Eq. 7 plus a TV regulariser).

Weights are arguments (traced arrays under jit), never Python constants closed over by compiled code.
"""

from __future__ import annotations

import warnings
from typing import List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

__all__ = [
    "gram",
    "content_loss",
    "gram_loss",
    "style_loss",
    "tv_loss",
    "blend_grams",
    "default_layer_weights",
    "normalize_guides",
    "report_empty_regions",
    "guided_gram",
    "guided_style_loss",
    "guided_sum",
    "guided_sum_loss",
    "stacked_gram",
]


@jax.custom_jvp
def _gram_sum(f_NC: jax.Array) -> jax.Array:
    """``F^T F`` of [N, C] features, [C, C]. Its JVP is ``S + S^T`` with ``S = F^T dF``, so reverse mode needs one
    [N, C] product ``F (dG + dG^T)`` instead of the two that differentiating the einsum gives (half the memory XLA
    holds for it, since it computes these products as early as it can)."""
    return jnp.einsum("nc,nd->cd", f_NC, f_NC, precision=jax.lax.Precision.HIGHEST)


@_gram_sum.defjvp
def _gram_sum_jvp(primals, tangents):
    (f_NC,), (t_NC,) = primals, tangents
    s_CxC = jnp.einsum("nc,nd->cd", f_NC, t_NC, precision=jax.lax.Precision.HIGHEST)
    return _gram_sum(f_NC), s_CxC + s_CxC.T


def gram(feats_HWC: jax.Array, norm: str = "hw") -> jax.Array:
    """Gram matrix ``G = F^T F / N`` of a [H, W, C] feature map, [C, C].

    ``norm="hw"``: N = H*W (gatys); ``norm="chw"``: divide by C*H*W (jcjohnson/neural-style); ``norm="none"``: raw sum.
    
    Example:
      >>> import jax.numpy as jnp
      >>> G = gram(jnp.ones((2, 3, 4)))        # feats_HWC with H=2, W=3, C=4; G = F^T F / (H W)
      >>> G.shape, float(G[0, 0])
      ((4, 4), 1.0)
    """
    h, w, c = feats_HWC.shape
    f_NC = feats_HWC.reshape(h * w, c)
    g = _gram_sum(f_NC)
    if norm == "hw":
        return g / (h * w)
    if norm == "chw":
        return g / (c * h * w)
    if norm == "none":
        return g
    raise ValueError(f"gram norm must be 'hw', 'chw' or 'none', got {norm!r}")


def content_loss(feats_HWC: jax.Array, target_HWC: jax.Array) -> jax.Array:
    """``mean((F - P)^2)`` over all positions and channels (2016 paper, Eq. 1, averaged).

    Example:
      >>> import jax.numpy as jnp
      >>> float(content_loss(jnp.zeros((2, 2, 3)), jnp.full((2, 2, 3), 2.0)))   # mean((F - P)^2)
      4.0
    """
    return jnp.mean(jnp.square(feats_HWC - target_HWC))


def gram_loss(gram_CxC: jax.Array, target_CxC: jax.Array) -> jax.Array:
    """``mean((G - A)^2)`` over the C*C entries (2016 paper, Eq. 4, averaged)."""
    return jnp.mean(jnp.square(gram_CxC - target_CxC))


def default_layer_weights(channels: Sequence[int], convention: str = "inv_c2") -> jax.Array:
    """Per-layer style weights: ``1 / C_l^2`` ("inv_c2", the 2017 paper's code) or all ones ("ones")."""
    c = jnp.asarray(channels, jnp.float32)
    if convention == "inv_c2":
        return 1.0 / jnp.square(c)
    if convention == "ones":
        return jnp.ones_like(c)
    raise ValueError(f"layer weight convention must be 'inv_c2' or 'ones', got {convention!r}")


def blend_grams(grams_SxCxC: jax.Array, blend_S: jax.Array) -> jax.Array:
    """Blend the Gram targets of S style images: ``sum_s b_s A_s / sum_s b_s`` ([S, C, C], [S] -> [C, C])."""
    b = blend_S / jnp.sum(blend_S)
    return jnp.einsum("s,scd->cd", b, grams_SxCxC)


def style_loss(
    feats: Mapping[str, jax.Array],
    target_grams: Mapping[str, jax.Array],
    layers: Sequence[str],
    layer_weights_L: jax.Array,
    norm: str = "hw",
) -> jax.Array:
    """``sum_l w_l * mean((G_l(x) - A_l)^2)`` over ``layers`` (2016 paper, Eq. 5).

    Args:
      feats: ``{layer: feats_HWC}`` of the generated image.
      target_grams: ``{layer: gram_CxC}`` targets (already blended over style images).
      layer_weights_L: [L] weights in the order of ``layers``.

    Example:
      >>> import jax.numpy as jnp
      >>> feats = {"relu1_1": jnp.ones((4, 4, 2))}                  # its Gram is all ones, [2, 2]
      >>> float(style_loss(feats, {"relu1_1": jnp.zeros((2, 2))}, ["relu1_1"], jnp.array([0.5])))  # 0.5 * mean(1^2)
      0.5
      >>> float(style_loss(feats, {"relu1_1": gram(feats["relu1_1"])}, ["relu1_1"], jnp.array([0.5])))  # on target
      0.0
    """
    total = jnp.zeros((), jnp.float32)
    for j, name in enumerate(layers):
        total = total + layer_weights_L[j] * gram_loss(gram(feats[name], norm), target_grams[name])
    return total


def tv_loss(image_HWC: jax.Array) -> jax.Array:
    """Total variation: sum of squared differences of vertical and horizontal neighbours, over channels.

    Computed on the image in [0, 1]; as a sum (not a mean) it grows with the image area, like neural-style's.
    
    Example:
      >>> import jax.numpy as jnp
      >>> float(tv_loss(jnp.array([[[0.0], [1.0]], [[0.0], [1.0]]])))   # two horizontal steps of 1
      2.0
    """
    dy = image_HWC[1:, :, :] - image_HWC[:-1, :, :]
    dx = image_HWC[:, 1:, :] - image_HWC[:, :-1, :]
    return jnp.sum(jnp.square(dy)) + jnp.sum(jnp.square(dx))


# --- Spatial control (Gatys et al. 2017, Sec. 4) ---
#
# Guidance channels ``guides_hwR`` (R regions) at a layer's resolution come from :mod:`nst_jax.guidance`. They are
# normalised per channel to unit mean square, T~^r = T^r / sqrt(mean_p T^r(p)^2), so an all-ones guide reproduces the
# plain statistics exactly and a binary region of area fraction a gets T~ = 1/sqrt(a) inside (its guided Gram is the
# Gram of the region's own features). A channel that is all zero at a layer ("empty") stays zero and is flagged
# invalid; the losses skip it through ``jnp.where`` so neither the value nor the gradient becomes NaN.

_EMPTY_EPS = 1e-12


def normalize_guides(guides_hwR: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """``T~^r = T^r / sqrt(mean_p T^r(p)^2)`` per channel: [h, w, R] -> ([h, w, R], valid_R bool).

    ``valid_R[r]`` is False for an empty channel (mean square <= 1e-12), which is returned as zeros (no NaN).
    """
    ms_R = jnp.mean(jnp.square(guides_hwR), axis=(0, 1))
    valid_R = ms_R > _EMPTY_EPS
    scale_R = jnp.where(valid_R, jax.lax.rsqrt(jnp.where(valid_R, ms_R, 1.0)), 0.0)
    return guides_hwR * scale_R, valid_R


def report_empty_regions(valid_LR, layers: Sequence[str], region_names: Sequence[str]) -> List[Tuple[str, str]]:
    """Host-side: one ``warnings.warn`` listing every (region, layer) whose guide is empty; returns those pairs.

    ``valid_LR``: [L, R] booleans from :func:`normalize_guides` (stacked over layers), possibly AND-ed with the style's.
    """
    import numpy as np

    v = np.asarray(valid_LR, dtype=bool)
    if v.shape != (len(layers), len(region_names)):
        raise ValueError(f"valid_LR has shape {v.shape}, expected ({len(layers)}, {len(region_names)})")
    empty = [(region_names[r], layers[l]) for l, r in zip(*np.nonzero(~v))]
    if empty:
        by_region = {}
        for region, layer in empty:
            by_region.setdefault(region, []).append(layer)
        desc = "; ".join(f"region {k!r} at {', '.join(ls)}" for k, ls in by_region.items())
        warnings.warn(f"empty guidance channel(s), skipped in the guided losses: {desc}", stacklevel=2)
    return empty


def guided_gram(feats_HWC: jax.Array, guides_HWR_normalized: jax.Array, norm: str = "hw") -> jax.Array:
    """Guided Gram matrices ``G^r = (F o T~^r)^T (F o T~^r) / N``, [R, C, C] (2017 paper, Sec. 4.1).

    ``F o T~^r`` multiplies every channel of F by the (normalised) guide at each position; N as in :func:`gram`
    (``"hw"``: H*W, ``"chw"``: C*H*W, ``"none"``: 1). An all-ones guide gives the plain Gram.

    Example:
      >>> import jax.numpy as jnp
      >>> f = jnp.arange(24.0).reshape(2, 3, 4)                     # feats_HWC, C = 4
      >>> g = guided_gram(f, jnp.ones((2, 3, 1)))                   # one all-ones guide: the plain Gram
      >>> g.shape, bool(jnp.allclose(g[0], gram(f)))
      ((1, 4, 4), True)
      >>> t, valid = normalize_guides(jnp.zeros((2, 3, 1)).at[:, :1].set(1.0))   # region = first column
      >>> bool(jnp.allclose(guided_gram(f, t)[0], gram(f[:, :1])))  # = the Gram of the region's own features
      True
    """
    h, w, c = feats_HWC.shape
    if guides_HWR_normalized.shape[:2] != (h, w):
        raise ValueError(
            f"guides are {guides_HWR_normalized.shape[:2]} but the features are {(h, w)}; propagate the guides to "
            "this layer (nst_jax.guidance.propagate_guides)"
        )
    f_NC = feats_HWC.reshape(h * w, c)
    t_NR = guides_HWR_normalized.reshape(h * w, -1)
    g = jax.vmap(lambda t_N: _gram_sum(t_N[:, None] * f_NC), in_axes=1)(t_NR)  # sum_n t_nr^2 f_nc f_nd
    if norm == "hw":
        return g / (h * w)
    if norm == "chw":
        return g / (c * h * w)
    if norm == "none":
        return g
    raise ValueError(f"gram norm must be 'hw', 'chw' or 'none', got {norm!r}")


def _valid_from_guides(guides: Mapping[str, jax.Array], layers: Sequence[str]) -> jax.Array:
    return jnp.stack([jnp.any(guides[name] != 0, axis=(0, 1)) for name in layers])


def _guided_total(per_layer_R, layer_weights_L, region_weights_R, valid_LR):
    total = jnp.zeros((), jnp.float32)
    for j, loss_R in enumerate(per_layer_R):
        r = loss_R.shape[0]
        w_R = jnp.full((r,), 1.0 / r, jnp.float32) if region_weights_R is None else region_weights_R
        total = total + layer_weights_L[j] * jnp.sum(w_R * jnp.where(valid_LR[j], loss_R, 0.0))
    return total


def guided_style_loss(
    feats: Mapping[str, jax.Array],
    target_guided_grams: Mapping[str, jax.Array],
    guides: Mapping[str, jax.Array],
    layers: Sequence[str],
    layer_weights_L: jax.Array,
    region_weights_R: Optional[jax.Array] = None,
    valid_LR: Optional[jax.Array] = None,
    norm: str = "hw",
) -> jax.Array:
    """``sum_l w_l sum_r w_r mean((G^r_l(x) - G^r_l(style_r))^2)`` (2017 paper, Sec. 4.1, Eq. 5 per region).

    Args:
      feats: ``{layer: feats_HWC}`` of the generated image.
      target_guided_grams: ``{layer: [R, C, C]}`` (see :func:`nst_jax.guidance.guided_targets`).
      guides: ``{layer: guides_hwR}`` of the content, propagated and normalised (:func:`normalize_guides`).
      layer_weights_L: [L] in ``layers`` order. region_weights_R: [R], default 1/R.
      valid_LR: [L, R] bool; False entries (empty regions) contribute 0 via ``jnp.where``. Default: the non-zero
        channels of ``guides``.
    """
    if valid_LR is None:
        valid_LR = _valid_from_guides(guides, layers)
    per_layer = []
    for j, n in enumerate(layers):
        diff = guided_gram(feats[n], guides[n], norm) - target_guided_grams[n]
        diff = jnp.where(valid_LR[j][:, None, None], diff, 0.0)  # an empty region's target may even be NaN
        per_layer.append(jnp.mean(jnp.square(diff), axis=(1, 2)))
    return _guided_total(per_layer, layer_weights_L, region_weights_R, valid_LR)


def guided_sum(feats_HWC: jax.Array, guides_HWR_normalized: jax.Array) -> jax.Array:
    """Guided sums ``M^r = (1/N) sum_p T~^r(p) f_p``, [R, C], N = H*W (a guided mean activation per channel).

    With a binary region of area fraction a this is ``sqrt(a)`` times the mean feature over the region.

    Example:
      >>> import jax.numpy as jnp
      >>> f = jnp.arange(24.0).reshape(2, 3, 4)
      >>> m = guided_sum(f, jnp.ones((2, 3, 1)))                    # all-ones guide: the mean feature
      >>> m.shape, bool(jnp.allclose(m[0], f.mean(axis=(0, 1))))
      ((1, 4), True)
      >>> t, _ = normalize_guides(jnp.zeros((2, 3, 1)).at[:, :1].set(1.0))   # first column, a = 1/3
      >>> bool(jnp.allclose(guided_sum(f, t)[0], (1 / 3) ** 0.5 * f[:, :1].mean(axis=(0, 1))))
      True
    """
    h, w, c = feats_HWC.shape
    if guides_HWR_normalized.shape[:2] != (h, w):
        raise ValueError(
            f"guides are {guides_HWR_normalized.shape[:2]} but the features are {(h, w)}; propagate the guides to "
            "this layer (nst_jax.guidance.propagate_guides)"
        )
    t_NR = guides_HWR_normalized.reshape(h * w, -1)
    return jnp.einsum("nr,nc->rc", t_NR, feats_HWC.reshape(h * w, c), precision=jax.lax.Precision.HIGHEST) / (h * w)


def guided_sum_loss(
    feats: Mapping[str, jax.Array],
    target_sums: Mapping[str, jax.Array],
    guides: Mapping[str, jax.Array],
    layers: Sequence[str],
    layer_weights_L: jax.Array,
    region_weights_R: Optional[jax.Array] = None,
    valid_LR: Optional[jax.Array] = None,
) -> jax.Array:
    """``sum_l w_l sum_r w_r mean((M^r_l(x) - M^r_l(style_r))^2)``; arguments as :func:`guided_style_loss`,
    ``target_sums``: ``{layer: [R, C]}``."""
    if valid_LR is None:
        valid_LR = _valid_from_guides(guides, layers)
    per_layer = []
    for j, n in enumerate(layers):
        diff = jnp.where(valid_LR[j][:, None], guided_sum(feats[n], guides[n]) - target_sums[n], 0.0)
        per_layer.append(jnp.mean(jnp.square(diff), axis=1))
    return _guided_total(per_layer, layer_weights_L, region_weights_R, valid_LR)


def stacked_gram(
    feats_HWC: jax.Array, guides_HWR: jax.Array, guide_scale: float | jax.Array = 1.0, norm: str = "hw"
) -> jax.Array:
    """Gram of the features stacked with the guide channels, ``[F, s*T]`` -> [C+R, C+R] (2017 paper, Sec. 4).

    The raw (un-normalised, [0, 1]) guides are multiplied by ``guide_scale`` s before stacking. The blocks are
    ``F^T F / N`` (plain Gram), ``s F^T T / N`` (= s * region-weighted mean features) and ``s^2 T^T T / N`` (region
    overlaps, constant for fixed guides). With s = 1 the guide block has unit scale while VGG activations are O(10..100),
    so the cross terms weigh little; pass e.g. ``guide_scale = jnp.mean(jnp.abs(feats))`` (of the style image, as a
    traced argument) to put both on the same scale. Use it with :func:`gram_loss` against the style's stacked Gram.

    Example:
      >>> import jax.numpy as jnp
      >>> f = jnp.arange(24.0).reshape(2, 3, 4)
      >>> g = stacked_gram(f, jnp.ones((2, 3, 1)), guide_scale=2.0)   # [F, 2 T] -> [C + R, C + R]
      >>> g.shape, bool(jnp.allclose(g[:4, :4], gram(f))), float(g[4, 4])   # plain Gram block; s^2 T^T T / N
      ((5, 5), True, 4.0)
      >>> bool(jnp.allclose(g[:4, 4], 2.0 * f.mean(axis=(0, 1))))   # cross block: s * mean feature
      True
    """
    h, w, _ = feats_HWC.shape
    if guides_HWR.shape[:2] != (h, w):
        raise ValueError(f"guides are {guides_HWR.shape[:2]} but the features are {(h, w)}; propagate them first")
    stacked = jnp.concatenate([feats_HWC, guide_scale * guides_HWR.astype(feats_HWC.dtype)], axis=-1)
    return gram(stacked, norm)
