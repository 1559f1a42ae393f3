"""Command-line flags of the problem and the solve, and the settings objects built from them (once per run)."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

from nst_jax.config import (LAYER_WEIGHTINGS, NETWORK_CONVS, PADDINGS, POOL_ROUNDINGS, ProblemSpec, SolveOptions,
                            SolverConfig, SpatialConfig, split_kwargs)
from nst_jax import solvers

SOLVER_HELP = ("lbfgs (default; projected, preconditioned L-BFGS, one f+g per iteration), jaxopt-lbfgs (jaxopt.LBFGS) "
               "and optax-lbfgs (optax.lbfgs), both on PyTorch's clamp reparametrisation with the same preconditioner "
               "(to PyTorch's 100-f+g loss: 0.98-1.12x the default's f+g over 4 pairs at 256 px; more wall time per "
               "f+g on CPU), jaxopt (jaxopt.LBFGSB: warns, misses that loss after 1.6x the default's f+g, best "
               "5-197x it), adam")

__all__ = ["floats", "names", "size_arg", "pairs", "add_problem_args", "add_cluster_args", "cluster_config",
           "styles_and_spatial", "problem_spec", "solve_options"]


def floats(text: str, flag: str) -> List[float]:
    """``"1e-3,1e-2"`` -> [0.001, 0.01]; one-line errors naming ``--flag``."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{flag} takes comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ValueError(f"--{flag} is empty; give comma-separated numbers")
    return vals


def names(text: Optional[str], flag: str = "layers") -> Optional[List[str]]:
    """``"relu1_1, relu2_1"`` -> ["relu1_1", "relu2_1"] (None stays None; ``"none"`` -> []); an empty name (``","``,
    ``"relu1_1,"``) is refused."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    out = [v.strip() for v in text.split(",")]
    if not all(out):
        raise ValueError(f"--{flag} takes comma-separated layer names such as relu1_1,relu2_1 (or 'none'), got "
                         f"{text!r}")
    return out


def size_arg(text: str) -> Optional[int]:
    """``--size``: a number of pixels, or ``original`` (None: the content's own size)."""
    if text.strip().lower() == "original":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number of pixels or 'original', got {text!r}") from None


def pairs(items: Sequence[str], flag: str) -> List[Tuple[str, str]]:
    """``["sky=a.png", ...]`` -> [("sky", "a.png"), ...]; refuses a missing ``=`` and repeated names."""
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} takes REGION=FILE, got {item!r}")
        out.append((name, path))
    seen = [n for n, _ in out]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise ValueError(f"{flag} names region(s) {dup} more than once")
    return out


