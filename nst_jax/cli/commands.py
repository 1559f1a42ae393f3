"""``nst-jax match-color``, ``mix-styles``, ``figure`` and ``weights`` (``sweep`` and ``batch``: ``cli/sweep.py``)."""

from __future__ import annotations


import numpy as np

from nst_jax import weights
from nst_jax.cli import args as A
from nst_jax.cli.outputs import check_output, input_files, say_random, weights_files, write_json

__all__ = ["add_match_color_parser", "add_mix_styles_parser", "add_figure_parser",
           "add_weights_parser"]


def _weights_list(args) -> int:
    rows = weights.list_sources()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        cached = "cached" if r["cached"] else ("-" if r["cache_path"] else "n/a")
        print(f"{r['name']:<{width}}  {r['arch']:<6}  {cached:<6}  {r['description']}")
    print("\nor a path to a Keras .h5 (either layout) or a converted .npz; cache: " + str(weights.cache_dir()))
    return 0


def _weights_fetch(args) -> int:
    path = weights.fetch(args.name)
    print(path if path is not None else f"{args.name}: random weights, nothing to fetch")
    return 0


def _print_info(info, params) -> None:
    print(f"name:          {info.name}")
    print(f"architecture:  {info.arch} ({len(params)} convs)")
    print(f"layers:        {' '.join(info.layers)}")
    print(f"parameters:    {weights.param_count(params):,}")
    print(f"source:        {info.description}")
    if info.licence:
        print(f"licence:       {info.licence}")
    print(f"random:        {'yes (outputs are NOT style transfer)' if info.is_random else 'no'}")
    print(f"normalised:    {'yes' if info.normalized else 'no'}")
    print(f"pool rounding: {info.pool_rounding}")
    print(f"path:          {info.path or '-'}")
    print(f"sha256:        {info.sha256 or '-'}")


def _weights_info(args) -> int:
    params, info = weights.load_weights(args.name)
    _print_info(info, params)
    return 0


def _weights_convert(args) -> int:
    import pathlib

    check_output(args.output or pathlib.Path(args.file).with_suffix(".npz"), input_files(args), args.overwrite)
    out, info = weights.convert(args.file, args.output, caffe=args.caffe)
    params, _ = weights.load_weights(out, verbose=False)
    _print_info(info, params)
    return 0


def _weights_normalize(args) -> int:
    if args.output:
        check_output(args.output, input_files(args, weights_files(args.name)), args.overwrite)
    path, info, scales = weights.normalize(args.name, images_dir=args.images, size=args.size, pooling=args.pooling,
                                           out=args.output)
    for name, s in scales.items():
        print(f"{name:<8} scale min {s.min():.4g}  median {np.median(s):.4g}  max {s.max():.4g}  "
              f"(exactly 1, i.e. dead on these images: {int(np.sum(s == 1.0))} of {s.size})")
    print(f"wrote {path}  sha256 {info.sha256}")
    return 0


def add_weights_parser(subparsers, add_command) -> None:
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
    c.add_argument("--caffe", action="store_true",
                   help="the weights come from a Caffe model: runs with them pool odd sizes with ceil, as Caffe")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output")
    c.set_defaults(func=_weights_convert)
    c = add_command(sub, "normalize", help="Gatys normalisation: mean activation 1 per filter on calibration images")
    c.add_argument("name", help="source name or weights file")
    c.add_argument("--images", metavar="DIR", help="calibration images (default: the bundled samples)")
    c.add_argument("--size", type=int, default=256, help="long side of the calibration images in px (default 256)")
    c.add_argument("--pooling", choices=("avg", "max"), default="avg")
    c.add_argument("-o", "--output", help="output .npz (default: the cache)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    c.set_defaults(func=_weights_normalize)


def _match_color(args) -> int:
    from nst_jax import color as C
    from nst_jax import image as I

    out = check_output(args.output, input_files(args), args.overwrite)
    C.check_choice("match mode", args.mode, C.MATCH_MODES)
    src = I.load_image(args.source, size=args.size)
    tgt = I.load_image(args.target, size=args.size)
    res, A, b = C.match_color(src, tgt, mode=args.mode)
    I.save_image(out, np.clip(np.asarray(res), 0, 1), inputs=[args.source, args.target], overwrite=args.overwrite,
                 metadata={"software": "nst-jax match-color", "mode": args.mode,
                           "A": np.asarray(A).round(6).tolist(), "b": np.asarray(b).round(6).tolist()})
    print(f"wrote {out} (x' = A x + b, mode {args.mode})")
    return 0


def add_match_color_parser(subparsers, add_command) -> None:
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

    out = check_output(args.output, input_files(args, weights_files(args.weights)), args.overwrite)
    img = F.paper_figure(args.name, size=args.size, iters=args.iters, weights=args.weights,
                         progress=not args.no_progress)
    I.save_image(out, img, overwrite=args.overwrite, metadata={"software": "nst-jax figure", "figure": args.name, "size": args.size,
                                     "iters": args.iters, "weights": args.weights})
    print(f"wrote {out}")
    return 0


def add_figure_parser(subparsers, add_command) -> None:
    from nst_jax.figures import PAPER_FIGURES

    p = add_command(subparsers, "figure", help="reproduce a figure of the papers (or compare the style losses) on the bundled samples",
                    description="Make a figure on the bundled samples: " +
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

    out = check_output(args.output, input_files(args, weights_files(args.weights)), args.overwrite)
    fl = A.names(args.fine_layers)
    r = pyramid.mix_styles(args.coarse, args.fine, size=args.size, fine_layers=fl[0] if fl and len(fl) == 1 else fl,
                           match_colors_to=args.match_colors_to, iters=args.iters, weights=args.weights,
                           progress=not args.no_progress, seed=args.seed, layer_weights=args.layer_weights)
    I.save_image(out, r.image, inputs=[args.coarse, args.fine], overwrite=args.overwrite,
                 metadata=dict(r.settings, software="nst-jax mix-styles", coarse=str(args.coarse),
                               fine=str(args.fine)))
    say_random(r.settings)
    print(f"wrote {out} ({r.n_fg} f+g, loss {r.terms['total']:.4g}); use it as a style: nst-jax stylize CONTENT {out}")
    return 0


def add_mix_styles_parser(subparsers, add_command) -> None:
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
    p.add_argument("--layer-weights", choices=("equal", "inv_c2"), default="equal",
                   help="equal (default: weight / number of layers, the official code's) or inv_c2 (1/C_l^2)")
    p.add_argument("--iters", type=int, default=500, help="iterations (default 500)")
    p.add_argument("--weights", default="auto", help="weight source (default auto)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_mix_styles)


