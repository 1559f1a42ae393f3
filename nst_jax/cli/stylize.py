"""``nst-jax stylize`` (one image, with checkpoints, resume and every control) and ``nst-jax resume``.

A run, in order: inputs read from pipes are copied to temp files; every check passes before anything is loaded
(paths, no output naming an input, the images' headers and sizes, the whole run's memory, the output folder
writable with room for the outputs); the output is locked (a second run with the same ``-o`` is refused); the solve
runs (Ctrl-C or SIGTERM: a checkpoint and the current image are saved); the image, its JSON trace and the loss plot
are written as one unit (all or none), never replacing a file without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import re
import shutil
import stat
import sys
import tempfile
from typing import NamedTuple, Optional

import numpy as np

from nst_jax import checkpoint as CK
from nst_jax import image as I
from nst_jax.cli import args as A
from nst_jax.cli.checks import check_inputs
from nst_jax.cli.outputs import (OUTPUT_ARGS, check_outputs, file_of, input_files, json_writer, say_random,
                                 weights_files)
from nst_jax.config import INITS, WARM_STARTS, SolveOptions
from nst_jax.files import OutputLock, OutputSet, check_folder_writable, same_file, temp_files
from nst_jax.interrupts import InterruptFlag, exit_status

__all__ = ["add_stylize_parser", "add_resume_parser", "run_settings", "Plan", "plan_outputs", "level_iters"]

# Flags that do not change what a run computes (not compared when resuming from a checkpoint). File arguments are
# compared by their content's sha256 (and recorded with their absolute path, see run_settings).
_NOT_COMPARED = frozenset({"func", "debug", "command", "output", "iters", "checkpoint_every", "save_every",
                           "no_progress", "overwrite", "plot", "resume", "memory_limit", "checkpoint_file",
                           "print_every", "verbose", "bit_depth", "via_resume"})


def _map_files(value, fn):
    """``value`` with every file it names (itself, list items, ``REGION=FILE``) replaced by ``fn(path)``."""
    if isinstance(value, (list, tuple)):
        return [_map_files(v, fn) for v in value]
    found = file_of(value) if isinstance(value, str) and value else None
    if found is None:
        return value
    region, path = found
    return f"{region}={fn(path)}" if region else fn(path)


def run_settings(args) -> dict:
    """What a checkpoint records: ``compare`` (everything that defines the result; every input file, whichever flag
    names it, by the sha256 of its content) and ``args`` (the stylize arguments, every file by its absolute path, so
    ``nst-jax resume`` works from any folder)."""
    args_d = {k: v for k, v in vars(args).items() if k not in ("func", "debug", "resume", "checkpoint_file",
                                                                 "via_resume")}
    compare = {k: _map_files(v, CK.file_sha256) for k, v in args_d.items() if k not in _NOT_COMPARED}
    rec = {k: (v if k in OUTPUT_ARGS else _map_files(v, os.path.abspath)) for k, v in args_d.items()}
    rec["output"] = os.path.abspath(args.output)
    return {"compare": compare, "args": rec, "software": "nst-jax"}


class Plan(NamedTuple):
    """Every file a stylize run may write."""

    out: pathlib.Path  # the image
    trace: pathlib.Path  # OUT.json
    plot: pathlib.Path  # OUT_loss.png (with --plot)
    ckpt: pathlib.Path  # OUT.ckpt.npz
    partial: pathlib.Path  # OUT.partial.png (interrupted)

    def step_image(self, it: int) -> pathlib.Path:
        """The intermediate image of --save-every at iteration ``it``."""
        return self.out.with_name(f"{self.out.stem}_{it:05d}{self.out.suffix}")

    def is_step_image(self, path) -> bool:
        p = pathlib.Path(path)
        return same_file(p.parent, self.out.parent) and bool(
            re.fullmatch(re.escape(self.out.stem) + r"_\d{5,}" + re.escape(self.out.suffix), p.name))


def plan_outputs(args) -> Plan:
    """The files of a stylize run with ``-o OUT`` (the checkpoint: ``OUT.ckpt.npz``, or the one ``nst-jax resume``
    was given)."""
    out = pathlib.Path(args.output)
    ckpt = pathlib.Path(getattr(args, "checkpoint_file", None) or CK.checkpoint_path(out))
    return Plan(out, out.with_suffix(".json"), out.with_name(out.stem + "_loss.png"), ckpt,
                out.with_name(out.stem + ".partial" + out.suffix))


def _check_paths(args, plan: Plan, inputs, resuming: bool) -> None:
    out = plan.out
    if out.is_dir():
        raise ValueError(f"output {out} is a directory; give a file name such as {out / 'result.png'}")
    if out.suffix.lower() not in I.SAVE_SUFFIXES:
        raise ValueError(f"output {out} must end in .png, .jpg, .jpeg, .tif or .tiff; choose another -o path")
    if args.bit_depth == 16 and I.SAVE_SUFFIXES[out.suffix.lower()] == "JPEG":
        raise ValueError(f"--bit-depth 16 needs a .png or .tif output, not {out.name} (JPEG holds 8 bits)")
    outputs = [("output", out), ("loss trace", plan.trace)] + ([("loss plot", plan.plot)] if args.plot else []) + [
        ("checkpoint", plan.ckpt), ("partial image", plan.partial)]
    fresh = [out, plan.trace] + ([plan.plot] if args.plot else []) + ([] if resuming else [plan.partial])
    check_outputs(outputs, inputs, args.overwrite, must_not_exist=fresh)
    if args.save_every:
        for label, path in inputs:
            if plan.is_step_image(path):
                raise ValueError(f"--save-every would write {path}, which is the {label}; choose another -o path")
        if not args.overwrite and not resuming:
            old = [p for p in out.parent.glob(f"{out.stem}_*{out.suffix}") if plan.is_step_image(p)]
            if old:
                raise ValueError(f"{old[0]} exists (an intermediate image of another run); pass --overwrite to "
                                 "replace it or choose another -o path")
    if plan.ckpt.exists() and not resuming and not args.overwrite:
        raise ValueError(f"checkpoint {plan.ckpt} exists from an unfinished run; pass --resume to continue it or "
                         "--overwrite to start again")
    if resuming and not plan.ckpt.exists():
        raise FileNotFoundError(f"no checkpoint {plan.ckpt} to resume; run without --resume (add --checkpoint-every N "
                                "to write one)")


def _check_room(args, plan: Plan, shape_HW, options) -> None:
    """The output folder takes files and has room for the image, its trace and a checkpoint (checked before the
    solve, not after an hour of work)."""
    from nst_jax import memory as M

    h, w = shape_HW
    need = h * w * 3 * (args.bit_depth // 8) + 2048 + 400 * (options.iters + 1)  # image (worst case), JSON trace
    if args.checkpoint_every:
        need += M.checkpoint_bytes(shape_HW, history=options.solver.history, solver=options.solver.name,
                                   iters=options.iters)
    check_folder_writable(plan.out.parent, need)
    if not same_file(plan.ckpt.parent, plan.out.parent):
        check_folder_writable(plan.ckpt.parent, 0, "checkpoint")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install 'nst-jax[plot]' (or drop --plot)") from None


def _copy_pipes(args, stack: contextlib.ExitStack) -> None:
    """Inputs that are pipes (``/dev/stdin``, ``<(cmd)``) can be read once only; copy each to a temp file (removed
    when the command ends) and use that, so headers, the image and its sha256 all read the same bytes."""
    tmp = None
    for key, value in vars(args).items():
        if key in OUTPUT_ARGS or not isinstance(value, (str, list)):
            continue
        items = value if isinstance(value, list) else [value]
        new = []
        for item in items:
            found = file_of(item) if isinstance(item, str) and item else None
            if found and not stat.S_ISREG(os.stat(found[1]).st_mode):
                if tmp is None:
                    tmp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nst-jax-pipe-")))
                copy = tmp / f"{len(list(tmp.iterdir()))}_{pathlib.Path(found[1]).name}"
                with open(found[1], "rb") as src, open(copy, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                item = f"{found[0]}={copy}" if found[0] else str(copy)
            new.append(item)
        setattr(args, key, new if isinstance(value, list) else new[0])


def level_iters(iters: int, n_levels: int) -> list:
    """Iterations per pyramid level when only ``--iters`` is given: ``iters`` at the coarsest level, then / 2.5 per
    level (at least 20, or ``iters`` if less), as :func:`nst_jax.pyramid.default_iters` does from 500.

    Example:
      >>> level_iters(500, 3), level_iters(100, 3), level_iters(1, 2)
      ([500, 200, 80], [100, 40, 20], [1, 1])
    """
    out = [int(iters)]
    for _ in range(n_levels - 1):
        out.append(max(min(20, int(iters)), int(round(out[-1] / 2.5))))
    return out


def _solve(args, spec, options, styles, spatial, settings, saved, plan: Plan, flag: InterruptFlag, levels):
    """The solve itself: coarse-to-fine, or one level with checkpoints; ``flag`` answers Ctrl-C / SIGTERM."""
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
    solve = dict(checkpoint=plan.ckpt, checkpoint_settings=settings, resume=saved, stop=flag)
    if scales or args.auto_scales:
        ips = None if args.iters_per_scale is None else [int(v) for v in A.floats(args.iters_per_scale,
                                                                                  "iters-per-scale")]
        if ips is None:
            ips = level_iters(args.iters, len(levels))
        elif args.iters != 500:
            print("nst-jax: note: --iters-per-scale sets each level's iterations; --iters is not used",
                  file=sys.stderr)
        with flag:  # checkpoints across levels (transfer.solve_levels)
            return pyramid.stylize_pyramid(args.content, styles, scales=scales, iters_per_scale=ips,
                                           auto_scales=args.auto_scales, mix_with=args.mix_with or None,
                                           mix_iters=mix_iters, match_mode=args.match_mode, spec=spec,
                                           options=options, **solve)
    with flag:
        return stylize(args.content, styles, spec, options, **solve)


def _note_checkpoints(args, options, shape_HW, plan: Plan) -> None:
    from nst_jax import memory as M

    if not args.checkpoint_every or args.no_progress:
        return
    size = M.checkpoint_bytes(shape_HW, history=options.solver.history, solver=options.solver.name,
                              iters=options.iters)
    smaller = "; --history 20 makes them smaller" if options.solver.history > 20 else ""
    print(f"nst-jax: checkpoint {plan.ckpt} every {args.checkpoint_every} iterations, up to "
          f"{M.format_bytes(size)} each (the solver state{smaller})", file=sys.stderr)


def _stylize(args) -> int:
    with contextlib.ExitStack() as stack:
        _copy_pipes(args, stack)
        return _run(args)


def _run(args) -> int:
    styles, spatial = A.styles_and_spatial(args)
    if not styles:
        raise ValueError("give at least one style image after the content image (or --style REGION=FILE)")
    c_masks, s_masks = A.pairs(args.content_mask, "--content-mask"), A.pairs(args.style_mask, "--style-mask")
    init_file = args.init not in INITS
    resuming = bool(getattr(args, "resume", False))
    plan = plan_outputs(args)
    inputs = input_files(args, weights_files(args.weights))
    callback = None
    if args.save_every:
        def callback(it, img):
            I.save_image(plan.step_image(it), img, inputs=[p for _, p in inputs], overwrite=True)
    spec = A.problem_spec(args, spatial)
    options = A.solve_options(args, callback=callback, save_every=args.save_every,
                              checkpoint_every=args.checkpoint_every, warm_start=args.warm_start)
    _check_paths(args, plan, inputs, resuming)
    masks = [("content mask", n, p) for n, p in c_masks] + [("style mask", n, p) for n, p in s_masks]
    masks += [("label image", "", p) for p in [args.content_labels, *args.style_labels] if p]
    extra = [("--mix-with image", args.mix_with)] if args.mix_with else []
    checked = check_inputs(args, spec, options, styles, masks, init_file, extra_images=extra)
    _check_room(args, plan, checked["shape"], options)
    settings = run_settings(args)
    with OutputLock(plan.out):
        _check_paths(args, plan, inputs, resuming)  # again, now that no other run can write these files
        saved = None
        if resuming:
            saved = CK.load_checkpoint(plan.ckpt)
            fix = CK.RESUME_FIX if not getattr(args, "via_resume", False) else (
                "an input file changed since the checkpoint was written: restore it, or start again with "
                "'nst-jax stylize ... --overwrite'")
            CK.compare_settings(saved.settings.get("compare", {}), settings["compare"], fix=fix)
            if saved.iteration > args.iters:
                raise ValueError(f"the checkpoint is at iteration {saved.iteration}, past --iters {args.iters}; "
                                 f"pass --iters {saved.iteration} or more")
        _note_checkpoints(args, options, checked["shape"], plan)
        flag = InterruptFlag("nst-jax: interrupted; saving a checkpoint after the current step (press Ctrl-C "
                             "again to quit without saving)", cleanup=lambda: _remove_temps(plan))
        r = _solve(args, spec, options, styles, spatial, settings, saved, plan, flag, checked["levels"])
        with InterruptFlag("nst-jax: interrupted while writing the outputs; finishing them first",
                           cleanup=lambda: _remove_temps(plan)):
            return _write_result(args, r, plan, inputs, styles, resuming, flag.signum)


def _remove_temps(plan: Plan) -> None:
    """Temp files of this run's outputs (and its lock), removed when a second signal ends the process at once."""
    folder = plan.out.parent
    for p in list(folder.glob(f".{plan.out.stem}*.tmp")) + temp_files(plan.ckpt) + [
            folder / f".{plan.out.name}.lock"]:
        with contextlib.suppress(OSError):
            p.unlink()


