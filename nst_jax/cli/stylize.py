"""``nst-jax stylize`` (one image, with checkpoints, resume and every control) and ``nst-jax resume``."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np

from nst_jax import checkpoint as CK
from nst_jax import image as I
from nst_jax.cli import args as A
from nst_jax.cli.checks import check_inputs
from nst_jax.cli.outputs import check_output, say_random, write_json
from nst_jax.config import INITS, WARM_STARTS, SolveOptions

__all__ = ["add_stylize_parser", "add_resume_parser", "run_settings"]

# Flags that do not change what a run computes (not compared when resuming from a checkpoint); file arguments are
# compared by their sha256 instead of their path.
_NOT_COMPARED = frozenset({"func", "debug", "command", "output", "iters", "checkpoint_every", "save_every",
                           "no_progress", "overwrite", "plot", "resume", "memory_limit", "checkpoint_file",
                           "content", "style", "region_style", "content_mask", "style_mask", "init", "weights"})


def run_settings(args, styles, c_masks, s_masks, init_file: bool) -> dict:
    """What a checkpoint records: ``compare`` (everything that defines the result, input files by sha256) and
    ``args`` (the stylize arguments with absolute paths, for ``nst-jax resume``)."""
    sha = CK.file_sha256
    args_d = {k: v for k, v in vars(args).items() if k not in ("func", "debug", "resume", "checkpoint_file")}
    compare = {k: v for k, v in args_d.items() if k not in _NOT_COMPARED}
    compare["content"] = sha(args.content)
    compare["style"] = [sha(s) for s in styles]
    compare["region_style"] = [f"{n}={sha(p)}" for n, p in A.pairs(args.region_style, "--style")]
    compare["content_mask"] = [f"{n}={sha(p)}" for n, p in c_masks]
    compare["style_mask"] = [f"{n}={sha(p)}" for n, p in s_masks]
    compare["init"] = sha(args.init) if init_file else args.init
    wpath = pathlib.Path(args.weights).expanduser()
    compare["weights"] = sha(wpath) if wpath.is_file() else args.weights
    ab = os.path.abspath
    rec = dict(args_d, content=ab(args.content), style=[ab(s) for s in args.style], output=ab(args.output),
               region_style=[f"{n}={ab(p)}" for n, p in A.pairs(args.region_style, "--style")],
               content_mask=[f"{n}={ab(p)}" for n, p in c_masks], style_mask=[f"{n}={ab(p)}" for n, p in s_masks],
               init=ab(args.init) if init_file else args.init,
               weights=str(wpath.resolve()) if wpath.is_file() else args.weights)
    return {"compare": compare, "args": rec, "software": "nst-jax"}


def _check_paths(args, out: pathlib.Path, inputs, ckpt: pathlib.Path, resuming: bool) -> None:
    if out.is_dir():
        raise ValueError(f"output {out} is a directory; give a file name such as {out / 'result.png'}")
    if out.suffix.lower() not in I.SAVE_SUFFIXES:
        raise ValueError(f"output {out} must end in .png, .jpg or .jpeg; choose another -o path")
    check_output(out, inputs, args.overwrite)
    check_output(out.with_suffix(".json"), inputs, args.overwrite, "loss trace")
    check_output(ckpt, inputs, True, "checkpoint")
    if ckpt.exists() and not resuming and not args.overwrite:
        raise ValueError(f"checkpoint {ckpt} exists from an unfinished run; pass --resume to continue it or "
                         "--overwrite to start again")
    if resuming and not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint {ckpt} to resume; run without --resume (add --checkpoint-every N "
                                "to write one)")


def _solve(args, spec, options, styles, spatial, settings, saved, ckpt):
    """The solve itself: coarse-to-fine, or one level with checkpoints and Ctrl-C handling."""
    from nst_jax import pyramid
    from nst_jax.transfer import stylize

    scales = None if args.scales is None else [int(v) for v in A.floats(args.scales, "scales")]
    mix_iters = None if args.mix_iters is None else [int(v) for v in A.floats(args.mix_iters, "mix-iters")]
    if args.mix_with:
        if len(styles) != 1 or spatial:
            raise ValueError("--mix-with takes exactly one positional style (the coarse scale) and no masks")
        if not (scales or args.auto_scales):  # one level: mix once (a coarse-to-fine run re-mixes at every level)
            styles = [pyramid.mixed_style(args.content, styles[0], args.mix_with, spec, options, iters=(
                mix_iters or [500])[0], match_mode=args.match_mode).image]
    with CK.InterruptFlag("nst-jax: interrupted; saving a checkpoint after the current chunk "
                          "(press Ctrl-C again to quit without saving)") as flag:
        solve = dict(checkpoint=ckpt, checkpoint_settings=settings, resume=saved, stop=flag)
        if scales or args.auto_scales:
            ips = None if args.iters_per_scale is None else [int(v) for v in A.floats(args.iters_per_scale,
                                                                                      "iters-per-scale")]
            return pyramid.stylize_pyramid(args.content, styles, scales=scales, iters_per_scale=ips,
                                           auto_scales=args.auto_scales, mix_with=args.mix_with or None,
                                           mix_iters=mix_iters, match_mode=args.match_mode, spec=spec,
                                           options=options, **solve)
        return stylize(args.content, styles, spec, options, **solve)


def _stylize(args) -> int:
    styles, spatial = A.styles_and_spatial(args)
    if not styles:
        raise ValueError("give at least one style image after the content image (or --style REGION=FILE)")
    c_masks, s_masks = A.pairs(args.content_mask, "--content-mask"), A.pairs(args.style_mask, "--style-mask")
    init_file = args.init not in INITS
    inputs = [args.content, *styles, *(p for _, p in c_masks + s_masks)] + ([args.init] if init_file else []) + (
        [args.freeze_mask] if args.freeze_mask else [])
    out = pathlib.Path(args.output)
    resuming = bool(getattr(args, "resume", False))
    ckpt = pathlib.Path(getattr(args, "checkpoint_file", None) or CK.checkpoint_path(out))
    callback = None
    if args.save_every:
        def callback(it, img):
            I.save_image(out.with_name(f"{out.stem}_{it:05d}{out.suffix}"), img, inputs=inputs)
    spec = A.problem_spec(args, spatial)
    options = A.solve_options(args, callback=callback, save_every=args.save_every,
                              checkpoint_every=args.checkpoint_every, warm_start=args.warm_start)
    _check_paths(args, out, inputs, ckpt, resuming)
    masks = [("content mask", n, p) for n, p in c_masks] + [("style mask", n, p) for n, p in s_masks]
    check_inputs(args, spec, options, styles, masks, init_file)
    settings = run_settings(args, styles, c_masks, s_masks, init_file)
    saved = None
    if resuming:
        saved = CK.load_checkpoint(ckpt)
        CK.compare_settings(saved.settings.get("compare", {}), settings["compare"])
        if saved.iteration > args.iters:
            raise ValueError(f"the checkpoint is at iteration {saved.iteration}, past --iters {args.iters}; "
                             f"pass --iters {saved.iteration} or more")
    r = _solve(args, spec, options, styles, spatial, settings, saved, ckpt)
    return _write_result(args, r, out, inputs, styles, ckpt, resuming)


def _write_result(args, r, out: pathlib.Path, inputs, styles, ckpt: pathlib.Path, resuming: bool) -> int:
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
    write_json(out.with_suffix(".json"), {"settings": meta, "terms": r.terms, "n_fg": r.n_fg,
                                          "compile_seconds": r.compile_seconds, "run_seconds": r.run_seconds,
                                          "trace": r.loss_trace})
    for stale in (ckpt, partial) if resuming else (ckpt,):
        if stale.exists():
            stale.unlink()
    if args.plot:
        from nst_jax.figures import plot_losses

        plot_losses(r.loss_trace, out.with_name(out.stem + "_loss.png"), seconds=r.run_seconds)
    say_random(r.settings)
    if r.stopped_nonfinite:
        last_ok = int(np.flatnonzero(np.isfinite(losses))[-1])
        print(f"nst-jax: warning: the {r.nonfinite_term} loss became NaN/inf at iteration {last_ok + 1}; stopped early "
              f"and wrote the last finite image (iteration {last_ok}) to {out}; lower --lr or the loss weights",
              file=sys.stderr)
    print(f"wrote {out} ({r.n_fg} f+g, loss {r.terms['total']:.4g}, compile {r.compile_seconds:.1f}s, "
          f"run {r.run_seconds:.1f}s)")
    return 0 if not r.stopped_nonfinite else 3


def add_stylize_parser(subparsers, add_command) -> None:
    p = add_command(subparsers, "stylize", help="stylise a content image (Gatys et al. 2016)",
                    description="Stylise CONTENT with one or more STYLE images (their Gram targets are blended).")
    p.add_argument("content", help="content image")
    p.add_argument("style", nargs="*", help="style image(s)")
    p.add_argument("-o", "--output", required=True, help="output image (.png or .jpg); a .json loss trace goes beside")
    p.add_argument("--save-every", type=int, default=None, help="also save the image every N iterations")
    p.add_argument("--plot", action="store_true", help="write OUT_loss.png (needs matplotlib)")
    sc = p.add_argument_group("scale control (Gatys et al. 2017, Sec. 6)")
    sc.add_argument("--scales", default=None, help="coarse-to-fine longest sides, e.g. 512,1024")
    sc.add_argument("--iters-per-scale", default=None,
                    help="iterations per level, e.g. 500,200 (default 500 at the coarsest level, then /2.5 per "
                         "level: 500,200,80,...)")
    sc.add_argument("--auto-scales", action="store_true",
                    help="levels by factors of 2 from 256 px up to --size (one compile per level size)")
    sc.add_argument("--mix-with", default=None, metavar="FINE_STYLE",
                    help="first mix the style (coarse scale) with FINE_STYLE's fine scale, then use the mix (the "
                         "official procedure: both styles recoloured to the content's colours (PCA, --match-mode), "
                         "so the result keeps the content's palette; re-mixed at every level of --scales)")
    sc.add_argument("--mix-iters", default=None,
                    help="iterations of the mix, one per level (default 500, then 200, 80, ... per level)")
    sc.add_argument("--warm-start", default=SolveOptions().warm_start, choices=WARM_STARTS,
                    help="auto: solve first at 1/4 and 1/2 of --size (when the size and --iters allow), then --iters "
                         f"iterations at --size; off: at --size only (default {SolveOptions().warm_start})")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="save OUT.ckpt.npz (image, solver state, loss trace, settings) every N iterations; Ctrl-C "
                        "always saves one")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT.ckpt.npz (give the same arguments; see also 'nst-jax resume')")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="refuse runs whose estimated peak memory exceeds SIZE, e.g. 8GB (default: the free memory; "
                        "'none': no check)")
    A.add_problem_args(p)
    A.add_cluster_args(p, processes=False)
    p.set_defaults(func=_stylize)


def _resume(args) -> int:
    ck = CK.load_checkpoint(args.checkpoint)
    rec = ck.settings.get("args")
    if not isinstance(rec, dict) or "content" not in rec or "output" not in rec:
        raise ValueError(f"{args.checkpoint} records no stylize arguments; run 'nst-jax stylize ... --resume' with "
                         "the original arguments instead")
    parser = argparse.ArgumentParser(prog="nst-jax")  # the stylize flags' defaults, then the recorded values
    add_stylize_parser(parser.add_subparsers(), lambda sub, name, **kw: sub.add_parser(name, **kw))
    ns = parser.parse_args(["stylize", rec["content"], "-o", rec["output"]])
    vars(ns).update(rec)
    ns.resume, ns.checkpoint_file = True, str(pathlib.Path(args.checkpoint))
    if args.iters is not None:
        ns.iters = args.iters
    if args.no_progress:
        ns.no_progress = True
    return _stylize(ns)


def add_resume_parser(subparsers, add_command) -> None:
    p = add_command(subparsers, "resume", help="finish an interrupted stylize run from its OUT.ckpt.npz",
                    description="Continue 'nst-jax stylize' from a checkpoint, with the arguments stored in it; the "
                                "input files must be unchanged (checked by sha256).")
    p.add_argument("checkpoint", help="the OUT.ckpt.npz file")
    p.add_argument("--iters", type=int, default=None, help="total iterations (default: as first asked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_resume)
