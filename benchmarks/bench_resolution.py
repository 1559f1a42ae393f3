"""Resolution rule benchmark: how close a run at ``--size`` comes to the look of a run at ``--ref-size`` (same
settings), without the rule and with it at several tilts (``nst_jax.objective.resolution_factors``).

Each result is resized to the reference run's shape and its features compared with the style's as the reference
run sees them: the Gaussian 2-Wasserstein distance per style layer (``nst_jax.objective.style_distances``), then
its ratio to the reference run's own (1 = the same look by this measure). ``nst_jax.figures.resolution_comparison``
does the runs; ``tilt 0`` is the run without the rule.

Usage::

    python benchmarks/bench_resolution.py                  # tetons + starry night, 128 -> 256 px, 80 iterations
    python benchmarks/bench_resolution.py --ref-size 256 --size 512 --tilts 0.5,1,2
    python benchmarks/bench_resolution.py --tiny           # smoke run: tiny19, 32 -> 64 px, 2 iterations
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nst_jax  # noqa: E402
from nst_jax import image as I  # noqa: E402
from nst_jax.figures import resolution_comparison  # noqa: E402


def main(argv=None) -> int:
    from bench_grid import environment

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", default="tetons_snake_river,starry_night", help="bundled content,style")
    ap.add_argument("--ref-size", type=int, default=128, help="the reference run's longest side (default 128)")
    ap.add_argument("--size", type=int, default=256, help="the larger run's longest side (default 256)")
    ap.add_argument("--iters", type=int, default=80, help="iterations of every run (default 80)")
    ap.add_argument("--tilts", default="0.5,1,2", help="tilts of the rule (default 0.5,1,2)")
    ap.add_argument("--weights", default="vgg16-hed", help="nst_jax.weights source (default vgg16-hed)")
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny19, 32 -> 64 px, 2 iterations")
    args = ap.parse_args(argv)
    if args.tiny:
        args.ref_size, args.size, args.iters, args.weights = 32, 64, 2, "tiny19"
    tilts = [float(t) for t in args.tilts.split(",")]
    content, style = (I.sample_path(n.strip()) for n in args.pair.split(","))
    params, _ = nst_jax.load_weights(args.weights)
    print(f"# Resolution rule: {args.pair}, {args.ref_size} -> {args.size} px, {args.iters} iterations, "
          f"{args.weights}, gatys preset")
    print("\n".join(environment()) + "\n")
    out = resolution_comparison(content, style, args.ref_size, args.size, iters=args.iters, weights=params,
                                tilt=tilts[0], more_tilts=tilts[1:], progress=False)
    look = out["look"]
    names = {"ref": f"{args.ref_size} px (reference)", "plain": f"{args.size} px, tilt 0 (no rule)",
             "rule": f"{args.size} px, tilt {tilts[0]:g}"}
    layers = list(look["ref"])
    print("| run | " + " | ".join(f"W2 {n} / ref" for n in layers) + " | mean |")
    print("|---" * (len(layers) + 2) + "|")
    for run, d in look.items():
        ratios = [d[n] / look["ref"][n] for n in layers]
        print(f"| {names.get(run, f'{args.size} px, {run}')} | " + " | ".join(f"{r:.3f}" for r in ratios)
              + f" | {np.mean(ratios):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
