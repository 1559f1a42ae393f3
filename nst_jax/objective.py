"""The objective: traced weights, targets, and the loss ``alpha content + beta style + tv TV`` of one image (plus
``sums_weight sums`` for the guided sums of spatial control), and the box the image is kept in.

Shape of a run::

    targets = compute_targets(params, content_HW3, styles, cfg)      # once, its own jitted function
    weights = make_weights(cfg, params, style_weight=1e3, ...)        # traced arrays: new values never recompile
    terms = loss_terms(params, image_HWC, targets, weights, cfg)      # {"content", "style", "tv", "total"}

Everything that varies between runs of one compiled program is a leaf of :class:`Weights` or :class:`Targets`
(``flax.struct`` dataclasses: pytrees with a fixed set of fields whatever the mode), so ``jax.vmap`` over any field
is a sweep::

    ws = jax.tree_util.tree_map(lambda a: jnp.stack([a] * 3), weights).replace(tv=jnp.array([0.0, 1e-3, 1e-2]))
    totals = jax.vmap(lambda w: loss_terms(params, image, targets, w, cfg)["total"])(ws)

(:func:`nst_jax.sweep` runs a whole solve that way.) The style term is the style targets' own ``style_loss``:
:class:`GramTargets` here (the 2016 paper's blended Gram targets), the guided target types of :mod:`nst_jax.guided`
for spatial control.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nst_jax import backend, losses, vgg
from nst_jax.config import LossConfig, SettingError

__all__ = [
    "Weights",
    "GramTargets",
    "Targets",
    "network_features",
    "compute_targets",
    "make_weights",
    "check_weights",
    "loss_terms",
    "total_loss",
    "total_and_terms",
    "weights_summary",
    "feasible_box",
    "free_gradient",
    "TERMS",
]

#: The unweighted loss terms, in the order traces list them.
TERMS = ("content", "style", "tv")


@struct.dataclass
class Weights:
    """The traced weights of the loss (float32). Batch any field with a leading K axis to sweep it.

    Attributes:
      content / style / tv: α, β and the TV weight, [].
      content_layers: [Lc] per content layer. style_layers: [Ls] per style layer (``LossConfig.style_layers`` order).
      blend: [S] per style image (Gram targets blended ``sum_s b_s A_s / sum_s b_s``).
      regions: [R] per region of spatial control (R = 0 without it).
      sums: the weight of the guided sums of spatial control, [] (its own weight, as in the official code: the sums
        term is ``sums * sum_l w_l sum_r w_r mean(dM^2)`` beside ``beta * style``; unused by the other modes).
    """

    content: jax.Array
    style: jax.Array
    tv: jax.Array
    content_layers: jax.Array
    style_layers: jax.Array
    blend: jax.Array
    regions: jax.Array
    sums: jax.Array


@struct.dataclass
class GramTargets:
    """The 2016 paper's style targets: ``grams`` {layer: [S, C, C]}, one Gram per style image, blended in the loss."""

    grams: Dict[str, jax.Array]

    def style_loss(self, feats: Mapping[str, jax.Array], weights: Weights, cfg: LossConfig) -> jax.Array:
        """``sum_l w_l mean((G_l(x) - A_l)^2)`` with ``A_l`` the blend of the style images' Grams."""
        grams = {n: losses.blend_grams(self.grams[n], weights.blend) for n in cfg.style_layers}
        return losses.style_loss(feats, grams, cfg.style_layers, weights.style_layers, cfg.gram_norm)

    def sums_loss(self, feats, weights: Weights, cfg: LossConfig) -> jax.Array:
        """No guided sums: 0."""
        return jnp.zeros((), jnp.float32)


@struct.dataclass
class Targets:
    """What the loss compares against, and which pixels it may change.

    Attributes:
      content: {layer: [H_l, W_l, C_l]} features of the content image (empty without a content term).
      style: a style-target pytree with ``style_loss(feats, weights, cfg)`` (the term β weighs) and
        ``sums_loss(feats, weights, cfg)`` (the term the sums weight weighs; 0 but for guided sums) methods
        (:class:`GramTargets` or a :mod:`nst_jax.guided` type).
      frozen: None, or [H, W, 1] float32, 1 where a pixel keeps its initial value (the official code's
        ``-mask_file``; see :func:`feasible_box`).
    """

    content: Dict[str, jax.Array]
    style: Any
    frozen: Optional[jax.Array] = None