def add_problem_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by stylize and sweep: everything that defines the loss, and the solver."""
    g = p.add_argument_group("loss")
    g.add_argument("--size", type=size_arg, default=512,
                   help="longest side of the output in pixels (default 512), or 'original' (the content's size)")
    g.add_argument("--style-scale", type=float, default=1.0, help="style image size relative to --size (default 1)")
    g.add_argument("--preset", default="gatys",
                   help="loss convention: gatys (default), gatys-normalized (the 2017 code's weights for the "
                        "normalised VGG: style 1e9 split equally over the layers, content 1e6) or neural-style "
                        "(jcjohnson/neural-style's loss: x256 input, its TV)")
    g.add_argument("--content-weight", type=float, default=None, help="alpha (preset default)")
    g.add_argument("--style-weight", type=float, default=None, help="beta (preset default)")
    g.add_argument("--tv-weight", type=float, default=None, help="total-variation weight (preset default)")
    g.add_argument("--style-blend", default=None, help="comma-separated blend weights, one per style image")
    g.add_argument("--content-layers", default=None, help="comma-separated, default relu4_2")
    g.add_argument("--style-layers", default=None,
                   help="comma-separated, default relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
    g.add_argument("--layer-weights", default=None,
                   help="comma-separated per style layer, or inv_c2 (1/C_l^2), ones, equal (1/L) (default: the "
                        "preset's)")
    g.add_argument("--pooling", choices=("max", "avg"), default="max", help="max (default) or avg (the 2016 paper)")
    g.add_argument("--pool-rounding", choices=("auto",) + POOL_ROUNDINGS, default="auto",
                   help="odd sizes at the pools: floor (Keras' VGG) or ceil (Caffe's, the official codes'); auto "
                        "(default): ceil for weights converted with 'weights convert --caffe', else floor")
    g.add_argument("--padding", choices=PADDINGS, default="zero",
                   help="the convs' padding: zero (default), reflect (the official 2017 code's -reflectance, before "
                        "every conv), replicate, or reflect-first / replicate-first (the first conv only)")
    g.add_argument("--style-loss", default="gram",
                   help="style loss kinds, comma-separated: gram (default; Gram matrices), w2 (Gaussian 2-Wasserstein: "
                        "means and covariances), sliced (sliced Wasserstein), hist (per-channel histograms)")
    g.add_argument("--style-loss-weights", default=None,
                   help="comma-separated, one weight per --style-loss kind (default: each kind's calibrated weight, "
                        "gram 1, w2/sliced/hist 1e3)")
    g.add_argument("--sliced-projections", type=int, default=None,
                   help="random directions of the sliced loss per layer (default: the layer's channel count)")
    g.add_argument("--sliced-seed", type=int, default=0, help="seed of the sliced loss's directions (default 0)")
    g.add_argument("--hist-bins", type=_bins, default=256,
                   help="equal-mass bins of the histogram loss's targets (default 256; 'none': every style value)")
    g.add_argument("--normalize-gradients", action="store_true",
                   help="divide each loss term's gradient at its layer by its L1 norm (neural-style's "
                        "-normalize_gradients)")
    g.add_argument("--style-ref-size", type=int, default=None, metavar="PX",
                   help="keep the look of this size: layer weights tilted towards the deep layers by the working "
                        "size (e.g. 256; see README, resolution-consistent style)")
    g.add_argument("--freeze-mask", default=None, metavar="FILE",
                   help="mask whose non-zero pixels keep their initial value (the official code's -mask_file)")
    g.add_argument("--weights", default="auto", help="weight source or file (default auto; see 'nst-jax weights list')")
    g.add_argument("--color", default="none",
                   help="colour control: none, luminance, match-style, match-content, original")
    g.add_argument("--match-mode", default="pca", help="colour matching transform: chol, pca (default), sym")
    g.add_argument("--lum-match", default="meanstd",
                   help="luminance matching of --color luminance: meanstd (default; the paper's Eq. 6: mean and std), "
                        "mean (the official code's: shift the mean only), none")
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
    sc.add_argument("--sums-weight", type=float, default=None,
                    help="weight of the guided sums (--spatial sums, sums+gram; default 1e9 as the official code, "
                         "with the style layer weights and 1/R per region)")
    sc.add_argument("--propagation", default="simple",
                    help="guide propagation: simple (default; the official code's cubic resize to each layer), "
                         "area (2x2 means per pooling), inside, all")
    sc.add_argument("--erode", type=int, default=0,
                    help="extra erosion (>0) / dilation (<0) in feature pixels; the official code's k is -erode "
                         "(its 'inside, k=3' is --propagation inside --erode -3)")
    sc.add_argument("--global-channel", action="store_true", help="add an all-ones guidance channel")
    s = p.add_argument_group("solver")
    s.add_argument("--iters", type=int, default=500, help="solver iterations (default 500)")
    s.add_argument("--init", default="content", help="content (default), noise, style, or an image file")
    s.add_argument("--solver", default="lbfgs", help=SOLVER_HELP)
    s.add_argument("--history", type=int, default=100, help="L-BFGS history size (default 100)")
    s.add_argument("--no-precondition", dest="precondition", action="store_false",
                   help="plain L-BFGS: start the lbfgs solver's recursion from gamma*I instead of the smoothing "
                        "preconditioner (see nst_jax.lbfgs)")
    s.add_argument("--lr", type=float, default=None, help="step size (lbfgs 1.0, adam 0.02)")
    s.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="return the exponential moving average of the iterates with this decay (e.g. 0.9)")
    s.add_argument("--seed", type=int, default=0, help="PRNG seed for --init noise (default 0)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--print-every", type=int, default=None, metavar="N",
                   help="print one line with the loss and its content, style and TV terms every N iterations (also "
                        "when the output is not a terminal)")
    s.add_argument("--verbose", action="store_true", help="with --print-every: the terms of every layer too")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    e = p.add_argument_group("execution (per-backend defaults: nst_jax/backend.py; 'auto' picks them)")
    e.add_argument("--ops", default="auto", choices=("auto", "lax", "lean"),
                   help="network op path: plain lax ops or memory-lean custom derivatives")
    e.add_argument("--conv", default="auto", choices=NETWORK_CONVS,
                   help="3x3 convolutions: XLA's own, or Winograd F(4x4,3x3) on the layers where it was measured "
                        "cheaper (equal to a few 1e-6)")
    e.add_argument("--loop", default="auto", choices=("auto", "while", "host"),
                   help="a chunk of iterations as one compiled while loop, or steps dispatched from Python")
    e.add_argument("--members", default="auto", choices=("auto", "vmap", "unroll"),
                   help="a sweep's members as one batched network pass, or single-image passes side by side")
    e.add_argument("--precision", default="auto",
                   help="float32 matmul/conv precision: auto, highest, high, default, tensorfloat32, bfloat16")


def add_cluster_args(p: argparse.ArgumentParser, processes: bool) -> None:
    """``--devices`` (and with ``processes``, the multi-process flags of :class:`nst_jax.distributed.ClusterConfig`)."""
    c = p.add_argument_group("devices and processes (README: Many devices, many hosts)")
    c.add_argument("--devices", default=None, metavar="SPEC",
                   help="the devices to run on: cpu, cpu:N (N CPU devices), gpu, gpu:0,1 (those GPUs only); default: "
                        "what JAX finds")
    if not processes:
        return
    c.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="join a multi-process run: process 0 listens at HOST:PORT, the others connect (default: "
                        "JAX_COORDINATOR_ADDRESS with NST_JAX_NUM_PROCESSES / NST_JAX_PROCESS_ID, or a SLURM / "
                        "Open MPI launch)")
    c.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in the run")
    c.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0..N-1")
    c.add_argument("--init-timeout", type=int, default=60, metavar="S",
                   help="seconds to wait for the coordinator and the other processes (default 60)")


def cluster_config(args):
    """The :class:`nst_jax.distributed.ClusterConfig` of the command's flags (else of the environment)."""
    from nst_jax.distributed import ClusterConfig

    if any(getattr(args, k, None) is not None for k in ("coordinator", "num_processes", "process_id")):
        return ClusterConfig(args.coordinator, args.num_processes, args.process_id, init_timeout_s=args.init_timeout,
                             heartbeat_timeout_s=max(args.init_timeout, 10))
    return ClusterConfig.from_env()


