"""``nst-jax sweep`` (any grid of settings as one compiled program) and ``nst-jax batch`` (many photos, one style).

Everything is checked before anything is written: the grid (axes, values, lengths, the member guard), the input
files, the output names (unique per member, never from rounded numbers) and existing outputs. A sweep writes each
member (its PNG and a JSON of its settings and trace) as soon as its wave is done, by the process whose devices hold
it (several processes: :mod:`nst_jax.distributed`); after every process is done, process 0 writes ``sweep.json`` and
the grid image(s). ``--resume`` runs only the members a stopped sweep did not write.
"""

from __future__ import annotations

import argparse
import math
import pathlib
from typing import Dict, List, Sequence, Tuple

from nst_jax import grid as G
from nst_jax.cli import args as A
from nst_jax.cli.checks import check_inputs
from nst_jax.cli.outputs import parse_bytes, say_random, write_json
from nst_jax.config import INITS

__all__ = ["add_sweep_parser", "add_batch_parser", "parse_grid", "member_names"]

#: Longest descriptive part of a member's file name (the index in front keeps every name unique).
NAME_CHARS = 120


def parse_grid(items: Sequence[str], ratios=None) -> Dict[str, list]:
    """``["ratio=1e-4,1e-3", "style-layers=relu1_1|relu1_1,relu2_1"]`` -> ``{axis: values}``; ``ratios`` (the
    ``--ratios`` shorthand) adds a ratio axis; no axes at all: the default ratios."""
    out: Dict[str, list] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--grid takes NAME=V1,V2 (e.g. ratio=1e-4,1e-3 or style-layers='relu1_1|relu1_1,"
                             f"relu2_1'), got {item!r}")
        key, values = G.parse_axis(name, text)
        if key in out:
            raise G.GridError(key, "{axis} is given twice; give each axis once")
        out[key] = values
    if ratios is not None:
        if "ratio" in out:
            raise ValueError("give the ratios either as --ratios or as --grid ratio=..., not both")
        out = {"ratio": A.floats(ratios, "ratios"), **out}
    if not out:
        from nst_jax.sweeps import DEFAULT_RATIOS

        out["ratio"] = list(DEFAULT_RATIOS)
    return out


def member_names(g: G.Grid) -> List[str]:
    """Each member's file name: its index (grid order) and its exact axis values, e.g.
    ``0003_ratio-0.001_tv-weight-0.0.png``."""
    width = max(4, len(str(g.size - 1)))
    names = []
    for k, m in enumerate(g.members()):
        text = "_".join(G.file_part(n, v) for n, v in m.items())[:NAME_CHARS]
        names.append(f"{k:0{width}d}_{text}.png")
    return names


def _page_names(g: G.Grid) -> List[str]:
    """The grid image's pages: ``grid.png``, or one per value combination of the axes after the first two."""
    if g.zip or len(g.axes) <= 2:
        return ["grid.png"]
    import itertools

    rest = g.axes[2:]
    return ["grid_" + "_".join(G.file_part(a.name, v) for (a, _), v in zip(rest, combo))[:NAME_CHARS] + ".png"
            for combo in itertools.product(*(vals for _, vals in rest))]


def _check_folder(outdir: pathlib.Path, names: Sequence[str], inputs: Sequence[str], overwrite: bool) -> None:
    """Refuse before any work: a file as the folder, a missing parent, colliding names, existing outputs."""
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"output {outdir} is a file; -o takes a folder")
    if not outdir.parent.exists():
        raise ValueError(f"folder {outdir.parent} does not exist; create it first")
    seen: Dict[str, int] = {}
    for j, n in enumerate(names):
        if n in seen:
            raise ValueError(f"outputs {seen[n] + 1} and {j + 1} would both be written to {outdir / n}; give the "
                             "inputs distinct file names")
        seen[n] = j
    resolved = {pathlib.Path(i).resolve() for i in inputs if pathlib.Path(i).exists()}
    for n in names:
        if (outdir / n).resolve() in resolved:
            raise ValueError(f"output {outdir / n} is one of the inputs; choose another -o folder")
        if (outdir / n).exists() and not overwrite:
            raise ValueError(f"{outdir / n} exists; pass --overwrite to replace it or choose another -o folder")


