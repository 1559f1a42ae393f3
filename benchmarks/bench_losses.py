"""Style-loss benchmark: for each style loss kind (gram, w2, sliced, hist), f+g per second and how close the result's
feature distributions come to the style's after a fixed number of f+g, on several content/style pairs.

Each (pair, kind) is one ``nst_jax.stylize`` run with that kind alone at its default weight
(``nst_jax.objective.STYLE_LOSS_WEIGHTS``) and otherwise the gatys preset (alpha 1, beta 1e3, layer weights
1/C_l^2), started from the content image, ``--iters`` iterations of the default solver (one f+g each). The distance
is the Gaussian 2-Wasserstein distance between the output's and the style's features at each style layer
(``nst_jax.objective.style_distances``), the same measure whatever loss made the output; ``start`` rows give it for
the content image itself. ``f+g/s`` is f+g evaluations over solve seconds (compile excluded); ``content`` the
unweighted content loss of the result (how much of the photo it kept).

Usage::

    python benchmarks/bench_losses.py                    # 3 pairs, 4 kinds, 128 px, 50 iterations, vgg16-hed
    python benchmarks/bench_losses.py --size 256 --iters 100 --kinds w2,sliced
    python benchmarks/bench_losses.py --tiny             # seconds-long smoke run (tiny19, 32 px, 3 iterations)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nst_jax  # noqa: E402
from nst_jax import image as I  # noqa: E402
from nst_jax import objective  # noqa: E402
from nst_jax.config import STYLE_LOSSES  # noqa: E402

PAIRS = (("blue_marble", "great_wave"), ("tetons_snake_river", "starry_night"),
         ("blue_marble", "wheat_field_with_cypresses"))


def measure(params, content: str, style: str, kind: str, size: int, iters: int) -> Dict[str, object]:
    """One run of ``kind`` on a bundled (content, style) pair: ``kind``, ``fg``, ``fg_per_s``, ``compile_s``,
    ``content``, ``w2`` ({layer: distance of the output}), ``start`` ({layer: distance of the content image})."""
    p = nst_jax.prepare(I.sample_path(content), I.sample_path(style), weights=params, size=size, style_loss=kind)
    r = nst_jax.solve_problem(p, iters=iters, progress=False)
    cfg = p.cfg
    return {"kind": kind, "fg": r.n_fg, "fg_per_s": r.n_fg / max(r.run_seconds, 1e-9), "compile_s": r.compile_seconds,
            "content": r.terms["content"],
            "w2": objective.style_distances(p.params, r.image, p.styles_in[0], cfg),
            "start": objective.style_distances(p.params, p.content_in, p.styles_in[0], cfg)}


def table(rows: Sequence[Tuple[str, Dict[str, object]]]) -> List[str]:
    """Markdown: one row per (pair, kind), the W2 distance per layer, and their mean ratio to the start."""
    layers = list(rows[0][1]["w2"])
    out = ["| pair | kind | f+g | f+g/s | compile s | content | " + " | ".join(f"W2 {n}" for n in layers)
           + " | mean W2 / start |", "|---" * (7 + len(layers)) + "|"]
    done = set()
    for pair, r in rows:
        if pair not in done:
            done.add(pair)
            out.append(f"| {pair} | start | - | - | - | 0 | " + " | ".join(f"{r['start'][n]:.4g}" for n in layers)
                       + " | 1 |")
        ratio = float(np.mean([r["w2"][n] / r["start"][n] for n in layers]))
        out.append(f"| {pair} | {r['kind']} | {r['fg']} | {r['fg_per_s']:.2f} | {r['compile_s']:.1f} | "
                   f"{r['content']:.4g} | " + " | ".join(f"{r['w2'][n]:.4g}" for n in layers) + f" | {ratio:.3f} |")
    return out


def main(argv=None) -> int:
    from bench_grid import environment

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=",".join(STYLE_LOSSES), help="comma-separated style loss kinds (default all)")
    ap.add_argument("--pairs", type=int, default=len(PAIRS), help=f"how many of the {len(PAIRS)} bundled pairs")
    ap.add_argument("--size", type=int, default=128, help="longest side in px (default 128)")
    ap.add_argument("--iters", type=int, default=50, help="iterations = f+g - 1 per run (default 50)")
    ap.add_argument("--weights", default="vgg16-hed", help="nst_jax.weights source (default vgg16-hed)")
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny19, 32 px, 3 iterations, one pair")
    args = ap.parse_args(argv)
    if args.tiny:
        args.size, args.iters, args.weights, args.pairs = 32, 3, "tiny19", 1
    kinds = [k.strip() for k in args.kinds.split(",")]
    params, _ = nst_jax.load_weights(args.weights)
    print(f"# Style losses: {args.weights}, {args.size} px, {args.iters} iterations, gatys preset, default kind "
          f"weights {', '.join(f'{k} {objective.STYLE_LOSS_WEIGHTS[k]:g}' for k in kinds)}")
    print("\n".join(environment()) + "\n")
    rows = []
    for content, style in PAIRS[:args.pairs]:
        for kind in kinds:
            r = measure(params, content, style, kind, args.size, args.iters)
            rows.append((f"{content} + {style}", r))
            print(f"{content} + {style}, {kind}: {r['fg_per_s']:.2f} f+g/s", flush=True)
    print("\n" + "\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
