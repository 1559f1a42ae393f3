"""One check of nst-jax on whatever backend JAX finds (GPU, TPU or CPU): correctness, speed, the per-backend defaults,
PyTorch on the same device, time to quality, a sweep, memory. Prints a table and writes a JSON file.

    python benchmarks/device_check.py --json device_check.json            # on a GPU/TPU: a few minutes
    python benchmarks/device_check.py --hed /path/vgg16-hed.npz ...       # quality rows with the real weights
    python benchmarks/device_check.py --tiny                              # the same code on CPU in seconds

Rows (each section runs on its own; a failure is recorded and the next section runs):

* device and versions;
* network features on the device equal the CPU's (max relative error per layer), at highest and default precision;
* ms per f+g (jitted value and gradient of the gatys loss) at 256, 512 and 1024 px with VGG19-shaped random weights,
  float32 and bfloat16, with GFLOP per f+g and the fraction of the device's dense peak (the FLOP model of
  ``run_all.forward_flops``: 3x3 convs and Gram matrices, f+g = 2x forward);
* the per-backend defaults of ``nst_jax/backend.py`` measured: network ops lax vs lean, convolutions lax vs Winograd,
  loop while vs host, sweep members vmap vs unroll, precision highest vs tensorfloat32 (speed and the loss difference
  after the same iterations on the benchmark pair);
* PyTorch on the same device (``torch_peer``), when torch can use it; else "not run";
* f+g and time for nst-jax to reach PyTorch's 100-f+g L-BFGS loss on the benchmark pair (needs the ``vgg16-hed``
  weights: the cache, or ``--hed FILE``; else skipped with a note);
* a K = 8 sweep at 512 px against 8 sequential runs of the same settings;
* peak device memory per output megapixel of one solve, and the largest square size that fits in one solve.

Only jax (with its accelerator plugin), flax, optax, numpy, pillow, h5py and, optionally, torch are needed; jaxopt and
the real weights are optional. ``--budget-s`` stops starting new sections once that much time has passed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import nst_jax  # noqa: E402
from nst_jax import image as I  # noqa: E402
from nst_jax import memory as M  # noqa: E402
from nst_jax import objective, runner, vgg  # noqa: E402
from nst_jax.config import LossConfig, SolverConfig  # noqa: E402
from run_all import FG_FACTOR, forward_flops, peak_tflops  # noqa: E402

Row = Tuple[str, str, str, str, str]  # (section, setting, value, unit, detail)


class Check:
    """Rows and notes of one run; ``section(name, fn)`` runs ``fn() -> rows`` unless the budget is spent."""

    def __init__(self, budget_s: float):
        self.t0, self.budget_s = time.perf_counter(), budget_s
        self.rows: List[Row] = []
        self.notes: List[str] = []

    def section(self, name: str, fn: Callable[[], List[Row]]) -> None:
        elapsed = time.perf_counter() - self.t0
        if elapsed > self.budget_s:
            self.notes.append(f"{name}: not run (budget of {self.budget_s:.0f} s spent at {elapsed:.0f} s)")
            return
        t = time.perf_counter()
        try:
            rows = fn()
        except Exception as e:  # noqa: BLE001 - a failing section must not stop the others
            self.notes.append(f"{name}: FAILED: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
            traceback.print_exc(file=sys.stderr)
            return
        self.rows += rows
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {name}: {len(rows)} rows in {time.perf_counter() - t:.1f} s",
              file=sys.stderr, flush=True)


def _ms(fn, reps: int) -> float:
    jax.block_until_ready(fn())  # warm (compile) outside the timing
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def _images(size: int, content="blue_marble", style="great_wave"):
    c = I.resize(I.load_image(I.sample_path(content)), (size, size))  # square: the FLOP model is exact
    s = I.resize(I.load_image(I.sample_path(style)), (size, size))
    return c, s


def environment(args) -> List[Row]:
    import jaxlib

    rows = [("device", "backend", jax.default_backend(), "", f"{len(jax.devices())} device(s)"),
            ("device", "kind", jax.devices()[0].device_kind, "", str(jax.devices()[0])),
            ("device", "versions", f"jax {jax.__version__}", "",
             f"jaxlib {jaxlib.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
             f"nst-jax {nst_jax.__version__}")]
    try:
        import torch

        rows.append(("device", "torch", torch.__version__, "", f"cuda {torch.version.cuda}, "
                                                                f"available {torch.cuda.is_available()}"))
    except ImportError as e:
        rows.append(("device", "torch", "not importable", "", str(e)))
    return rows


def features_vs_cpu(params, size: int) -> List[Row]:
    """Max relative error of every used layer's features, device vs CPU (highest precision on the CPU)."""
    x, _ = _images(size)
    layers = LossConfig().all_layers
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        ref = jax.jit(lambda p, x: vgg.features(p, x, layers, ops="lax"))(jax.device_put(params, cpu),
                                                                          jax.device_put(x, cpu))
        ref = {k: np.asarray(v, np.float64) for k, v in ref.items()}
    rows = []
    for precision in ("highest", "default"):
        with jax.default_matmul_precision(precision):
            got = jax.jit(lambda p, x: vgg.features(p, x, layers))(params, jnp.asarray(x))
        err = {k: float(np.max(np.abs(np.asarray(got[k], np.float64) - ref[k])) / max(np.max(np.abs(ref[k])), 1e-30))
               for k in layers}
        rows.append(("features vs CPU", f"{size} px, precision {precision}", f"{max(err.values()):.2e}",
                     "max rel. err", ", ".join(f"{k} {v:.1e}" for k, v in err.items())))
    return rows


