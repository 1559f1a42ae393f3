"""Checks a run passes before anything is loaded: files readable, images big enough, memory estimate within bounds."""

from __future__ import annotations

import math
import pathlib
import sys
from typing import Sequence, Tuple

from nst_jax import image as I
from nst_jax.cli.args import names
from nst_jax.cli.outputs import parse_bytes
from nst_jax.config import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, MIN_SIDE, ProblemSpec, SolveOptions
from nst_jax.files import one_line

__all__ = ["image_shape", "check_inputs"]


def image_shape(what: str, path) -> Tuple[int, int]:
    """(H, W) of an image file as it will be loaded (EXIF orientation applied) from its header; one-line errors for a
    missing path, a folder, or a file that is not an image."""
    from PIL import Image

    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} not found; check the path")
    if p.is_dir():
        raise ValueError(f"{what} {p} is a directory; pass an image file")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad data
        raise ValueError(f"{what} {p} is not a readable image ({one_line(e)}); pass a complete PNG, JPEG, "
                         "TIFF, ... file") from None
    if w < 1 or h < 1:
        raise ValueError(f"{what} {p} has zero size ({w}x{h} px); pass a non-empty image")
    return h, w


def _check_sizes(spec: ProblemSpec, content: str, content_hw, style_shapes) -> Tuple[int, int]:
    for what, path, (h, w) in [("content image", content, content_hw)] + [("style image", s, hw)
                                                                          for s, hw in style_shapes]:
        if min(h, w) < MIN_SIDE:
            raise ValueError(f"{what} {path} is {w}x{h} px; images need at least {MIN_SIDE} px per side (the "
                             f"network halves them 4 times); use a larger image")
    H, W = I.fit_shape(content_hw, size=spec.size)
    if min(H, W) < MIN_SIDE:
        ch, cw = content_hw
        need = math.ceil(MIN_SIDE * max(ch, cw) / min(ch, cw))
        raise ValueError(f"at --size {spec.size} the content becomes {W}x{H} px, below the {MIN_SIDE} px per side "
                         f"the network needs; use --size {need} or more, or crop the image")
    style_size = max(MIN_SIDE, int(round(max(H, W) * spec.style_scale)))
    for s, (h, w) in style_shapes:
        sh, sw = I.fit_shape((h, w), size=style_size)
        if min(sh, sw) < MIN_SIDE:
            raise ValueError(f"style image {s} becomes {sw}x{sh} px at --style-scale {spec.style_scale}, below the "
                             f"{MIN_SIDE} px per side the network needs; use a larger --style-scale or crop it")
    return H, W


def _check_memory(args, spec: ProblemSpec, options: SolveOptions, shape_HW, n_styles: int) -> None:
    from nst_jax import memory as M
    from nst_jax import weights as W

    if str(args.memory_limit).lower() in ("none", "off"):
        return
    limit = None if args.memory_limit is None else parse_bytes(args.memory_limit)
    c_layers = names(args.content_layers) or list(DEFAULT_CONTENT_LAYERS)
    s_layers = names(args.style_layers) or list(DEFAULT_STYLE_LAYERS)
    H, W_ = shape_HW
    try:
        est = M.estimate_peak_bytes(shape_HW, arch=W.guess_arch(str(spec.weights)), layers=s_layers + c_layers,
                                    content_layers=c_layers, n_styles=n_styles, history=options.solver.history,
                                    remat=spec.remat, compute_dtype=spec.compute_dtype, solver=options.solver.name,
                                    channels=spec.color.channels)
    except ValueError:  # unknown layer names: reported with their fix when the problem is built
        return
    try:
        M.check_fits(est, limit)
    except ValueError as e:
        raise ValueError(f"{W_}x{H} px: {e}" + ("" if limit is None else " (or raise --memory-limit)")) from None
    if options.progress:
        avail = limit if limit is not None else M.available_bytes()
        of = "" if avail is None else f" of {M.format_bytes(avail)} {'allowed' if limit is not None else 'free'}"
        print(f"nst-jax: {W_}x{H} px: estimated peak memory {M.format_bytes(est)}{of}", file=sys.stderr)


def check_inputs(args, spec: ProblemSpec, options: SolveOptions, styles: Sequence[str], masks, init_file: bool
                 ) -> None:
    """Refuse before loading anything: missing/unreadable files, images too small for the network (before or after
    resizing) and runs whose estimated peak memory exceeds ``--memory-limit`` (default: the free memory)."""
    content_hw = image_shape("content image", args.content)
    style_shapes = [(s, image_shape("style image", s)) for s in styles]
    for what, name, p in masks:
        image_shape(f"{what} {name!r}", p)
    if init_file:
        image_shape("--init image", args.init)
    shape = _check_sizes(spec, args.content, content_hw, style_shapes)
    _check_memory(args, spec, options, shape, len(styles))
