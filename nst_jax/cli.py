"""The ``nst-jax`` command line.

Each command group lives in one ``_add_<group>_parser(subparsers)`` function that registers its sub-commands with a
``func(args) -> int`` handler; :data:`PARSER_BUILDERS` lists them and :func:`build_parser` calls each. Errors raised by
our code at the edge (``ValueError``, ``OSError`` incl. ``FileNotFoundError``) print one line
``nst-jax: error: ...`` and exit with status 2; ``--debug`` (anywhere on the line) shows the traceback instead.

Commands::

    nst-jax stylize CONTENT STYLE [STYLE ...] -o OUT.png [...]      (Gatys 2016 + the 2017 controls)
    nst-jax resume OUT.ckpt.npz
    nst-jax sweep CONTENT STYLE --ratios 1e-4,1e-3,1e-2,1e-1 -o DIR
    nst-jax match-color SOURCE TARGET -o OUT --mode pca
    nst-jax mix-styles COARSE FINE -o NEW_STYLE.png
    nst-jax figure sweep|color|spatial|scale -o FIG.png
    nst-jax weights list | fetch NAME | info NAME | convert FILE [-o OUT] | normalize NAME [--images DIR]
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional, Sequence

import numpy as np

__all__ = ["main", "build_parser", "PARSER_BUILDERS", "add_command"]

_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                     help="show the full traceback on errors")


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """Add a (sub-)command that also accepts ``--debug``; use this instead of ``subparsers.add_parser``."""
    return subparsers.add_parser(name, parents=[_COMMON], **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# weights


def _weights_list(args) -> int:
    from nst_jax import weights

    rows = weights.list_sources()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        cached = "cached" if r["cached"] else ("-" if r["cache_path"] else "n/a")
        print(f"{r['name']:<{width}}  {r['arch']:<6}  {cached:<6}  {r['description']}")
    print("\nor a path to a Keras .h5 (either layout) or a converted .npz; cache: " + str(weights.cache_dir()))
    return 0


def _weights_fetch(args) -> int:
    from nst_jax import weights

    path = weights.fetch(args.name)
    print(path if path is not None else f"{args.name}: random weights, nothing to fetch")
    return 0


def _print_info(info, params) -> None:
    from nst_jax import weights

    print(f"name:          {info.name}")
    print(f"architecture:  {info.arch} ({len(params)} convs)")
    print(f"layers:        {' '.join(info.layers)}")
    print(f"parameters:    {weights.param_count(params):,}")
    print(f"source:        {info.description}")
    if info.licence:
        print(f"licence:       {info.licence}")
    print(f"random:        {'yes (outputs are NOT style transfer)' if info.is_random else 'no'}")
    print(f"normalised:    {'yes' if info.normalized else 'no'}")
    print(f"path:          {info.path or '-'}")
    print(f"sha256:        {info.sha256 or '-'}")


def _weights_info(args) -> int:
    from nst_jax import weights

    params, info = weights.load_weights(args.name)
    _print_info(info, params)
    return 0


def _weights_convert(args) -> int:
    from nst_jax import weights

    out, info = weights.convert(args.file, args.output)
    params, _ = weights.load_weights(out, verbose=False)
    _print_info(info, params)
    return 0


def _weights_normalize(args) -> int:
    from nst_jax import weights

    path, info, scales = weights.normalize(args.name, images_dir=args.images, size=args.size, pooling=args.pooling,
                                           out=args.output)
    for name, s in scales.items():
        print(f"{name:<8} scale min {s.min():.4g}  median {np.median(s):.4g}  max {s.max():.4g}  "
              f"(exactly 1, i.e. dead on these images: {int(np.sum(s == 1.0))} of {s.size})")
    print(f"wrote {path}  sha256 {info.sha256}")
    return 0


def _add_weights_parser(subparsers) -> None:
    p = add_command(subparsers, "weights", help="list, fetch, inspect, convert and normalise VGG weights",
                    description="VGG weight sources (see weights/README.md).")
    sub = p.add_subparsers(dest="weights_command", metavar="COMMAND", required=True)
    c = add_command(sub, "list", help="list the named weight sources and whether they are cached")
    c.set_defaults(func=_weights_list)
    c = add_command(sub, "fetch", help="download and convert a named source into the cache")
    c.add_argument("name")
    c.set_defaults(func=_weights_fetch)
    c = add_command(sub, "info", help="architecture, layers, parameter count, source, path and sha256 of weights")
    c.add_argument("name", help="source name or weights file")
    c.set_defaults(func=_weights_info)
    c = add_command(sub, "convert", help="convert a Keras .h5 (either layout) to the project's .npz")
    c.add_argument("file")
    c.add_argument("-o", "--output", help="output .npz (default: FILE with the suffix .npz)")
    c.set_defaults(func=_weights_convert)
    c = add_command(sub, "normalize", help="Gatys normalisation: mean activation 1 per filter on calibration images")
    c.add_argument("name", help="source name or weights file")
    c.add_argument("--images", metavar="DIR", help="calibration images (default: the bundled samples)")
    c.add_argument("--size", type=int, default=256, help="long side of the calibration images in px (default 256)")
    c.add_argument("--pooling", choices=("avg", "max"), default="avg")
    c.add_argument("-o", "--output", help="output .npz (default: the cache)")
    c.set_defaults(func=_weights_normalize)


# ----------------------------------------------------------------------------------------------------------------
# stylize / sweep


def _floats(text: str, what: str) -> List[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what} takes comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ValueError(f"--{what} is empty; give comma-separated numbers")
    return vals


def _names(text: Optional[str]) -> Optional[List[str]]:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def _add_problem_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by stylize and sweep (everything that defines the loss)."""
    g = p.add_argument_group("loss")
    g.add_argument("--size", type=int, default=512, help="longest side of the output in pixels (default 512)")
    g.add_argument("--style-scale", type=float, default=1.0, help="style image size relative to --size (default 1)")
    g.add_argument("--preset", default="gatys", help="loss convention: gatys (default) or neural-style")
    g.add_argument("--content-weight", type=float, default=None, help="alpha (preset default)")
    g.add_argument("--style-weight", type=float, default=None, help="beta (preset default)")
    g.add_argument("--tv-weight", type=float, default=None, help="total-variation weight (preset default)")
    g.add_argument("--style-blend", default=None, help="comma-separated blend weights, one per style image")
    g.add_argument("--content-layers", default=None, help="comma-separated, default relu4_2")
    g.add_argument("--style-layers", default=None, help="comma-separated, default relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
    g.add_argument("--layer-weights", default=None, help="comma-separated per style layer (default 1/C_l^2)")
    g.add_argument("--pooling", choices=("max", "avg"), default="max", help="max (default) or avg (the 2016 paper)")
    g.add_argument("--weights", default="auto", help="weight source or file (default auto; see 'nst-jax weights list')")
    g.add_argument("--color", default="none",
                   help="colour control: none, luminance, match-style, match-content, original")
    g.add_argument("--match-mode", default="pca", help="colour matching transform: chol, pca (default), sym")
    g.add_argument("--lum-match", default="meanstd", help="luminance matching: meanstd (default), mean, none")
    g.add_argument("--remat", action="store_true",
                   help="rematerialise VGG blocks in the backward pass (GPU/TPU; ignored on CPU, where it keeps more "
                        "memory, not less)")
    g.add_argument("--bf16", action="store_true",
                   help="bfloat16 activations, float32 losses and optimiser (saves memory on GPU/TPU only)")
    sc = p.add_argument_group("spatial control (Gatys et al. 2017)")
    sc.add_argument("--style", dest="region_style", action="append", default=[], metavar="REGION=FILE",
                    help="style image for one region (repeat per region); replaces positional styles")
    sc.add_argument("--content-mask", action="append", default=[], metavar="REGION=FILE",
                    help="grey mask of a content region (white = inside); repeat per region")
    sc.add_argument("--style-mask", action="append", default=[], metavar="REGION=FILE",
                    help="mask of that region in its style image (default: the whole style image)")
    sc.add_argument("--content-labels", default=None, metavar="FILE",
                    help="colour-coded label image of the content regions (instead of --content-mask; needs --legend)")
    sc.add_argument("--style-labels", action="append", default=[], metavar="FILE",
                    help="colour-coded label image of a style image (one per style, in order)")
    sc.add_argument("--legend", default=None, metavar="REGION=COLOUR;...",
                    help="region colours of the label images, e.g. 'sky=#87ceeb;ground=#228b22'")
    sc.add_argument("--spatial", default="gram", help="guided loss: gram (default), sums, sums+gram, stacked")
    sc.add_argument("--propagation", default="simple", help="guide propagation: simple (default), inside, all")
    sc.add_argument("--erode", type=int, default=0, help="extra erosion (>0) / dilation (<0) in feature pixels")
    sc.add_argument("--global-channel", action="store_true", help="add an all-ones guidance channel")
    s = p.add_argument_group("solver")
    s.add_argument("--iters", type=int, default=500, help="solver iterations (default 500)")
    s.add_argument("--init", default="content", help="content (default), noise, style, or an image file")
    s.add_argument("--solver", default="lbfgs", help="lbfgs (default), jaxopt, optax-lbfgs, adam")
    s.add_argument("--history", type=int, default=100, help="L-BFGS history size (default 100)")
    s.add_argument("--no-precondition", dest="precondition", action="store_false",
                   help="plain L-BFGS: start the lbfgs solver's recursion from gamma*I instead of the smoothing "
                        "preconditioner (fewer f+g to the same loss on the benchmark; see nst_jax.solve)")
    s.add_argument("--lr", type=float, default=None, help="step size (lbfgs 1.0, adam 0.02)")
    s.add_argument("--seed", type=int, default=0, help="PRNG seed for --init noise (default 0)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _pairs(items: Sequence[str], flag: str) -> List[tuple]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} takes REGION=FILE, got {item!r}")
        out.append((name, path))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{flag} names region(s) {dup} more than once")
    return out


def _styles_and_spatial(args):
    """Resolve positional styles, ``--style REGION=FILE`` and masks into (style files, spatial dict or None)."""
    named = _pairs(args.region_style, "--style")
    c_masks = _pairs(args.content_mask, "--content-mask")
    s_masks = _pairs(args.style_mask, "--style-mask")
    if named and args.style:
        raise ValueError("give style images either positionally or as --style REGION=FILE, not both")
    if args.content_labels:
        if c_masks or s_masks or named:
            raise ValueError("--content-labels replaces --content-mask/--style-mask/--style REGION=FILE; use one way")
        if not args.legend:
            raise ValueError("--content-labels needs --legend 'REGION=COLOUR;...' (e.g. 'sky=#87ceeb;ground=#228b22')")
        if args.style_labels and len(args.style_labels) != len(args.style):
            raise ValueError(f"{len(args.style_labels)} --style-labels for {len(args.style)} style images; "
                             "give one per style")
        return list(args.style), dict(
            mode=args.spatial, content_labels=args.content_labels, legend=args.legend,
            style_labels=list(args.style_labels) or None, style_masks=None if args.style_labels else
            [None] * len(args.style), propagation=args.propagation, erode=args.erode,
            global_channel=args.global_channel)
    if args.style_labels or args.legend:
        raise ValueError("--style-labels and --legend need --content-labels FILE")
    if not c_masks:
        if named or s_masks:
            raise ValueError("--style REGION=FILE and --style-mask need --content-mask REGION=FILE for each region")
        return list(args.style), None
    regions = [n for n, _ in c_masks]
    if named:
        styles = list(dict.fromkeys(path for _, path in named))
        region_to_style = {n: styles.index(path) for n, path in named}
        missing = [r for r in regions if r not in region_to_style]
        if missing:
            raise ValueError(f"content region(s) {missing} have no --style REGION=FILE; give one per region")
        extra = [n for n in region_to_style if n not in regions]
        if extra:
            raise ValueError(f"--style names region(s) {extra} that no --content-mask has")
    else:
        styles = list(args.style)
        if len(styles) != 1:
            raise ValueError("with masks, give one positional style or one --style REGION=FILE per region")
        region_to_style = {n: 0 for n in regions}
    style_masks = []
    for j in range(len(styles)):
        mine = {n: path for n, path in s_masks if region_to_style.get(n) == j}
        style_masks.append(mine or None)
    unknown = [n for n, _ in s_masks if n not in region_to_style]
    if unknown:
        raise ValueError(f"--style-mask names region(s) {unknown} that no --content-mask has")
    spatial = dict(mode=args.spatial, content_masks=dict(c_masks), style_masks=style_masks,
                   region_to_style=region_to_style, propagation=args.propagation, erode=args.erode,
                   global_channel=args.global_channel)
    return styles, spatial


def _problem_kwargs(args, spatial=None) -> dict:
    return dict(spatial=spatial,
        weights=args.weights, size=args.size, style_scale=args.style_scale, preset=args.preset,
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        style_blend=None if args.style_blend is None else _floats(args.style_blend, "style-blend"),
        content_layers=_names(args.content_layers), style_layers=_names(args.style_layers),
        layer_weights=None if args.layer_weights is None else _floats(args.layer_weights, "layer-weights"),
        pooling=args.pooling, color=args.color, match_mode=args.match_mode, lum_match=args.lum_match,
        remat=args.remat, compute_dtype="bfloat16" if args.bf16 else None,
    )


def _solver_kwargs(args) -> dict:
    return dict(iters=args.iters, init=args.init, seed=args.seed, solver=args.solver, history=args.history,
                precondition=args.precondition,
                lr=args.lr, progress=not args.no_progress)


def _check_output(path, inputs, overwrite: bool, what: str = "output"):
    """Refuse before any work: missing folder, an input as output, or an existing file without --overwrite."""
    import pathlib

    out = pathlib.Path(path)
    if not out.parent.exists():
        raise ValueError(f"{what} folder {out.parent} does not exist; create it or choose another -o path")
    for i in inputs:
        ip = pathlib.Path(i)
        if ip.exists() and out.exists() and out.resolve() == ip.resolve():
            raise ValueError(f"{what} {out} is one of the inputs; choose another -o path")
    if out.exists() and not overwrite:
        raise ValueError(f"{what} {out} exists; pass --overwrite to replace it or choose another -o path")
    return out


def _strict_json(obj):
    """``obj`` with non-finite floats (a trace after a NaN stop) replaced by None, so the file is strict JSON; NumPy
    scalars and arrays become Python numbers and lists."""
    import math

    if isinstance(obj, (np.generic, np.ndarray)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def _write_json(path, obj) -> None:
    """Write ``obj`` atomically as strict JSON (NaN/inf become null)."""
    import json

    from nst_jax.image import _atomic_write

    text = json.dumps(_strict_json(obj), indent=1, allow_nan=False)
    _atomic_write(path, lambda f: f.write(text.encode()))


def _say_random(result_settings) -> None:
    if result_settings.get("weights_random"):
        print("nst-jax: note: made with RANDOM weights (not a pretrained network): this is not style transfer",
              file=sys.stderr)


# Flags that do not change what a run computes (not compared when resuming from a checkpoint); file arguments are
# compared by their sha256 instead of their path.
_NOT_COMPARED = frozenset({"func", "debug", "command", "output", "iters", "checkpoint_every", "save_every",
                           "no_progress", "overwrite", "plot", "resume", "memory_limit", "checkpoint_file",
                           "content", "style", "region_style", "content_mask", "style_mask", "init", "weights"})
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def _parse_bytes(text: str) -> int:
    """``"8GB" -> 8e9``, ``"512MiB" -> 512 * 2**20``, ``"1e9" -> 1e9`` (decimal and binary units)."""
    import re

    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(text))
    try:
        value = float(m.group(1)) * _UNITS[m.group(2).lower()] if m else float("nan")
    except (KeyError, ValueError):
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"--memory-limit takes a size such as 8GB or 512MiB (or 'none'), got {text!r}")
    return int(value)