def network_features(params, image_HWC: jax.Array, layers: Sequence[str], cfg: LossConfig) -> Dict[str, jax.Array]:
    """``vgg.features`` as the loss sees it: a 1-channel (luminance) image is replicated to RGB, and the loss
    structure's pooling, remat, compute dtype, network ops and matmul precision apply."""
    rgb = jnp.repeat(image_HWC, 3, axis=-1) if image_HWC.shape[-1] == 1 else image_HWC
    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else None
    with jax.default_matmul_precision(backend.resolve("precision", cfg.precision)):
        return vgg.features(params, rgb, layers, pooling=cfg.pooling, remat=cfg.remat, dtype=dtype,
                            ops=backend.resolve("ops", cfg.ops), pool_rounding=cfg.pool_rounding,
                            padding=cfg.padding, input_scale=cfg.input_scale)


def loss_terms(params, image_HWC: jax.Array, targets: Targets, weights: Weights, cfg: LossConfig
               ) -> Dict[str, jax.Array]:
    """The loss terms of one image and their weighted total.

    Args:
      image_HWC: the generated image in [0, 1], [H, W, 3] (or [H, W, 1] for luminance-only transfer).
      targets: from :func:`compute_targets` (or ``nst_jax.guidance.spatial_targets``).
      weights: from :func:`make_weights`.

    Returns:
      ``{"content", "style", "tv", "total"}`` (scalars), total = α content + β style + tv_weight TV. With guided
      sums (spatial "sums" / "sums+gram") the sums term has its own weight: total = α content + β gram + sums_weight
      sums + tv_weight TV, and "style" reports the unweighted gram + sums.
    """
    feats = network_features(params, image_HWC, cfg.all_layers, cfg)
    content = jnp.zeros((), jnp.float32)
    for j, name in enumerate(cfg.content_layers):
        content = content + weights.content_layers[j] * losses.content_loss(feats[name], targets.content[name])
    zero = jnp.zeros((), jnp.float32)
    style = targets.style.style_loss(feats, weights, cfg) if cfg.style_layers else zero
    sums = targets.style.sums_loss(feats, weights, cfg) if cfg.style_layers else zero
    tv = losses.tv_loss(image_HWC, cfg.tv_form, cfg.input_scale)
    total = weights.content * content + weights.style * style + weights.sums * sums + weights.tv * tv
    return {"content": content, "style": style + sums, "tv": tv, "total": total}


def total_loss(image_HWC: jax.Array, params, targets: Targets, weights: Weights, cfg: LossConfig) -> jax.Array:
    """The scalar total of :func:`loss_terms` (argument order suited to ``jax.value_and_grad`` w.r.t. the image)."""
    return loss_terms(params, image_HWC, targets, weights, cfg)["total"]


def total_and_terms(image_HWC: jax.Array, params, targets: Targets, weights: Weights, cfg: LossConfig):
    """``(total, {"content", "style", "tv"})``: :func:`total_loss` with the unweighted terms as auxiliary output
    (for ``jax.value_and_grad(..., has_aux=True)``: the solvers carry the terms of every accepted image)."""
    terms = loss_terms(params, image_HWC, targets, weights, cfg)
    return terms["total"], {k: terms[k] for k in TERMS}


def _content_features(params, content_HWC, cfg: LossConfig):
    feats = network_features(params, content_HWC, cfg.content_layers, cfg)
    return {name: feats[name] for name in cfg.content_layers}


def _style_grams(params, style_HWC, cfg: LossConfig):
    feats = network_features(params, style_HWC, cfg.style_layers, cfg)
    return {name: losses.gram(feats[name], cfg.gram_norm) for name in cfg.style_layers}


_content_features_jit = jax.jit(_content_features, static_argnames=("cfg",))
_style_grams_jit = jax.jit(_style_grams, static_argnames=("cfg",))