def fg_speed(params, sizes, reps: int) -> List[Row]:
    rows = []
    spec = vgg.spec_from_params(params)
    for bf16 in (False, True):
        peak, peak_label = peak_tflops(None, bf16)
        cfg = LossConfig(compute_dtype="bfloat16" if bf16 else None)
        weights = objective.make_weights(cfg, params)
        vg = jax.jit(jax.value_and_grad(objective.total_loss), static_argnums=(4,))
        for size in sizes:
            c, s = _images(size)
            targets = objective.compute_targets(params, c, [s], cfg)
            ms = _ms(lambda: vg(jnp.asarray(c), params, targets, weights, cfg), reps)
            flops = FG_FACTOR * forward_flops(spec, (size, size), cfg.style_layers, cfg.content_layers)
            tf = flops / (ms * 1e-3) / 1e12
            pct = f"{100 * tf / peak:.1f}% of {peak_label}" if peak else peak_label
            rows.append(("f+g", f"{size} px, {'bf16' if bf16 else 'float32'}", f"{ms:.2f}", "ms",
                         f"{flops / 1e9:.1f} GFLOP, {tf:.1f} TFLOP/s, {pct}"))
    return rows


def _solve_ms(params, size, iters, *, loss_kw=None, solver_kw=None, k=None):
    """ms per iteration of a compiled solve (second call; the first compiles) and its final losses."""
    c, s = _images(size)
    cfg = LossConfig(**(loss_kw or {}))
    targets = objective.compute_targets(params, c, [s], cfg)
    weights = objective.make_weights(cfg, params)
    x0 = c
    members = None
    if k:
        weights = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (k,) + a.shape), weights)
        weights = weights.replace(style=jnp.asarray(np.logspace(2, 4, k), jnp.float32))
        x0, members = np.stack([c] * k), runner.Members()
    run = runner.Solve(cfg, SolverConfig(history=20, chunk=iters, **(solver_kw or {})), members=members)
    run(params, targets, weights, x0, 2)
    out = run(params, targets, weights, x0, iters)
    return 1e3 * out.run_seconds / iters, np.asarray(out.values)[..., -1]


def backend_defaults(params, size: int, iters: int, k: int) -> List[Row]:
    """Each per-backend default measured both ways (nst_jax/backend.py)."""
    rows = []
    pairs = [("ops", "loss_kw", "ops", ("lax", "lean"), None),
             ("conv", "loss_kw", "conv", ("lax", "winograd"), None),
             ("loop", "solver_kw", "loop", ("while", "host"), None),
             ("members", "solver_kw", "members", ("vmap", "unroll"), k),
             ("precision", "loss_kw", "precision", ("highest", "tensorfloat32"), None)]
    for name, where, field, values, kk in pairs:
        res = {}
        for v in values:
            res[v] = _solve_ms(params, size, iters, k=kk, **{where: {field: v}})
        (a, (ma, la)), (b, (mb, lb)) = res.items()
        rel = float(np.max(np.abs(lb - la) / np.maximum(np.abs(la), 1e-30)))
        rows.append((f"default: {name}", f"{size} px, {iters} iters" + (f", K={kk}" if kk else ""),
                     f"{mb / ma:.3f}", f"{b}/{a} time", f"{a} {ma:.1f} ms/iter, {b} {mb:.1f} ms/iter; final loss "
                                                        f"rel. diff {rel:.2e}"))
    return rows