def _arch_guess(weights: str) -> str:
    """The architecture a weights argument names without loading it (vgg19, the largest, when unknown)."""
    from nst_jax import weights as W

    try:
        rnd = W._random_spec(weights)
        if rnd is not None:
            return rnd[1]
        if weights in W.SOURCES:
            return W._resolved(weights).arch
    except Exception:  # noqa: BLE001 - an invalid name is reported when the weights are loaded
        pass
    return "vgg19"


def _image_shape(what: str, path) -> tuple:
    """(H, W) of an image file as it will be loaded (EXIF orientation applied) from its header; one-line errors for a
    missing path, a folder, or a file that is not an image."""
    import pathlib

    from PIL import Image

    from nst_jax import image as I

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
        raise ValueError(f"{what} {p} is not a readable image ({I._one_line(e)}); pass a complete PNG, JPEG, "
                         "TIFF, ... file") from None
    if w < 1 or h < 1:
        raise ValueError(f"{what} {p} has zero size ({w}x{h} px); pass a non-empty image")
    return h, w


def _check_inputs(args, styles, c_masks, s_masks, init_file: bool) -> None:
    """Refuse before loading anything: missing/unreadable files, images too small for the network (before or after
    resizing) and runs whose estimated peak memory exceeds ``--memory-limit`` (default: the free memory)."""
    import math

    from nst_jax import image as I
    from nst_jax.transfer import MIN_SIDE

    if isinstance(args.size, bool) or args.size < MIN_SIDE:
        raise ValueError(f"--size must be at least {MIN_SIDE} px (the network halves the image 4 times), got "
                         f"{args.size}")
    if not (args.style_scale > 0 and math.isfinite(args.style_scale)):
        raise ValueError(f"--style-scale must be a positive number, got {args.style_scale}")
    ch, cw = _image_shape("content image", args.content)
    style_shapes = [(s, _image_shape("style image", s)) for s in styles]
    for n, p in c_masks:
        _image_shape(f"content mask {n!r}", p)
    for n, p in s_masks:
        _image_shape(f"style mask {n!r}", p)
    if init_file:
        _image_shape("--init image", args.init)
    for what, path, (h, w) in [("content image", args.content, (ch, cw))] + [("style image", s, hw)
                                                                            for s, hw in style_shapes]:
        if min(h, w) < MIN_SIDE:
            raise ValueError(f"{what} {path} is {w}x{h} px; images need at least {MIN_SIDE} px per side (the "
                             f"network halves them 4 times); use a larger image")
    H, W = I.fit_shape((ch, cw), size=args.size)
    if min(H, W) < MIN_SIDE:
        need = math.ceil(MIN_SIDE * max(ch, cw) / min(ch, cw))
        raise ValueError(f"at --size {args.size} the content becomes {W}x{H} px, below the {MIN_SIDE} px per side "
                         f"the network needs; use --size {need} or more, or crop the image")
    style_size = max(MIN_SIDE, int(round(max(H, W) * args.style_scale)))
    for s, (h, w) in style_shapes:
        sh, sw = I.fit_shape((h, w), size=style_size)
        if min(sh, sw) < MIN_SIDE:
            raise ValueError(f"style image {s} becomes {sw}x{sh} px at --style-scale {args.style_scale}, below the "
                             f"{MIN_SIDE} px per side the network needs; use a larger --style-scale or crop it")
    if str(args.memory_limit).lower() in ("none", "off"):
        return
    limit = None if args.memory_limit is None else _parse_bytes(args.memory_limit)
    try:
        from nst_jax import memory as M
    except ImportError:  # pragma: no cover - memory.py is optional
        return
    from nst_jax import solve as S

    c_layers = _names(args.content_layers) or list(S.DEFAULT_CONTENT_LAYERS)
    s_layers = _names(args.style_layers) or list(S.DEFAULT_STYLE_LAYERS)
    try:
        est = M.estimate_peak_bytes((H, W), arch=_arch_guess(args.weights), layers=s_layers + c_layers,
                                    content_layers=c_layers, n_styles=len(styles), history=args.history,
                                    remat=args.remat, compute_dtype="bfloat16" if args.bf16 else None,
                                    solver=args.solver, channels=1 if args.color == "luminance" else 3)
    except ValueError:  # unknown layer/solver names: reported with their fix when the problem is built
        return
    try:
        M.check_fits(est, limit)
    except ValueError as e:
        raise ValueError(f"{W}x{H} px: {e}" + ("" if limit is None else " (or raise --memory-limit)")) from None
    if not getattr(args, "no_progress", True):
        avail = limit if limit is not None else M.available_bytes()
        of = "" if avail is None else f" of {M.format_bytes(avail)} {'allowed' if limit is not None else 'free'}"
        print(f"nst-jax: {W}x{H} px: estimated peak memory {M.format_bytes(est)}{of}", file=sys.stderr)


