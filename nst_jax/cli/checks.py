"""Checks a run passes before anything is loaded: files readable, images big enough, and the whole run's memory
(decoding every input, every image through the network, every pyramid level or sweep member, a checkpoint, the
runtime) within the free memory or ``--memory-limit``.

:func:`check_inputs` is what a command that solves calls (``stylize``, ``sweep``, ``batch``): give it the content and
style files, masks and, for a sweep, ``batch`` (the members solved at once).
"""

from __future__ import annotations

import math
import pathlib
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from nst_jax import image as I
from nst_jax.cli.args import names
from nst_jax.cli.outputs import parse_bytes
from nst_jax.config import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, MIN_SIDE, ProblemSpec, SolveOptions
from nst_jax.files import one_line

__all__ = ["image_header", "image_shape", "level_shapes", "check_inputs", "estimate", "check_memory",
           "memory_limit"]

#: Images are refused above this many pixels on a side after resizing (no machine holds such a solve).
MAX_SIDE = 1 << 17


def image_header(what: str, path) -> Tuple[int, int, str]:
    """(H, W, format) of an image file as it will be loaded (EXIF orientation applied), from its header; one-line
    errors for a missing path, a folder, or a file that is not an image."""
    from PIL import Image

    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} not found; check the path")
    if p.is_dir():
        raise ValueError(f"{what} {p} is a directory; pass an image file")
    try:
        with Image.open(p) as im:
            w, h, fmt = im.size[0], im.size[1], im.format
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad data
        raise ValueError(f"{what} {p} is not a readable image ({one_line(e)}); pass a complete PNG, JPEG, "
                         "TIFF, ... file") from None
    if w < 1 or h < 1:
        raise ValueError(f"{what} {p} has zero size ({w}x{h} px); pass a non-empty image")
    return h, w, fmt


def image_shape(what: str, path) -> Tuple[int, int]:
    """(H, W) of an image file from its header (see :func:`image_header`)."""
    return image_header(what, path)[:2]


def _check_sizes(spec: ProblemSpec, content: str, content_hw, style_shapes) -> Tuple[int, int]:
    for what, path, (h, w) in [("content image", content, content_hw)] + [("style image", s, hw)
                                                                          for s, hw in style_shapes]:
        if min(h, w) < MIN_SIDE:
            raise ValueError(f"{what} {path} is {w}x{h} px; images need at least {MIN_SIDE} px per side (the "
                             f"network halves them 4 times); use a larger image")
    H, W = I.fit_shape(content_hw, size=spec.size)
    if max(H, W) > MAX_SIDE:
        raise ValueError(f"at --size {spec.size or 'original'} the content becomes {W}x{H} px, more than any memory "
                         f"holds; use a smaller --size")
    if min(H, W) < MIN_SIDE:
        ch, cw = content_hw
        need = math.ceil(MIN_SIDE * max(ch, cw) / min(ch, cw))
        raise ValueError(f"at --size {spec.size} the content becomes {W}x{H} px, below the {MIN_SIDE} px per side "
                         f"the network needs; use --size {need} or more, or crop the image")
    for s, hw in style_shapes:
        sh, sw = _style_shape(hw, (H, W), spec.style_scale)
        if min(sh, sw) < MIN_SIDE:
            raise ValueError(f"style image {s} becomes {sw}x{sh} px at --style-scale {spec.style_scale}, below the "
                             f"{MIN_SIDE} px per side the network needs; use a larger --style-scale or crop it")
    return H, W


def _style_shape(style_hw, content_HW, style_scale: float) -> Tuple[int, int]:
    """A style image's working size: its longest side ``style_scale`` x the content's (as ``problem.prepare``)."""
    return I.fit_shape(style_hw, size=max(MIN_SIDE, int(round(max(content_HW) * style_scale))))


def level_shapes(args, content_hw, shape_HW) -> List[Tuple[int, int]]:
    """The (H, W) of every solve of the run: one, or each level of ``--scales`` / ``--auto-scales``."""
    scales, auto = getattr(args, "scales", None), getattr(args, "auto_scales", False)
    if not scales and not auto:
        return [tuple(shape_HW)]
    from nst_jax import pyramid
    from nst_jax.cli.args import floats

    sizes = None if not scales else [int(v) for v in floats(scales, "scales")]
    shapes = pyramid.scale_schedule(content_hw, scales=sizes, size=None if sizes else max(shape_HW),
                                    auto_scales=bool(auto))
    return [tuple(int(v) for v in s) for s in shapes]


def memory_limit(args) -> Tuple[bool, Optional[int]]:
    """``(check, limit_bytes)`` of ``--memory-limit``: default (None) checks against the free memory; 'none'/'off'
    skips the check."""
    text = getattr(args, "memory_limit", None)
    if text is not None and str(text).strip().lower() in ("none", "off"):
        return False, None
    return True, None if text is None else parse_bytes(text)