def _memory_limit(text):
    """``--memory-limit``: None (the free memory), ``math.inf`` ('none'), or bytes."""
    if text is None:
        return None
    return math.inf if str(text).lower() in ("none", "off") else parse_bytes(text)


def _check_files(args, spec, options, contents, styles) -> None:
    """Input files readable and big enough (each content with the styles); the memory is planned by the sweep."""
    masks = [("content mask", n, p) for n, p in A.pairs(args.content_mask, "--content-mask")] + \
        [("style mask", n, p) for n, p in A.pairs(args.style_mask, "--style-mask")]
    for j, c in enumerate(contents):
        ns = argparse.Namespace(**dict(vars(args), content=c, memory_limit="none"))
        check_inputs(ns, spec, options, styles, masks if j == 0 else [], args.init not in INITS and j == 0)


def _images_of(args, grid: Dict[str, list], styles: List[str]) -> Tuple[object, object, List[str], List[str]]:
    """(content, style) arguments of the sweep and the content / style files to check, from the positionals and
    the image axes (with a content axis, every positional image is a style)."""
    positional = ([args.content] if args.content else []) + list(styles)
    if "content" in grid:
        style = None if "style" in grid else positional
        if "style" not in grid and not positional:
            raise ValueError("give the style image(s) after the command (or a --grid style=... axis)")
        if "style" in grid and positional:
            raise ValueError("with --grid content=... and --grid style=..., give no positional images")
        files = [s for v in grid.get("style", []) for s in (v if isinstance(v, (list, tuple)) else [v])]
        return None, style, list(grid["content"]), files or positional
    if not args.content:
        raise ValueError("give the content image (or a --grid content=... axis)")
    if "style" in grid:
        if styles:
            raise ValueError("with --grid style=..., give only the content image positionally")
        return args.content, None, [args.content], list(grid["style"])
    if not styles:
        raise ValueError("give at least one style image after the content image (or --style REGION=FILE)")
    return args.content, styles, [args.content], list(styles)


def _member_record(k: int, name: str, values: dict, r) -> dict:
    return {"index": k, "file": name, "values": values, "n_fg": r.n_fg, "terms": r.terms, "settings": r.settings,
            "trace": r.loss_trace}


def _written(outdir: pathlib.Path, names: Sequence[str]) -> Dict[int, dict]:
    """The members a stopped sweep wrote completely (PNG and JSON), by index, with their records."""
    import json

    done = {}
    for k, name in enumerate(names):
        png, js = outdir / name, (outdir / name).with_suffix(".json")
        if png.is_file() and js.is_file():
            try:
                done[k] = json.loads(js.read_text())
            except ValueError:  # an interrupted write: run the member again
                continue
    return done