def _run_settings(args, styles, c_masks, s_masks, init_file: bool) -> dict:
    """What a checkpoint records: ``compare`` (everything that defines the result, input files by sha256) and
    ``args`` (the stylize arguments with absolute paths, for ``nst-jax resume``)."""
    import os
    import pathlib

    from nst_jax import checkpoint as CK

    sha = CK.file_sha256
    args_d = {k: v for k, v in vars(args).items() if k not in ("func", "debug", "resume", "checkpoint_file")}
    compare = {k: v for k, v in args_d.items() if k not in _NOT_COMPARED}
    compare["content"] = sha(args.content)
    compare["style"] = [sha(s) for s in styles]
    compare["region_style"] = [f"{n}={sha(p)}" for n, p in _pairs(args.region_style, "--style")]
    compare["content_mask"] = [f"{n}={sha(p)}" for n, p in c_masks]
    compare["style_mask"] = [f"{n}={sha(p)}" for n, p in s_masks]
    compare["init"] = sha(args.init) if init_file else args.init
    wpath = pathlib.Path(args.weights).expanduser()
    compare["weights"] = sha(wpath) if wpath.is_file() else args.weights
    ab = os.path.abspath
    rec = dict(args_d, content=ab(args.content), style=[ab(s) for s in args.style], output=ab(args.output),
               region_style=[f"{n}={ab(p)}" for n, p in _pairs(args.region_style, "--style")],
               content_mask=[f"{n}={ab(p)}" for n, p in c_masks], style_mask=[f"{n}={ab(p)}" for n, p in s_masks],
               init=ab(args.init) if init_file else args.init,
               weights=str(wpath.resolve()) if wpath.is_file() else args.weights)
    return {"compare": compare, "args": rec, "software": "nst-jax"}