def estimate(args, spec: ProblemSpec, options: SolveOptions, levels: Sequence[Tuple[int, int]], style_hws,
             decode=(), n_masks: int = 0, batch: int = 1, checkpoint: bool = True) -> Dict[str, int]:
    """:func:`nst_jax.memory.estimate_run` of a command's settings (layers from the flags, the network from
    ``--weights``)."""
    from nst_jax import memory as M
    from nst_jax import weights as W

    c_layers = names(getattr(args, "content_layers", None)) or list(DEFAULT_CONTENT_LAYERS)
    s_layers = names(getattr(args, "style_layers", None)) or list(DEFAULT_STYLE_LAYERS)
    per_level = [[_style_shape(hw, lv, spec.style_scale) for hw in style_hws] for lv in levels]
    arch = W.guess_arch(str(spec.weights)) if isinstance(spec.weights, (str, pathlib.Path)) else "vgg19"
    host = M.available_bytes() is not None and _backend() == "cpu"
    return M.estimate_run(levels, arch=arch, layers=s_layers + c_layers, content_layers=c_layers,
                          style_shapes=per_level, decode=decode, n_masks=n_masks, history=options.solver.history,
                          batch=batch, remat=spec.remat, compute_dtype=spec.compute_dtype, solver=options.solver.name,
                          channels=spec.color.channels, checkpoint=checkpoint,
                          baseline=M.RUNTIME_BASELINE if host else 0, conv=spec.conv)


def _backend() -> str:
    import jax

    return jax.default_backend()


def check_memory(args, est: Dict[str, int], shape_HW, progress: bool = True) -> None:
    """Refuse a run whose estimated peak (``est["peak"]``) exceeds ``--memory-limit`` (default: the free memory);
    with ``progress``, print the estimate."""
    from nst_jax import memory as M

    check, limit = memory_limit(args)
    if not check:
        return
    H, W = shape_HW
    try:
        M.check_fits(est["peak"], limit)
    except ValueError as e:
        worst = max(("decode", "targets", "solve"), key=lambda k: est[k] + (est["checkpoint"] if k == "solve" else 0))
        what = {"decode": "decoding the largest input", "targets": "the style/content targets",
                "solve": "the solve"}[worst]
        more = " (or raise --memory-limit)" if limit is not None else " (--memory-limit SIZE sets another limit)"
        raise ValueError(f"{W}x{H} px: {e}{more}; the peak is {what}") from None
    if progress:
        avail = limit if limit is not None else M.available_bytes()
        of = "" if avail is None else f" of {M.format_bytes(avail)} {'allowed' if limit is not None else 'free'}"
        print(f"nst-jax: {W}x{H} px: estimated peak memory {M.format_bytes(est['peak'])}{of}", file=sys.stderr)


def check_inputs(args, spec: ProblemSpec, options: SolveOptions, styles: Sequence[str], masks=(),
                 init_file: bool = False, *, batch: int = 1, checkpoint: bool = True,
                 extra_images: Sequence[Tuple[str, str]] = ()) -> Dict[str, object]:
    """Refuse before loading anything: missing/unreadable files, images too small for the network (before or after
    resizing), and runs whose estimated peak memory exceeds ``--memory-limit`` (default: the free memory). Returns
    ``{"shape": (H, W) of the output, "levels": [...], "memory": estimate}``.

    ``masks``: ``[(what, region, path)]`` (mask and label files); ``extra_images``: ``[(what, path)]`` of other input
    images (``--mix-with``); ``batch``: members solved at once (a sweep).
    """
    c_h, c_w, c_fmt = image_header("content image", args.content)
    style_heads = [(s, image_header("style image", s)) for s in styles]
    mask_heads = [image_header(f"{what} {name!r}", p) for what, name, p in masks]
    extra_heads = [image_header(what, p) for what, p in extra_images]
    init_head = [image_header("--init image", args.init)] if init_file else []
    shape = _check_sizes(spec, args.content, (c_h, c_w), [(s, hd[:2]) for s, hd in style_heads])
    levels = level_shapes(args, (c_h, c_w), shape)
    top = max(levels, key=lambda hw: hw[0] * hw[1])
    decode = [((c_h, c_w), top, c_fmt)] + [(hd[:2], _style_shape(hd[:2], top, spec.style_scale), hd[2])
                                          for _, hd in style_heads]
    decode += [(hd[:2], None, hd[2]) for hd in mask_heads + extra_heads] + [(hd[:2], top, hd[2]) for hd in init_head]
    try:
        est = estimate(args, spec, options, levels, [hd[:2] for _, hd in style_heads], decode=decode,
                       n_masks=len(mask_heads) + (len(extra_heads) > 0), batch=batch, checkpoint=checkpoint)
    except ValueError as e:  # unknown layer names: reported with the network's valid names when the problem is built
        if "unknown layer" not in str(e):
            raise
        return {"shape": top, "levels": levels, "memory": None}
    check_memory(args, est, top, progress=options.progress)
    return {"shape": top, "levels": levels, "memory": est}