def _write_result(args, r, plan: Plan, inputs, styles, resuming: bool, signum: Optional[int]) -> int:
    meta = dict(r.settings, content=str(args.content), style=[str(s) for s in args.style or styles], n_fg=r.n_fg,
                final_loss=r.terms["total"], software="nst-jax")
    input_paths = [p for _, p in inputs]
    if r.interrupted:
        I.save_image(plan.partial, r.image, metadata=dict(meta, iteration=r.iters_done), inputs=input_paths,
                     bits=args.bit_depth)
        how = "interrupted" if signum in (None, 2) else "stopped by SIGTERM"
        print(f"nst-jax: {how} at iteration {r.iters_done} of {args.iters}; saved the current image to "
              f"{plan.partial} and the checkpoint {plan.ckpt}; continue with: nst-jax resume {plan.ckpt}",
              file=sys.stderr)
        return exit_status(signum or 2)
    losses = np.array([t["loss"] for t in r.loss_trace], np.float64)
    if r.stopped_nonfinite and not np.isfinite(losses[0]):
        raise ValueError(f"the {r.nonfinite_term} loss is NaN/inf already for the initial image (the network's "
                         "activations overflow); check --weights ('nst-jax weights info') and the loss weights")
    trace = {"settings": meta, "terms": r.terms, "n_fg": r.n_fg, "compile_seconds": r.compile_seconds,
             "run_seconds": r.run_seconds, "trace": r.loss_trace}
    with OutputSet(overwrite=args.overwrite) as outs:
        outs.stage(plan.out, I.image_writer(plan.out, r.image, metadata=meta, bits=args.bit_depth))
        outs.stage(plan.trace, json_writer(trace))
        if args.plot:
            from nst_jax.figures import plot_losses

            outs.stage(plan.plot, lambda fh: plot_losses(r.loss_trace, fh, seconds=r.run_seconds))
        outs.commit()
    for stale in (plan.ckpt, plan.partial) if resuming or args.overwrite else (plan.ckpt,):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    say_random(r.settings)
    if r.stopped_nonfinite:
        last_ok = int(np.flatnonzero(np.isfinite(losses))[-1])
        print(f"nst-jax: warning: the {r.nonfinite_term} loss became NaN/inf at iteration {last_ok + 1}; stopped early "
              f"and wrote the last finite image (iteration {last_ok}) to {plan.out}; lower --lr or the loss weights",
              file=sys.stderr)
    print(f"wrote {plan.out} ({r.n_fg} f+g, loss {r.terms['total']:.4g}, compile {r.compile_seconds:.1f}s, "
          f"run {r.run_seconds:.1f}s)")
    return 0 if not r.stopped_nonfinite else 3