def _stylize(args) -> int:
    import pathlib

    from nst_jax import checkpoint as CK
    from nst_jax import image as I
    from nst_jax.transfer import INITS, prepare, solve_problem

    styles, spatial = _styles_and_spatial(args)
    if not styles:
        raise ValueError("give at least one style image after the content image (or --style REGION=FILE)")
    c_masks, s_masks = _pairs(args.content_mask, "--content-mask"), _pairs(args.style_mask, "--style-mask")
    init_file = args.init not in INITS
    inputs = [args.content, *styles, *(p for _, p in c_masks + s_masks)] + ([args.init] if init_file else [])
    out = pathlib.Path(args.output)
    if out.is_dir():
        raise ValueError(f"output {out} is a directory; give a file name such as {out / 'result.png'}")
    if out.suffix.lower() not in I.SAVE_SUFFIXES:
        raise ValueError(f"output {out} must end in .png, .jpg or .jpeg; choose another -o path")
    for flag, v in (("--iters", args.iters), ("--history", args.history)):
        if v < (0 if flag == "--iters" else 1):
            raise ValueError(f"{flag} must be >= {0 if flag == '--iters' else 1}, got {v}")
    for flag, v in (("--save-every", args.save_every), ("--checkpoint-every", args.checkpoint_every)):
        if v is not None and v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    if args.lr is not None and not (args.lr > 0 and args.lr < float("inf")):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    from nst_jax.solve import SOLVERS

    if args.solver not in SOLVERS:
        raise ValueError(f"unknown --solver {args.solver!r}; choose one of {', '.join(SOLVERS)}")
    resuming = bool(getattr(args, "resume", False))
    ckpt = pathlib.Path(getattr(args, "checkpoint_file", None) or CK.checkpoint_path(out))
    _check_output(out, inputs, args.overwrite)
    trace_path = out.with_suffix(".json")
    _check_output(trace_path, inputs, args.overwrite, "loss trace")
    _check_output(ckpt, inputs, True, "checkpoint")
    if ckpt.exists() and not resuming and not args.overwrite:
        raise ValueError(f"checkpoint {ckpt} exists from an unfinished run; pass --resume to continue it or "
                         "--overwrite to start again")
    if resuming and not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint {ckpt} to resume; run without --resume (add --checkpoint-every N "
                                "to write one)")
    _check_inputs(args, styles, c_masks, s_masks, init_file)
    settings = _run_settings(args, styles, c_masks, s_masks, init_file)
    saved = None
    if resuming:
        saved = CK.load_checkpoint(ckpt)
        CK.compare_settings(saved.settings.get("compare", {}), settings["compare"])
        if saved.iteration > args.iters:
            raise ValueError(f"the checkpoint is at iteration {saved.iteration}, past --iters {args.iters}; "
                             f"pass --iters {saved.iteration} or more")
    callback = None
    if args.save_every:
        def callback(it, img):
            I.save_image(out.with_name(f"{out.stem}_{it:05d}{out.suffix}"), img, inputs=inputs)
    scales = None if args.scales is None else [int(v) for v in _floats(args.scales, "scales")]
    if (scales or args.auto_scales) and (args.checkpoint_every or resuming):
        raise ValueError("--checkpoint-every/--resume work with single-scale runs; drop --scales/--auto-scales")
    if args.mix_with:
        from nst_jax import pyramid

        if len(styles) != 1 or spatial:
            raise ValueError("--mix-with takes exactly one positional style (the coarse scale) and no masks")
        mixed = pyramid.mix_styles(styles[0], args.mix_with, size=args.size, match_colors_to=args.content,
                                   weights=args.weights, iters=args.iters, progress=not args.no_progress)
        styles = [mixed.image]
    if scales or args.auto_scales:
        from nst_jax import pyramid

        ips = None if args.iters_per_scale is None else [int(v) for v in _floats(args.iters_per_scale,
                                                                                 "iters-per-scale")]
        kw = _problem_kwargs(args, spatial)
        size = kw.pop("size")
        sk = _solver_kwargs(args)
        sk.pop("iters")
        r = pyramid.stylize_pyramid(args.content, styles, scales=scales, iters_per_scale=ips,
                                    size=size if args.auto_scales else None, auto_scales=args.auto_scales,
                                    save_every=args.save_every, callback=callback, **kw, **sk)
        r.interrupted, r.iters_done = False, sum(lv.iters_done for lv in r.levels)
    else:
        r = None
    problem = None if r is not None else prepare(args.content, styles, **_problem_kwargs(args, spatial))
    with CK.InterruptFlag("nst-jax: interrupted; saving a checkpoint after the current chunk "
                          "(press Ctrl-C again to quit without saving)") as flag:
        if r is None:
            r = solve_problem(problem, save_every=args.save_every, callback=callback, checkpoint=ckpt,
                              checkpoint_every=args.checkpoint_every, checkpoint_settings=settings, resume=saved,
                              stop=flag, **_solver_kwargs(args))
    meta = dict(r.settings, content=str(args.content), style=[str(s) for s in args.style or styles], n_fg=r.n_fg,
                final_loss=r.terms["total"], software="nst-jax")
    partial = out.with_name(out.stem + ".partial" + out.suffix)
    if r.interrupted:
        I.save_image(partial, r.image, metadata=dict(meta, iteration=r.iters_done), inputs=inputs)
        print(f"nst-jax: interrupted at iteration {r.iters_done} of {args.iters}; saved the current image to "
              f"{partial} and the checkpoint {ckpt}; continue with: nst-jax resume {ckpt}", file=sys.stderr)
        return 130
    losses = np.array([t["loss"] for t in r.loss_trace], np.float64)
    if r.stopped_nonfinite and not np.isfinite(losses[0]):
        raise ValueError(f"the {r.nonfinite_term} loss is NaN/inf already for the initial image (the network's "
                         "activations overflow); check --weights ('nst-jax weights info') and the loss weights")
    I.save_image(out, r.image, metadata=meta, inputs=inputs)
    _write_json(trace_path, {"settings": meta, "terms": r.terms, "n_fg": r.n_fg,
                             "compile_seconds": r.compile_seconds, "run_seconds": r.run_seconds,
                             "trace": r.loss_trace})
    for stale in (ckpt, partial) if resuming else (ckpt,):
        if stale.exists():
            stale.unlink()
    if args.plot:
        from nst_jax.figures import plot_losses

        plot_losses(r.loss_trace, out.with_name(out.stem + "_loss.png"), seconds=r.run_seconds)
    _say_random(r.settings)
    if r.stopped_nonfinite:
        last_ok = int(np.flatnonzero(np.isfinite(losses))[-1])
        print(f"nst-jax: warning: the {r.nonfinite_term} loss became NaN/inf at iteration {last_ok + 1}; stopped early "
              f"and wrote the last finite image (iteration {last_ok}) to {out}; lower --lr or the loss weights",
              file=sys.stderr)
    print(f"wrote {out} ({r.n_fg} f+g, loss {r.terms['total']:.4g}, compile {r.compile_seconds:.1f}s, "
          f"run {r.run_seconds:.1f}s)")
    return 0 if not r.stopped_nonfinite else 3


