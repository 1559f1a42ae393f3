"""The guided losses of spatial control (Gatys et al. 2017, Sec. 4) and their target types.

Guidance channels ``guides_hwR`` (R regions) at a layer's resolution come from :mod:`nst_jax.guidance`. They are
normalised per channel to unit mean square, T~^r = T^r / sqrt(mean_p T^r(p)^2), so an all-ones guide reproduces the
plain statistics exactly and a binary region of area fraction a gets T~ = 1/sqrt(a) inside (its guided Gram is the
Gram of the region's own features). A channel that is all zero at a layer ("empty") stays zero and is flagged
invalid; the losses skip it through ``jnp.where`` so neither the value nor the gradient becomes NaN.

* guided Gram matrices ``G^r = (F o T~^r)^T (F o T~^r) / N`` (:func:`guided_gram`, :func:`guided_style_loss`);
* guided sums ``M^r = (1/N) sum_p T~^r(p) f_p`` (:func:`guided_sum`, :func:`guided_sum_loss`);
* the stacked Gram of ``[F, s T]`` (:func:`stacked_gram`);
* the guided Gaussian W2 loss (:func:`guided_w2_loss`): each region's feature Gaussian fitted with the soft weights
  ``T~^r(p)^2``, the same weighting as the guided Gram (the "gram" mode with the "w2" style loss kind).

Each spatial mode has a target type (a ``flax.struct`` pytree: traced, vmappable) whose ``style_terms(feats,
weights, cfg)`` are its style loss kinds' terms, ``style_loss(feats, weights, cfg)`` their sum weighted by
``Weights.style_losses`` (the term β weighs) and ``sums_loss(feats, weights, cfg)`` the term the sums weight
(``Weights.sums``) weighs: :class:`GuidedGramTargets` ("gram"), :class:`GuidedSumTargets` ("sums"),
:class:`SumsGramTargets` ("sums+gram"), :class:`StackedTargets` ("stacked"). As in the official code, the guided sums
have their own weight (1e9 against β = 1e3 there, both with the 1/C_l^2 layer weights; the sums also with the region
weights 1/R), so in "sums+gram" they are not drowned by the Gram term.
"""

from __future__ import annotations

import functools
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from nst_jax import gradnorm, losses
from nst_jax import style_losses as SL

__all__ = [
    "normalize_guides",
    "report_empty_regions",
    "refuse_vanished_regions",
    "guided_gram",
    "guided_style_loss",
    "guided_sum",
    "guided_sum_loss",
    "guided_w2_loss",
    "stacked_gram",
    "GuidedGramTargets",
    "GuidedSumTargets",
    "SumsGramTargets",
    "StackedTargets",
]

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


def refuse_vanished_regions(valid_LR, layers: Sequence[str], region_names: Sequence[str]) -> None:
    """Raise a one-line ``ValueError`` for regions whose guide is empty at *every* layer (eroded to nothing, or
    smaller than the network's receptive fields): such a region would get no style at all. (Regions empty at some
    layers only are reported by :func:`report_empty_regions` and skipped there.)"""
    import numpy as np

    v = np.asarray(valid_LR, dtype=bool)
    gone = [region_names[r] for r in range(v.shape[1]) if not v[:, r].any()]
    if gone:
        raise ValueError(f"region(s) {gone} vanish at every style layer ({', '.join(layers)}): eroded to nothing or "
                         "too small for the network; use a smaller --erode (or a negative one), --propagation "
                         "simple, a larger --size, or larger masks")


def guided_gram(feats_HWC: jax.Array, guides_HWR_normalized: jax.Array, norm: str = "hw") -> jax.Array:
    """Guided Gram matrices ``G^r = (F o T~^r)^T (F o T~^r) / N``, [R, C, C] (2017 paper, Sec. 4.1).

    ``F o T~^r`` multiplies every channel of F by the (normalised) guide at each position; N as in :func:`gram`
    (``"hw"``: H*W, ``"chw"``: C*H*W, ``"none"``: 1). An all-ones guide gives the plain Gram.

    Example:
      >>> import jax.numpy as jnp
      >>> f = jnp.arange(24.0).reshape(2, 3, 4)                     # feats_HWC, C = 4
      >>> g = guided_gram(f, jnp.ones((2, 3, 1)))                   # one all-ones guide: the plain Gram
      >>> g.shape, bool(jnp.allclose(g[0], losses.gram(f)))
      ((1, 4, 4), True)
      >>> t, valid = normalize_guides(jnp.zeros((2, 3, 1)).at[:, :1].set(1.0))   # region = first column
      >>> bool(jnp.allclose(guided_gram(f, t)[0], losses.gram(f[:, :1])))  # = the Gram of the region's own features
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
    g = jax.vmap(lambda t_N: losses.gram_sum(t_N[:, None] * f_NC), in_axes=1)(t_NR)  # sum_n t_nr^2 f_nc f_nd
    return g / losses.gram_divisor(norm, h, w, c)


def _valid_from_guides(guides: Mapping[str, jax.Array], layers: Sequence[str]) -> jax.Array:
    return jnp.stack([jnp.any(guides[name] != 0, axis=(0, 1)) for name in layers])


def _region_weights(region_weights_R, r: int):
    return jnp.full((r,), 1.0 / r, jnp.float32) if region_weights_R is None else region_weights_R


def _gram_layer(feats_HWC, target_RxCxC, guides_hwR, valid_R, region_weights_R, norm: str = "hw"):
    """One layer's ``sum_r w_r mean((G^r(x) - G^r(style_r))^2)`` over its valid regions."""
    diff = guided_gram(feats_HWC, guides_hwR, norm) - target_RxCxC
    diff = jnp.where(valid_R[:, None, None], diff, 0.0)  # an empty region's target may even be NaN
    return jnp.sum(region_weights_R * jnp.where(valid_R, jnp.mean(jnp.square(diff), axis=(1, 2)), 0.0))