def add_stylize_parser(subparsers, add_command) -> None:
    p = add_command(subparsers, "stylize", help="stylise a content image (Gatys et al. 2016)",
                    description="Stylise CONTENT with one or more STYLE images (their Gram targets are blended).")
    p.add_argument("content", help="content image")
    p.add_argument("style", nargs="*", help="style image(s)")
    p.add_argument("-o", "--output", required=True,
                   help="output image (.png, .jpg, .tif); a .json loss trace goes beside")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8,
                   help="bits per channel of the output: 8 (default) or 16 (PNG and TIFF)")
    p.add_argument("--save-every", type=int, default=None, help="also save the image every N iterations")
    p.add_argument("--plot", action="store_true", help="write OUT_loss.png: the loss and its terms (needs matplotlib)")
    sc = p.add_argument_group("scale control (Gatys et al. 2017, Sec. 6)")
    sc.add_argument("--scales", default=None, help="coarse-to-fine longest sides, e.g. 512,1024")
    sc.add_argument("--iters-per-scale", default=None,
                    help="iterations per level, e.g. 500,200 (default: --iters at the coarsest level, then /2.5 per "
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
                        "and SIGTERM always save one")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT.ckpt.npz (give the same arguments; see also 'nst-jax resume')")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="refuse runs whose estimated peak memory (decoding, targets, solve, checkpoint) exceeds SIZE, "
                        "e.g. 8GB (default: the free memory; 'none': no check)")
    A.add_problem_args(p)
    A.add_cluster_args(p, processes=False)
    p.set_defaults(func=_stylize)