def _sweep(args) -> int:
    import pathlib

    from nst_jax import image as I
    from nst_jax.figures import format_ratio, labelled_grid
    from nst_jax.transfer import sweep

    ratios = _floats(args.ratios, "ratios")
    outdir = pathlib.Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"output {outdir} is a file; sweep -o takes a folder")
    if not outdir.parent.exists():
        raise ValueError(f"folder {outdir.parent} does not exist; create it first")
    styles, spatial = _styles_and_spatial(args)
    if not styles:
        raise ValueError("give at least one style image after the content image (or --style REGION=FILE)")
    inputs = [args.content, *styles]
    names = [outdir / f"ratio_{r:.0e}.png" for r in ratios]
    if outdir.exists() and not args.overwrite:
        clash = [str(n) for n in names + [outdir / "grid.png", outdir / "sweep.json"] if n.exists()]
        if clash:
            raise ValueError(f"{clash[0]} exists; pass --overwrite to replace it or choose another -o folder")
    sw = sweep(args.content, styles, ratios, **_problem_kwargs(args, spatial), **_solver_kwargs(args))
    outdir.mkdir(exist_ok=True)
    for name, r in zip(names, sw.results):
        I.save_image(name, r.image, metadata=dict(r.settings, software="nst-jax"), inputs=inputs)
    grid = labelled_grid([r.image for r in sw.results], [format_ratio(r) for r in ratios])
    I.save_image(outdir / "grid.png", grid, inputs=inputs)
    _write_json(outdir / "sweep.json", {
        "ratios": ratios, "compile_seconds": sw.compile_seconds, "run_seconds": sw.run_seconds,
        "members": [{"ratio": q, "file": n.name, "n_fg": r.n_fg, "terms": r.terms, "trace": r.loss_trace}
                    for q, n, r in zip(ratios, names, sw.results)],
        "settings": {k: v for k, v in sw.results[0].settings.items() if k not in ("ratio", "style_weight")},
    })
    _say_random(sw.results[0].settings)
    fg = ", ".join(f"{format_ratio(q)}: {r.n_fg} f+g" for q, r in zip(ratios, sw.results))
    print(f"wrote {len(ratios)} images and {outdir / 'grid.png'} (one compiled solve; compile "
          f"{sw.compile_seconds:.1f}s, run {sw.run_seconds:.1f}s; {fg})")
    return 0


