"""Reading the guidance channels of spatial control: mask files, colour-coded label images, and their sizes.

A guide is a float32 map in [0, 1] per region (white = inside, soft values allowed), read from the first channel of
a mask file with the decoding rules of :func:`nst_jax.image.load_mask`. Masks are checked against the size of the
image they guide on disk: another size with the same aspect ratio (within 2 %) is resized with a warning, another
aspect ratio is refused; then they are resized silently to the working size. A label image codes every region as a
colour of a legend (``"sky=#87ceeb;ground=#228b22"``). A freeze mask (:func:`freeze_mask_at`) marks the pixels a
transfer must leave at their initial values.
"""

from __future__ import annotations

import os
import warnings
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
from PIL import Image

from nst_jax import image

__all__ = [
    "ASPECT_TOLERANCE",
    "resize_mask",
    "fit_mask",
    "load_guides",
    "parse_legend",
    "guides_from_label_image",
    "guides_at",
    "labels_at",
    "freeze_mask_at",
]

#: Largest relative difference of aspect ratios (w/h) for which a mask of the wrong size is resized (with a warning).
ASPECT_TOLERANCE = 0.02

PathLike = Union[str, "os.PathLike[str]"]


def resize_mask(a_hw: np.ndarray, shape_HW: Tuple[int, int]) -> np.ndarray:
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
    if shape_HW is None or tuple(a_hw.shape) == tuple(int(v) for v in shape_HW):
        return a_hw
    _check_aspect(a_hw.shape, shape_HW, name)
    return resize_mask(a_hw, (int(shape_HW[0]), int(shape_HW[1])))


def _check_aspect(shape_hw, shape_HW, name: str) -> None:
    """Refuse a mask of another aspect ratio than its image's (``ValueError``); warn that one of another size is
    resized."""
    H, W = int(shape_HW[0]), int(shape_HW[1])
    h, w = shape_hw
    aspect_mask, aspect_want = w / h, W / H
    if abs(aspect_mask / aspect_want - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(
            f"{name} is {w}x{h} (WxH) but the image it guides is {W}x{H}: aspect ratios {aspect_mask:.3f} vs "
            f"{aspect_want:.3f} differ; make a mask of the image's size"
        )
    warnings.warn(f"{name} is {w}x{h} (WxH); resizing it to the image's {W}x{H}", stacklevel=4)


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
        a = image.load_mask(path)
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
            f"(commonest: {top}); add their colours to the legend (--legend) or repaint those pixels with legend colours"
        )
    one_hot = (label_HW[..., None] == np.arange(len(names))).astype(np.float32)
    if shape_HW is None:
        return names, one_hot
    first = fit_mask(one_hot[..., 0], shape_HW, name=f"label image {path!r}")  # warns or raises once
    if first.shape == one_hot.shape[:2]:
        return names, one_hot
    chans = [first] + [resize_mask(one_hot[..., r], first.shape) for r in range(1, len(names))]
    return names, np.stack(chans, axis=-1)



def guides_at(masks: Mapping[str, object], shape_HW: Tuple[int, int], what: str,
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
            a = image.load_mask(m)
            label = f"{what} mask {os.fspath(m)!r} (region {name!r})"
        else:
            a = np.asarray(m, np.float32)
            if a.ndim == 3:
                a = a[..., 0]
            label = f"{what} mask for region {name!r}"
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{label} holds NaN or inf values; pass a mask with values in [0, 1]")
        names.append(str(name))
        if a.shape != tuple(shape_HW):
            a = fit_mask(a, original_HW, name=label)
        chans.append(a if a.shape == tuple(shape_HW) else resize_mask(a, tuple(shape_HW)))
    return tuple(names), np.stack(chans, axis=-1).astype(np.float32)


def labels_at(path, legend, shape_HW, original_HW=None):
    """:func:`guides_from_label_image` at the working size; silent when the label image has the image's size on disk
    (resizing to the working size is then expected), warning/refusing otherwise as for masks."""
    with Image.open(path) as im:
        w, h = im.size
    if original_HW is not None and (h, w) == tuple(original_HW):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return guides_from_label_image(path, legend, shape_HW)
    return guides_from_label_image(path, legend, shape_HW)


def freeze_mask_at(mask, shape_HW: Tuple[int, int], original_HW: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A freeze mask (a file, first channel, or an [H, W] array) as float32 [H, W, 1] at the working ``shape_HW``,
    1 where a pixel is frozen: where the mask is non-zero (the official code's ``-mask_file`` rule). It is checked
    against the image's ``original_HW`` like a guide mask, then resized by nearest neighbour (frozen stays binary).

    Example:
      >>> m = np.zeros((4, 6), np.float32); m[:, :3] = 0.2          # left half frozen (any non-zero value)
      >>> freeze_mask_at(m, (2, 3), original_HW=(4, 6))[..., 0].tolist()   # the image is 6x4 on disk
      [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    """
    if isinstance(mask, (str, os.PathLike)):
        a, name = image.load_mask(mask), f"freeze mask {os.fspath(mask)!r}"
    else:
        a, name = np.asarray(mask, np.float32), "freeze mask"
        a = a[..., 0] if a.ndim == 3 else a
    if a.ndim != 2 or min(a.shape) < 1 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite [H, W] map, got shape {a.shape}")
    frozen = (a != 0).astype(np.float32)
    original_HW = tuple(original_HW or shape_HW)
    if frozen.shape != tuple(shape_HW) and frozen.shape != original_HW:
        _check_aspect(frozen.shape, original_HW, name)
    if frozen.shape != tuple(shape_HW):
        frozen = image.resize(frozen, tuple(shape_HW), resample="nearest")
    return frozen[..., None]
