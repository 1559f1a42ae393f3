"""Spatial control (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer", Sec. 4).

An image is split into R regions by *guidance channels* ``guides_HWR`` (float32 in [0, 1], soft values allowed; the
paper's T^r). Region r of the content is stylised with the statistics of region r of a style image (several style
images may each provide some regions). This module reads the guides, pairs content and style regions by name,
propagates the guides to the resolution of every layer of the network, and computes the style targets; the guided
losses themselves (guided Gram, guided sums, stacked Gram) live at the end of :mod:`nst_jax.losses`.

Propagation (:func:`propagate_guides`) follows the network's structure (:func:`nst_jax.vgg.layer_sequence`), so the
guide of layer l always has exactly the [H_l, W_l] of ``vgg.features(...)[l]``:

* ``"simple"``: conv / ReLU leave the guide unchanged, each 2x2/stride-2 pooling is a 2x2 average pooling (VALID, odd
  sizes floored like the network's). Soft values stay soft. This is the paper's "simply resize" choice done exactly.
* ``"inside"``: binarise the input guide at ``threshold`` (``T >= threshold`` -> 1), then keep a unit only if its
  whole receptive field lies inside the region: each 3x3 conv is a 3x3 min filter (erosion), each pooling a 2x2 min.
  **Zero padding counts as inside**: a border unit whose window reaches past the image is judged on its in-image
  pixels only (the padding is outside the image, not outside the region), so a full-image region stays full.
* ``"all"``: binarise, then keep a unit if its receptive field touches the region: 3x3 max filter (dilation) per conv,
  2x2 max per pooling; padding never counts as inside.

Both binary modes equal the exact receptive-field computation (tested against the Jacobian of a linearised network).
After propagation ``erode=k`` applies k more feature-map pixels of erosion (k > 0) or dilation (k < 0) with a
(2|k|+1)^2 square window (same padding rules), and ``global_channel=True`` appends an all-ones channel (the paper's
suggestion for neurons straddling a region boundary), see :func:`add_global_channel`.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from nst_jax import losses, vgg

__all__ = [
    "PROPAGATION_MODES",
    "read_mask",
    "fit_mask",
    "load_guides",
    "parse_legend",
    "guides_from_label_image",
    "pair_regions",
    "propagate_guides",
    "add_global_channel",
    "prepare_guides",
    "guided_targets",
]

PROPAGATION_MODES = ("simple", "inside", "all")

#: Largest relative difference of aspect ratios (w/h) for which a mask of the wrong size is resized (with a warning).
ASPECT_TOLERANCE = 0.02

PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------------------------------------------
# Reading guides
# ----------------------------------------------------------------------------------------------------------------

def read_mask(path: PathLike) -> np.ndarray:
    """Read a grey mask file as float32 [h, w] in [0, 1]: the first channel (as the paper's code), /255 for 8 bit.

    Palette images are converted to RGB first; 16-bit images are divided by 65535; float images are taken as is.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"guide mask {path!r} not found; pass an existing image file (white = inside)")
    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGB")
        elif im.mode == "1":
            im = im.convert("L")
        a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., 0]
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype in (np.uint16, np.int32, np.int16):
        a = a.astype(np.float32) / 65535.0
    else:
        a = a.astype(np.float32)
    if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"guide mask {path!r} has values outside [0, 1]; save it as an 8-bit grey image")
    return a


