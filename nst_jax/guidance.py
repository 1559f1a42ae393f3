"""Spatial control (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer", Sec. 4).

An image is split into R regions by *guidance channels* ``guides_HWR`` (float32 in [0, 1], soft values allowed; the
paper's T^r). Region r of the content is stylised with the statistics of region r of a style image (several style
images may each provide some regions). This module pairs content and style regions by name, propagates the guides
to the resolution of every layer of the network, and computes the targets (:func:`spatial_targets`); the guides are
read by :mod:`nst_jax.masks` and the guided losses and their target types live in :mod:`nst_jax.guided`.

Propagation (:func:`propagate_guides`) follows the network's structure (:func:`nst_jax.vgg.layer_sequence`), so the
guide of layer l always has exactly the [H_l, W_l] of ``vgg.features(...)[l]`` (with either pool rounding):

* ``"simple"`` (the official code's): each layer's guide is the pixel guide resized directly to the layer's size by
  a cubic B-spline (``scipy.ndimage.zoom`` with its defaults: order 3, prefiltered, corner-aligned -- output i sits
  at input ``i (H - 1) / (H_l - 1)`` --, edges extended by ``mode="nearest"``), applied as two precomputed
  interpolation matrices, one per axis (:func:`zoom_matrix`). Soft values stay soft and may leave [0, 1] a little
  (spline ringing; not clipped, as in the official code).
* ``"area"``: conv / ReLU leave the guide unchanged, each 2x2/stride-2 pooling is a 2x2 average pooling (odd sizes as
  the network rounds them; a ceil-rounded last window averages its in-image pixels): area averaging.
* ``"inside"``: binarise the input guide at ``threshold`` (``T >= threshold`` -> 1), then keep a unit only if its
  whole receptive field lies inside the region: each 3x3 conv is a 3x3 min filter (erosion), each pooling a 2x2 min.
  **Padding counts as inside**: a border unit whose window reaches past the image is judged on its in-image
  pixels only (the padding is outside the image, not outside the region), so a full-image region stays full. This
  also holds for reflect / replicate padding, whose padded pixels are in-image pixels of the same window.
* ``"all"``: binarise, then keep a unit if its receptive field touches the region: 3x3 max filter (dilation) per conv,
  2x2 max per pooling; padding never counts as inside.

Both binary modes equal the exact receptive-field computation (tested against the Jacobian of a linearised network),
which the official code measures empirically (noise probes through the network). After propagation ``erode=k``
applies k more feature-map pixels of erosion (k > 0) or dilation (k < 0) with a (2|k|+1)^2 square window whose
out-of-image part is ignored; in "simple" mode the guide is first binarised as the official code does (``< threshold``
-> 0, ``> threshold`` -> 1). ``global_channel=True`` appends an all-ones channel (the paper's suggestion for neurons
straddling a region boundary), see :func:`add_global_channel`.

The official code's ``k`` is ``-erode``: its ``k > 0`` ("extend": ``uniform_filter`` of size 2k+1 ``>= 1/(2k+1)^2``)
is exactly ``erode=-k`` on binary guides (official "inside, k=3" = ``mode="inside", erode=-3``). Its ``k < 0``
("reduce": a unit is cleared when the mean over its mirrored-border window is below ``1 - 1/(2|k|+1)^2``, i.e. when
the window holds at least two zeros, a mirrored one counting twice) clears a subset of what ``erode=|k|`` clears
(any zero in the in-image window): the two agree wherever a window holds no zero or at least two, and
``erode=|k|`` also clears the units whose window holds exactly one zero (tests/test_fidelity.py).
"""

from __future__ import annotations

import functools
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import guided, losses, masks, vgg
from nst_jax import style_losses as SL
from nst_jax.config import PROPAGATIONS, LossConfig, SpatialConfig
from nst_jax.objective import Targets, compute_targets, network_features

__all__ = [
    "pair_regions",
    "zoom_matrix",
    "propagate_guides",
    "add_global_channel",
    "prepare_guides",
    "guided_targets",
    "spatial_targets",
]


# ----------------------------------------------------------------------------------------------------------------
# Pairing content and style regions
# ----------------------------------------------------------------------------------------------------------------

