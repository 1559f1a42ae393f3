"""Diagnose the line-search solvers on one pair: per-iteration step size, f+g per line search, curvature pairs and
the fraction of pixels on a bound, read from each solver's state after every iteration (``Solve`` with one-iteration
chunks; ``solver.probe(state)``).

Usage::

    python benchmarks/diagnose_solvers.py --size 128 --variants lbfgs,jaxopt,jaxopt-lbfgs,optax-lbfgs
    python benchmarks/diagnose_solvers.py --variants jaxopt-lbfgs:first_step=0.05:max_linesearch=10 --fg 150

A variant is a solver name with optional ``SolverConfig`` fields (``name:field=value:...``, as ``bench_torch.py``). The target is the loss
PyTorch's strong-Wolfe L-BFGS reaches within ``--torch-fg`` f+g on the same problem (``bench_torch``'s peer; skipped
with ``--no-torch``). Each variant prints a summary line (f+g to the target, best loss, line-search f+g per
iteration, pairs kept, largest bound fraction); ``--trace FILE.json`` writes the per-iteration rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

from bench_torch import Problem, variant_settings  # noqa: E402
from nst_jax import runner, solvers  # noqa: E402
from nst_jax.config import SolverConfig  # noqa: E402


def parse_variant(text: str) -> SolverConfig:
    """``"name:field=value:..."`` (:func:`bench_torch.variant_settings`) -> SolverConfig, history 100 unless given."""
    return SolverConfig(**dict({"history": 100}, **variant_settings(text)))


def trace_variant(p: Problem, cfg: SolverConfig, max_fg: int, target: float) -> List[dict]:
    """One run, stopping after ``max_fg`` f+g or at the target: one row per iteration read from the solver state."""
    run = runner.Solve(p.cfg, dataclasses.replace(cfg, chunk=1, loop="host"))
    solver = solvers.make_solver(run.solver_cfg, lambda *a: None)  # its accessors only
    rows: List[dict] = []

    class Done(Exception):
        pass

    def on_chunk(done, x, state, trace):
        probe = {k: float(np.asarray(v)) for k, v in solver.probe(state).items()}
        xs = np.asarray(x)
        nfev = int(trace["nfevs"][-1])
        rows.append({"iter": done, "fg": nfev, "dfg": nfev - (rows[-1]["fg"] if rows else 1),
                     "loss": float(trace["values"][-1]), "on_bound": float(np.mean((xs <= 0.0) | (xs >= 1.0))),
                     "outside": 0.0, **probe})
        if nfev >= max_fg or trace["values"][-1] <= target:
            raise Done

    try:
        run(p.params, p.targets, p.weights, p.x0, 10 * max_fg, on_chunk=on_chunk)
    except Done:
        pass
    return rows


def summary(label: str, rows: List[dict], target: float) -> str:
    hit = next((r["fg"] for r in rows if r["loss"] <= target), None)
    dfg = np.array([r["dfg"] for r in rows])
    best = min(r["loss"] for r in rows)
    steps = [r.get("stepsize", float("nan")) for r in rows]
    pairs = rows[-1].get("pairs", float("nan"))
    bad = rows[-1].get("nonpositive", 0) + rows[-1].get("skipped", 0)
    return (f"| {label} | {hit if hit is not None else 'not reached'} | {rows[-1]['fg']} | {best:.4g} | "
            f"{len(rows)} | {dfg.mean():.2f} (max {dfg.max()}) | {np.nanmedian(steps):.3g} | "
            f"{pairs:.0f} / {bad:.0f} | {max(r['on_bound'] for r in rows):.3f} | "
            f"{max(r['outside'] for r in rows):.3f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--weights", default="vgg16-hed")
    ap.add_argument("--content", default="blue_marble")
    ap.add_argument("--style", default="great_wave")
    ap.add_argument("--variants", default="lbfgs,jaxopt,jaxopt-lbfgs,optax-lbfgs")
    ap.add_argument("--fg", type=int, default=200, help="f+g cap per variant")
    ap.add_argument("--torch-fg", type=int, default=100, help="PyTorch's f+g budget that defines the target")
    ap.add_argument("--target", type=float, default=None, help="a target loss instead of PyTorch's")
    ap.add_argument("--trace", default=None, help="write the per-iteration rows of every variant to this JSON file")
    args = ap.parse_args(argv)
    p = Problem(args.size, args.weights, args.content, args.style)
    target = args.target
    if target is None:
        import torch_peer as TP

        net = TP.TorchVGG({k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in p.params.items()})
        tr = TP.run_lbfgs(TP.TorchGatysLoss(net, p.content, p.style, alpha=1.0, beta=1e3), p.x0, args.torch_fg)
        target = float(np.min(tr.losses))
        print(f"target: PyTorch's best loss within {args.torch_fg} f+g: {target:.6g} "
              f"(reached at f+g #{int(np.argmin(tr.losses)) + 1})", flush=True)
    print(f"{args.size} px, {args.content} + {args.style}, {jax.devices()[0].platform}", flush=True)
    print("| variant | f+g to target | f+g run | best loss | iterations | f+g per iteration | median step | "
          "pairs kept / rejected | max on bound | max u outside [0,1] |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    traces = {}
    for text in filter(None, (v.strip() for v in args.variants.split(","))):
        rows = trace_variant(p, parse_variant(text), args.fg, target)
        traces[text] = rows
        print(summary(text, rows, target), flush=True)
    if args.trace:
        Path(args.trace).write_text(json.dumps({"target": target, "traces": traces}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