def _sum_layer(feats_HWC, target_RxC, guides_hwR, valid_R, region_weights_R):
    """One layer's ``sum_r w_r mean((M^r(x) - M^r(style_r))^2)`` over its valid regions."""
    diff = jnp.where(valid_R[:, None], guided_sum(feats_HWC, guides_hwR) - target_RxC, 0.0)
    return jnp.sum(region_weights_R * jnp.where(valid_R, jnp.mean(jnp.square(diff), axis=1), 0.0))


def _w2_layer(feats_HWC, mean_RxC, cov_RxCxC, sqrt_RxCxC, guides_hwR, valid_R, region_weights_R):
    """One layer's ``sum_r w_r W2(F weighted by T~^r(p)^2, style_r's region)`` over its valid regions."""
    per_region = jax.vmap(lambda m, c, q, g: SL.w2_loss(feats_HWC, m, c, q, weights_HW=jnp.square(g)),
                          in_axes=(0, 0, 0, 2))(mean_RxC, cov_RxCxC, sqrt_RxCxC, guides_hwR)
    return jnp.sum(region_weights_R * jnp.where(valid_R, per_region, 0.0))


def _layer_sum(layer_fn, feats, per_layer_args, layers, layer_weights_L, region_weights_R, valid_LR,
               normalize: bool = False) -> jax.Array:
    """``sum_l w_l layer_fn(F_l, *args_l, valid_l, region weights)`` (each layer's term through
    :func:`nst_jax.gradnorm.term` when ``normalize``)."""
    total = jnp.zeros((), jnp.float32)
    for j, n in enumerate(layers):
        args = per_layer_args(n)
        w_R = _region_weights(region_weights_R, valid_LR.shape[1])
        total = total + layer_weights_L[j] * gradnorm.term(normalize, layer_fn, feats[n], *args, valid_LR[j], w_R)
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
    normalize: bool = False,
) -> jax.Array:
    """``sum_l w_l sum_r w_r mean((G^r_l(x) - G^r_l(style_r))^2)`` (2017 paper, Sec. 4.1, Eq. 5 per region).

    Args:
      feats: ``{layer: feats_HWC}`` of the generated image.
      target_guided_grams: ``{layer: [R, C, C]}`` (see :func:`nst_jax.guidance.guided_targets`).
      guides: ``{layer: guides_hwR}`` of the content, propagated and normalised (:func:`normalize_guides`).
      layer_weights_L: [L] in ``layers`` order. region_weights_R: [R], default 1/R.
      valid_LR: [L, R] bool; False entries (empty regions) contribute 0 via ``jnp.where``. Default: the non-zero
        channels of ``guides``.
      normalize: per-layer gradient normalisation (:mod:`nst_jax.gradnorm`).
    """
    if valid_LR is None:
        valid_LR = _valid_from_guides(guides, layers)
    return _layer_sum(functools.partial(_gram_layer, norm=norm), feats,
                      lambda n: (target_guided_grams[n], guides[n]), layers, layer_weights_L, region_weights_R,
                      valid_LR, normalize)