def _torch_device():
    try:
        import torch
    except ImportError:
        return None, "torch not importable"
    backend = jax.default_backend()
    if backend == "gpu" and torch.cuda.is_available():
        return "cuda", None
    if backend == "cpu":
        return "cpu", None
    return None, f"torch cannot use this device ({backend})"


def torch_speed(params, sizes, reps: int) -> List[Row]:
    device, why = _torch_device()
    if device is None:
        return [("PyTorch f+g", "-", "not run", "", why)]
    import torch
    import torch_peer as TP

    net = TP.TorchVGG(params, device=device)
    rows = []
    for size in sizes:
        c, s = _images(size)
        loss = TP.TorchGatysLoss(net, c, s)
        x = TP.to_nchw(c, device).requires_grad_(True)

        def fg():
            x.grad = None
            v = loss(x)
            v.backward()
            if device == "cuda":
                torch.cuda.synchronize()
            return v

        fg()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fg()
            times.append(time.perf_counter() - t)
        rows.append(("PyTorch f+g", f"{size} px, float32, {device}", f"{1e3 * float(np.median(times)):.2f}", "ms",
                     f"torch {torch.__version__}"))
    return rows


def time_to_quality(hed: Optional[str], size: int, fg: int = 100, tiny: bool = False) -> List[Row]:
    """f+g and seconds for nst-jax's default solver to reach PyTorch's ``fg``-f+g L-BFGS loss (benchmark pair;
    ``tiny``: the tiny random network, the code path only)."""
    try:
        params, info = nst_jax.load_weights("tiny19" if tiny else (hed or "vgg16-hed"), verbose=False)
    except Exception as e:  # noqa: BLE001 - the real weights are optional
        return [("time to quality", "vgg16-hed", "skipped", "", f"no vgg16-hed weights ({type(e).__name__}); pass "
                                                                    "--hed FILE")]
    rows = []
    c = I.load_image(I.sample_path("blue_marble"), size=size)
    s = I.load_image(I.sample_path("great_wave"), size=size)
    device, why = _torch_device()
    if device is None:
        return [("time to quality", f"{size} px", "not run", "", f"no PyTorch peer: {why}")]
    import torch_peer as TP

    tr = TP.run_lbfgs(TP.TorchGatysLoss(TP.TorchVGG(params, device=device), c, s), c, fg)
    target = float(np.min(tr.losses))
    r = nst_jax.stylize(c, s, weights=params, size=None, iters=2, progress=False)  # compile
    r = nst_jax.stylize(c, s, weights=params, size=None, iters=3 * fg, progress=False)
    hit = [e for e in r.loss_trace if e["loss"] <= target]
    jax_fg = hit[0]["fg"] if hit else float("nan")
    jax_s = hit[0]["seconds"] if hit else float("nan")
    rows.append(("time to quality", f"{size} px, {info.name}", f"{jax_s / tr.wall[-1]:.3f}", "nst-jax/PyTorch time",
                 f"target {target:.4g} (PyTorch's best in {fg} f+g, {tr.wall[-1]:.2f} s); nst-jax {jax_fg} f+g, "
                 f"{jax_s:.2f} s (best {min(e['loss'] for e in r.loss_trace):.4g})"))
    return rows


def sweep_vs_sequential(params, size: int, k: int, iters: int) -> List[Row]:
    c, s = _images(size)
    ratios = list(np.logspace(-4, -1, k))
    kw = dict(weights=params, size=None, iters=iters, progress=False, history=20)
    nst_jax.sweep(c, s, ratios, **dict(kw, iters=2))  # compile
    t = time.perf_counter()
    sw = nst_jax.sweep(c, s, ratios, **kw)
    t_sweep = time.perf_counter() - t
    nst_jax.stylize(c, s, style_weight=1.0 / ratios[0], **dict(kw, iters=2))  # compile
    t = time.perf_counter()
    singles = [nst_jax.stylize(c, s, style_weight=1.0 / r, **kw) for r in ratios]
    t_seq = time.perf_counter() - t
    rel = max(abs(a.terms["total"] - b.terms["total"]) / abs(b.terms["total"]) for a, b in zip(sw.results, singles))
    return [("sweep", f"K={k}, {size} px, {iters} iters", f"{t_seq / t_sweep:.2f}", "x faster than sequential",
             f"one vmapped solve {t_sweep:.2f} s vs {k} sequential {t_seq:.2f} s; final losses rel. diff {rel:.1e}")]


