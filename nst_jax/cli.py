"""The ``nst-jax`` command line.

Each command group lives in one ``_add_<group>_parser(subparsers)`` function that registers its sub-commands with a
``func(args) -> int`` handler; :data:`PARSER_BUILDERS` lists them and :func:`build_parser` calls each. Errors raised by
our code at the edge (``ValueError``, ``OSError`` incl. ``FileNotFoundError``) print one line
``nst-jax: error: ...`` and exit with status 2; ``--debug`` (anywhere on the line) shows the traceback instead.

Commands so far::

    nst-jax weights list
    nst-jax weights fetch NAME
    nst-jax weights info NAME
    nst-jax weights convert FILE [-o OUT]
    nst-jax weights normalize NAME [--images DIR] [--size PX] [--pooling avg|max] [-o OUT]
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
    g.add_argument("--remat", action="store_true", help="rematerialise VGG blocks (less memory, ~30%% slower)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 activations (float32 losses and optimiser)")
    sc = p.add_argument_group("spatial control (Gatys et al. 2017)")
    sc.add_argument("--style", dest="region_style", action="append", default=[], metavar="REGION=FILE",
                    help="style image for one region (repeat per region); replaces positional styles")
    sc.add_argument("--content-mask", action="append", default=[], metavar="REGION=FILE",
                    help="grey mask of a content region (white = inside); repeat per region")
    sc.add_argument("--style-mask", action="append", default=[], metavar="REGION=FILE",
                    help="mask of that region in its style image (default: the whole style image)")
    sc.add_argument("--spatial", default="gram", help="guided loss: gram (default), sums, sums+gram, stacked")
    sc.add_argument("--propagation", default="simple", help="guide propagation: simple (default), inside, all")
    sc.add_argument("--erode", type=int, default=0, help="extra erosion (>0) / dilation (<0) in feature pixels")
    sc.add_argument("--global-channel", action="store_true", help="add an all-ones guidance channel")
    s = p.add_argument_group("solver")
    s.add_argument("--iters", type=int, default=500, help="solver iterations (default 500)")
    s.add_argument("--init", default="content", help="content (default), noise, style, or an image file")
    s.add_argument("--solver", default="lbfgs", help="lbfgs (default), jaxopt, optax-lbfgs, adam")
    s.add_argument("--history", type=int, default=100, help="L-BFGS history size (default 100)")
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


def _write_json(path, obj) -> None:
    import json
    import os
    import tempfile

    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _say_random(result_settings) -> None:
    if result_settings.get("weights_random"):
        print("nst-jax: note: made with RANDOM weights (not a pretrained network): this is not style transfer",
              file=sys.stderr)


def _stylize(args) -> int:
    import pathlib

    from nst_jax import image as I
    from nst_jax.stylize import stylize

    styles, spatial = _styles_and_spatial(args)
    if not styles:
        raise ValueError("give at least one style image after the content image (or --style REGION=FILE)")
    inputs = [args.content, *styles, *(p for _, p in _pairs(args.content_mask + args.style_mask, "mask"))]
    out = _check_output(args.output, inputs, args.overwrite)
    trace_path = out.with_suffix(".json")
    _check_output(trace_path, inputs, args.overwrite, "loss trace")
    callback = None
    if args.save_every:
        def callback(it, img):
            I.save_image(out.with_name(f"{out.stem}_{it:05d}{out.suffix}"), img, inputs=inputs)
    r = stylize(args.content, styles, save_every=args.save_every, callback=callback,
                **_problem_kwargs(args, spatial), **_solver_kwargs(args))
    meta = dict(r.settings, content=str(args.content), style=[str(s) for s in styles], n_fg=r.n_fg,
                final_loss=r.terms["total"], software="nst-jax")
    I.save_image(out, r.image, metadata=meta, inputs=inputs)
    _write_json(trace_path, {"settings": meta, "terms": r.terms, "n_fg": r.n_fg,
                             "compile_seconds": r.compile_seconds, "run_seconds": r.run_seconds,
                             "trace": r.loss_trace})
    if args.plot:
        from nst_jax.figures import plot_losses

        plot_losses(r.loss_trace, out.with_name(out.stem + "_loss.png"), seconds=r.run_seconds)
    _say_random(r.settings)
    if r.stopped_nonfinite:
        print(f"nst-jax: warning: the {r.nonfinite_term} loss became NaN/inf; stopped early and kept the last finite "
              f"image (lower --lr or the weights)", file=sys.stderr)
    print(f"wrote {out} ({r.n_fg} f+g, loss {r.terms['total']:.4g}, compile {r.compile_seconds:.1f}s, "
          f"run {r.run_seconds:.1f}s)")
    return 0 if not r.stopped_nonfinite else 3


def _sweep(args) -> int:
    import pathlib

    from nst_jax import image as I
    from nst_jax.figures import format_ratio, labelled_grid
    from nst_jax.stylize import sweep

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
    _add_problem_args(p)
    p.set_defaults(func=_stylize)


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

#: The command groups, in help order. Add yours here.
PARSER_BUILDERS: List[Callable] = [_add_stylize_parser, _add_sweep_parser, _add_weights_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-jax", parents=[_COMMON],
                                     description="Optimisation-based neural style transfer in JAX.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in PARSER_BUILDERS:
        add(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
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