def guided_w2_loss(
    feats: Mapping[str, jax.Array],
    target_stats: Mapping[str, Tuple[jax.Array, jax.Array, jax.Array]],
    guides: Mapping[str, jax.Array],
    layers: Sequence[str],
    layer_weights_L: jax.Array,
    region_weights_R: Optional[jax.Array] = None,
    valid_LR: Optional[jax.Array] = None,
    normalize: bool = False,
) -> jax.Array:
    """The guided Gaussian W2 loss: ``sum_l w_l sum_r w_r W2_l^r``, region r's Gaussian fitted to the generated
    image's features with the soft position weights ``T~^r(p)^2`` (those of the guided Gram,
    :func:`nst_jax.style_losses.feature_stats`) against its style region's (:func:`nst_jax.style_losses.w2_loss`).

    Args as :func:`guided_style_loss`; ``target_stats``: ``{layer: (mean [R, C], cov + eps I [R, C, C],
    sqrt [R, C, C])}`` (:func:`nst_jax.guidance.guided_targets` with ``"w2"`` in the loss's kinds).
    """
    if valid_LR is None:
        valid_LR = _valid_from_guides(guides, layers)
    return _layer_sum(_w2_layer, feats, lambda n: (*target_stats[n], guides[n]), layers, layer_weights_L,
                      region_weights_R, valid_LR, normalize)


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
    normalize: bool = False,
) -> jax.Array:
    """``sum_l w_l sum_r w_r mean((M^r_l(x) - M^r_l(style_r))^2)``; arguments as :func:`guided_style_loss`,
    ``target_sums``: ``{layer: [R, C]}``."""
    if valid_LR is None:
        valid_LR = _valid_from_guides(guides, layers)
    return _layer_sum(_sum_layer, feats, lambda n: (target_sums[n], guides[n]), layers, layer_weights_L,
                      region_weights_R, valid_LR, normalize)


def stacked_gram(
    feats_HWC: jax.Array, guides_HWR: jax.Array, guide_scale: float | jax.Array = 1.0, norm: str = "hw"
) -> jax.Array:
    """Gram of the features stacked with the guide channels, ``[F, s*T]`` -> [C+R, C+R] (2017 paper, Sec. 4).

    The raw (un-normalised, [0, 1]) guides are multiplied by ``guide_scale`` s before stacking. The blocks are
    ``F^T F / N`` (plain Gram), ``s F^T T / N`` (= s * region-weighted mean features) and ``s^2 T^T T / N`` (region
    overlaps, constant for fixed guides). With s = 1 the guide block has unit scale while VGG activations are O(10..100),
    so the cross terms weigh little; pass e.g. ``guide_scale = jnp.mean(jnp.abs(feats))`` (of the style image, as a
    traced argument) to put both on the same scale. Use it with :func:`nst_jax.losses.gram_loss` against the style's stacked Gram.

    Example:
      >>> import jax.numpy as jnp
      >>> f = jnp.arange(24.0).reshape(2, 3, 4)
      >>> g = stacked_gram(f, jnp.ones((2, 3, 1)), guide_scale=2.0)   # [F, 2 T] -> [C + R, C + R]
      >>> g.shape, bool(jnp.allclose(g[:4, :4], losses.gram(f))), float(g[4, 4])   # plain Gram block; s^2 T^T T / N
      ((5, 5), True, 4.0)
      >>> bool(jnp.allclose(g[:4, 4], 2.0 * f.mean(axis=(0, 1))))   # cross block: s * mean feature
      True
    """
    h, w, _ = feats_HWC.shape
    if guides_HWR.shape[:2] != (h, w):
        raise ValueError(f"guides are {guides_HWR.shape[:2]} but the features are {(h, w)}; propagate them first")
    stacked = jnp.concatenate([feats_HWC, guide_scale * guides_HWR.astype(feats_HWC.dtype)], axis=-1)
    return losses.gram(stacked, norm)


# --------------------------------------------------------------------------------------------------- targets

def _no_sums(self, feats, weights, cfg) -> jax.Array:
    """The ``sums_loss`` of the target types without guided sums: 0."""
    return jnp.zeros((), jnp.float32)


def _style_loss(self, feats, weights, cfg) -> jax.Array:
    """``sum_k w_k style_terms[k]`` with the kind weights ``weights.style_losses``
    (:func:`nst_jax.style_losses.mix_kinds`)."""
    return SL.mix_kinds(self.style_terms(feats, weights, cfg), weights.style_losses, cfg.style_losses)


@struct.dataclass
class GuidedGramTargets:
    """Targets of the "gram" mode: content guides per layer and each region's guided statistics of its style.

    Attributes: ``guides`` {layer: [h, w, R]} normalised content guides; ``valid`` [L, R] bool (content AND style
    region non-empty at the layer); ``grams`` {layer: [R, C, C]}; with the "w2" kind, ``w2`` {layer: (mean [R, C],
    cov + eps I [R, C, C], sqrt [R, C, C])} (empty otherwise).
    """

    guides: Dict[str, jax.Array]
    valid: jax.Array
    grams: Dict[str, jax.Array]
    w2: Dict[str, Tuple[jax.Array, jax.Array, jax.Array]] = struct.field(default_factory=dict)

    def style_terms(self, feats: Mapping[str, jax.Array], weights, cfg) -> Dict[str, jax.Array]:
        """``{"gram": guided_style_loss, "w2": guided_w2_loss}`` (the kinds of ``cfg.style_losses``), with the layer
        and region weights of ``weights``."""
        out = {}
        common = (cfg.style_layers, weights.style_layers, weights.regions, self.valid)
        if "gram" in cfg.style_losses:
            out["gram"] = guided_style_loss(feats, self.grams, self.guides, *common, norm=cfg.gram_norm,
                                            normalize=cfg.normalize_gradients)
        if "w2" in cfg.style_losses:
            out["w2"] = guided_w2_loss(feats, self.w2, self.guides, *common, normalize=cfg.normalize_gradients)
        return out

    style_loss = _style_loss
    sums_loss = _no_sums