def pair_regions(
    content_names: Sequence[str],
    style_names_per_style: Sequence[Sequence[str]],
    region_to_style: Union[None, Mapping[str, int], Sequence[int]] = None,
) -> Tuple[Tuple[int, int], ...]:
    """Pair each content region with the style image and channel that supply its target, by name.

    Args:
      content_names: the content guides' region names (order of the channels of the content guides).
      style_names_per_style: for each style image s, its guides' region names.
      region_to_style: which style image each content region takes its statistics from: ``{name: s}`` or a sequence
        of S indices in ``content_names`` order. ``None``: with one style every region comes from it; with several,
        each content region must be named by exactly one style.

    Returns:
      ``pairs[r] = (s, k)``: region ``content_names[r]`` takes the target of channel ``k`` of style ``s``'s guides.

    Raises ``ValueError`` when a content region is missing for its style, when a style names a region the content
    does not have (a typo, most likely), or when the choice of style is ambiguous.
    
    Example:
      >>> pair_regions(["sky", "land"], [["land", "sky"]])          # one style with both regions: (style, channel)
      ((0, 1), (0, 0))
      >>> pair_regions(["sky", "land"], [["sky"], ["land"]])        # sky from style 0, land from style 1
      ((0, 0), (1, 0))
    """
    content_names = [str(n) for n in content_names]
    styles = [[str(n) for n in names] for names in style_names_per_style]
    if not content_names:
        raise ValueError("the content has no guide regions")
    if not styles:
        raise ValueError("no style guides given")
    for names, what in [(content_names, "content")] + [(n, f"style {s}") for s, n in enumerate(styles)]:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{what} names region(s) {dup} more than once")
    for s, names in enumerate(styles):
        extra = [n for n in names if n not in content_names]
        if extra:
            raise ValueError(
                f"style {s} has region(s) {extra} that the content does not have (content regions: {content_names}); "
                "rename the masks so the names match"
            )
    if region_to_style is None:
        if len(styles) == 1:
            assignment = [0] * len(content_names)
        else:
            assignment = []
            for name in content_names:
                having = [s for s, names in enumerate(styles) if name in names]
                if len(having) != 1:
                    raise ValueError(
                        f"content region {name!r} is named by styles {having}; pass region_to_style to choose one"
                        if having else f"content region {name!r} is missing for every style; add a style mask for it"
                    )
                assignment.append(having[0])
    elif isinstance(region_to_style, Mapping):
        unknown = [n for n in region_to_style if n not in content_names]
        if unknown:
            raise ValueError(f"region_to_style names region(s) {unknown} that the content does not have")
        missing = [n for n in content_names if n not in region_to_style]
        if missing:
            raise ValueError(f"region_to_style gives no style for content region(s) {missing}")
        assignment = [int(region_to_style[n]) for n in content_names]
    else:
        assignment = [int(s) for s in region_to_style]
        if len(assignment) != len(content_names):
            raise ValueError(
                f"region_to_style has {len(assignment)} entries for {len(content_names)} content regions"
            )
    pairs = []
    for name, s in zip(content_names, assignment):
        if not 0 <= s < len(styles):
            raise ValueError(f"region {name!r} is assigned style {s}, but there are {len(styles)} styles")
        if name not in styles[s]:
            raise ValueError(
                f"content region {name!r} is missing for style {s} (its regions: {styles[s]}); "
                f"add a {name!r} mask for that style"
            )
        pairs.append((s, styles[s].index(name)))
    return tuple(pairs)


# ----------------------------------------------------------------------------------------------------------------
# Propagation to the layers (jnp, jit-friendly: every argument but guides_HWR / threshold is static)
# ----------------------------------------------------------------------------------------------------------------

def _window(x_hwR: jax.Array, size: int, stride: int, op: str, padding) -> jax.Array:
    """Min / max / mean over size x size windows; padded positions are ignored by min and max (identity init) and
    by the mean (divided by the in-image count)."""
    dims, strides = (size, size, 1), (stride, stride, 1)
    if op == "min":
        return jax.lax.reduce_window(x_hwR, jnp.inf, jax.lax.min, dims, strides, padding)
    if op == "max":
        return jax.lax.reduce_window(x_hwR, -jnp.inf, jax.lax.max, dims, strides, padding)
    s = jax.lax.reduce_window(x_hwR, 0.0, jax.lax.add, dims, strides, padding)
    if isinstance(padding, str):
        return s / float(size * size)
    ones = jnp.ones(x_hwR.shape[:2] + (1,), x_hwR.dtype)
    return s / jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, padding)