def _resize_hw(a_hw: np.ndarray, shape_HW: Tuple[int, int]) -> np.ndarray:
    """Smooth resize of a float [h, w] map: area averaging (BOX) when shrinking, bilinear when enlarging."""
    H, W = shape_HW
    h, w = a_hw.shape
    resample = Image.BOX if (H <= h and W <= w) else Image.BILINEAR
    out = np.asarray(Image.fromarray(np.ascontiguousarray(a_hw, np.float32)).resize((W, H), resample))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def fit_mask(a_hw: np.ndarray, shape_HW: Optional[Tuple[int, int]], name: str = "mask") -> np.ndarray:
    """Return ``a_hw`` at ``shape_HW`` ([H, W]); ``None`` keeps it as is.

    A mask of another size is resized (with a ``warnings.warn``) when its aspect ratio w/h matches the expected one
    within 2 %; otherwise a ``ValueError`` names the file, its size and the expected size.
    """
    if shape_HW is None:
        return a_hw
    H, W = int(shape_HW[0]), int(shape_HW[1])
    h, w = a_hw.shape
    if (h, w) == (H, W):
        return a_hw
    aspect_mask, aspect_want = w / h, W / H
    if abs(aspect_mask / aspect_want - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(
            f"{name} is {w}x{h} (WxH) but the image it guides is {W}x{H}: aspect ratios {aspect_mask:.3f} vs "
            f"{aspect_want:.3f} differ; make a mask of the image's size"
        )
    warnings.warn(f"{name} is {w}x{h} (WxH); resizing it to the image's {W}x{H}", stacklevel=3)
    return _resize_hw(a_hw, (H, W))


def load_guides(
    masks: Mapping[str, PathLike], shape_HW: Optional[Tuple[int, int]]
) -> Tuple[Tuple[str, ...], np.ndarray]:
    """Read one grey mask file per region: ``{region_name: path}`` -> ``(names, guides_HWR)``.

    Args:
      masks: region name -> mask file (white = inside, soft values allowed, first channel read).
      shape_HW: (H, W) of the image the masks guide; masks of another size are resized if their aspect ratio matches
        (warning), else ``ValueError``. ``None``: keep the masks' own size (they must all agree).

    Returns:
      ``names`` in the mapping's order and ``guides_HWR`` float32 [H, W, R] in [0, 1].

    Example:
      >>> from nst_jax.image import sample_path
      >>> names, g = load_guides({"sky": sample_path("tetons_snake_river_sky.png"),
      ...                         "nosky": sample_path("tetons_snake_river_nosky.png")}, (600, 749))
      >>> names, g.shape, g.dtype
      (('sky', 'nosky'), (600, 749, 2), dtype('float32'))
      >>> np.unique(g).tolist(), bool(np.all(g.sum(-1) == 1.0)), round(float(g[..., 0].mean()), 3)  # 31 % is sky
      ([0.0, 1.0], True, 0.315)
    """
    if not masks:
        raise ValueError("no guide masks given; pass {region_name: mask_path, ...}")
    names = tuple(str(n) for n in masks)
    chans = []
    for name, path in masks.items():
        a = read_mask(path)
        if shape_HW is None:
            shape_HW = a.shape
        chans.append(fit_mask(a, shape_HW, name=f"mask {os.fspath(path)!r} (region {name!r})"))
    return names, np.stack(chans, axis=-1).astype(np.float32)


def _parse_colour(value, name: str) -> Tuple[int, int, int]:
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("#") and len(s) == 7:
            try:
                return tuple(int(s[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
        parts = s.split(",")
        if len(parts) == 3:
            try:
                value = tuple(int(p) for p in parts)
            except ValueError:
                value = None
        else:
            value = None
        if value is None:
            raise ValueError(f"legend colour {s!r} of region {name!r} is not '#rrggbb' or 'r,g,b'")
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"legend colour {value!r} of region {name!r} is not an (r, g, b) triple") from None
    if len(rgb) != 3 or any(v < 0 or v > 255 for v in rgb):
        raise ValueError(f"legend colour {value!r} of region {name!r} must be 3 integers in 0..255")
    return rgb  # type: ignore[return-value]


def parse_legend(legend: Union[str, Mapping[str, object]]) -> Dict[str, Tuple[int, int, int]]:
    """Normalise a colour legend to ``{region_name: (r, g, b)}``.

    Accepts a mapping whose values are (r, g, b) triples of 0..255, ``"#rrggbb"`` or ``"r,g,b"`` strings, or a string
    ``"sky=#87ceeb;ground=#228b22"`` (entries separated by ``;``). Names and colours must be unique.
    """
    if isinstance(legend, str):
        items = []
        for entry in legend.split(";"):
            if not entry.strip():
                continue
            if "=" not in entry:
                raise ValueError(f"legend entry {entry.strip()!r} is not 'name=#rrggbb'")
            name, colour = entry.split("=", 1)
            if name.strip() in (n for n, _ in items):
                raise ValueError(f"legend names region {name.strip()!r} twice")
            items.append((name.strip(), colour))
        legend = dict(items)
    if not legend:
        raise ValueError("empty legend; pass {region_name: (r, g, b), ...}")
    out: Dict[str, Tuple[int, int, int]] = {}
    for name, value in legend.items():
        if not str(name):
            raise ValueError("legend has an empty region name")
        out[str(name)] = _parse_colour(value, str(name))
    seen: Dict[Tuple[int, int, int], str] = {}
    for name, rgb in out.items():
        if rgb in seen:
            raise ValueError(f"regions {seen[rgb]!r} and {name!r} share the legend colour {rgb}")
        seen[rgb] = name
    return out


def guides_from_label_image(
    path: PathLike,
    legend: Union[str, Mapping[str, object]],
    shape_HW: Optional[Tuple[int, int]],
    tol: float = 32.0,
) -> Tuple[Tuple[str, ...], np.ndarray]:
    """Guides from one colour-coded label image: ``(names, guides_HWR)``, region r = pixels of legend colour r.

    Each pixel goes to the legend colour nearest in RGB (Euclidean); a pixel farther than ``tol`` from every legend
    colour is an error (the message lists the commonest unknown colours), so JPEG noise near the colours is tolerated
    but a forgotten legend entry is not. The one-hot channels are built at the file's resolution, then resized
    smoothly (soft at the borders) to ``shape_HW`` under the same aspect-ratio rule as :func:`load_guides`.
    """
    legend_rgb = parse_legend(legend)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label image {path!r} not found")
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.float32)
    names = tuple(legend_rgb)
    colours_R3 = np.asarray([legend_rgb[n] for n in names], np.float32)
    if len(names) > 1:
        d = np.linalg.norm(colours_R3[:, None] - colours_R3[None], axis=-1)
        d[np.diag_indices(len(names))] = np.inf
        if d.min() <= 2 * tol:
            raise ValueError(f"legend colours closer than 2*tol = {2 * tol}; pass a smaller tol")
    dist_HWR = np.linalg.norm(rgb[:, :, None, :] - colours_R3[None, None], axis=-1)
    label_HW = np.argmin(dist_HWR, axis=-1)
    unmatched = np.min(dist_HWR, axis=-1) > tol
    if unmatched.any():
        cols, counts = np.unique(rgb[unmatched].astype(np.uint8), axis=0, return_counts=True)
        top = [tuple(int(v) for v in cols[i]) for i in np.argsort(-counts)[:5]]
        raise ValueError(
            f"label image {path!r}: {int(unmatched.sum())} pixels match no legend colour within tol={tol} "
            f"(commonest: {top}); add them to the legend or raise tol"
        )
    one_hot = (label_HW[..., None] == np.arange(len(names))).astype(np.float32)
    if shape_HW is None:
        return names, one_hot
    first = fit_mask(one_hot[..., 0], shape_HW, name=f"label image {path!r}")  # warns or raises once
    if first.shape == one_hot.shape[:2]:
        return names, one_hot
    chans = [first] + [_resize_hw(one_hot[..., r], first.shape) for r in range(1, len(names))]
    return names, np.stack(chans, axis=-1)


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
    """Min / max / mean over size x size windows; padded positions are ignored by min and max (identity init)."""
    dims, strides = (size, size, 1), (stride, stride, 1)
    if op == "min":
        return jax.lax.reduce_window(x_hwR, jnp.inf, jax.lax.min, dims, strides, padding)
    if op == "max":
        return jax.lax.reduce_window(x_hwR, -jnp.inf, jax.lax.max, dims, strides, padding)
    s = jax.lax.reduce_window(x_hwR, 0.0, jax.lax.add, dims, strides, padding)
    return s / float(size * size)


def _same(k: int):
    return ((k, k), (k, k), (0, 0))


def _spec_of(spec_or_params) -> vgg.VGGSpec:
    if isinstance(spec_or_params, (str, vgg.VGGSpec)):
        return vgg.get_spec(spec_or_params)
    return vgg.spec_from_params(spec_or_params)


def add_global_channel(guides_hwR: jax.Array) -> jax.Array:
    """Append an all-ones channel: [h, w, R] -> [h, w, R + 1] (a region covering the whole image)."""
    ones = jnp.ones(guides_hwR.shape[:-1] + (1,), guides_hwR.dtype)
    return jnp.concatenate([guides_hwR, ones], axis=-1)


def propagate_guides(
    guides_HWR: jax.Array,
    spec_or_params,
    layers: Sequence[str],
    mode: str = "simple",
    erode: int = 0,
    threshold: float | jax.Array = 0.5,
    global_channel: bool = False,
) -> Dict[str, jax.Array]:
    """Guides at the resolution of each requested layer, following the network's structure.

    Args:
      guides_HWR: [H, W, R] guides of the network input, values in [0, 1].
      spec_or_params: an architecture name / :class:`~nst_jax.vgg.VGGSpec`, or a params tree (structure read off it).
      layers: layer names of the network (``relu3_1``, ``pool2``, ...).
      mode: ``"simple"`` (2x2 average per pooling; soft), ``"inside"`` (receptive field inside the region; binary),
        ``"all"`` (receptive field touches the region; binary) — see the module docstring for the padding rule.
      erode: extra erosion (k > 0) or dilation (k < 0) by |k| feature-map pixels at each requested layer.
      threshold: binarisation threshold for ``"inside"`` / ``"all"`` (``T >= threshold`` is inside).
      global_channel: append an all-ones channel (after erosion).

    Returns:
      ``{layer: guides_hwR}`` float32 with [h, w] equal to the feature map size of :func:`nst_jax.vgg.features` at that
      layer (convs keep the size, pools floor-halve it), R (+1) channels.
    
    Example:
      >>> import jax.numpy as jnp
      >>> g = propagate_guides(jnp.ones((32, 32, 2)), "tiny19", ["relu1_1", "relu3_1"])
      >>> {k: v.shape for k, v in g.items()}
      {'relu1_1': (32, 32, 2), 'relu3_1': (8, 8, 2)}
    """
    if mode not in PROPAGATION_MODES:
        raise ValueError(f"propagation mode must be one of {PROPAGATION_MODES}, got {mode!r}")
    if guides_HWR.ndim != 3:
        raise ValueError(f"guides must be [H, W, R], got shape {tuple(guides_HWR.shape)}")
    erode = int(erode)
    seq = vgg.layer_sequence(_spec_of(spec_or_params))
    order = {name: j for j, (name, _) in enumerate(seq)}
    unknown = [name for name in layers if name not in order]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; this network has {[n for n, _ in seq]}")
    wanted = set(layers)
    out: Dict[str, jax.Array] = {}
    if not wanted:
        return out
    last = max(order[name] for name in wanted)

    x = jnp.asarray(guides_HWR, jnp.float32)
    if mode != "simple":
        x = (x >= threshold).astype(jnp.float32)
    for name, kind in seq[: last + 1]:
        if kind == "conv" and mode != "simple":
            x = _window(x, 3, 1, "min" if mode == "inside" else "max", _same(1))
        elif kind == "pool":
            x = _window(x, 2, 2, {"simple": "mean", "inside": "min", "all": "max"}[mode], "VALID")
        if name in wanted:
            y = x
            if erode:
                y = _window(y, 2 * abs(erode) + 1, 1, "min" if erode > 0 else "max", _same(abs(erode)))
            if global_channel:
                y = add_global_channel(y)
            out[name] = y
    return {name: out[name] for name in layers}


def prepare_guides(
    guides_HWR: jax.Array,
    spec_or_params,
    layers: Sequence[str],
    mode: str = "simple",
    erode: int = 0,
    threshold: float | jax.Array = 0.5,
    global_channel: bool = False,
) -> Tuple[Dict[str, jax.Array], jax.Array]:
    """Propagate (:func:`propagate_guides`) and normalise (:func:`nst_jax.losses.normalize_guides`) in one go.

    Returns ``({layer: normalised guides_hwR}, valid_LR)`` where ``valid_LR[l, r]`` is False for a region that is
    empty at layer l (its guided statistics are skipped by the losses).
    """
    prop = propagate_guides(guides_HWR, spec_or_params, layers, mode, erode, threshold, global_channel)
    normed, valids = {}, []
    for name in layers:
        normed[name], v = losses.normalize_guides(prop[name])
        valids.append(v)
    return normed, jnp.stack(valids, axis=0)


# ----------------------------------------------------------------------------------------------------------------
# Style targets (host-side precomputation; the results are passed to the solver as traced arguments)
# ----------------------------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("layers", "mode", "pooling", "erode", "norm"))
def _style_statistics(params, image_HW3, guides_HWR, threshold, layers, mode, pooling, erode, norm):
    """One style image's guided Grams / sums for all its guide channels, plain Gram and mean feature (compiled once
    per image size)."""
    feats = vgg.features(params, image_HW3, layers, pooling=pooling)
    guides, valid_LR = prepare_guides(guides_HWR, params, layers, mode, erode, threshold)
    return {
        "grams": {n: losses.guided_gram(feats[n], guides[n], norm) for n in layers},
        "sums": {n: losses.guided_sum(feats[n], guides[n]) for n in layers},
        "plain": {n: losses.gram(feats[n], norm) for n in layers},
        "means": {n: jnp.mean(feats[n], axis=(0, 1)) for n in layers},
        "valid_LR": valid_LR,
    }


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
      global_channel: append one more region whose targets are the mean over styles of the plain Gram (the Gram of
        an all-ones guide) and of the plain mean feature; use it with ``global_channel=True`` for the content guides.

    Returns a dict of pytrees:
      ``"grams"``: ``{layer: [R, C, C]}`` guided Gram targets (Sec. 4, guided Gram);
      ``"sums"``: ``{layer: [R, C]}`` guided sum targets;
      ``"global_grams"``: ``{layer: [C, C]}`` mean over the S styles of their plain Grams (the "sums+gram" target);
      ``"valid_LR"``: [L, R] bool, False where region r of its style is empty at layer l (AND it with the content's).
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
    per_style = []
    for s, (img, g) in enumerate(zip(style_images, style_guides)):
        img = jnp.asarray(img, jnp.float32)
        g = jnp.asarray(g, jnp.float32)
        if img.ndim != 3 or g.ndim != 3 or img.shape[:2] != g.shape[:2]:
            raise ValueError(
                f"style {s} has shape {tuple(img.shape)} but its guides have shape {tuple(g.shape)}; load the guides "
                "at the style image's size as [H, W, R]"
            )
        per_style.append(_style_statistics(params, img, g, jnp.float32(threshold), layers, mode, pooling, int(erode),
                                           norm))

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
    return {"grams": grams, "sums": sums, "global_grams": global_grams, "valid_LR": valid}


# ----------------------------------------------------------------------------------------------------------------
# Wiring into the solve: targets for a spatially controlled transfer and its style term
# ----------------------------------------------------------------------------------------------------------------

SPATIAL_MODES = ("gram", "sums", "sums+gram", "stacked")
PROPAGATIONS = ("simple", "inside", "all")


def _guides_at(masks: Mapping[str, object], shape_HW: Tuple[int, int], what: str,
               original_HW: Optional[Tuple[int, int]] = None) -> Tuple[Tuple[str, ...], np.ndarray]:
    """``{region: path or [H, W] array}`` -> (names, guides_HWR) at ``shape_HW``.

    Masks are checked against the image's ``original_HW`` (its size on disk; a mask of another size is resized with
    a warning if the aspect ratio matches, else refused) and then resized silently to the working ``shape_HW``.
    """
    original_HW = tuple(original_HW or shape_HW)
    if not masks:
        raise ValueError(f"no {what} masks given; pass region=MASK pairs")
    names, chans = [], []
    for name, m in masks.items():
        if isinstance(m, (str, os.PathLike)):
            a = read_mask(m)
            label = f"{what} mask {os.fspath(m)!r} (region {name!r})"
        else:
            a = np.asarray(m, np.float32)
            if a.ndim == 3:
                a = a[..., 0]
            label = f"{what} mask for region {name!r}"
        names.append(str(name))
        if a.shape != tuple(shape_HW):
            a = fit_mask(a, original_HW, name=label)
        chans.append(a if a.shape == tuple(shape_HW) else _resize_hw(a, tuple(shape_HW)))
    return tuple(names), np.stack(chans, axis=-1).astype(np.float32)


def _labels_at(path, legend, shape_HW, original_HW=None):
    """:func:`guides_from_label_image` at the working size; silent when the label image has the image's size on disk
    (resizing to the working size is then expected), warning/refusing otherwise as for masks."""
    with Image.open(path) as im:
        w, h = im.size
    if original_HW is not None and (h, w) == tuple(original_HW):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return guides_from_label_image(path, legend, shape_HW)
    return guides_from_label_image(path, legend, shape_HW)


def spatial_targets(params, content_HW3, styles: Sequence, spatial: Mapping[str, object], cfg) -> Tuple[dict, int]:
    """Targets of a spatially controlled transfer (Gatys et al. 2017, Sec. 4), computed once on the host.

    ``spatial`` keys: ``mode`` (one of :data:`SPATIAL_MODES`), ``content_masks`` ``{region: mask}``, ``style_masks``
    (one ``{region: mask}`` or None per style image; None lends the whole style image to the regions assigned to it),
    or instead colour-coded label images: ``content_labels`` (a path), ``style_labels`` (a path or None per style)
    with ``legend`` (``{region: colour}`` or ``"sky=#87ceeb;ground=#228b22"``, see :func:`guides_from_label_image`),
    ``region_to_style`` (``{region: style index}``, optional), ``propagation``
    (:data:`PROPAGATIONS`), ``erode``, ``threshold``, ``global_channel``, ``guide_scale`` (stacked mode; default the
    mean style activation per layer).

    Returns ``(targets, R)``: ``targets`` holds the content features, the content guides per layer (normalised; raw
    too for "stacked"), ``valid_LR`` (content AND style non-empty), and per mode ``ggrams`` {layer: [R, C, C]},
    ``gsums`` {layer: [R, C]}, ``global_grams`` {layer: [C, C]} or ``stacked`` {layer: [C+R, C+R]}; R counts the
    global channel when enabled.
    """
    from nst_jax import solve as S

    mode = spatial.get("mode", "gram")
    if mode not in SPATIAL_MODES:
        raise ValueError(f"unknown spatial mode {mode!r}; choose one of {', '.join(SPATIAL_MODES)}")
    prop = spatial.get("propagation", "simple")
    if prop not in PROPAGATIONS:
        raise ValueError(f"unknown guide propagation {prop!r}; choose one of {', '.join(PROPAGATIONS)}")
    erode = int(spatial.get("erode", 0))
    threshold = float(spatial.get("threshold", 0.5))
    global_channel = bool(spatial.get("global_channel", False))
    layers = tuple(cfg.style_layers)
    legend = spatial.get("legend")
    if spatial.get("content_labels") is not None:
        if spatial.get("content_masks"):
            raise ValueError("give the content regions either as masks or as a label image, not both")
        if not legend:
            raise ValueError("a label image needs a legend: region=colour pairs such as 'sky=#87ceeb;ground=#228b22'")
        c_names, c_guides = _labels_at(spatial["content_labels"], legend, content_HW3.shape[:2],
                                       spatial.get("content_original_HW"))
    else:
        c_names, c_guides = _guides_at(spatial.get("content_masks") or {}, content_HW3.shape[:2], "content",
                                       spatial.get("content_original_HW"))
    style_masks = spatial.get("style_masks")
    r2s = spatial.get("region_to_style")
    style_labels = spatial.get("style_labels") or [None] * len(styles)
    if len(style_labels) != len(styles):
        raise ValueError(f"{len(style_labels)} style label images for {len(styles)} style images; give one per style")
    if style_masks is None and (len(styles) == 1 or any(lab is not None for lab in style_labels)):
        style_masks = [None] * len(styles)
    if style_masks is not None and len(style_masks) == len(styles):
        # A style without masks lends its whole image to the regions assigned to it.
        filled = []
        for j, (m, img) in enumerate(zip(style_masks, styles)):
            if style_labels[j] is not None:
                filled.append({})  # regions come from its label image
                continue
            if m is None:
                mine = [n for n in c_names if (r2s or {}).get(n, 0 if len(styles) == 1 else -1) == j]
                if not mine:
                    raise ValueError(f"style {j} has no masks and no region assigned to it; name its region "
                                     "(e.g. --style sky=FILE) or give its masks")
                m = {n: np.ones(img.shape[:2], np.float32) for n in mine}
            filled.append(m)
        style_masks = filled
    if style_masks is None or len(style_masks) != len(styles):
        raise ValueError(f"give style masks for each of the {len(styles)} style image(s) "
                         f"(got {0 if style_masks is None else len(style_masks)})")
    originals = spatial.get("style_original_HW") or [None] * len(styles)
    s_named = [_labels_at(lab, legend, s.shape[:2], o) if lab is not None else
               _guides_at(m, s.shape[:2], f"style {j}", o)
               for j, (m, s, o, lab) in enumerate(zip(style_masks, styles, originals, style_labels))]
    pairs = pair_regions(c_names, [n for n, _ in s_named], r2s)

    targets = S.compute_targets(params, content_HW3, [], cfg)
    targets.pop("grams", None)
    g_norm, c_valid = prepare_guides(jnp.asarray(c_guides), params, layers, prop, erode, threshold, global_channel)
    st = guided_targets(params, styles, [g for _, g in s_named], pairs, layers, mode=prop, pooling=cfg.pooling,
                        erode=erode, threshold=threshold, norm=cfg.gram_norm, global_channel=global_channel)
    targets["guides"] = g_norm
    targets["valid_LR"] = c_valid & st["valid_LR"]
    names = list(c_names) + (["global"] if global_channel else [])
    losses.report_empty_regions(np.asarray(targets["valid_LR"]), layers, names)
    if mode == "gram":
        targets["ggrams"] = st["grams"]
    elif mode == "sums":
        targets["gsums"] = st["sums"]
    elif mode == "sums+gram":
        targets["gsums"] = st["sums"]
        targets["global_grams"] = st["global_grams"]
    else:  # stacked: one Gram of [F, s*T]; target = mean over styles of their stacked Grams (regions in content order)
        raw = propagate_guides(jnp.asarray(c_guides), params, layers, prop, erode, threshold, global_channel)
        targets["guides_raw"] = raw
        stacked, scales = {n: [] for n in layers}, {n: [] for n in layers}
        for j, (img, (names_j, g_j)) in enumerate(zip(styles, s_named)):
            # regions this style does not have are empty (all-zero guide channels) in its image
            zeros = np.zeros(g_j.shape[:2], np.float32)
            g = jnp.asarray(np.stack([g_j[..., names_j.index(n)] if n in names_j else zeros for n in c_names], -1))
            sp = propagate_guides(g, params, layers, prop, erode, threshold, global_channel)
            f = vgg.features(params, jnp.asarray(img), layers, pooling=cfg.pooling)
            for n in layers:
                scale = spatial.get("guide_scale")
                scale = jnp.mean(f[n]) if scale is None else jnp.asarray(scale, jnp.float32)
                scales[n].append(scale)
                stacked[n].append(losses.stacked_gram(f[n], sp[n], scale, cfg.gram_norm))
        targets["stacked"] = {n: jnp.mean(jnp.stack(stacked[n]), axis=0) for n in layers}
        targets["guide_scale"] = {n: jnp.mean(jnp.stack(scales[n])) for n in layers}
    return targets, len(names)


def spatial_style_loss(feats: Mapping[str, jax.Array], targets: Mapping, weights: Mapping, cfg) -> jax.Array:
    """The style term of a spatially controlled transfer, by ``cfg.spatial`` (inside the compiled loss)."""
    layers = tuple(cfg.style_layers)
    lw, rw, valid = weights["style_layers"], weights.get("regions"), targets.get("valid_LR")
    mode = cfg.spatial
    if mode == "gram":
        return losses.guided_style_loss(feats, targets["ggrams"], targets["guides"], layers, lw, rw, valid,
                                        cfg.gram_norm)
    if mode in ("sums", "sums+gram"):
        total = losses.guided_sum_loss(feats, targets["gsums"], targets["guides"], layers, lw, rw, valid)
        if mode == "sums+gram":
            total = total + losses.style_loss(feats, targets["global_grams"], layers, lw, cfg.gram_norm)
        return total
    if mode == "stacked":
        total = jnp.zeros((), jnp.float32)
        for j, n in enumerate(layers):
            g = losses.stacked_gram(feats[n], targets["guides_raw"][n], targets["guide_scale"][n], cfg.gram_norm)
            total = total + lw[j] * losses.gram_loss(g, targets["stacked"][n])
        return total
    raise ValueError(f"unknown spatial mode {mode!r}; choose one of {', '.join(SPATIAL_MODES)}")
