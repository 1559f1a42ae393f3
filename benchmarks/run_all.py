"""Run every nst-jax benchmark and write one markdown report (stdout, and ``--out FILE``).

What runs:

1. **f+g speed vs image size** (nst-jax alone): the jitted ``value_and_grad`` of the Gatys loss
   (``nst_jax.objective.total_loss``, gatys preset, relu4_2 content, relu1_1..relu5_1 style) at each ``--sizes`` square
   size: milliseconds per f+g (median of ``--reps`` timed calls after a compile call), the analytic FLOPs of one f+g
   and the achieved TFLOP/s; with a known peak (device table below, or ``--peak-tflops``) also the percentage of peak.
2. **peak memory with and without remat** (``nst_jax.memory``): the analytic estimate for the weights' architecture
   at the largest size, and the measured peak of one solve of ``--memory-size`` px in a fresh subprocess
   (``measure_peak_bytes``; on CPU with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed buffers leave the resident set).
3. **time-to-quality vs PyTorch and sweep vs sequential**: ``benchmarks/bench_torch.py``'s ``main`` (its summary
   rows are copied into the table, its full report is appended). Without PyTorch only its sweep row is produced.

FLOPs of one f+g: the forward pass up to the deepest layer the loss reads (conv5_1 for the gatys layers) counts
``2 * 9 * C_in * C_out * H_l * W_l`` per 3x3 conv plus ``2 * H_l * W_l * C_l^2`` per style Gram; ReLU, pooling and
the loss reductions are ignored. The gradient is taken with respect to the image only, so the backward pass computes
input cotangents (a transposed conv of the same cost) and no kernel gradients: f+g = ``FG_FACTOR`` (2) x forward.
(Training a network would be ~3x: forward, input gradients and weight gradients.)

Peak FLOP/s: dense (no sparsity) vendor numbers for the precision XLA uses: float32 convs run as TF32 on NVIDIA
Ampere and later by default (``jax_default_matmul_precision`` unset), bf16 with ``--bf16``; TPUs use bf16 passes.

Usage::

    python benchmarks/run_all.py --quick                 # seconds to a minute: tiny19, 32 px, few f+g
    python benchmarks/run_all.py --out benchmarks/ALL_RESULTS.md
    python benchmarks/run_all.py --peak-tflops 19.5      # override the device's peak (TFLOP/s)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import nst_jax  # noqa: E402
from nst_jax import objective  # noqa: E402
from nst_jax.config import LossConfig  # noqa: E402
from nst_jax import image as I  # noqa: E402
from nst_jax import vgg  # noqa: E402
from nst_jax.image import sample_path  # noqa: E402

FG_FACTOR = 2.0  # f+g = forward + input-gradient backward (no weight gradients): ~2x the forward FLOPs

# Dense peak TFLOP/s by precision; matched as a lowercase substring of jax's device_kind, first match wins.
PEAK_TFLOPS: List[Tuple[str, str, Dict[str, float]]] = [
    ("h100 pcie", "NVIDIA H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    ("h100", "NVIDIA H100 SXM", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
    ("h200", "NVIDIA H200", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
    ("a100", "NVIDIA A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
    ("a10", "NVIDIA A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0}),
    ("l4", "NVIDIA L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0}),
    ("v100", "NVIDIA V100", {"fp32": 15.7}),
    ("t4", "NVIDIA T4", {"fp32": 8.1}),
    ("tpu v6 lite", "TPU v6e", {"bf16": 918.0}),
    ("tpu v5 lite", "TPU v5e", {"bf16": 197.0}),
    ("tpu v5", "TPU v5p", {"bf16": 459.0}),
    ("tpu v4", "TPU v4", {"bf16": 275.0}),
]

RESULT_HEADER = ("benchmark", "setting", "value", "unit", "detail")


# --------------------------------------------------------------------------------------------------- environment

from bench_torch import cpu_model, n_cores  # noqa: E402  (one definition of the machine facts)


def device_kind() -> str:
    d = jax.devices()[0]
    return f"{d.platform}: {d.device_kind}"


def environment(quick: bool) -> List[Tuple[str, str]]:
    import jaxlib

    try:
        import torch

        torch_v = torch.__version__
    except ImportError:
        torch_v = "not installed"
    return [
        ("date", datetime.datetime.now().astimezone().isoformat(timespec="seconds")),
        ("device", f"{device_kind()} (x{len(jax.devices())})"),
        ("CPU", f"{cpu_model()} ({n_cores()} usable cores)"),
        ("python", platform.python_version()),
        ("jax / jaxlib", f"{jax.__version__} / {jaxlib.__version__}"),
        ("numpy", np.__version__),
        ("nst-jax", getattr(nst_jax, "__version__", "?")),
        ("torch", torch_v),
        ("mode", "quick (smoke run; numbers are not meaningful)" if quick else "full"),
    ]


# --------------------------------------------------------------------------------------------------- FLOPs / peak

def forward_flops(spec, shape_HW, style_layers: Sequence[str], content_layers: Sequence[str]) -> float:
    """FLOPs of one forward pass up to the deepest used layer: 3x3 convs (2 FLOPs per multiply-add) + style Grams."""
    spec = vgg.get_spec(spec)
    seq = vgg.layer_sequence(spec)
    order = {name: j for j, (name, _) in enumerate(seq)}
    used = list(style_layers) + list(content_layers)
    last = max(order[n] for n in used)
    chans = vgg.layer_channels(spec)
    h, w = (int(v) for v in shape_HW)
    c_in, flops = 3, 0.0
    for j, (name, kind) in enumerate(seq[: last + 1]):
        if kind == "pool":
            h, w = h // 2, w // 2
        elif kind == "conv":
            c_out = chans[name]
            flops += 2.0 * 9 * c_in * c_out * h * w
            c_in = c_out
        if name in style_layers:
            flops += 2.0 * h * w * chans[name] ** 2
    return flops


def peak_tflops(override: Optional[float], bf16: bool) -> Tuple[Optional[float], str]:
    """(peak TFLOP/s, label) for device 0, or (None, reason) when unknown."""
    if override:
        return float(override), "--peak-tflops"
    dev = jax.devices()[0]
    kind = dev.device_kind.lower()
    for key, label, peaks in PEAK_TFLOPS:
        if key in kind:
            if dev.platform == "tpu":
                prec = "bf16"
            elif bf16 and "bf16" in peaks:
                prec = "bf16"
            elif jax.config.jax_default_matmul_precision in (None, "default", "fastest", "tensorfloat32") \
                    and "tf32" in peaks:
                prec = "tf32"
            else:
                prec = "fp32"
            return peaks.get(prec, peaks.get("fp32")), f"{label} {prec.upper()} dense peak"
    return None, f"peak unknown for {dev.device_kind!r}; pass --peak-tflops"


# --------------------------------------------------------------------------------------------------- benchmarks

def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def fg_speed(params, arch: str, sizes: Sequence[int], reps: int, bf16: bool, peak: Optional[float], peak_label: str,
             content: str, style: str, remat: bool = False) -> List[Tuple[str, ...]]:
    """Rows: ms per f+g, TFLOP/s and % of peak of the jitted value_and_grad at each square size (``remat``: VGG
    blocks rematerialised in the backward pass; the FLOPs counted stay those of one f+g without recomputation)."""
    rows = []
    spec = vgg.spec_from_params(params)
    # the gatys preset's layers and Gram norm
    cfg = LossConfig(compute_dtype="bfloat16" if bf16 else None, remat=remat)
    weights = objective.make_weights(cfg, params)  # alpha 1, beta 1e3, layer weights 1 / C_l^2
    for size in sizes:
        c = I.resize(I.load_image(sample_path(content)), (size, size))  # square, so the FLOPs are size^2-exact
        s = I.resize(I.load_image(sample_path(style)), (size, size))
        targets = objective.compute_targets(params, c, [s], cfg)
        vg = jax.jit(jax.value_and_grad(objective.total_loss), static_argnums=(4,))
        x = jnp.asarray(c)
        t = time.perf_counter()
        jax.block_until_ready(vg(x, params, targets, weights, cfg))
        compile_s = time.perf_counter() - t
        ms = _median_ms(lambda: vg(x, params, targets, weights, cfg), reps)
        flops = FG_FACTOR * forward_flops(spec, (size, size), cfg.style_layers, cfg.content_layers)
        tflops = flops / (ms * 1e-3) / 1e12
        setting = f"{arch}, {size}x{size}{', bf16' if bf16 else ''}{', remat' if remat else ''}"
        rows.append(("f+g time", setting, f"{ms:.3f}", "ms",
                     f"{1e3 / ms:.1f} f+g/s; {flops / 1e9:.4g} GFLOP per f+g; first call (compile) {compile_s:.2f} s"))
        rows.append(("f+g throughput", setting, f"{tflops:.4g}", "TFLOP/s", f"{FG_FACTOR:g} x analytic forward FLOPs"))
        if peak:
            rows.append(("f+g % of peak", setting, f"{100 * tflops / peak:.3g}", "%",
                         f"of {peak:g} TFLOP/s ({peak_label})"))
    return rows


_MEASURE = """
import json, sys
from nst_jax.memory import measure_peak_bytes
print(json.dumps(measure_peak_bytes((int(sys.argv[1]), int(sys.argv[1])), arch=sys.argv[2], remat=sys.argv[3] == "1",
                                    history=int(sys.argv[4]), iters=2)))