def _same(k: int):
    return ((k, k), (k, k), (0, 0))


def _pool_pad(shape_hw, rounding: str):
    """Padding of a 2x2/stride-2 pooling window: none ("VALID", floor) or one row/column for odd sizes (ceil)."""
    if rounding == "floor":
        return "VALID"
    return ((0, shape_hw[0] % 2), (0, shape_hw[1] % 2), (0, 0))


def _spec_of(spec_or_params) -> vgg.VGGSpec:
    if isinstance(spec_or_params, (str, vgg.VGGSpec)):
        return vgg.get_spec(spec_or_params)
    return vgg.spec_from_params(spec_or_params)


def add_global_channel(guides_hwR: jax.Array) -> jax.Array:
    """Append an all-ones channel: [h, w, R] -> [h, w, R + 1] (a region covering the whole image)."""
    ones = jnp.ones(guides_hwR.shape[:-1] + (1,), guides_hwR.dtype)
    return jnp.concatenate([guides_hwR, ones], axis=-1)


@functools.lru_cache(maxsize=64)
def zoom_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The [n_out, n_in] float64 matrix of ``scipy.ndimage.zoom``'s 1-D resize from ``n_in`` to ``n_out`` samples
    with its defaults (cubic B-spline, prefiltered, corner-aligned) and ``mode="nearest"``, the official code's guide
    resize: column j is the zoom of the j-th unit vector (the zoom is linear). A 2-D zoom is ``M_h g M_w^T``.

    Example:
      >>> m = zoom_matrix(9, 5)                         # corner-aligned: output i sits at input 2 i
      >>> m.shape, bool(np.allclose(m, np.eye(9)[::2]))
      ((5, 9), True)
    """
    from scipy import ndimage

    n_in, n_out = int(n_in), int(n_out)
    if n_in < 1 or n_out < 1:
        raise ValueError(f"zoom sizes must be >= 1, got {n_in} -> {n_out}")
    eye = np.eye(n_in)
    cols = [ndimage.zoom(e, n_out / n_in, order=3, mode="nearest") for e in eye]
    if cols[0].shape != (n_out,):
        raise ValueError(f"scipy's zoom gave {cols[0].shape[0]} samples for {n_in} -> {n_out}")
    return np.stack(cols, axis=1)


def _zoom_to(x_HWR: jax.Array, shape_hw) -> jax.Array:
    """The official "simple" resize of [H, W, R] guides to [h, w, R] (identity at the same size)."""
    (H, W), (h, w) = x_HWR.shape[:2], tuple(shape_hw)
    y = x_HWR
    if h != H:
        y = jnp.einsum("hH,HWr->hWr", jnp.asarray(zoom_matrix(H, h), y.dtype), y, precision=jax.lax.Precision.HIGHEST)
    if w != W:
        y = jnp.einsum("wW,hWr->hwr", jnp.asarray(zoom_matrix(W, w), y.dtype), y, precision=jax.lax.Precision.HIGHEST)
    return y


def _finish(y: jax.Array, mode: str, erode: int, threshold, global_channel: bool) -> jax.Array:
    """A layer's guide after propagation: binarised ("simple" with erode: ``< th`` -> 0, ``> th`` -> 1, as the
    official code), extra erosion / dilation, the global channel."""
    if erode and mode == "simple":
        y = jnp.where(y < threshold, 0.0, jnp.where(y > threshold, 1.0, y))
    if erode:
        y = _window(y, 2 * abs(erode) + 1, 1, "min" if erode > 0 else "max", _same(abs(erode)))
    return add_global_channel(y) if global_channel else y


def propagate_guides(
    guides_HWR: jax.Array,
    spec_or_params,
    layers: Sequence[str],
    mode: str = "simple",
    erode: int = 0,
    threshold: float | jax.Array = 0.5,
    global_channel: bool = False,
    pool_rounding: str = "floor",
) -> Dict[str, jax.Array]:
    """Guides at the resolution of each requested layer, following the network's structure.

    Args:
      guides_HWR: [H, W, R] guides of the network input, values in [0, 1].
      spec_or_params: an architecture name / :class:`~nst_jax.vgg.VGGSpec`, or a params tree (structure read off it).
      layers: layer names of the network (``relu3_1``, ``pool2``, ...).
      mode: ``"simple"`` (cubic resize to each layer's size; soft), ``"area"`` (2x2 average per pooling; soft),
        ``"inside"`` (receptive field inside the region; binary), ``"all"`` (receptive field touches the region;
        binary) -- see the module docstring.
      erode: extra erosion (k > 0) or dilation (k < 0) by |k| feature-map pixels at each requested layer (the
        official code's ``k`` is ``-erode``).
      threshold: binarisation threshold for ``"inside"`` / ``"all"`` (``T >= threshold`` is inside) and for
        ``"simple"`` with ``erode``.
      global_channel: append an all-ones channel (after erosion).
      pool_rounding: the network's rounding of odd sizes at the pools, ``"floor"`` or ``"ceil"``.

    Returns:
      ``{layer: guides_hwR}`` float32 with [h, w] equal to the feature map size of :func:`nst_jax.vgg.features` at that
      layer, R (+1) channels.

    Example:
      >>> import jax.numpy as jnp
      >>> g = propagate_guides(jnp.ones((32, 32, 2)), "tiny19", ["relu1_1", "relu3_1"])
      >>> {k: v.shape for k, v in g.items()}
      {'relu1_1': (32, 32, 2), 'relu3_1': (8, 8, 2)}
    """
    if mode not in PROPAGATIONS:
        raise ValueError(f"propagation mode must be one of {PROPAGATIONS}, got {mode!r}")
    if guides_HWR.ndim != 3:
        raise ValueError(f"guides must be [H, W, R], got shape {tuple(guides_HWR.shape)}")
    erode = int(erode)
    spec = _spec_of(spec_or_params)
    seq = vgg.layer_sequence(spec)
    order = {name: j for j, (name, _) in enumerate(seq)}
    unknown = [name for name in layers if name not in order]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; this network has {[n for n, _ in seq]}")
    wanted = set(layers)
    out: Dict[str, jax.Array] = {}
    if not wanted:
        return out
    x = jnp.asarray(guides_HWR, jnp.float32)
    if mode == "simple":
        sizes = vgg.layer_sizes(spec, x.shape[:2], pool_rounding)
        return {name: _finish(_zoom_to(x, sizes[name]), mode, erode, threshold, global_channel) for name in layers}
    last = max(order[name] for name in wanted)
    if mode != "area":
        x = (x >= threshold).astype(jnp.float32)
    for name, kind in seq[: last + 1]:
        if kind == "conv" and mode != "area":
            x = _window(x, 3, 1, "min" if mode == "inside" else "max", _same(1))
        elif kind == "pool":
            x = _window(x, 2, 2, {"area": "mean", "inside": "min", "all": "max"}[mode],
                        _pool_pad(x.shape, pool_rounding))
        if name in wanted:
            out[name] = _finish(x, mode, erode, threshold, global_channel)
    return {name: out[name] for name in layers}


def prepare_guides(
    guides_HWR: jax.Array,
    spec_or_params,
    layers: Sequence[str],
    mode: str = "simple",
    erode: int = 0,
    threshold: float | jax.Array = 0.5,
    global_channel: bool = False,
    pool_rounding: str = "floor",
) -> Tuple[Dict[str, jax.Array], jax.Array]:
    """Propagate (:func:`propagate_guides`) and normalise (:func:`nst_jax.guided.normalize_guides`) in one go.

    Returns ``({layer: normalised guides_hwR}, valid_LR)`` where ``valid_LR[l, r]`` is False for a region that is
    empty at layer l (its guided statistics are skipped by the losses).
    """
    prop = propagate_guides(guides_HWR, spec_or_params, layers, mode, erode, threshold, global_channel, pool_rounding)
    normed, valids = {}, []
    for name in layers:
        normed[name], v = guided.normalize_guides(prop[name])
        valids.append(v)
    return normed, jnp.stack(valids, axis=0)


# ----------------------------------------------------------------------------------------------------------------
# Style targets (host-side precomputation; the results are passed to the solver as traced arguments)
# ----------------------------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("layers", "mode", "erode", "cfg"))
def _style_statistics(params, image_HW3, guides_HWR, threshold, layers, mode, erode, cfg: LossConfig):
    """One style image's guided Grams / sums for all its guide channels, plain Gram and mean feature (compiled once
    per image size); the network as ``cfg`` sets it up (pooling, rounding, padding, input scale)."""
    norm = cfg.gram_norm
    feats = network_features(params, image_HW3, layers, cfg)
    guides, valid_LR = prepare_guides(guides_HWR, params, layers, mode, erode, threshold,
                                      pool_rounding=cfg.pool_rounding)
    out = {
        "grams": {n: guided.guided_gram(feats[n], guides[n], norm) for n in layers},
        "sums": {n: guided.guided_sum(feats[n], guides[n]) for n in layers},
        "plain": {n: losses.gram(feats[n], norm) for n in layers},
        "means": {n: jnp.mean(feats[n], axis=(0, 1)) for n in layers},
        "valid_LR": valid_LR,
    }
    if "w2" in cfg.style_losses:  # per region: mean and covariance with the guided Gram's weights T~^2
        stats = lambda f, g: jax.vmap(lambda t: SL.feature_stats(f, jnp.square(t)), in_axes=2)(g)  # noqa: E731
        out["w2"] = {n: stats(feats[n].astype(jnp.float32), guides[n]) for n in layers}
        out["w2_plain"] = {n: SL.feature_stats(feats[n].astype(jnp.float32)) for n in layers}
    return out


def _w2_rows(per_style, pairs_sk, name: str, global_channel: bool):
    """The W2 targets ``(mean [R, C], cov + eps I [R, C, C], sqrt [R, C, C])`` of one layer: region r's statistics
    from its style's guide channel; the global channel's from the mixture of the styles' whole images."""
    means = [per_style[s]["w2"][name][0][k] for s, k in pairs_sk]
    covs = [per_style[s]["w2"][name][1][k] for s, k in pairs_sk]
    if global_channel:
        plain = [st["w2_plain"][name] for st in per_style]
        m, c, _ = SL.w2_blend(jnp.stack([p[0] for p in plain]), jnp.stack([p[1] for p in plain]),
                              jnp.ones(len(plain), jnp.float32), eps=0.0)
        means.append(m)
        covs.append(c)
    return jax.vmap(SL.w2_target_from_stats)(jnp.stack(means), jnp.stack(covs))


def guided_targets(
    params,
    style_images: Sequence[jax.Array],
    style_guides: Sequence[jax.Array],
    pairs: Sequence[Union[int, Tuple[int, int]]],
    layers: Sequence[str],
    *,
    mode: str = "simple",
    pooling: str = "max",
    erode: int = 0,
    threshold: float = 0.5,
    norm: str = "hw",
    global_channel: bool = False,
    cfg: Optional[LossConfig] = None,
) -> Dict[str, object]:
    """Targets of the guided losses, region r taken from style image s(r) with that style's own guides.

    Args:
      params: network params.
      style_images: S style images, each [H_s, W_s, 3] RGB in [0, 1] (sizes may differ).
      style_guides: S guides, each [H_s, W_s, R_s] at its style image's size.
      pairs: for each content region r, ``(s, k)`` = style image and its guide channel (see :func:`pair_regions`); a
        bare int ``s`` means channel ``r`` of style ``s``.
      layers: style layers (L of them).
      mode, erode, threshold: propagation of the style guides, as for the content (:func:`propagate_guides`).
      pooling: the network's pooling (``"max"``/``"avg"``), as used for the generated image.
      norm: Gram normalisation (:func:`nst_jax.losses.gram`).
      cfg: the loss structure whose network (pooling, pool rounding, padding, input scale) and Gram normalisation
        apply; default: ``pooling`` and ``norm`` with the plain network.
      global_channel: append one more region whose targets are the mean over styles of the plain Gram (the Gram of
        an all-ones guide) and of the plain mean feature; use it with ``global_channel=True`` for the content guides.

    Returns a dict of pytrees:
      ``"grams"``: ``{layer: [R, C, C]}`` guided Gram targets (Sec. 4, guided Gram);
      ``"sums"``: ``{layer: [R, C]}`` guided sum targets;
      ``"global_grams"``: ``{layer: [C, C]}`` mean over the S styles of their plain Grams (the "sums+gram" target);
      ``"valid_LR"``: [L, R] bool, False where region r of its style is empty at layer l (AND it with the content's);
      ``"w2"``: with "w2" in ``cfg.style_losses``, ``{layer: (mean [R, C], cov + eps I [R, C, C], sqrt [R, C, C])}``
      each region's Gaussian fitted with the guided Gram's weights ``T~^2`` (else empty).
    """
    if len(style_images) != len(style_guides):
        raise ValueError(f"{len(style_images)} style images but {len(style_guides)} style guides")
    if not style_images:
        raise ValueError("no style images given")
    pairs_sk = [(p, r) if isinstance(p, (int, np.integer)) else (int(p[0]), int(p[1])) for r, p in enumerate(pairs)]
    for r, (s, k) in enumerate(pairs_sk):
        if not 0 <= s < len(style_images) or not 0 <= k < style_guides[s].shape[-1]:
            raise ValueError(f"region {r}: pair (style {s}, channel {k}) does not exist")
    layers = tuple(layers)
    if cfg is None:
        cfg = LossConfig(content_layers=(), style_layers=layers, pooling=pooling, gram_norm=norm)
    per_style = []
    for s, (img, g) in enumerate(zip(style_images, style_guides)):
        img = jnp.asarray(img, jnp.float32)
        g = jnp.asarray(g, jnp.float32)
        if img.ndim != 3 or g.ndim != 3 or img.shape[:2] != g.shape[:2]:
            raise ValueError(
                f"style {s} has shape {tuple(img.shape)} but its guides have shape {tuple(g.shape)}; load the guides "
                "at the style image's size as [H, W, R]"
            )
        per_style.append(_style_statistics(params, img, g, jnp.float32(threshold), layers, mode, int(erode), cfg))

    grams, sums, global_grams = {}, {}, {}
    for name in layers:
        g_rows = [per_style[s]["grams"][name][k] for s, k in pairs_sk]
        m_rows = [per_style[s]["sums"][name][k] for s, k in pairs_sk]
        plain = jnp.mean(jnp.stack([st["plain"][name] for st in per_style]), axis=0)
        if global_channel:
            g_rows.append(plain)
            m_rows.append(jnp.mean(jnp.stack([st["means"][name] for st in per_style]), axis=0))
        grams[name] = jnp.stack(g_rows)
        sums[name] = jnp.stack(m_rows)
        global_grams[name] = plain
    cols = [per_style[s]["valid_LR"][:, k] for s, k in pairs_sk]
    if global_channel:
        cols.append(jnp.ones((len(layers),), bool))
    valid = jnp.stack(cols, axis=1)
    w2 = {n: _w2_rows(per_style, pairs_sk, n, global_channel) for n in layers} if "w2" in per_style[0] else {}
    return {"grams": grams, "sums": sums, "global_grams": global_grams, "valid_LR": valid, "w2": w2}


# ----------------------------------------------------------------------------------------------------------------
# Targets of a spatially controlled transfer
# ----------------------------------------------------------------------------------------------------------------

def _content_guides(spatial: SpatialConfig, shape_HW, original_HW) -> Tuple[Tuple[str, ...], np.ndarray]:
    if spatial.content_labels is not None:
        return masks.labels_at(spatial.content_labels, spatial.legend, shape_HW, original_HW)
    return masks.guides_at(spatial.content_masks or {}, shape_HW, "content", original_HW)


def _style_guides(spatial: SpatialConfig, content_names, styles: Sequence, originals
                  ) -> List[Tuple[Tuple[str, ...], np.ndarray]]:
    """(names, guides_HWR) of each style image: its label image, its masks, or (no masks) the whole image for the
    content regions assigned to it."""
    r2s = spatial.region_to_style
    labels = list(spatial.style_labels or [None] * len(styles))
    if len(labels) != len(styles):
        raise ValueError(f"{len(labels)} style label images for {len(styles)} style images; give one per style")
    style_masks = spatial.style_masks
    if style_masks is None and (len(styles) == 1 or any(lab is not None for lab in labels)):
        style_masks = [None] * len(styles)
    if style_masks is None or len(style_masks) != len(styles):
        raise ValueError(f"give style masks for each of the {len(styles)} style image(s) "
                         f"(got {0 if style_masks is None else len(style_masks)})")
    originals = list(originals or [None] * len(styles))
    out = []
    for j, (m, img, lab, orig) in enumerate(zip(style_masks, styles, labels, originals)):
        if lab is not None:
            out.append(masks.labels_at(lab, spatial.legend, img.shape[:2], orig))
            continue
        if m is None:  # a style without masks lends its whole image to the regions assigned to it
            mine = [n for n in content_names if (r2s or {}).get(n, 0 if len(styles) == 1 else -1) == j]
            if not mine:
                raise ValueError(f"style {j} has no masks and no region assigned to it; name its region "
                                 "(e.g. --style sky=FILE) or give its masks")
            m = {n: np.ones(img.shape[:2], np.float32) for n in mine}
        out.append(masks.guides_at(m, img.shape[:2], f"style {j}", orig))
    return out


def _stacked_targets(params, styles, s_named, c_names, c_guides, spatial: SpatialConfig, cfg: LossConfig
                     ) -> guided.StackedTargets:
    """One Gram of ``[F, s*T]`` per layer; target = mean over the styles of their stacked Grams (regions in content
    order; a region a style lacks is an all-zero guide in that style)."""
    layers, prop = cfg.style_layers, spatial.propagation
    args = (prop, spatial.erode, spatial.threshold, spatial.global_channel, cfg.pool_rounding)
    stacked, scales = {n: [] for n in layers}, {n: [] for n in layers}
    for img, (names_j, g_j) in zip(styles, s_named):
        zeros = np.zeros(g_j.shape[:2], np.float32)
        g = jnp.asarray(np.stack([g_j[..., names_j.index(n)] if n in names_j else zeros for n in c_names], -1))
        sp = propagate_guides(g, params, layers, *args)
        f = network_features(params, jnp.asarray(img), layers, cfg)
        for n in layers:
            scale = jnp.mean(f[n]) if spatial.guide_scale is None else jnp.asarray(spatial.guide_scale, jnp.float32)
            scales[n].append(scale)
            stacked[n].append(guided.stacked_gram(f[n], sp[n], scale, cfg.gram_norm))
    return guided.StackedTargets(
        guides_raw=propagate_guides(jnp.asarray(c_guides), params, layers, *args),
        stacked={n: jnp.mean(jnp.stack(stacked[n]), axis=0) for n in layers},
        guide_scale={n: jnp.mean(jnp.stack(scales[n])) for n in layers})


def spatial_targets(params, content_HW3, styles: Sequence, spatial: SpatialConfig, cfg: LossConfig, *,
                    content_original_HW=None, style_original_HW=None) -> Tuple[Targets, Tuple[str, ...]]:
    """Targets of a spatially controlled transfer (Gatys et al. 2017, Sec. 4), computed once.

    Args:
      content_HW3, styles: the images as the network sees them (after colour control), at the working size.
      spatial: the regions and how to propagate them (:class:`nst_jax.config.SpatialConfig`).
      content_original_HW / style_original_HW: the images' sizes on disk, against which masks are checked.

    Returns:
      ``(targets, region_names)``: :class:`nst_jax.objective.Targets` whose ``style`` is the mode's target type
      (:mod:`nst_jax.guided`), and the names of the R regions (``"global"`` last with ``global_channel``).
    """
    layers = cfg.style_layers
    c_names, c_guides = _content_guides(spatial, content_HW3.shape[:2], content_original_HW)
    s_named = _style_guides(spatial, c_names, styles, style_original_HW)
    pairs = pair_regions(c_names, [n for n, _ in s_named], spatial.region_to_style)
    content = compute_targets(params, content_HW3, [], cfg).content
    names = tuple(c_names) + (("global",) if spatial.global_channel else ())
    if spatial.mode == "stacked":
        return Targets(content, _stacked_targets(params, styles, s_named, c_names, c_guides, spatial, cfg)), names
    args = (spatial.propagation, spatial.erode, spatial.threshold)
    g_norm, c_valid = prepare_guides(jnp.asarray(c_guides), params, layers, *args, spatial.global_channel,
                                     cfg.pool_rounding)
    st = guided_targets(params, styles, [g for _, g in s_named], pairs, layers, mode=spatial.propagation,
                        erode=spatial.erode, threshold=spatial.threshold, global_channel=spatial.global_channel,
                        cfg=cfg)
    valid = c_valid & st["valid_LR"]
    guided.refuse_vanished_regions(np.asarray(valid), layers, names)
    guided.report_empty_regions(np.asarray(valid), layers, names)
    if spatial.mode == "gram":
        style = guided.GuidedGramTargets(guides=g_norm, valid=valid, grams=st["grams"], w2=st["w2"])
    elif spatial.mode == "sums":
        style = guided.GuidedSumTargets(guides=g_norm, valid=valid, sums=st["sums"])
    else:
        style = guided.SumsGramTargets(guides=g_norm, valid=valid, sums=st["sums"], global_grams=st["global_grams"])
    return Targets(content, style), names