def memory(params, size: int, sizes_try) -> List[Row]:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    arch = "vgg19" if len(params) == 16 else nst_jax.weights.infer_arch(params)
    rows = []
    if not stats or "peak_bytes_in_use" not in stats:
        est = M.estimate_peak_bytes((size, size), arch=arch, history=20)
        return [("memory", f"{size} px", f"{est / 2 ** 30 / (size * size / 2 ** 20):.2f}", "GiB/MP (estimate)",
                 "this backend reports no device memory statistics")]
    c, s = _images(size)
    before = dev.memory_stats()["peak_bytes_in_use"]
    nst_jax.stylize(c, s, weights=params, size=None, iters=5, progress=False, history=20)
    peak = dev.memory_stats()["peak_bytes_in_use"]
    rows.append(("memory", f"{size} px, history 20", f"{peak / 2 ** 30 / (size * size / 2 ** 20):.2f}",
                 "GiB per 2^20 px", f"device peak {peak / 2 ** 30:.2f} GiB (before {before / 2 ** 30:.2f})"))
    free = stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)
    fits = [n for n in sizes_try if M.estimate_peak_bytes((n, n), arch=arch, history=20) < free]
    best = None
    for n in sorted(fits, reverse=True)[:2]:  # verify the largest estimated size (and the next one down)
        try:
            img = np.full((n, n, 3), 0.5, np.float32)
            nst_jax.stylize(img, img, weights=params, size=None, iters=1, progress=False, history=20)
            best = n
            break
        except Exception as e:  # noqa: BLE001 - out of memory is the expected failure
            rows.append(("memory", f"{n} px", "failed", "", f"{type(e).__name__}"))
    rows.append(("memory", "largest square in one solve", str(best), "px",
                 f"history 20; tried the largest sizes the estimate allows of {list(sizes_try)}"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, tiny network, tiny sizes: the code path in seconds")
    ap.add_argument("--hed", default=None, help="vgg16-hed weights file (.npz or .h5) for the quality rows")
    ap.add_argument("--json", default="device_check.json", help="where to write the rows (default %(default)s)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new section after this many seconds")
    args = ap.parse_args(argv)
    if args.tiny:
        jax.config.update("jax_platforms", "cpu")
        params = vgg.init_params(0, "tiny19")
        sizes, reps, iters, k, sweep_size, mem_size, tries = (32, 48), 2, 3, 2, 32, 32, (64, 128)
    else:
        params = vgg.init_params(0, "vgg19")
        sizes, reps, iters, k, sweep_size, mem_size, tries = (256, 512, 1024), 10, 20, 8, 512, 1024, (
            1024, 1536, 2048, 3072, 4096, 6144, 8192)
    chk = Check(args.budget_s)
    chk.section("environment", lambda: environment(args))
    chk.section("features vs CPU", lambda: features_vs_cpu(params, sizes[0]))
    chk.section("f+g speed", lambda: fg_speed(params, sizes, reps))
    chk.section("PyTorch f+g", lambda: torch_speed(params, sizes, reps))
    chk.section("per-backend defaults", lambda: backend_defaults(params, sizes[0], iters, min(k, 4)))
    chk.section("time to quality", lambda: time_to_quality(args.hed, 32 if args.tiny else 256, 10 if args.tiny else 100,
                                                           args.tiny))
    chk.section("sweep", lambda: sweep_vs_sequential(params, sweep_size, k, iters))
    chk.section("memory", lambda: memory(params, mem_size, tries))
    width = max(len(r[0]) + len(r[1]) for r in chk.rows) + 3
    for r in chk.rows:
        print(f"{r[0] + ': ' + r[1]:<{width}} {r[2]:>12} {r[3]:<22} {r[4]}")
    for n in chk.notes:
        print(f"note: {n}")
    Path(args.json).write_text(json.dumps({"rows": chk.rows, "notes": chk.notes, "tiny": args.tiny,
                                           "seconds": time.perf_counter() - chk.t0}, indent=1))
    print(f"wrote {args.json} ({time.perf_counter() - chk.t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