def _writer(outdir: pathlib.Path, names: Sequence[str], members: Sequence[dict], inputs: Sequence[str]):
    """``on_wave`` of the sweep: each member's PNG and JSON, written by the process whose devices hold it."""
    import jax

    from nst_jax import image as I

    def on_wave(indices, results, per):
        outdir.mkdir(exist_ok=True)  # only once members exist: a refused sweep leaves nothing behind
        per_device = max(per // len(jax.devices()), 1)
        for j, (k, r) in enumerate(zip(indices, results)):
            if jax.devices()[j // per_device].process_index != jax.process_index():
                continue
            I.save_image(outdir / names[k], r.image, metadata=dict(r.settings, software="nst-jax sweep"),
                         inputs=inputs)
            write_json((outdir / names[k]).with_suffix(".json"), _member_record(k, names[k], members[k], r))
            on_wave.written += 1

    on_wave.written = 0
    return on_wave


def _full_result(sw, g: G.Grid, names, done: Dict[int, dict], outdir: pathlib.Path):
    """The whole grid's SweepResult: this run's members and those a stopped run had written (read back)."""
    import dataclasses

    from nst_jax import image as I
    from nst_jax.transfer import Result

    if not done:
        return sw
    fresh = dict(zip(sorted(set(range(g.size)) - set(done)), sw.results))
    results = []
    for k in range(g.size):
        if k in fresh:
            results.append(fresh[k])
            continue
        rec = done[k]
        results.append(Result(image=I.load_image(outdir / names[k]), loss_trace=rec["trace"], n_fg=rec["n_fg"],
                              compile_seconds=0.0, run_seconds=0.0, terms=rec["terms"], settings=rec["settings"]))
    members = [{n: G.display_value(v) for n, v in m.items()} for m in g.members()]
    return dataclasses.replace(sw, members=members, results=results)


def _sweep(args) -> int:
    from nst_jax import distributed
    from nst_jax import image as I
    from nst_jax.figures import sweep_pages
    from nst_jax.sweeps import sweep

    grid = parse_grid(args.grid, args.ratios)
    g = G.make_grid(grid, zip=args.zip, max_members=args.max_members)
    styles, spatial = A.styles_and_spatial(args)
    content, style, contents, style_files = _images_of(args, grid, styles)
    spec, options = A.problem_spec(args, spatial), A.solve_options(args)
    limit = _memory_limit(args.memory_limit)
    outdir = pathlib.Path(args.output)
    names, pages = member_names(g), _page_names(g)
    inputs = [*contents, *style_files]
    done = _written(outdir, names) if args.resume and outdir.is_dir() else {}
    todo = [k for k in range(g.size) if k not in done]
    derived = pages + ["sweep.json"]
    # resuming replaces what is left of unfinished members and the derived files
    _check_folder(outdir, [names[k] for k in todo] + [n[:-4] + ".json" for n in (names[k] for k in todo)]
                  + derived, inputs, args.overwrite or args.resume)
    _check_files(args, spec, options, contents, style_files)
    members = [{n: G.display_value(v) for n, v in m.items()} for m in g.members()]
    writer = _writer(outdir, names, members, inputs)
    sw = sweep(content, style, grid, zip=args.zip, spec=spec, options=options, memory_limit=limit,
               max_members=args.max_members, on_wave=writer, only=todo if done else None,
               members_per_device=args.members_per_device) if todo else None
    distributed.barrier("nst-jax sweep: members written")
    if sw is None:
        print(f"all {g.size} members of {outdir} were already written; nothing to run")
        return 0
    full = _full_result(sw, g, names, done, outdir)
    if distributed.is_coordinator():
        outdir.mkdir(exist_ok=True)
        for name, (_, img) in zip(pages, sweep_pages(full)):
            I.save_image(outdir / name, img, inputs=inputs)
        write_json(outdir / "sweep.json", _report(full, names))
    say_random(full.results[0].settings)
    waves = "one wave" if sw.waves == 1 else f"{sw.waves} waves"
    fg = sorted({r.n_fg for r in full.results})
    fg = f"{fg[0]} f+g each" if len(fg) == 1 else f"{fg[0]}-{fg[-1]} f+g per member"
    resumed = f"; {len(done)} members from the stopped run" if done else ""
    import jax

    mine = f"{writer.written} of {len(todo)} images (process {jax.process_index()} of {jax.process_count()})" \
        if jax.process_count() > 1 else f"{writer.written} images"
    summary = f", {', '.join(pages)} and sweep.json" if distributed.is_coordinator() else ""
    print(f"wrote {mine}{summary} to {outdir} (K={len(names)}, one compiled solve in {waves}; compile "
          f"{sw.compile_seconds:.1f}s, run {sw.run_seconds:.1f}s; {fg}{resumed})")
    return 0


def _report(sw, names: Sequence[str]) -> dict:
    """sweep.json: the axes, the settings all members share, and per member its values, file, the settings that
    differ, terms, f+g and trace."""
    settings = [r.settings for r in sw.results]
    common = {k: v for k, v in settings[0].items() if k != "grid" and all(s.get(k) == v for s in settings)}
    members = []
    for k, (n, m, r) in enumerate(zip(names, sw.members, sw.results)):
        rec = _member_record(k, n, m, r)
        rec["settings"] = {key: v for key, v in r.settings.items() if key not in common}
        members.append(rec)
    return {"axes": sw.axes, "zip": sw.zip, "shape": list(sw.shape), "waves": sw.waves,
            "compile_seconds": sw.compile_seconds, "run_seconds": sw.run_seconds, "settings": common,
            "members": members}


def add_sweep_parser(subparsers, add_command) -> None:
    axes = "; ".join(f"{a.flag}: {a.what}" for a in G.AXES.values())
    p = add_command(subparsers, "sweep", help="a grid of settings as ONE compiled, vmapped solve",
                    description="Run every member of a grid of settings (the Cartesian product of the --grid axes, "
                                "or with --zip the axes side by side) as one compiled solve; writes one PNG per "
                                "member (settings in its text chunks), sweep.json and a labelled grid image. "
                                f"Axes: {axes}.")
    p.add_argument("content", nargs="?", help="content image (with a content axis: the first style image)")
    p.add_argument("style", nargs="*", help="style image(s)")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="one axis (repeatable): ',' separates values, '|' separates vector and layer-set values "
                        "(their own elements comma-separated), e.g. --grid ratio=1e-4,1e-3 --grid "
                        "style-layers='relu1_1|relu1_1,relu2_1'; names as the stylize flags")
    p.add_argument("--ratios", default=None, help="shorthand for --grid ratio=... (default 1e-4,1e-3,1e-2,1e-1 "
                                                  "when no axis is given)")
    p.add_argument("--zip", action="store_true", help="pair the axes' values (equal lengths) instead of the product")
    p.add_argument("--max-members", type=int, default=G.MAX_MEMBERS,
                   help=f"refuse grids of more members (default {G.MAX_MEMBERS})")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="memory one wave may use, e.g. 8GB (default: the free memory; 'none': one wave); members "
                        "that do not fit at once run in equal waves of the same compiled program")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="run only the members a stopped sweep did not write (their PNG and JSON in the folder)")
    p.add_argument("--members-per-device", type=int, default=None, metavar="M",
                   help="at most M members per device in one wave (smaller waves write finished members sooner)")
    A.add_problem_args(p)
    A.add_cluster_args(p, processes=True)
    p.set_defaults(func=_sweep)