def _labelled_spatial(args) -> Tuple[List[str], dict]:
    if not args.legend:
        raise ValueError("--content-labels needs --legend 'REGION=COLOUR;...' (e.g. 'sky=#87ceeb;ground=#228b22')")
    if args.style_labels and len(args.style_labels) != len(args.style):
        raise ValueError(f"{len(args.style_labels)} --style-labels for {len(args.style)} style images; "
                         "give one per style")
    return list(args.style), dict(
        content_labels=args.content_labels, legend=args.legend, style_labels=list(args.style_labels) or None,
        style_masks=None if args.style_labels else [None] * len(args.style))


def styles_and_spatial(args) -> Tuple[List[str], Optional[SpatialConfig]]:
    """Resolve positional styles, ``--style REGION=FILE``, masks and label images into (style files, spatial)."""
    named = pairs(args.region_style, "--style")
    c_masks = pairs(args.content_mask, "--content-mask")
    s_masks = pairs(args.style_mask, "--style-mask")
    common = dict(mode=args.spatial, propagation=args.propagation, erode=args.erode,
                  global_channel=args.global_channel)
    if named and args.style:
        raise ValueError("give style images either positionally or as --style REGION=FILE, not both")
    if args.content_labels:
        if c_masks or s_masks or named:
            raise ValueError("--content-labels replaces --content-mask/--style-mask/--style REGION=FILE; use one way")
        styles, fields = _labelled_spatial(args)
        return styles, SpatialConfig(**fields, **common)
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
    unknown = [n for n, _ in s_masks if n not in region_to_style]
    if unknown:
        raise ValueError(f"--style-mask names region(s) {unknown} that no --content-mask has")
    style_masks = [{n: path for n, path in s_masks if region_to_style.get(n) == j} or None for j in range(len(styles))]
    return styles, SpatialConfig(content_masks=dict(c_masks), style_masks=style_masks,
                                 region_to_style=region_to_style, **common)


