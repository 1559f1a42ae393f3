"""Load-robust pricing of a time-to-loss race: per-f+g costs of both sides timed in turns in one process.

On a shared machine the wall time of a run depends on what else runs at the time (+-30% on the 2-core machine of
``RESULTS.md``), and PyTorch's run and nst-jax's happen minutes apart. Here each nst-jax level size (a warm start
solves at 1/4, 1/2 and the full size) gets one ``Solve`` run of ``rounds + 1`` chunks of ``block`` iterations whose
chunk ends time ``block`` PyTorch f+g at the pair's size; a level's cost is the median over rounds of (its Solve
seconds per f+g) / (PyTorch's seconds per f+g in the same round), so load from other processes cancels. A run is
then priced in PyTorch f+g: ``sum_l fg_l * cost_l`` against PyTorch's f+g count to its best loss.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from nst_jax import runner
from nst_jax.config import SolverConfig

__all__ = ["level_costs", "fg_per_level", "priced"]


def level_costs(problems: Mapping[Tuple[int, int], object], torch_fg: Callable[[], None], rounds: int = 4,
                block: int = 3, history: int = 100) -> Dict[Tuple[int, int], Dict[str, float]]:
    """``{shape: {"cost": Solve f+g / PyTorch f+g, "solve_s": ..., "torch_s": ...}}`` for each prepared problem.

    ``problems``: ``{(H, W): nst_jax Problem}`` at each level size; ``torch_fg()``: one PyTorch f+g (forward and
    backward) at the pair's size. Each Solve runs from the problem's content with ``history`` (the default
    solver's), so its two-loop recursion grows as in a real run; the first chunk (the initial f+g) is not counted.
    """
    torch_fg()  # warm-up (allocator, oneDNN primitives)
    out = {}
    for shape, prob in problems.items():
        run = runner.Solve(prob.cfg, SolverConfig(history=history, chunk=block))
        run(prob.params, prob.targets, prob.weights, prob.content_in, 1)  # compile apart
        solve_s: List[float] = []
        torch_s: List[float] = []
        last: Dict[str, float] = {}

        def progress(done, value, nfev):
            now = time.perf_counter()
            if last:
                solve_s.append((now - last["t"]) / max(int(np.max(nfev)) - last["nfev"], 1))
            t = time.perf_counter()
            for _ in range(block):
                torch_fg()
            torch_s.append((time.perf_counter() - t) / block)
            last.update(t=time.perf_counter(), nfev=int(np.max(nfev)))

        run(prob.params, prob.targets, prob.weights, prob.content_in, (rounds + 1) * block, progress=progress)
        n = len(solve_s)
        ratio = np.asarray(solve_s) / np.asarray(torch_s[:n])
        out[shape] = {"cost": float(np.median(ratio)), "solve_s": float(np.median(solve_s)),
                      "torch_s": float(np.median(torch_s[:n])), "rounds": n}
    return out


def fg_per_level(trace: Sequence[Mapping], upto: int) -> List[int]:
    """f+g spent in each level of a run (``level`` marks; one level without them) up to and including trace entry
    ``upto``."""
    counts: Dict[int, int] = {}
    prev = 0
    for e in trace[:upto + 1]:
        lv = int(e.get("level", 0))
        counts[lv] = counts.get(lv, 0) + int(e["fg"]) - prev
        prev = int(e["fg"])
    return [counts.get(k, 0) for k in range(max(counts) + 1)] if counts else [0]


def priced(fgs: Sequence[int], shapes: Sequence[Tuple[int, int]], costs: Mapping[Tuple[int, int], Mapping]) -> float:
    """A run's f+g per level priced in PyTorch f+g at the interleaved costs."""
    return float(sum(n * costs[tuple(s)]["cost"] for n, s in zip(fgs, shapes)))
