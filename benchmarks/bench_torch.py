"""Speed benchmark: nst-jax against a plain-PyTorch peer on the same images, weights and loss (Gatys et al. 2016).

Measures, in one run (see benchmarks/README.md for what each number means):

  (a) f+g per second: PyTorch (timed closure calls) vs nst-jax ``Solve`` with the default "lbfgs" solver
      (nfev / run_seconds, compile excluded and reported separately);
  (b) time to quality: the target is the clipped-image loss PyTorch's strong-Wolfe L-BFGS reaches within ``--fg``
      f+g; the wall time each side needs to first reach a loss <= target;
  (c) sweep: K content/style ratios as one vmapped ``Solve(batched=True)`` vs K sequential single solves.

Usage::

    python benchmarks/bench_torch.py                      # 256 px, vgg16-hed, all solvers
    python benchmarks/bench_torch.py --quick              # seconds-long smoke run (64 px, tiny19)
    python benchmarks/bench_torch.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import level_costs as LC  # noqa: E402

import nst_jax.image as I  # noqa: E402
from nst_jax import objective, runner  # noqa: E402
from nst_jax.config import SOLVERS, LossConfig, SolverConfig  # noqa: E402
from nst_jax import weights as W  # noqa: E402
from nst_jax.sweeps import DEFAULT_RATIOS  # noqa: E402

try:
    import torch  # noqa: E402

    import torch_peer as TP  # noqa: E402

    TORCH_ERROR: Optional[str] = None
except ImportError as exc:  # the JAX side still runs
    torch, TP, TORCH_ERROR = None, None, str(exc)

TARGETS = {"fg_per_s": 1.0, "time_to_loss": 0.8, "sweep": 1.0}


# --------------------------------------------------------------------------------------------------- environment

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def environment() -> Dict[str, str]:
    import jaxlib

    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": str(n_cores()),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jax devices": ", ".join(str(d) for d in jax.devices()),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else f"not importable ({TORCH_ERROR})",
        "torch threads": str(torch.get_num_threads()) if torch is not None else "-",
        "XLA threads": "all cores (XLA:CPU intra-op thread pool, not configurable per call)",
    }
    return env


def report_header(title: str) -> List[str]:
    """A markdown report's first lines: ``# title`` and the machine and versions (:func:`environment`)."""
    return [f"# {title}", ""] + [f"- {k}: {v}" for k, v in environment().items()]