def _add_stylize_parser(subparsers) -> None:
    p = add_command(subparsers, "stylize", help="stylise a content image (Gatys et al. 2016)",
                    description="Stylise CONTENT with one or more STYLE images (their Gram targets are blended).")
    p.add_argument("content", help="content image")
    p.add_argument("style", nargs="*", help="style image(s)")
    p.add_argument("-o", "--output", required=True, help="output image (.png or .jpg); a .json loss trace goes beside")
    p.add_argument("--save-every", type=int, default=None, help="also save the image every N iterations")
    p.add_argument("--plot", action="store_true", help="write OUT_loss.png (needs matplotlib)")
    sc = p.add_argument_group("scale control (Gatys et al. 2017, Sec. 6)")
    sc.add_argument("--scales", default=None, help="coarse-to-fine longest sides, e.g. 512,1024")
    sc.add_argument("--iters-per-scale", default=None, help="iterations per level, e.g. 500,200 (default 500 at the coarsest level, then /2.5 per level: 500,200,80,...)")
    sc.add_argument("--auto-scales", action="store_true",
                    help="levels by factors of 2 from 256 px up to --size (one compile per level size)")
    sc.add_argument("--mix-with", default=None, metavar="FINE_STYLE",
                    help="first mix the style (coarse scale) with FINE_STYLE's fine scale, then use the mix")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="save OUT.ckpt.npz (image, solver state, loss trace, settings) every N iterations; Ctrl-C "
                        "always saves one")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT.ckpt.npz (give the same arguments; see also 'nst-jax resume')")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="refuse runs whose estimated peak memory exceeds SIZE, e.g. 8GB (default: the free memory; "
                        "'none': no check)")
    _add_problem_args(p)
    p.set_defaults(func=_stylize)


