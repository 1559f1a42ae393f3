"""The network's value and gradient under each convolution form, timed in turns in one process, with XLA's
temporaries: XLA's convolutions (``conv="lax"``), Winograd with the kernel transformed inside every f+g (params as
given), and Winograd on kernels transformed once (``vgg.prepare_params``, what ``runner.Solve`` runs).

    python benchmarks/conv_forms.py --sizes 128,256,512 --reps 5
    python benchmarks/conv_forms.py --tiny          # seconds: 48 px, a network wide enough to take the Winograd form
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_torch import print_report, report_header  # noqa: E402

FORMS = ("lax", "winograd, kernel transformed per f+g", "winograd, prepared kernels")
PAIRS = (("tetons_snake_river", "starry_night"), ("blue_marble", "great_wave"))
# A small network whose blocks 2-3 take the Winograd form on a 48x48 image (conv3 on 12x12 maps: prepared kernels
# only); --tiny runs the square pair.
TINY_WIDE = ((1, 1, 1, 2, 1), (64, 128, 128, 8, 8))


def _variants(problem, x):
    from nst_jax import vgg

    prepared = vgg.prepare_params(problem.params, x.shape[:2], problem.cfg.all_layers, conv="winograd",
                                  pool_rounding=problem.cfg.pool_rounding, padding=problem.cfg.padding)
    cfg = dataclasses.replace(problem.cfg, conv="winograd")
    return {FORMS[0]: (problem.params, dataclasses.replace(problem.cfg, conv="lax")),
            FORMS[1]: (problem.params, cfg), FORMS[2]: (prepared, cfg)}


def measure(problem, reps: int) -> Dict[str, Tuple[float, float, float]]:
    """``{form: (median ms, XLA temporaries MiB, loss)}`` of the jitted value and gradient at the problem's content
    image, the forms timed in turns ``reps`` times."""
    import jax
    import jax.numpy as jnp

    from nst_jax import objective

    vg = jax.jit(jax.value_and_grad(objective.total_loss), static_argnums=(4,))
    x = jnp.asarray(problem.content_in)
    forms = _variants(problem, x)
    temps, loss = {}, {}
    for name, (params, cfg) in forms.items():
        compiled = vg.lower(x, params, problem.targets, problem.weights, cfg).compile()
        temps[name] = compiled.memory_analysis().temp_size_in_bytes / 2 ** 20
        loss[name] = float(jax.block_until_ready(vg(x, params, problem.targets, problem.weights, cfg))[0])
    times: Dict[str, List[float]] = {name: [] for name in forms}
    for _ in range(reps):
        for name, (params, cfg) in forms.items():
            t = time.perf_counter()
            jax.block_until_ready(vg(x, params, problem.targets, problem.weights, cfg))
            times[name].append(time.perf_counter() - t)
    return {name: (1e3 * float(np.median(times[name])), temps[name], loss[name]) for name in forms}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128,256,512", help="longest sides, comma-separated")
    ap.add_argument("--reps", type=int, default=5, help="timing rounds (each times every form once)")
    ap.add_argument("--weights", default="vgg16-hed")
    ap.add_argument("--tiny", action="store_true", help="smoke run: 48 px, a small wide network, 2 rounds")
    ap.add_argument("--out", default=None, help="also write the markdown to this file")
    args = ap.parse_args(argv)
    from nst_jax import vgg
    from nst_jax.image import sample_path
    from nst_jax.problem import prepare

    weights = args.weights
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.tiny:
        weights = vgg.init_params(0, vgg.VGGSpec("conv-forms-tiny", *TINY_WIDE))
        sizes, args.reps = [48], 2
    lines = report_header("Value and gradient per convolution form (timed in turns; XLA temporaries)")
    lines += [f"- weights: {args.weights if not args.tiny else 'random, ' + str(TINY_WIDE)}; medians of {args.reps}",
              "", "| pair | size | " + " | ".join(FORMS) + " | loss rel. diff (prepared vs lax) |",
              "|---|---|" + "---|" * len(FORMS) + "---|"]
    for size in sizes:
        for content, style in PAIRS[1:] if args.tiny else PAIRS[:1] if size > 256 else PAIRS:
            p = prepare(sample_path(content), sample_path(style), weights=weights, size=size)
            res = measure(p, args.reps)
            h, w = p.content_in.shape[:2]
            rel = abs(res[FORMS[2]][2] - res[FORMS[0]][2]) / max(abs(res[FORMS[0]][2]), 1e-30)
            lines.append(f"| {content} + {style} | {w}x{h} | "
                         + " | ".join(f"{ms:.0f} ms, {mib:.1f} MiB" for ms, mib, _ in res.values())
                         + f" | {rel:.1e} |")
            print(lines[-1], flush=True)
    print_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