def print_report(lines: List[str], out: Optional[str] = None) -> None:
    """Print a report and, with ``out``, also write it to that file."""
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def parse_setting(text: str) -> Dict[str, object]:
    """``"conv=lax:warm_start=off"`` -> ``{"conv": "lax", "warm_start": "off"}`` (ints and floats converted; an
    empty string is the defaults).

    Example:
      >>> parse_setting("conv=lax:style_weight=1e4:history=20")
      {'conv': 'lax', 'style_weight': 10000.0, 'history': 20}
    """
    out: Dict[str, object] = {}
    for item in filter(None, text.split(":")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"a setting is key=value, got {item!r}")
        for kind in (int, float):
            try:
                out[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------- problem

class Problem:
    """Images, params, loss structure, targets and weights shared by both sides."""

    def __init__(self, size: int, weights: str, content: str, style: str):
        self.params, self.info = W.load_weights(weights)
        self.content = I.load_image(I.sample_path(content), size=size)
        self.style = I.load_image(I.sample_path(style), size=size)
        self.cfg = LossConfig()  # gatys: relu4_2 content, relu1_1..relu5_1 style, max pooling, G / (H W)
        self.targets = objective.compute_targets(self.params, self.content, [self.style], self.cfg)
        self.weights = objective.make_weights(self.cfg, self.params, content_weight=1.0, style_weight=1e3,
                                      layer_weights="inv_c2")
        self.x0 = np.asarray(self.content, np.float32)  # init "content", as nst_jax.stylize
        self._vg = jax.jit(jax.value_and_grad(objective.total_loss), static_argnums=(4,))

    def jax_value_and_grad(self, x_HW3, weights=None):
        return self._vg(jnp.asarray(x_HW3), self.params, self.targets,
                        self.weights if weights is None else weights, self.cfg)


def check_equivalence(p: Problem, loss) -> Dict[str, float]:
    """JAX vs PyTorch loss (and gradient) at the content image and at a half-way content/style blend."""
    out = {}
    blend = np.clip(0.5 * p.content + 0.5 * I.resize(p.style, p.content.shape[:2]), 0.0, 1.0).astype(np.float32)
    for label, img in (("content", p.content), ("blend", blend)):
        v_j, g_j = p.jax_value_and_grad(img)
        x = TP.to_nchw(img).requires_grad_(True)
        v_t = loss(x)
        v_t.backward()
        g_t = x.grad[0].permute(1, 2, 0).numpy()
        v_j, g_j = float(v_j), np.asarray(g_j)
        out[f"{label}: loss jax"] = v_j
        out[f"{label}: loss torch"] = v_t.item()
        out[f"{label}: loss rel. diff"] = abs(v_j - v_t.item()) / max(abs(v_j), 1e-30)
        out[f"{label}: grad rel. diff (L2)"] = float(np.linalg.norm(g_j - g_t) / max(np.linalg.norm(g_j), 1e-30))
        out[f"{label}: grad rel. diff (max-norm)"] = float(np.max(np.abs(g_j - g_t)) / max(np.max(np.abs(g_j)), 1e-30))
    return out


# --------------------------------------------------------------------------------------------------- nst-jax runs

class _Stop(Exception):
    pass


def jax_fg_rate(p: Problem, run: "runner.Solve", iters: int) -> Dict[str, float]:
    """(a) nst-jax f+g/s: ``run`` (``Solve("lbfgs")``) for ``iters`` iterations; compile measured on a first call,
    excluded."""
    warm = run(p.params, p.targets, p.weights, p.x0, 1)
    out = run(p.params, p.targets, p.weights, p.x0, iters)
    nfev = int(out.nfevs[-1])
    # diagnostics: the jitted value_and_grad alone (no solver), to split loss cost from solver overhead
    v, g = p.jax_value_and_grad(p.x0)
    jax.block_until_ready(g)
    reps = max(3, min(10, iters // 10))
    t = time.perf_counter()
    for _ in range(reps):
        v, g = p.jax_value_and_grad(p.x0)
    jax.block_until_ready(g)
    raw = reps / (time.perf_counter() - t)
    return {"compile_s": warm.compile_seconds, "run_s": out.run_seconds, "nfev": nfev,
            "fg_per_s": nfev / out.run_seconds, "raw_vg_per_s": raw, "final_loss": float(out.values[-1])}


def interleaved_fg_seconds(p: Problem, loss, rounds: int, run: "runner.Solve") -> Dict[str, float]:
    """Seconds per f+g of nst-jax's ``Solve``, of PyTorch (clamp, loss, backward) and of nst-jax's bare jitted
    value_and_grad, timed in turns in one process so load from other processes hits all three alike.

    One ``Solve`` run of ``rounds + 1`` chunks: at every chunk end its progress callback times ``chunk`` PyTorch f+g
    and one bare value_and_grad; the solve's cost of a chunk is the wall time from the end of that interleaved work to
    the next chunk end (dispatch, host sync and bookkeeping included, as in a real run) over its f+g. The first chunk
    (initial f+g) is not counted. Ratios are medians over the rounds of per-round ratios."""
    x = TP.to_nchw(p.x0).requires_grad_(True)
    block = run.solver_cfg.chunk

    def torch_fg():
        x.grad = None
        loss(torch.clamp(x, 0.0, 1.0)).backward()

    torch_fg()
    jax.block_until_ready(p.jax_value_and_grad(p.x0))
    per_fg = {"torch": [], "jax": [], "solve": []}
    last = {}

    def progress(done, value, nfev):
        now = time.perf_counter()
        if last:
            per_fg["solve"].append((now - last["t"]) / (nfev - last["nfev"]))
        t = time.perf_counter()
        for _ in range(block):
            torch_fg()
        per_fg["torch"].append((time.perf_counter() - t) / block)
        t = time.perf_counter()
        jax.block_until_ready(p.jax_value_and_grad(p.x0))
        per_fg["jax"].append(time.perf_counter() - t)
        last.update(t=time.perf_counter(), nfev=nfev)

    run(p.params, p.targets, p.weights, p.x0, (rounds + 1) * block, progress=progress)
    n = len(per_fg["solve"])
    a = {k: np.asarray(v[:n]) for k, v in per_fg.items()}
    return {"rounds": n, "block": block, "torch_s": float(np.median(a["torch"])), "jax_s": float(np.median(a["jax"])),
            "solve_s": float(np.median(a["solve"])), "ratio": float(np.median(a["torch"] / a["solve"])),
            "solve_overhead": float(np.median(a["solve"] / a["jax"]))}


def jax_time_to_target(p: Problem, solver: str, target: float, max_fg: int, chunk: int) -> Dict[str, float]:
    """(b) wall time for a solver to first reach loss <= target, stopping at the target or after ``max_fg`` f+g.

    The solve runs in chunks of ``chunk`` iterations; the host timestamps each chunk boundary (progress callback)
    and the time of the first iteration at or below the target is interpolated linearly in f+g within its chunk.
    Compile is done by a first 1-iteration call and excluded.
    """
    run = runner.Solve(p.cfg, SolverConfig(name=solver, history=100, chunk=chunk))
    compile_s = run(p.params, p.targets, p.weights, p.x0, 1).compile_seconds
    marks: List[tuple] = []  # (seconds, iterations done, nfev)
    seen: Dict[str, np.ndarray] = {}

    def progress(done, loss, nfev):
        marks.append((time.perf_counter() - t0, int(done), int(nfev)))

    def callback(done, x, values):
        seen["values"] = values
        if np.nanmin(values) <= target or marks[-1][2] >= max_fg:
            raise _Stop

    t0 = time.perf_counter()
    try:
        run(p.params, p.targets, p.weights, p.x0, 100 * max_fg, progress=progress, callback=callback)
    except _Stop:
        pass
    values = seen["values"]
    hit = np.nonzero(values <= target)[0]
    res = {"compile_s": compile_s, "fg_run": marks[-1][2], "best_loss": float(np.nanmin(values)),
           "seconds": float("nan"), "fg_at_target": float("nan")}
    if hit.size:
        it = int(hit[0])
        # values[0] is the initial image (nfev 1, time ~0); chunk boundaries: (time, iters, nfev)
        bounds = [(0.0, 0, 1)] + marks
        for (ta, ia, na), (tb, ib, nb) in zip(bounds[:-1], bounds[1:]):
            if ia <= it <= ib:
                frac = (it - ia) / max(ib - ia, 1)
                res["seconds"] = ta + frac * (tb - ta)
                res["fg_at_target"] = na + frac * (nb - na)
                break
    return res


def jax_sweep(p: Problem, k: int, iters: int, chunk: int) -> Dict[str, float]:
    """(c) K ratios alpha/beta as one vmapped Solve vs K sequential single Solves (same iterations each)."""
    ratios = list(DEFAULT_RATIOS)[:k] if k <= len(DEFAULT_RATIOS) else list(np.logspace(-4, -1, k))
    alpha = p.weights.content
    single_w = [p.weights.replace(style=alpha / jnp.float32(r)) for r in ratios]
    batched_w = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *single_w)
    x0_K = np.broadcast_to(p.x0, (k,) + p.x0.shape).copy()
    scfg = SolverConfig(name="lbfgs", history=100, chunk=chunk)

    single = runner.Solve(p.cfg, scfg)
    c_single = single(p.params, p.targets, single_w[0], p.x0, 1).compile_seconds
    t = time.perf_counter()
    seq_run = 0.0
    seq_losses = []
    for w in single_w:
        o = single(p.params, p.targets, w, p.x0, iters)
        seq_run += o.run_seconds
        seq_losses.append(float(o.values[-1]))
    seq_wall = time.perf_counter() - t

    batched = runner.Solve(p.cfg, scfg, batched=True)
    c_batched = batched(p.params, p.targets, batched_w, x0_K, 1).compile_seconds
    t = time.perf_counter()
    o = batched(p.params, p.targets, batched_w, x0_K, iters)
    bat_wall = time.perf_counter() - t
    agree = float(np.max(np.abs(o.values[:, -1] - np.asarray(seq_losses)) / np.abs(np.asarray(seq_losses))))
    return {"k": k, "iters": iters, "sequential_s": seq_wall, "sequential_run_s": seq_run,
            "batched_s": bat_wall, "batched_run_s": o.run_seconds, "compile_single_s": c_single,
            "compile_batched_s": c_batched, "final_loss_max_rel_diff": agree}


# --------------------------------------------------------------------------------------------------- report

def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# --------------------------------------------------------------------------------------------------- many pairs

PHOTOS = ("blue_marble", "tetons_snake_river")
PAINTINGS = ("great_wave", "starry_night", "wheat_field_with_cypresses")
PAIRS_512 = (("blue_marble", "great_wave"), ("tetons_snake_river", "starry_night"))


def pair_list(spec: str, size: int) -> List[tuple]:
    """``all``: every bundled photo x painting at ``size`` and two pairs at 512 px; or ``content+style,...`` at size."""
    if spec == "all":
        return [(c, s, size) for c in PHOTOS for s in PAINTINGS] + [(c, s, 512) for c, s in PAIRS_512]
    out = []
    for item in spec.split(","):
        c, _, st = item.strip().partition("+")
        out.append((c, st, size))
    return out


def time_to_target_from_trace(trace: List[dict], target: float) -> tuple:
    """(f+g, solve seconds, index) of the first trace entry at or below ``target`` (NaN, NaN, None when never
    reached). A run of several levels (warm start) is read at its last level only: a coarse level's loss is of
    another problem."""
    last = max((e.get("level", 0) for e in trace), default=0)
    for j, e in enumerate(trace):
        if e.get("level", 0) == last and e["loss"] <= target:
            return e["fg"], e["seconds"], j
    return float("nan"), float("nan"), None


def variant_settings(variant: str) -> Dict[str, object]:
    """``SolverConfig`` fields of a named variant: ``default`` (nst-jax's default solver), or a solver name with
    optional fields, ``name:field=value:...`` (e.g. ``jaxopt-lbfgs:first_step=0.05:max_linesearch=10``)."""
    if variant == "default":
        return {}
    name, _, items = variant.partition(":")
    if name not in SOLVERS:
        raise ValueError(f"unknown variant {variant!r}: 'default' or one of {', '.join(SOLVERS)} with :field=value")
    kw: Dict[str, object] = {"name": name, **parse_setting(items)}
    if "precondition" in kw:
        kw["precondition"] = str(kw["precondition"]).lower() in ("1", "true", "yes")
    return kw


# nst_jax.stylize keywords of the variants that run through it (the warm-start variant beside the default); any
# other variant is a solver (variant_settings) run through runner.Solve
STYLIZE_VARIANTS = {"default": {"warm_start": "off"}, "warm": {"warm_start": "auto"}}


def run_variant(p: Problem, variant: str, max_fg: int, target: float = -np.inf) -> Dict[str, object]:
    """One nst-jax run of a named variant on a pair's problem, stopped at the first chunk end (of its last level) at
    or below ``target`` or past about ``max_fg`` f+g: its trace (``fg``, ``loss``, cumulative solve ``seconds``, each
    entry's ``level``), f+g, compile time and level shapes.

    ``default``: ``nst_jax.stylize`` as a user runs it (the default solver, no warm start); ``warm``: the same with
    ``warm_start="auto"`` (``max_fg`` iterations at full size after the coarse levels its schedule adds); otherwise a
    solver with its settings (:func:`variant_settings`; history 100, as ``nst_jax.stylize``) through
    ``runner.Solve``."""
    if variant in STYLIZE_VARIANTS:
        return _run_stylize(p, STYLIZE_VARIANTS[variant], max_fg, target)
    run = runner.Solve(p.cfg, SolverConfig(**dict({"chunk": 5}, **variant_settings(variant))))
    compile_s = run(p.params, p.targets, p.weights, p.x0, 1).compile_seconds
    seen: Dict[str, object] = {}

    def on_chunk(done, x, state, trace):
        seen.update(trace)
        if np.nanmin(trace["values"]) <= target or trace["nfevs"][-1] >= max_fg:
            raise _Stop

    try:
        run(p.params, p.targets, p.weights, p.x0, 100 * max_fg, on_chunk=on_chunk)
    except _Stop:
        pass
    trace = [{"fg": int(n), "loss": float(v), "seconds": float(t), "level": 0}
             for n, v, t in zip(seen["nfevs"], seen["values"], seen["seconds"])]
    return {"trace": trace, "compile_s": compile_s, "n_fg": trace[-1]["fg"], "shapes": [tuple(p.content.shape[:2])],
            "final_loss": trace[-1]["loss"]}


def _run_stylize(p: Problem, extra: Dict[str, object], max_iters: int, target: float) -> Dict[str, object]:
    """:func:`run_variant` through ``nst_jax.stylize`` (one f+g per iteration: ``max_iters`` caps the f+g)."""
    import nst_jax

    kw = dict(weights=p.params, size=None, progress=False, **extra)
    shape = tuple(p.content.shape[:2])
    hit: Dict[str, bool] = {}

    def on_chunk(done, x, state, trace):
        if tuple(np.shape(x)[:2]) == shape and np.nanmin(trace["values"]) <= target:
            hit["yes"] = True

    warm = nst_jax.stylize(p.content, p.style, iters=2, **kw)  # compiles (a second compile costs nothing)
    r = nst_jax.stylize(p.content, p.style, iters=max_iters, on_chunk=on_chunk, stop=lambda: bool(hit), **kw)
    shapes = [tuple(lv["shape"]) for lv in r.settings["levels"]] if "levels" in r.settings else [shape]
    return {"trace": r.loss_trace, "compile_s": warm.compile_seconds + r.compile_seconds, "n_fg": r.n_fg,
            "shapes": shapes, "final_loss": r.loss_trace[-1]["loss"]}


def _pair_row(args, p: Problem, variants: List[str]) -> Dict[str, object]:
    """One pair: PyTorch's run and target, each variant's run (after ``default``, capped at ``--max-fg-ratio`` times
    its f+g to the target), the interleaved per-level costs."""
    net = TP.TorchVGG({k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in p.params.items()})
    loss = TP.TorchGatysLoss(net, p.content, p.style, alpha=1.0, beta=1e3)
    tr = TP.run_lbfgs(loss, p.x0, args.fg)
    best = int(np.argmin(tr.losses))
    row = {"target": float(tr.losses[best]), "torch_fg": best + 1, "torch_s": float(tr.wall[best]), "runs": {}}
    cap = args.max_fg or 3 * args.fg
    for v in variants:
        r = run_variant(p, v, cap, row["target"])
        r["fg"], r["s"], j = time_to_target_from_trace(r["trace"], row["target"])
        r["fgs"] = LC.fg_per_level(r["trace"], j) if j is not None else None
        last = r["trace"][-1].get("level", 0)
        r["best_loss"] = min(e["loss"] for e in r["trace"] if e.get("level", 0) == last)
        if v == "default" and args.max_fg_ratio and np.isfinite(r["fg"]):
            cap = min(cap, int(np.ceil(args.max_fg_ratio * r["fg"])))
        row["runs"][v] = r
    if args.rounds > 0:
        from nst_jax.problem import prepare

        shapes = {s for v, r in row["runs"].items() if v in STYLIZE_VARIANTS for s in r["shapes"]}
        problems = {s: prepare(p.content, p.style, weights=p.params, size=max(s)) for s in sorted(shapes)}
        x = TP.to_nchw(p.x0).requires_grad_(True)

        def torch_fg():
            x.grad = None
            loss(torch.clamp(x, 0.0, 1.0)).backward()

        if problems:
            row["costs"] = LC.level_costs(problems, torch_fg, rounds=args.rounds, block=3)
    return row


def many_pairs(args, say) -> List[tuple]:
    """Per pair: PyTorch's 100-f+g loss (clipped image) as the target; f+g and seconds each side needs to reach it,
    the same race priced at per-f+g costs timed in turns in one process (:mod:`level_costs`; the default solver's
    variants only), and each variant's f+g to the target over the default's (load-independent)."""
    rows, ratios, costs, fgs, full = [], {}, [], {}, {}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    say("| pair | px | load | PyTorch f+g / s to its best | "
        + " | ".join(f"{v}: f+g per level / s / ratio / priced ratio" for v in variants) + " | compile (s) |")
    say("|---|---|---|---|" + "---|" * len(variants) + "---|")
    for content, style, size in pair_list(args.pairs, args.size):
        p = Problem(size, args.weights, content, style)
        load0 = os.getloadavg()[0]
        row = _pair_row(args, p, variants)
        print(f"  {content} + {style}: target (PyTorch's best loss) {row['target']:.6g}", flush=True)
        cells = []
        for v in variants:
            r = row["runs"][v]
            fgs.setdefault(v, []).append(r["fg"])
            full.setdefault(v, []).append(r["fgs"][-1] if r.get("fgs") else r["fg"])
            if not np.isfinite(r["s"]):
                cells.append(f"not reached in {r['n_fg']} f+g (best {r['best_loss'] / row['target']:.2f}x the "
                             "target)")
                for kind in ("wall", "priced") if v in STYLIZE_VARIANTS else ("wall",):
                    ratios.setdefault((v, size, kind), []).append(np.inf)
                continue
            ratio = r["s"] / row["torch_s"]
            ratios.setdefault((v, size, "wall"), []).append(ratio)
            cell = f"{'+'.join(str(n) for n in r['fgs'])} / {r['s']:.1f} / **{ratio:.2f}x**"
            if "costs" in row and v in STYLIZE_VARIANTS:
                pr = LC.priced(r["fgs"], r["shapes"], row["costs"]) / row["torch_fg"]
                ratios.setdefault((v, size, "priced"), []).append(pr)
                cell += f" / **{pr:.2f}x**"
            cells.append(cell)
        load = f"{load0:.1f}-{os.getloadavg()[0]:.1f}"
        say(f"| {content} + {style} | {size} | {load} | {row['torch_fg']} / {row['torch_s']:.1f} | "
            + " | ".join(cells) + " | " + ", ".join(f"{row['runs'][v]['compile_s']:.1f}" for v in variants) + " |")
        if "costs" in row:
            costs.append(f"| {content} + {style} | {size} | " + "; ".join(
                f"{w}x{h}: {1e3 * c['solve_s']:.0f} / {1e3 * c['torch_s']:.0f} ms = {c['cost']:.3f}"
                for (h, w), c in row["costs"].items()) + " |")
    say()
    say("(f+g per level: coarse levels first, '+'-joined; ratio: wall time over PyTorch's; priced ratio: the f+g "
        "priced at the interleaved per-f+g costs below, in PyTorch f+g, over PyTorch's f+g count)")
    if costs:
        say()
        say("| pair | px | per level size: nst-jax Solve / PyTorch ms per f+g (timed in turns) = cost |")
        say("|---|---|---|")
        for line in costs:
            say(line)
    say()
    if "default" in fgs:  # f+g to the target against the default solver's (load-independent)
        base = np.asarray(fgs["default"], float)
        for v, f in fgs.items():
            if v in STYLIZE_VARIANTS and v != "default":  # coarse levels cost less: the priced ratio compares them
                r = np.asarray(full[v], float) / np.asarray(full["default"], float)
                say(f"- {v}: full-size f+g to the target / the default's: median {np.nanmedian(r):.2f}x, worst "
                    f"{np.max(np.where(np.isfinite(r), r, np.inf)):.2f}x over {len(r)} pairs (the coarse levels' f+g "
                    "apart; see the priced ratio)")
            elif v != "default":
                r = np.asarray(f, float) / base
                say(f"- {v}: f+g to the target / the default's: median {np.nanmedian(r):.2f}x, worst "
                    f"{np.max(np.where(np.isfinite(r), r, np.inf)):.2f}x over {len(r)} pairs "
                    f"(goal <= 1.5x: {verdict(bool(np.all(r <= 1.5)))})")
    for (v, size, kind), rs in sorted(ratios.items()):
        rs = np.asarray(rs)
        say(f"- {v}, {size} px, {kind}: median {np.nanmedian(rs):.2f}x, worst {np.nanmax(rs):.2f}x PyTorch's time "
            f"({len(rs)} pairs; goal median <= 0.5x, worst <= 0.7x)")
        rows.append((f"time to PyTorch's loss, {v}, {size} px, {kind}, {len(rs)} pairs", "1.00x",
                     f"median {np.nanmedian(rs):.2f}x", f"worst {np.nanmax(rs):.2f}x", "<= 0.5x / 0.7x",
                     verdict(np.nanmedian(rs) <= 0.5 and np.nanmax(rs) <= 0.7)))
    return rows


def _summary(rows, say) -> None:
    if rows:
        say()
        say("## Summary")
        say()
        say("| measure | baseline | nst-jax | ratio | target | verdict |")
        say("|---|---|---|---|---|---|")
        for r in rows:
            say("| " + " | ".join(r) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="longest side of content and style (px)")
    ap.add_argument("--weights", default="vgg16-hed", help="nst_jax.weights source name")
    ap.add_argument("--content", default="blue_marble", help="bundled sample name")
    ap.add_argument("--style", default="great_wave", help="bundled sample name")
    ap.add_argument("--fg", type=int, default=100, help="PyTorch f+g budget that defines the target loss")
    ap.add_argument("--max-fg", type=int, default=None,
                    help="nst-jax f+g cap in (b) and per variant in --pairs (default 3 x --fg)")
    ap.add_argument("--rate-iters", type=int, default=None, help="iterations for (a) (default --fg)")
    ap.add_argument("--sweep-k", type=int, default=4, help="K ratios in (c); 0 skips the sweep")
    ap.add_argument("--sweep-iters", type=int, default=50, help="iterations per member in (c)")
    ap.add_argument("--rounds", type=int, default=8,
                    help="interleaved timing rounds in (a): Solve chunks, each followed by --chunk PyTorch f+g")
    ap.add_argument("--chunk", type=int, default=5, help="iterations per compiled chunk (timestamp resolution)")
    ap.add_argument("--solvers", default=None,
                    help="nst-jax solvers for (b), comma-separated (default: all four; --quick: lbfgs)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 64 px, tiny19, few f+g")
    ap.add_argument("--out", default=None, help="write a markdown report to this file")
    ap.add_argument("--pairs", default=None,
                    help="many-pair time to quality instead of the single-pair report: 'all' (every bundled photo x "
                         "painting at --size, two pairs at 512 px) or 'content+style,...'")
    ap.add_argument("--max-fg-ratio", type=float, default=None,
                    help="in --pairs, stop the variants after 'default' at this multiple of the default's f+g to the "
                         "target on that pair (e.g. 1.6 settles the 1.5x bar in the least time)")
    ap.add_argument("--variants", default="default",
                    help="nst-jax variants raced in --pairs, comma-separated: 'default', 'warm' (warm_start='auto') "
                         "or a solver name with optional SolverConfig fields, e.g. "
                         "'jaxopt-lbfgs:first_step=0.05:max_linesearch=10'")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.weights, args.fg, args.sweep_iters, args.rounds = 64, "tiny19", 10, 5, 3
        args.solvers = args.solvers or "lbfgs"
    args.solvers = args.solvers or ",".join(SOLVERS)
    max_fg = args.max_fg or 3 * args.fg
    rate_iters = args.rate_iters or args.fg
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    for s in solvers:
        if s not in SOLVERS:
            ap.error(f"unknown solver {s!r}; choose from {', '.join(SOLVERS)}")

    if torch is not None:
        torch.set_num_threads(n_cores())
    env = environment()
    lines: List[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    say(f"# nst-jax vs PyTorch: Gatys et al. 2016, {args.size} px, {args.weights}, "
        f"{args.content} + {args.style}")
    say()
    for k, v in env.items():
        say(f"- {k}: {v}")
    if torch is None:
        say(f"- PyTorch is not importable ({TORCH_ERROR}): running the nst-jax side only.")
    say()

    if args.pairs:
        if torch is None:
            ap.error("--pairs needs PyTorch (pip install -e '.[bench]')")
        say(f"## Time to PyTorch's {args.fg}-f+g loss, many pairs ({args.weights}; nst-jax seconds from its trace, "
            "compile apart)")
        say()
        rows = many_pairs(args, say)
        _summary(rows, say)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
        return 0

    p = Problem(args.size, args.weights, args.content, args.style)
    say(f"- images: content {p.content.shape[:2]}, style {p.style.shape[:2]}; weights {p.info.name}"
        f"{' (random)' if p.info.is_random else ''}")

    tr = None
    if torch is not None:
        net = TP.TorchVGG({k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in p.params.items()})
        loss = TP.TorchGatysLoss(net, p.content, p.style, alpha=1.0, beta=1e3)
        eq = check_equivalence(p, loss)
        say()
        say("## Loss equivalence (JAX vs PyTorch, float32)")
        say()
        for k, v in eq.items():
            say(f"- {k}: {v:.6g}")
        if eq["content: loss rel. diff"] > 1e-4:
            say("- WARNING: the two losses differ by more than 1e-4 relative at the content image")
        tr = TP.run_lbfgs(loss, p.x0, args.fg)
        say()
        say("## PyTorch torch.optim.LBFGS (strong Wolfe, history 100, lr 1; objective f(clamp(x, 0, 1)))")
        say()
        say(f"- f+g done: {len(tr.losses)}; warm-up f+g (untimed): {tr.warmup_seconds:.3f} s")
        say(f"- loss: initial {tr.losses[0]:.6g}, best within {args.fg} f+g {np.min(tr.losses):.6g}")

    run = runner.Solve(p.cfg, SolverConfig(name="lbfgs", history=100, chunk=args.chunk))
    rate = jax_fg_rate(p, run, rate_iters)
    inter = interleaved_fg_seconds(p, loss, args.rounds, run) if tr is not None else None
    rows = []
    say()
    say("## (a) f+g per second")
    say()
    if tr is not None:
        fg_torch = 1.0 / float(np.mean(tr.fg_seconds[1:])) if len(tr.fg_seconds) > 1 else float("nan")
        fg_torch_wall = len(tr.losses) / float(tr.wall[-1])
        ratio = rate["fg_per_s"] / fg_torch
        say(f"- PyTorch closure f+g/s (first excluded): {fg_torch:.3f}; incl. optimiser: {fg_torch_wall:.3f}")
    say(f"- nst-jax Solve(lbfgs) f+g/s: {rate['fg_per_s']:.3f} ({rate['nfev']} f+g in {rate['run_s']:.2f} s; "
        f"compile {rate['compile_s']:.2f} s excluded)")
    say(f"- nst-jax jitted value_and_grad alone: {rate['raw_vg_per_s']:.3f} f+g/s "
        f"(solver overhead {100 * (1 - rate['fg_per_s'] / rate['raw_vg_per_s']):.1f}% of Solve's time)")
    if tr is not None:
        say(f"- ratio nst-jax / PyTorch: {ratio:.2f}x (target >= {TARGETS['fg_per_s']:.1f}x: "
            f"{verdict(ratio >= TARGETS['fg_per_s'])})")
        rows.append(("(a) f+g/s", f"{fg_torch:.3f}", f"{rate['fg_per_s']:.3f}", f"{ratio:.2f}x",
                     f">= {TARGETS['fg_per_s']:.1f}x", verdict(ratio >= TARGETS["fg_per_s"])))
        r_int = inter["ratio"]
        say(f"- interleaved (one Solve run; at each of {inter['rounds']} chunk ends {inter['block']} PyTorch f+g and "
            f"1 bare nst-jax value_and_grad; medians): PyTorch {1e3 * inter['torch_s']:.0f} ms, nst-jax Solve "
            f"{1e3 * inter['solve_s']:.0f} ms per f+g (bare value_and_grad {1e3 * inter['jax_s']:.0f} ms; Solve / bare "
            f"{inter['solve_overhead']:.3f}); nst-jax / PyTorch f+g/s: {r_int:.2f}x (target >= "
            f"{TARGETS['fg_per_s']:.1f}x: {verdict(r_int >= TARGETS['fg_per_s'])}). Load from other processes slows "
            f"all sides alike here, unlike the separate timings above.")
        rows.append(("(a) f+g/s, interleaved", f"{1 / inter['torch_s']:.3f}", f"{1 / inter['solve_s']:.3f}",
                     f"{r_int:.2f}x", f">= {TARGETS['fg_per_s']:.1f}x", verdict(r_int >= TARGETS["fg_per_s"])))

    say()
    say("## (b) time to quality")
    say()
    if tr is not None:
        target = float(np.min(tr.losses))
        t_torch = float(tr.wall[int(np.argmin(tr.losses))])
        say(f"- target loss (PyTorch's best within {args.fg} f+g): {target:.6g}, reached by PyTorch at f+g "
            f"#{int(np.argmin(tr.losses)) + 1} after {t_torch:.2f} s")
    else:
        target, t_torch = float("nan"), float("nan")
        say("- no PyTorch target: reporting nst-jax loss after the f+g cap only")
    for s in solvers:
        r = jax_time_to_target(p, s, target if tr is not None else -np.inf, max_fg, args.chunk)
        if np.isfinite(r["seconds"]):
            ratio = r["seconds"] / t_torch
            say(f"- nst-jax {s}: {r['seconds']:.2f} s at ~{r['fg_at_target']:.0f} f+g (compile {r['compile_s']:.2f} s "
                f"excluded): {ratio:.2f}x PyTorch (target <= {TARGETS['time_to_loss']}x: "
                f"{verdict(ratio <= TARGETS['time_to_loss'])})")
            rows.append((f"(b) time to loss, {s}", f"{t_torch:.2f} s", f"{r['seconds']:.2f} s", f"{ratio:.2f}x",
                         f"<= {TARGETS['time_to_loss']}x", verdict(ratio <= TARGETS["time_to_loss"])))
            if inter is not None:
                # the same race priced at the interleaved per-f+g costs (robust to load changes between the runs)
                fg_torch_at = int(np.argmin(tr.losses)) + 1
                t_j = r["fg_at_target"] * inter["solve_s"]
                t_t = fg_torch_at * inter["torch_s"]
                say(f"  - at the interleaved per-f+g costs: nst-jax {r['fg_at_target']:.0f} f+g x "
                    f"{1e3 * inter['solve_s']:.0f} ms = {t_j:.1f} s vs PyTorch {fg_torch_at} f+g x "
                    f"{1e3 * inter['torch_s']:.0f} ms = {t_t:.1f} s: {t_j / t_t:.2f}x")
                rows.append((f"(b) time to loss, {s}, interleaved costs", f"{t_t:.1f} s", f"{t_j:.1f} s",
                             f"{t_j / t_t:.2f}x", f"<= {TARGETS['time_to_loss']}x",
                             verdict(t_j / t_t <= TARGETS["time_to_loss"])))
        else:
            say(f"- nst-jax {s}: target not reached within {r['fg_run']} f+g (best {r['best_loss']:.6g}; "
                f"compile {r['compile_s']:.2f} s)")
            if tr is not None:
                rows.append((f"(b) time to loss, {s}", f"{t_torch:.2f} s", f"not reached in {r['fg_run']} f+g",
                             "-", f"<= {TARGETS['time_to_loss']}x", "NOT MET"))

    if args.sweep_k > 0:
        sw = jax_sweep(p, args.sweep_k, args.sweep_iters, args.chunk)
        ratio = sw["batched_s"] / sw["sequential_s"]
        say()
        say(f"## (c) sweep: K={sw['k']} ratios, {sw['iters']} iterations each (nst-jax lbfgs)")
        say()
        say(f"- sequential: {sw['sequential_s']:.2f} s (compile {sw['compile_single_s']:.2f} s excluded)")
        say(f"- one vmapped solve: {sw['batched_s']:.2f} s (compile {sw['compile_batched_s']:.2f} s excluded)")
        say(f"- vmapped / sequential: {ratio:.2f}x (target <= {TARGETS['sweep']:.1f}x: "
            f"{verdict(ratio <= TARGETS['sweep'])}); final losses agree to {sw['final_loss_max_rel_diff']:.2g} rel.")
        rows.append((f"(c) sweep K={sw['k']} (vs sequential nst-jax)", f"{sw['sequential_s']:.2f} s",
                     f"{sw['batched_s']:.2f} s", f"{ratio:.2f}x", f"<= {TARGETS['sweep']:.1f}x",
                     verdict(ratio <= TARGETS["sweep"])))

    _summary(rows, say)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
