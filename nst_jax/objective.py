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
:class:`StyleTargets` here (the blended targets of each style loss kind of ``LossConfig.style_losses``: the 2016
paper's Gram matrices, and the Gaussian W2, sliced Wasserstein and histogram statistics of
:mod:`nst_jax.style_losses`, each kind weighted by its entry of ``Weights.style_losses``), the guided target types of
:mod:`nst_jax.guided` for spatial control. With ``LossConfig.normalize_gradients`` every per-layer term goes through
:func:`nst_jax.gradnorm.term`.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nst_jax import backend, gradnorm, losses, vgg
from nst_jax import style_losses as SL
from nst_jax.config import LossConfig, SettingError

__all__ = [
    "Weights",
    "STYLE_LOSS_WEIGHTS",
    "StyleTargets",
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
    "sliced_directions",
    "style_distances",
    "resolution_factors",
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
      style_losses: [K] per style loss kind (``LossConfig.style_losses`` order): style = ``sum_k w_k style_k``.
    """

    content: jax.Array
    style: jax.Array
    tv: jax.Array
    content_layers: jax.Array
    style_layers: jax.Array
    blend: jax.Array
    regions: jax.Array
    sums: jax.Array
    style_losses: jax.Array


#: The default weight of each style loss kind (``style_loss_weights=None``): a round factor with which the kind alone,
#: at the gatys preset's weights (beta 1e3, layer weights 1/C_l^2), stylises visibly (the Gram loss's entries are
#: squared variances, the others' squared activations); how strongly each then stylises, measured on three pairs, is
#: in ``benchmarks/RESULTS.md`` ("style losses").
STYLE_LOSS_WEIGHTS = {"gram": 1.0, "w2": 1e3, "sliced": 1e3, "hist": 1e3}


def _blend(stack_S, blend_S):
    return jnp.einsum("s,s...->...", blend_S / jnp.sum(blend_S), stack_S)


@struct.dataclass
class StyleTargets:
    """The style targets of a transfer without spatial control: each kind's statistics per style image, blended in
    the loss with the traced ``Weights.blend`` (see :mod:`nst_jax.style_losses` for how each kind blends).

    Attributes (``{layer: array}``; only the kinds of ``LossConfig.style_losses`` are filled, the others empty):
      grams: [S, C, C] Gram matrices. w2_mean: [S, C], w2_cov: [S, C, C] means and population covariances;
      w2_sqrt: [1, C, C] the square root of ``cov + eps I`` when S = 1 (else empty: a blend's root is taken in the
      step). sliced_proj: [C, P] the projections (one set per layer, fixed for the solve); sliced_sorted: [S, K, P]
      each style's sorted projections, resampled to a common K. hist: [S, K, C] each style's per-channel quantiles.
    """

    grams: Dict[str, jax.Array] = struct.field(default_factory=dict)
    w2_mean: Dict[str, jax.Array] = struct.field(default_factory=dict)
    w2_cov: Dict[str, jax.Array] = struct.field(default_factory=dict)
    w2_sqrt: Dict[str, jax.Array] = struct.field(default_factory=dict)
    sliced_proj: Dict[str, jax.Array] = struct.field(default_factory=dict)
    sliced_sorted: Dict[str, jax.Array] = struct.field(default_factory=dict)
    hist: Dict[str, jax.Array] = struct.field(default_factory=dict)

    def _w2(self, n: str, blend_S):
        if n in self.w2_sqrt:
            c = self.w2_cov[n][0]
            return self.w2_mean[n][0], c + 1e-4 * jnp.eye(c.shape[0], dtype=c.dtype), self.w2_sqrt[n][0]
        return SL.w2_blend(self.w2_mean[n], self.w2_cov[n], blend_S)

    def _layer_args(self, kind: str, n: str, blend_S, cfg: LossConfig):
        """(loss of one layer's features, its target arrays) for one kind."""
        if kind == "gram":
            return functools.partial(losses.gram_layer_loss, norm=cfg.gram_norm), (losses.blend_grams(self.grams[n], blend_S),)
        if kind == "w2":
            return SL.w2_loss, self._w2(n, blend_S)
        if kind == "sliced":
            return SL.sliced_loss, (self.sliced_proj[n], SL.blend_quantiles(self.sliced_sorted[n], blend_S))
        return SL.hist_loss, (_blend(self.hist[n], blend_S),)

    def style_terms(self, feats: Mapping[str, jax.Array], weights: Weights, cfg: LossConfig) -> Dict[str, jax.Array]:
        """``{kind: sum_l w_l L_kind(F_l, blended target_l)}`` for each kind of ``cfg.style_losses``."""
        out = {}
        for kind in cfg.style_losses:
            total = jnp.zeros((), jnp.float32)
            for j, n in enumerate(cfg.style_layers):
                fn, args = self._layer_args(kind, n, weights.blend, cfg)
                total = total + weights.style_layers[j] * gradnorm.term(cfg.normalize_gradients, fn, feats[n], *args)
            out[kind] = total
        return out

    def style_loss(self, feats: Mapping[str, jax.Array], weights: Weights, cfg: LossConfig) -> jax.Array:
        """``sum_k w_k sum_l w_l L_k(F_l)`` (kind weights ``weights.style_losses``); with the Gram kind alone, the
        2016 paper's ``sum_l w_l mean((G_l(x) - A_l)^2)`` with ``A_l`` the blend of the style images' Grams."""
        return SL.mix_kinds(self.style_terms(feats, weights, cfg), weights.style_losses, cfg.style_losses)

    def sums_loss(self, feats, weights: Weights, cfg: LossConfig) -> jax.Array:
        """No guided sums: 0."""
        return jnp.zeros((), jnp.float32)


#: The Gram-only form of :class:`StyleTargets` (``GramTargets(grams=...)``), the name it had before other kinds.
GramTargets = StyleTargets


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
    structure's pooling, remat, compute dtype, network ops, convolution form and matmul precision apply."""
    rgb = jnp.repeat(image_HWC, 3, axis=-1) if image_HWC.shape[-1] == 1 else image_HWC
    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else None
    with jax.default_matmul_precision(backend.resolve("precision", cfg.precision)):
        return vgg.features(params, rgb, layers, pooling=cfg.pooling, remat=cfg.remat, dtype=dtype,
                            ops=backend.resolve("ops", cfg.ops), conv=backend.resolve("conv", cfg.conv),
                            pool_rounding=cfg.pool_rounding,
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
        content = content + weights.content_layers[j] * gradnorm.term(
            cfg.normalize_gradients, losses.content_loss, feats[name], targets.content[name])
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


def _style_statistics(params, style_HWC, projections, cfg: LossConfig):
    """One style image's statistics of every kind of ``cfg.style_losses``, ``{field: {layer: array}}``."""
    feats = network_features(params, style_HWC, cfg.style_layers, cfg)
    out = {}
    for n in cfg.style_layers:
        f = feats[n].astype(jnp.float32)
        if "gram" in cfg.style_losses:
            out.setdefault("grams", {})[n] = losses.gram(f, cfg.gram_norm)
        if "w2" in cfg.style_losses:
            out.setdefault("w2_mean", {})[n], out.setdefault("w2_cov", {})[n] = SL.feature_stats(f)
        if "sliced" in cfg.style_losses:
            out.setdefault("sliced_sorted", {})[n] = jnp.sort(
                jnp.matmul(f.reshape(-1, f.shape[-1]), projections[n], precision=jax.lax.Precision.HIGHEST), axis=0)
        if "hist" in cfg.style_losses:
            out.setdefault("hist", {})[n] = SL.hist_target(f, cfg.hist_bins)
    return out


_content_features_jit = jax.jit(_content_features, static_argnames=("cfg",))
_style_statistics_jit = jax.jit(_style_statistics, static_argnames=("cfg",))


def sliced_directions(params, cfg: LossConfig, seed: int = 0) -> Dict[str, jax.Array]:
    """The sliced Wasserstein loss's projections ``{layer: [C_l, P]}`` (P = ``cfg.sliced_projections`` or C_l):
    :func:`nst_jax.style_losses.sliced_projections` with ``fold_in(PRNGKey(seed), i)``, i the layer's index in the
    network, so a layer's directions depend on the seed and the layer only (not on the other layers chosen)."""
    if "sliced" not in cfg.style_losses:
        return {}
    spec = vgg.spec_from_params(params)
    index, chans = {n: i for i, n in enumerate(vgg.layer_names(spec))}, vgg.layer_channels(spec)
    key = jax.random.PRNGKey(seed)
    return {n: SL.sliced_projections(jax.random.fold_in(key, index[n]), chans[n], cfg.sliced_projections or chans[n])
            for n in cfg.style_layers}


def _style_targets(params, styles: Sequence, cfg: LossConfig, seed: int) -> StyleTargets:
    projections = sliced_directions(params, cfg, seed)
    per_style = [_style_statistics_jit(params, jnp.asarray(s, jnp.float32), projections, cfg) for s in styles]
    stacked = {key: {n: jnp.stack([st[key][n] for st in per_style]) for n in cfg.style_layers}
               for key in ("grams", "w2_mean", "w2_cov") if key in per_style[0]}
    for key in ("sliced_sorted", "hist"):
        if key in per_style[0]:
            stacked[key] = {n: SL.stack_quantiles([st[key][n] for st in per_style]) for n in cfg.style_layers}
    if "w2_cov" in stacked and len(styles) == 1:
        stacked["w2_sqrt"] = {n: SL.w2_target_from_stats(m[0], c[0])[2][None]
                              for (n, m), c in zip(stacked["w2_mean"].items(), stacked["w2_cov"].values())}
    if projections:
        stacked["sliced_proj"] = projections
    return StyleTargets(**stacked)


def compute_targets(params, content_HWC, styles: Sequence, cfg: LossConfig, *, sliced_seed: int = 0) -> Targets:
    """Content features and the stacked style targets of each kind, computed once (each jitted per image shape).

    Args:
      content_HWC: the content image [H, W, 3|1] in [0, 1] (None: no content term, e.g. style mixing).
      styles: S style images, each [H_s, W_s, 3|1] (sizes may differ).
      sliced_seed: the seed of the sliced Wasserstein projections (:func:`sliced_directions`).

    Returns:
      ``Targets(content={layer: [H_l, W_l, C_l]}, style=StyleTargets(...))``; with the default Gram kind alone,
      ``StyleTargets(grams={layer: [S, C_l, C_l]})``.
    """
    content = {} if content_HWC is None or not cfg.content_layers else _content_features_jit(
        params, jnp.asarray(content_HWC, jnp.float32), cfg)
    style = _style_targets(params, styles, cfg, sliced_seed) if cfg.style_layers and len(styles) else StyleTargets()
    return Targets(content=dict(content), style=style)


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
    style_loss_weights=None,
) -> Weights:
    """The traced :class:`Weights`; traceable (``jax.vmap``/``jit`` over any argument), shapes checked statically.

    Args:
      network: a params tree, a ``vgg.VGGSpec`` or an architecture name (only the channel counts are read, for the
        default layer weights).
      layer_weights: "inv_c2" (1/C_l^2, the 2017 paper's code), "ones", "equal" (1/L), or one number per style
        layer.
      blend: one weight per style image (default equal); region_weights: one per region (default 1/R).
      sums_weight: the weight of the guided sums (default 1e9, the official spatial-control notebook's).
      style_loss_weights: one weight per kind of ``cfg.style_losses`` (default: :data:`STYLE_LOSS_WEIGHTS`).

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
    kinds = cfg.style_losses
    kw = jnp.asarray([STYLE_LOSS_WEIGHTS[k] for k in kinds], jnp.float32) if style_loss_weights is None else _vector(
        "style_loss_weights", style_loss_weights, len(kinds), "style loss weights", f"style losses ({', '.join(kinds)})",
        "kind")
    scalar = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return Weights(content=scalar(content_weight), style=scalar(style_weight), tv=scalar(tv_weight),
                   content_layers=cw, style_layers=lw, blend=bl, regions=rw, sums=scalar(sums_weight),
                   style_losses=kw)


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
                                                                        "region weights"),
               ("style_loss_weights", weights.style_losses, "style loss weights"))
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
            "layer_weights": f(weights.style_layers), "style_blend": f(weights.blend),
            "style_loss_weights": f(weights.style_losses), **regions}


def _distances(params, image_HWC, style_HWC, cfg: LossConfig):
    fx = network_features(params, image_HWC, cfg.style_layers, cfg)
    fs = network_features(params, style_HWC, cfg.style_layers, cfg)
    return {n: SL.w2_loss(fx[n].astype(jnp.float32), *SL.w2_target(fs[n].astype(jnp.float32)))
            for n in cfg.style_layers}


_distances_jit = jax.jit(_distances, static_argnames=("cfg",))


def style_distances(params, image_HWC, style_HWC, cfg: LossConfig) -> Dict[str, float]:
    """How far an image's feature distributions are from a style's: the Gaussian 2-Wasserstein distance
    (:func:`nst_jax.style_losses.w2_loss`, per channel) between the two images' features at each style layer of
    ``cfg``, ``{layer: float}``. The images may differ in size; ``cfg``'s network settings apply. A measure, not a
    loss: the benchmarks and the resolution figure compare results with it whatever loss made them."""
    d = _distances_jit(params, jnp.asarray(image_HWC, jnp.float32), jnp.asarray(style_HWC, jnp.float32), cfg)
    return {n: float(v) for n, v in d.items()}


#: The default tilt of :func:`resolution_factors` (per pooling level and per doubling of the size, in log2).
RESOLUTION_TILT = 1.0


def resolution_factors(layers: Sequence[str], shape_HW, ref_size: int, tilt: float = RESOLUTION_TILT) -> jax.Array:
    """Layer-weight multipliers of the resolution rule: ``(s / ref)^(tilt (d_l - mean(d)))`` per style layer, with
    ``s`` the image's longest side, ``ref`` the size whose look is kept and ``d_l`` the layer's pooling depth (0 for
    relu1_x, ..., 4 for relu5_x; the mean over the given layers).

    Why: a layer's receptive field is fixed in pixels, so at twice the size every layer sees the structures one
    layer shallower saw before, and the coarsest structures the style had at ``ref`` are seen by no layer. Tilting
    the weights towards the deep layers by a factor ``2^tilt`` per pooling level and per doubling of the size (the
    geometric mean of the multipliers is 1) moves the balance between coarse and fine structure back towards the
    ``ref`` look. It cannot restore it: no layer sees the coarsest structures any more (for that, coarse-to-fine,
    :mod:`nst_jax.pyramid`). How far the rule gets, and at which tilts: ``benchmarks/RESULTS.md`` ("resolution").

    Example:
      >>> [round(float(f), 3) for f in resolution_factors(["relu1_1", "relu3_1", "relu5_1"], (300, 512), 256)]
      [0.25, 1.0, 4.0]
      >>> resolution_factors(["relu1_1", "relu5_1"], (256, 200), 256).tolist()   # at the reference size: 1
      [1.0, 1.0]
    """
    depth = np.asarray([int(n[4]) - 1 if n.startswith(("conv", "relu")) else int(n[4]) for n in layers],
                       np.float64)
    k = np.log2(max(int(shape_HW[0]), int(shape_HW[1])) / float(ref_size))
    return jnp.asarray(np.exp2(tilt * k * (depth - depth.mean())), jnp.float32)


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