def compute_targets(params, content_HWC, styles: Sequence, cfg: LossConfig) -> Targets:
    """Content features and stacked Gram targets, computed once (each jitted per image shape).

    Args:
      content_HWC: the content image [H, W, 3|1] in [0, 1] (None: no content term, e.g. style mixing).
      styles: S style images, each [H_s, W_s, 3|1] (sizes may differ).

    Returns:
      ``Targets(content={layer: [H_l, W_l, C_l]}, style=GramTargets(grams={layer: [S, C_l, C_l]}))``.
    """
    content = {} if content_HWC is None or not cfg.content_layers else _content_features_jit(
        params, jnp.asarray(content_HWC, jnp.float32), cfg)
    per_style = [_style_grams_jit(params, jnp.asarray(s, jnp.float32), cfg) for s in styles] if cfg.style_layers \
        else []
    grams = {name: jnp.stack([g[name] for g in per_style]) for name in cfg.style_layers} if per_style else {}
    return Targets(content=dict(content), style=GramTargets(grams=grams))


def _channels(network, layers: Sequence[str]) -> list:
    if isinstance(network, Mapping):
        network = vgg.spec_from_params(network)
    chans = vgg.layer_channels(network)
    return [chans[n] for n in layers]


def _vector(setting: str, value, n: int, what: str, per: str, one: str) -> jax.Array:
    """``value`` as a float32 [n] vector; a wrong length names the setting ("2 blend weights given for 1 style
    images; give one per style (style_blend)")."""
    v = jnp.asarray(value, jnp.float32).reshape(-1)
    if v.shape != (n,):
        raise SettingError(setting, f"{v.shape[0]} {what} given for {n} {per}; give one per {one} ({{setting}})")
    return v


def make_weights(
    cfg: LossConfig,
    network,
    *,
    content_weight=1.0,
    style_weight=1e3,
    tv_weight=0.0,
    layer_weights: Any = "inv_c2",
    content_layer_weights=None,
    blend=None,
    n_styles: int = 1,
    region_weights=None,
    n_regions: int = 0,
    sums_weight=1e9,
) -> Weights:
    """The traced :class:`Weights`; traceable (``jax.vmap``/``jit`` over any argument), shapes checked statically.

    Args:
      network: a params tree, a ``vgg.VGGSpec`` or an architecture name (only the channel counts are read, for the
        default layer weights).
      layer_weights: "inv_c2" (1/C_l^2, the 2017 paper's code), "ones", "equal" (1/L), or one number per style
        layer.
      blend: one weight per style image (default equal); region_weights: one per region (default 1/R).
      sums_weight: the weight of the guided sums (default 1e9, the official spatial-control notebook's).

    Values are not checked here (they may be traced); :func:`check_weights` refuses negative or non-finite ones.

    Example:
      >>> cfg = LossConfig()
      >>> w = make_weights(cfg, "tiny19", style_weight=10.0)
      >>> float(w.style), w.style_layers.shape, float(w.style_layers[0]) == 1 / 4 ** 2   # tiny19: 4 channels
      (10.0, (5,), True)
      >>> jax.vmap(lambda tv: make_weights(cfg, "tiny19", tv_weight=tv).tv)(jnp.array([0.0, 1e-3])).shape
      (2,)
    """
    n_style_layers = len(cfg.style_layers)
    if isinstance(layer_weights, str):
        lw = losses.default_layer_weights(_channels(network, cfg.style_layers), layer_weights) if n_style_layers \
            else jnp.zeros((0,), jnp.float32)
    else:
        lw = jnp.asarray(layer_weights, jnp.float32).reshape(-1)
        if lw.shape != (n_style_layers,):
            raise SettingError("layer_weights", f"{lw.shape[0]} layer weights given for {n_style_layers} style layers "
                                                f"({', '.join(cfg.style_layers)}); give one per layer ({{setting}})")
    n_content = len(cfg.content_layers)
    cw = jnp.ones(n_content, jnp.float32) if content_layer_weights is None else _vector(
        "content_layer_weights", content_layer_weights, n_content, "content layer weights", "content layers",
        "content layer")
    bl = jnp.ones(n_styles, jnp.float32) if blend is None else _vector(
        "style_blend", blend, n_styles, "blend weights", "style images", "style")
    rw = jnp.full((n_regions,), 1.0 / max(n_regions, 1), jnp.float32) if region_weights is None else _vector(
        "region_weights", region_weights, n_regions, "region weights", "regions", "region")
    scalar = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return Weights(content=scalar(content_weight), style=scalar(style_weight), tv=scalar(tv_weight),
                   content_layers=cw, style_layers=lw, blend=bl, regions=rw, sums=scalar(sums_weight))