def _resume(args) -> int:
    import pathlib

    from nst_jax import checkpoint as CK

    ck = CK.load_checkpoint(args.checkpoint)
    rec = ck.settings.get("args")
    if not isinstance(rec, dict) or "content" not in rec or "output" not in rec:
        raise ValueError(f"{args.checkpoint} records no stylize arguments; run 'nst-jax stylize ... --resume' with "
                         "the original arguments instead")
    ns = build_parser().parse_args(["stylize", rec["content"], "-o", rec["output"]])
    vars(ns).update(rec)
    ns.resume, ns.checkpoint_file = True, str(pathlib.Path(args.checkpoint))
    if args.iters is not None:
        ns.iters = args.iters
    if args.no_progress:
        ns.no_progress = True
    return _stylize(ns)


def _add_resume_parser(subparsers) -> None:
    p = add_command(subparsers, "resume", help="finish an interrupted stylize run from its OUT.ckpt.npz",
                    description="Continue 'nst-jax stylize' from a checkpoint, with the arguments stored in it; the "
                                "input files must be unchanged (checked by sha256).")
    p.add_argument("checkpoint", help="the OUT.ckpt.npz file")
    p.add_argument("--iters", type=int, default=None, help="total iterations (default: as first asked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_resume)


def _add_sweep_parser(subparsers) -> None:
    p = add_command(subparsers, "sweep", help="several alpha/beta ratios as one vmapped compiled solve",
                    description="Run K content/style ratios alpha/beta at once; writes one image each and a grid.")
    p.add_argument("content", help="content image")
    p.add_argument("style", nargs="*", help="style image(s)")
    p.add_argument("--ratios", default="1e-4,1e-3,1e-2,1e-1", help="comma-separated alpha/beta ratios")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_problem_args(p)
    p.set_defaults(func=_sweep)


# ----------------------------------------------------------------------------------------------------------------
# match-color, figure


def _match_color(args) -> int:
    from nst_jax import color as C
    from nst_jax import image as I

    out = _check_output(args.output, [args.source, args.target], args.overwrite)
    C._check_choice("match mode", args.mode, C.MATCH_MODES)
    src = I.load_image(args.source, size=args.size)
    tgt = I.load_image(args.target, size=args.size)
    res, A, b = C.match_color(src, tgt, mode=args.mode)
    I.save_image(out, np.clip(np.asarray(res), 0, 1), inputs=[args.source, args.target],
                 metadata={"software": "nst-jax match-color", "mode": args.mode,
                           "A": np.asarray(A).round(6).tolist(), "b": np.asarray(b).round(6).tolist()})
    print(f"wrote {out} (x' = A x + b, mode {args.mode})")
    return 0


def _add_match_color_parser(subparsers) -> None:
    p = add_command(subparsers, "match-color", help="recolour SOURCE to TARGET's colour mean and covariance",
                    description="Colour histogram matching (Gatys et al. 2017, Sec. 5): an affine RGB map x' = A x + b "
                                "giving SOURCE the mean and covariance of TARGET's colours.")
    p.add_argument("source", help="image to recolour")
    p.add_argument("target", help="image whose colour statistics to take")
    p.add_argument("-o", "--output", required=True, help="output image")
    p.add_argument("--mode", default="pca", help="chol, pca (default) or sym")
    p.add_argument("--size", type=int, default=None, help="resize both (longest side) first")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_match_color)