@struct.dataclass
class GuidedSumTargets:
    """Targets of the "sums" mode: ``guides``, ``valid`` as :class:`GuidedGramTargets`; ``sums`` {layer: [R, C]}."""

    guides: Dict[str, jax.Array]
    valid: jax.Array
    sums: Dict[str, jax.Array]

    def style_terms(self, feats, weights, cfg) -> Dict[str, jax.Array]:
        """No Gram term: ``{"gram": 0}`` (the sums are :meth:`sums_loss`)."""
        return {"gram": jnp.zeros((), jnp.float32)}

    style_loss = _style_loss

    def sums_loss(self, feats: Mapping[str, jax.Array], weights, cfg) -> jax.Array:
        """:func:`guided_sum_loss` with the layer and region weights of ``weights`` (weighted by ``weights.sums``)."""
        return guided_sum_loss(feats, self.sums, self.guides, cfg.style_layers, weights.style_layers,
                               weights.regions, self.valid, cfg.normalize_gradients)


def _plain_gram_loss(feats, targets, weights, cfg) -> jax.Array:
    """``sum_l w_l mean((G_l(x) - A_l)^2)`` against one Gram per layer (each term normalised if asked)."""
    total = jnp.zeros((), jnp.float32)
    for j, n in enumerate(cfg.style_layers):
        fn = functools.partial(losses.gram_layer_loss, norm=cfg.gram_norm)
        total = total + weights.style_layers[j] * gradnorm.term(cfg.normalize_gradients, fn, feats[n], targets[n])
    return total


@struct.dataclass
class SumsGramTargets:
    """Targets of the "sums+gram" mode: guided sums per region plus one global Gram target per layer (the mean over
    the style images of their plain Grams), ``global_grams`` {layer: [C, C]}."""

    guides: Dict[str, jax.Array]
    valid: jax.Array
    sums: Dict[str, jax.Array]
    global_grams: Dict[str, jax.Array]

    def style_terms(self, feats: Mapping[str, jax.Array], weights, cfg) -> Dict[str, jax.Array]:
        """``{"gram": the plain Gram loss against global_grams}`` with the style layer weights (weighted by β)."""
        return {"gram": _plain_gram_loss(feats, self.global_grams, weights, cfg)}

    style_loss = _style_loss

    def sums_loss(self, feats: Mapping[str, jax.Array], weights, cfg) -> jax.Array:
        """:func:`guided_sum_loss` with the style layer and region weights (weighted by ``weights.sums``)."""
        return guided_sum_loss(feats, self.sums, self.guides, cfg.style_layers, weights.style_layers,
                               weights.regions, self.valid, cfg.normalize_gradients)


def _stacked_layer(feats_HWC, guides_raw, scale, target, norm: str):
    return losses.gram_loss(stacked_gram(feats_HWC, guides_raw, scale, norm), target)


@struct.dataclass
class StackedTargets:
    """Targets of the "stacked" mode: raw (un-normalised) content guides ``guides_raw`` {layer: [h, w, R]}, the
    style's stacked Gram ``stacked`` {layer: [C + R, C + R]} and the guide scale ``guide_scale`` {layer: []}."""

    guides_raw: Dict[str, jax.Array]
    stacked: Dict[str, jax.Array]
    guide_scale: Dict[str, jax.Array]

    def style_terms(self, feats: Mapping[str, jax.Array], weights, cfg) -> Dict[str, jax.Array]:
        """``{"gram": sum_l w_l mean((stacked_gram(F_l, T_l) - A_l)^2)}``."""
        total = jnp.zeros((), jnp.float32)
        for j, n in enumerate(cfg.style_layers):
            fn = functools.partial(_stacked_layer, norm=cfg.gram_norm)
            total = total + weights.style_layers[j] * gradnorm.term(
                cfg.normalize_gradients, fn, feats[n], self.guides_raw[n], self.guide_scale[n], self.stacked[n])
        return {"gram": total}

    style_loss = _style_loss
    sums_loss = _no_sums