"""


def _measure_subprocess(size: int, arch: str, remat: bool, history: int) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(size), arch, "1" if remat else "0", str(history)],
                         capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def memory_rows(arch: str, est_size: int, measure_size: int, history: int, bf16: bool,
                notes: List[str]) -> List[Tuple[str, ...]]:
    """Rows: estimated (at est_size) and measured (at measure_size, fresh subprocess) peak bytes, remat off / on."""
    try:
        from nst_jax import memory as M
    except ImportError as exc:
        notes.append(f"peak memory skipped: nst_jax.memory not importable ({exc})")
        return []
    rows = []
    mib = 1024.0 ** 2
    for remat in (False, True):
        label = "remat on" if remat else "remat off"
        est = M.estimate_peak_bytes((est_size, est_size), arch=arch, history=history, remat=remat,
                                    compute_dtype="bfloat16" if bf16 else None)
        rows.append(("peak memory (estimate)", f"{arch}, {est_size}x{est_size}, {label}", f"{est / mib:.1f}", "MiB",
                     "nst_jax.memory.estimate_peak_bytes"))
    for remat in (False, True):
        label = "remat on" if remat else "remat off"
        try:
            got = _measure_subprocess(measure_size, arch, remat, history)
        except Exception as exc:  # noqa: BLE001 - reported, the other benchmarks still run
            notes.append(f"measured peak memory ({label}) failed: {exc}")
            continue
        est = M.estimate_peak_bytes((measure_size, measure_size), arch=arch, history=history, remat=remat)
        rows.append(("peak memory (measured)", f"{arch}, {measure_size}x{measure_size}, {label}", f"{got / mib:.1f}",
                     "MiB", f"fresh process, {jax.devices()[0].platform}; estimate {est / mib:.1f} MiB"))
    return rows


def _parse_table(text: str, heading: str) -> List[List[str]]:
    """Data rows of the first markdown table after ``heading`` in ``text``."""
    lines = text.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.strip() == heading)
    except StopIteration:
        return []
    rows = [l for l in lines[start + 1:] if l.startswith("|")]
    return [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r.strip()[1:-1])] for r in rows[2:]]


def torch_rows(argv: List[str], setting: str, notes: List[str], appendix: List[str]) -> List[Tuple[str, ...]]:
    """Run bench_torch.main(argv); its summary rows become result rows (value = the ratio), its report an appendix."""
    try:
        import bench_torch
    except ImportError as exc:
        notes.append(f"time-to-quality / sweep skipped: benchmarks/bench_torch.py not importable ({exc})")
        return []
    if getattr(bench_torch, "torch", None) is None:
        notes.append("PyTorch is not importable: no time-to-quality comparison; the sweep row is nst-jax only")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "bench_torch.md"
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = bench_torch.main(argv + ["--out", str(report)])
        if rc not in (0, None) or not report.exists():
            notes.append(f"bench_torch.main failed (exit {rc})")
            return []
        text = report.read_text()
    appendix.extend(["", "## Appendix: benchmarks/bench_torch.py report", "", f"Arguments: `{' '.join(argv)}`", ""])
    appendix.extend(("#" + l if l.startswith("#") else l) for l in text.splitlines())
    rows = []
    for measure, baseline, jaxv, ratio, target, verdict in (r[:6] for r in _parse_table(text, "## Summary")
                                                            if len(r) >= 6):
        try:
            value = float(ratio.rstrip("x"))
        except ValueError:
            notes.append(f"{measure}: nst-jax {jaxv} (baseline {baseline}; target {target}: {verdict})")
            continue
        vs = "sequential nst-jax" if "sweep" in measure else "PyTorch"
        rows.append((measure, setting, f"{value:.3g}", "x",
                     f"nst-jax {jaxv} vs {vs} {baseline}; target {target}: {verdict}"))
    return rows


# --------------------------------------------------------------------------------------------------- report

def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny19, 32 px, few f+g")
    ap.add_argument("--out", default=None, help="also write the markdown report to this file")
    ap.add_argument("--weights", default=None, help="nst_jax.weights source (default vgg19-like 'auto'; quick: tiny19)")
    ap.add_argument("--sizes", default=None, help="f+g speed sizes, comma-separated (default 128,256,512)")
    ap.add_argument("--reps", type=int, default=None, help="timed f+g calls per size (default 10; quick: 3)")
    ap.add_argument("--memory-size", type=int, default=None,
                    help="size of the measured peak-memory solves (default 512 on accelerators, 256 on CPU)")
    ap.add_argument("--history", type=int, default=100, help="L-BFGS history for the memory benchmark")
    ap.add_argument("--bf16", action="store_true", help="f+g speed in bfloat16 compute")
    ap.add_argument("--remat-sizes", default=None,
                    help="also time f+g with remat at these sizes, comma-separated (default: none; e.g. 512,1024)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s of the device (overrides the table)")
    ap.add_argument("--content", default="blue_marble", help="bundled sample name")
    ap.add_argument("--style", default="great_wave", help="bundled sample name")
    ap.add_argument("--skip", default="", help="comma-separated subset of speed,memory,torch to skip")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    bad = skip - {"speed", "memory", "torch"}
    if bad:
        ap.error(f"unknown --skip entries {sorted(bad)}; choose from speed, memory, torch")
    accel = jax.devices()[0].platform != "cpu"
    weights = args.weights or ("tiny19" if args.quick else "auto")
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([32] if args.quick else [128, 256, 512])
    if any(s < 16 for s in sizes):
        ap.error(f"sizes must be >= 16 px, got {sizes}")
    reps = args.reps or (3 if args.quick else 10)
    mem_size = args.memory_size or (32 if args.quick else (512 if accel else 256))

    t_start = time.perf_counter()
    params, info = nst_jax.load_weights(weights)
    arch = getattr(info, "arch", None) or vgg.spec_from_params(params).name
    peak, peak_label = peak_tflops(args.peak_tflops, args.bf16)
    rows: List[Tuple[str, ...]] = []
    notes: List[str] = [f"weights: {info.name} ({info.description})"]
    appendix: List[str] = []

    if "speed" not in skip:
        rows += fg_speed(params, arch, sizes, reps, args.bf16, peak, peak_label, args.content, args.style)
        if args.remat_sizes:
            rows += fg_speed(params, arch, [int(s) for s in args.remat_sizes.split(",")], reps, args.bf16, peak,
                             peak_label, args.content, args.style, remat=True)
        if not peak:
            notes.append(f"% of peak not reported: {peak_label}")
        if accel and 512 not in sizes:
            notes.append("the headline accelerator number is ms per f+g at 512x512: add 512 to --sizes")
    if "memory" not in skip:
        rows += memory_rows(arch, max(sizes), mem_size, args.history, args.bf16, notes)
    if "torch" not in skip:
        if args.quick:
            tsize, tweights = 32, "tiny19"
            targv = ["--size", "32", "--weights", "tiny19", "--fg", "5", "--rate-iters", "5", "--solvers", "lbfgs",
                     "--sweep-k", "2", "--sweep-iters", "3", "--chunk", "5"]
        else:
            tsize, tweights = 256, (weights if weights != "auto" else "vgg16-hed")
            targv = ["--size", str(tsize), "--weights", tweights]
        targv += ["--content", args.content, "--style", args.style]
        rows += torch_rows(targv, f"{tweights}, {tsize} px", notes, appendix)

    lines = ["# nst-jax benchmarks", ""]
    lines += md_table(("item", "value"), environment(args.quick))
    lines += ["", "## Results", ""]
    lines += md_table(RESULT_HEADER, rows)
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- FLOPs per f+g: {FG_FACTOR:g} x the analytic forward FLOPs (3x3 convs up to the deepest loss layer "
              "+ style Grams); the gradient is w.r.t. the image only (no weight gradients).",
              f"- total benchmark wall time: {time.perf_counter() - t_start:.1f} s"]
    lines += appendix
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