def _figure(args) -> int:
    from nst_jax import figures as F
    from nst_jax import image as I

    out = _check_output(args.output, [], args.overwrite)
    img = F.paper_figure(args.name, size=args.size, iters=args.iters, weights=args.weights,
                         progress=not args.no_progress)
    I.save_image(out, img, metadata={"software": "nst-jax figure", "figure": args.name, "size": args.size,
                                     "iters": args.iters, "weights": args.weights})
    print(f"wrote {out}")
    return 0


def _add_figure_parser(subparsers) -> None:
    from nst_jax.figures import PAPER_FIGURES

    p = add_command(subparsers, "figure", help="reproduce a figure of the papers on the bundled samples",
                    description="Reproduce a paper figure on the bundled samples: " +
                                "; ".join(f"{k}: {v}" for k, v in PAPER_FIGURES.items()))
    p.add_argument("name", choices=sorted(PAPER_FIGURES), help="which figure")
    p.add_argument("-o", "--output", required=True, help="output image (.png)")
    p.add_argument("--size", type=int, default=256, help="longest side of each panel (default 256)")
    p.add_argument("--iters", type=int, default=200, help="iterations per transfer (default 200)")
    p.add_argument("--weights", default="auto", help="weight source (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_figure)


# ----------------------------------------------------------------------------------------------------------------
# mix-styles


def _mix_styles(args) -> int:
    from nst_jax import image as I
    from nst_jax import pyramid

    out = _check_output(args.output, [args.coarse, args.fine], args.overwrite)
    fl = _names(args.fine_layers)
    r = pyramid.mix_styles(args.coarse, args.fine, size=args.size, fine_layers=fl[0] if fl and len(fl) == 1 else fl,
                           match_colors_to=args.match_colors_to, iters=args.iters, weights=args.weights,
                           progress=not args.no_progress, seed=args.seed)
    I.save_image(out, r.image, inputs=[args.coarse, args.fine],
                 metadata=dict(r.settings, software="nst-jax mix-styles", coarse=str(args.coarse),
                               fine=str(args.fine)))
    _say_random(r.settings)
    print(f"wrote {out} ({r.n_fg} f+g, loss {r.terms['total']:.4g}); use it as a style: nst-jax stylize CONTENT {out}")
    return 0


def _add_mix_styles_parser(subparsers) -> None:
    p = add_command(subparsers, "mix-styles", help="a new style image: coarse scale of one style, fine scale of another",
                    description="Gatys et al. 2017, Sec. 6: start from COARSE and match FINE's Gram matrices on the "
                                "lower layers only, with no content loss; the result is a new style image.")
    p.add_argument("coarse", help="style image giving the coarse scale (layout, large shapes)")
    p.add_argument("fine", help="style image giving the fine scale (brush strokes, texture)")
    p.add_argument("-o", "--output", required=True, help="the new style image")
    p.add_argument("--size", type=int, default=512, help="longest side (default 512)")
    p.add_argument("--fine-layers", default=None,
                   help="last layer (or comma-separated layers) taken from FINE (default relu2_1 below ~1024^2 px, "
                        "relu4_1 above)")
    p.add_argument("--match-colors-to", default=None, help="colour-match both styles to this image first")
    p.add_argument("--iters", type=int, default=500, help="iterations (default 500)")
    p.add_argument("--weights", default="auto", help="weight source (default auto)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_mix_styles)


# ----------------------------------------------------------------------------------------------------------------

#: The command groups, in help order. Add yours here.
PARSER_BUILDERS: List[Callable] = [_add_stylize_parser, _add_resume_parser, _add_sweep_parser,
                                   _add_match_color_parser, _add_mix_styles_parser, _add_figure_parser,
                                   _add_weights_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-jax", parents=[_COMMON],
                                     description="Optimisation-based neural style transfer in JAX.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in PARSER_BUILDERS:
        add(subparsers)
    return parser


def _backend() -> str:
    import jax

    return jax.default_backend()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if getattr(args, "remat", False) and _backend() == "cpu":
        print("nst-jax: note: --remat ignored on CPU (XLA:CPU drops the barriers it needs and then keeps more memory: "
              "791 vs 528 MiB measured at 512 px)", file=sys.stderr)
        args.remat = False
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as e:
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"nst-jax: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nst-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