def _valid_record_value(key: str, value, default) -> bool:
    """A recorded argument has the type of its flag's default (``--size``: also None, i.e. original)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(default, int):
        return isinstance(value, int) or (key == "size" and value is None)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, str):
        return isinstance(value, str)
    return value is None or isinstance(value, (str, int, float))


def _resume(args) -> int:
    ck = CK.load_checkpoint(args.checkpoint)
    rec = ck.settings.get("args")
    if not isinstance(rec, dict) or not isinstance(rec.get("content"), str) or not isinstance(rec.get("output"), str):
        raise ValueError(f"{args.checkpoint} records no stylize arguments; run 'nst-jax stylize ... --resume' with "
                         "the original arguments instead")
    parser = argparse.ArgumentParser(prog="nst-jax")  # the stylize flags' defaults, then the recorded values
    add_stylize_parser(parser.add_subparsers(), lambda sub, name, **kw: sub.add_parser(name, **kw))
    ns = parser.parse_args(["stylize", rec["content"], "-o", rec["output"]])
    for key, value in rec.items():
        if not hasattr(ns, key) or key in ("func", "debug"):
            continue  # an argument this version does not know
        if not _valid_record_value(key, value, getattr(ns, key)):
            raise ValueError(f"checkpoint {args.checkpoint} records {key} = {str(value)[:40]!r}, not a valid value; "
                             "it was edited or damaged: start again with 'nst-jax stylize ... --overwrite'")
        setattr(ns, key, value)
    ns.resume, ns.checkpoint_file, ns.via_resume = True, str(pathlib.Path(args.checkpoint)), True
    if args.iters is not None:
        ns.iters = args.iters
    if args.no_progress:
        ns.no_progress = True
    return _stylize(ns)


def add_resume_parser(subparsers, add_command) -> None:
    p = add_command(subparsers, "resume", help="finish an interrupted stylize run from its OUT.ckpt.npz",
                    description="Continue 'nst-jax stylize' from a checkpoint, with the arguments stored in it (input "
                                "files by absolute path, checked unchanged by sha256: works from any folder).")
    p.add_argument("checkpoint", help="the OUT.ckpt.npz file")
    p.add_argument("--iters", type=int, default=None, help="total iterations (default: as first asked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_resume)