def problem_spec(args, spatial: Optional[SpatialConfig]) -> ProblemSpec:
    """The :class:`ProblemSpec` of the command's flags."""
    spec, _ = split_kwargs(
        spatial=spatial, weights=args.weights, size=args.size, style_scale=args.style_scale, preset=args.preset,
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        style_blend=None if args.style_blend is None else floats(args.style_blend, "style-blend"),
        content_layers=names(args.content_layers, "content-layers"),
        style_layers=names(args.style_layers, "style-layers"),
        layer_weights=_layer_weights(args.layer_weights), pooling=args.pooling, color=args.color,
        match_mode=args.match_mode, lum_match=args.lum_match, remat=args.remat,
        compute_dtype="bfloat16" if args.bf16 else None, sums_weight=args.sums_weight,
        pool_rounding=args.pool_rounding, padding=args.padding, freeze_mask=args.freeze_mask, ops=args.ops,
        conv=args.conv, precision=args.precision, style_loss=args.style_loss,
        style_loss_weights=None if args.style_loss_weights is None else floats(args.style_loss_weights,
                                                                               "style-loss-weights"),
        sliced_projections=args.sliced_projections, sliced_seed=args.sliced_seed, hist_bins=args.hist_bins,
        normalize_gradients=args.normalize_gradients, style_ref_size=args.style_ref_size)
    return spec


def _bins(text: str):
    """``--hist-bins``: an integer or 'none'."""
    return None if text.strip().lower() == "none" else int(text)


def _layer_weights(text: Optional[str]):
    """``--layer-weights``: a convention name (inv_c2, ones, equal) or comma-separated numbers."""
    if text is None or text.strip() in LAYER_WEIGHTINGS:
        return None if text is None else text.strip()
    return floats(text, "layer-weights")


def solve_options(args, **extra) -> SolveOptions:
    """The :class:`SolveOptions` of the command's flags (``extra``: callback, save_every, checkpoint_every); a solver
    that misses the benchmark's bar is named in one ``nst-jax: warning:`` line (instead of the API's Python
    warning)."""
    note = solvers.caveat(args.solver)
    if note:
        print(f"nst-jax: warning: {note}", file=sys.stderr)
        warnings.filterwarnings("ignore", message=re.escape(note))
    solver = SolverConfig(name=args.solver, history=args.history, lr=args.lr, precondition=args.precondition,
                          loop=args.loop, members=args.members, ema=args.ema)
    return SolveOptions(iters=args.iters, init=args.init, seed=args.seed, solver=solver,
                        progress=not args.no_progress, print_every=args.print_every, verbose=args.verbose, **extra)
