"""Grid benchmark: K members as ONE compiled sweep against K sequential single runs of the same settings.

For each K the members are K content/style ratios alpha/beta (log-spaced from 1e-4 to 1e-1), the same image pair,
solver, history and iterations; the grid is one ``nst_jax.sweep`` call, the sequential side K ``nst_jax.stylize``
calls. Compile time (every compile of each side's calls, from JAX's compile events: ``runner.CompileClock``) is
reported apart and excluded from the ratios: ``solve`` compares the solve seconds alone, ``wall`` the whole calls minus their compile time (so the
sequential side also pays K target computations, as K separate runs do). The final losses of both sides are compared
as a correctness check. Goal: on CPU "not slower" (ratio >= 1.0); on an accelerator >= 3x for K = 8 at 512 px
(``benchmarks/device_check.py`` imports :func:`grid_vs_sequential` for that).

Usage::

    python benchmarks/bench_grid.py                          # K = 4 and 16, 128 px, 20 iterations, vgg16-hed
    python benchmarks/bench_grid.py --ks 8 --size 512 --iters 50
    python benchmarks/bench_grid.py --tiny                   # seconds-long smoke run (tiny19, 32 px, K = 2, 4)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

import nst_jax  # noqa: E402
from nst_jax import image as I  # noqa: E402
from nst_jax import runner  # noqa: E402


def grid_vs_sequential(params, content, style, k: int, size: int, iters: int, *, history: int = 100,
                       members: str = "auto") -> Dict[str, float]:
    """One K-member grid (K alpha/beta ratios) as one compiled sweep vs K sequential ``stylize`` runs.

    Args:
      params: a params tree (``nst_jax.load_weights(name)[0]``); content, style: paths or [H, W, 3] arrays.
      size: longest side in px; iters: iterations per member; history: L-BFGS history; members: how the sweep
        evaluates its K losses ("auto", "vmap" or "unroll").

    Returns:
      a dict: ``k``, ``size``, ``iters``, ``grid_compile_s``, ``grid_run_s`` (solve seconds), ``grid_wall_s``,
      ``seq_compile_s``, ``seq_run_s``, ``seq_wall_s``, ``solve_ratio`` (sequential / grid solve seconds),
      ``wall_ratio`` (sequential / grid wall seconds, compile excluded from both), ``waves``,
      ``final_loss_max_rel_diff``.
    """
    ratios = [float(r) for r in np.logspace(-4, -1, k)]
    kw = dict(weights=params, size=size, iters=iters, progress=False, history=history)
    with runner.CompileClock() as grid_clock:  # every compile of the call, the targets' programs too
        t = time.perf_counter()
        sw = nst_jax.sweep(content, style, {"ratio": ratios}, members=members, **kw)
        grid_wall = time.perf_counter() - t
    with runner.CompileClock() as seq_clock:
        t = time.perf_counter()
        singles = [nst_jax.stylize(content, style, style_weight=1.0 / r, **kw) for r in ratios]
        seq_wall = time.perf_counter() - t
    seq_run = sum(r.run_seconds for r in singles)
    rel = max(abs(a.terms["total"] - b.terms["total"]) / abs(b.terms["total"]) for a, b in zip(sw.results, singles))
    return {"k": k, "size": size, "iters": iters, "grid_compile_s": grid_clock.seconds, "grid_run_s": sw.run_seconds,
            "grid_wall_s": grid_wall, "seq_compile_s": seq_clock.seconds, "seq_run_s": seq_run,
            "seq_wall_s": seq_wall, "solve_ratio": seq_run / sw.run_seconds,
            "wall_ratio": (seq_wall - seq_clock.seconds) / (grid_wall - grid_clock.seconds),
            "waves": sw.waves, "final_loss_max_rel_diff": rel}


def environment() -> List[str]:
    """The machine and versions, one markdown bullet each."""
    import jaxlib

    from bench_torch import cpu_model, n_cores

    dev = jax.devices()[0]
    return [f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- device: {dev.platform}: {dev.device_kind} (x{len(jax.devices())})",
            f"- CPU: {cpu_model()}, {n_cores()} cores", f"- python {platform.python_version()}, jax {jax.__version__},"
            f" jaxlib {jaxlib.__version__}, numpy {np.__version__}"]


def table(rows: List[Dict[str, float]]) -> List[str]:
    """The measurements as a markdown table."""
    out = ["| K | grid compile s | grid solve s | grid wall s | sequential compile s | sequential solve s | "
           "sequential wall s | sequential / grid, solve | sequential / grid, wall | waves | final loss rel. diff |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['k']} | {r['grid_compile_s']:.1f} | {r['grid_run_s']:.2f} | {r['grid_wall_s']:.2f} | "
                   f"{r['seq_compile_s']:.1f} | {r['seq_run_s']:.2f} | {r['seq_wall_s']:.2f} | "
                   f"**{r['solve_ratio']:.2f}x** | {r['wall_ratio']:.2f}x | {r['waves']} | "
                   f"{r['final_loss_max_rel_diff']:.1e} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", default="4,16", help="comma-separated member counts K (default 4,16)")
    ap.add_argument("--size", type=int, default=128, help="longest side in px (default 128)")
    ap.add_argument("--iters", type=int, default=20, help="iterations per member (default 20)")
    ap.add_argument("--history", type=int, default=100, help="L-BFGS history (default 100)")
    ap.add_argument("--weights", default="vgg16-hed", help="nst_jax.weights source (default vgg16-hed)")
    ap.add_argument("--members", default="auto", help="sweep member evaluation: auto, vmap or unroll")
    ap.add_argument("--content", default="blue_marble", help="bundled sample name")
    ap.add_argument("--style", default="great_wave", help="bundled sample name")
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny19, 32 px, 3 iterations, K = 2 and 4")
    args = ap.parse_args(argv)
    if args.tiny:
        args.ks, args.size, args.iters, args.weights, args.history = "2,4", 32, 3, "tiny19", 5
    ks = [int(v) for v in args.ks.split(",")]
    params, info = nst_jax.load_weights(args.weights)
    content, style = I.sample_path(args.content), I.sample_path(args.style)
    print(f"# Grid vs sequential: {args.weights}, {args.content} + {args.style}, {args.size} px, {args.iters} "
          f"iterations, history {args.history}, members {args.members}")
    print("\n".join(environment()) + "\n")
    rows = []
    for k in ks:
        rows.append(grid_vs_sequential(params, content, style, k, args.size, args.iters, history=args.history,
                                       members=args.members))
        print(f"K={k}: sequential / grid solve time {rows[-1]['solve_ratio']:.2f}x", flush=True)
    print("\n" + "\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