def check_weights(weights: Weights) -> None:
    """Refuse (``SettingError``) weights that are negative or not finite, or blend weights summing to 0; host-side,
    on concrete values (any leading batch axis is checked member by member)."""
    named = (("content_weight", weights.content), ("style_weight", weights.style), ("tv_weight", weights.tv),
             ("sums_weight", weights.sums))
    for setting, value in named:
        v = np.asarray(value, np.float64)
        if not (np.all(np.isfinite(v)) and np.all(v >= 0)):
            shown = float(v) if v.ndim == 0 else v.tolist()
            raise SettingError(setting, f"{{setting}} must be a finite number >= 0, got {shown}")
    vectors = (("layer_weights", weights.style_layers, "layer weights"),
               ("content_layer_weights", weights.content_layers, "content layer weights"),
               ("style_blend", weights.blend, "style blend weights"), ("region_weights", weights.regions,
                                                                        "region weights"))
    for setting, value, what in vectors:
        v = np.asarray(value, np.float64)
        if not (np.all(np.isfinite(v)) and np.all(v >= 0)):
            raise SettingError(setting, f"{what} must be finite and >= 0 ({{setting}}), got {v.tolist()}")
    blend = np.asarray(weights.blend, np.float64)
    if blend.size and np.any(blend.sum(axis=-1) <= 0):
        raise SettingError("style_blend", f"style blend weights must be >= 0 with a positive sum ({{setting}}), got "
                                          f"{blend.tolist()}")


def weights_summary(weights: Weights) -> Dict[str, Union[float, list]]:
    """The unbatched weights as plain numbers (for the settings written beside an output)."""
    f = lambda a: [float(v) for v in np.asarray(a).reshape(-1)]  # noqa: E731
    regions = {"region_weights": f(weights.regions)} if np.size(weights.regions) else {}
    return {"content_weight": float(weights.content), "style_weight": float(weights.style),
            "tv_weight": float(weights.tv), "sums_weight": float(weights.sums),
            "layer_weights": f(weights.style_layers), "style_blend": f(weights.blend), **regions}


def feasible_box(x: jax.Array, targets: Targets):
    """The box the solvers keep the image in, ``(lower, upper)``: [0, 1], and with a freeze mask ``lower = upper =
    x`` at the frozen pixels. Given the current iterate (whose frozen pixels never leave their initial value, since
    the box holds them), so no copy of the initial image is kept.

    Example:
      >>> t = Targets(content={}, style=None, frozen=jnp.array([[[1.0], [0.0]]]))
      >>> lo, hi = feasible_box(jnp.array([[[0.3], [0.6]]]), t)
      >>> lo.ravel().tolist(), hi.ravel().tolist()
      ([0.30000001192092896, 0.0], [0.30000001192092896, 1.0])
    """
    if targets.frozen is None:
        return 0.0, 1.0
    frozen = targets.frozen > 0
    return jnp.where(frozen, x, 0.0), jnp.where(frozen, x, 1.0)


def free_gradient(grad: jax.Array, targets: Targets) -> jax.Array:
    """The gradient with the frozen pixels' entries set to 0 (the official code's ``-mask_file`` rule: frozen pixels
    still feed the loss, but give no gradient, so L-BFGS's curvature pairs carry none either)."""
    if targets.frozen is None:
        return grad
    return jnp.where(targets.frozen > 0, jnp.zeros((), grad.dtype), grad)