# ----------------------------------------------------------------------------------------------------------------
# batch

def _batch(args) -> int:
    from nst_jax import image as I
    from nst_jax.sweeps import stylize_batch

    if args.content_mask or args.style_mask or args.content_labels or args.style_labels:
        raise ValueError("batch takes no masks or label images (they belong to one photo); use stylize per photo")
    styles = list(args.region_style)
    if not styles:
        raise ValueError("give the style image with --style FILE")
    outdir = pathlib.Path(args.output)
    names = [pathlib.Path(p).stem + ".png" for p in args.photos]
    _check_folder(outdir, names + ["batch.json"], [*args.photos, *styles], args.overwrite)
    spec, options = A.problem_spec(args, None), A.solve_options(args)
    for j, c in enumerate(args.photos):
        ns = argparse.Namespace(**dict(vars(args), content=c, memory_limit="none"))
        check_inputs(ns, spec, options, styles, [], args.init not in INITS and j == 0)
    parts = stylize_batch(args.photos, styles if len(styles) > 1 else styles[0], spec, options,
                          memory_limit=_memory_limit(args.memory_limit))
    by_photo = {m["content"]: r for sw in parts for m, r in zip(sw.members, sw.results)}
    outdir.mkdir(exist_ok=True)
    members = []
    for photo, name in zip(args.photos, names):
        r = by_photo[str(photo)]
        I.save_image(outdir / name, r.image, metadata=dict(r.settings, software="nst-jax batch"),
                     inputs=[*args.photos, *styles])
        members.append({"photo": str(photo), "file": name, "n_fg": r.n_fg, "terms": r.terms, "trace": r.loss_trace})
    write_json(outdir / "batch.json", {"programs": [{"shape": list(sw.images.shape[1:3]), "photos": len(sw.members),
                                                     "compile_seconds": sw.compile_seconds,
                                                     "run_seconds": sw.run_seconds} for sw in parts],
                                       "members": members})
    say_random(parts[0].results[0].settings)
    print(f"wrote {len(names)} images and batch.json to {outdir} ({len(parts)} compiled program(s), one per image "
          f"shape; compile {sum(p.compile_seconds for p in parts):.1f}s, run {sum(p.run_seconds for p in parts):.1f}s)")
    return 0


def add_batch_parser(subparsers, add_command) -> None:
    p = add_command(subparsers, "batch", help="stylise many photos with one style (one compile per image shape)",
                    description="Stylise every PHOTO with --style STYLE: photos of one shape after resizing (--size) "
                                "run as one compiled, vmapped solve; writes DIR/<photo name>.png and batch.json.")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="content photos")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="memory one wave may use, e.g. 8GB (default: the free memory; 'none': one wave)")
    A.add_problem_args(p)
    A.add_cluster_args(p, processes=False)
    p.set_defaults(func=_batch)
