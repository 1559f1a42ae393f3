"""Analytic peak-memory estimate of one solve, and a check that it fits before compiling anything.

The estimate adds the buffers live at the peak of one compiled solver iteration::

    peak ~= RUNTIME_OVERHEAD                        executables, thread pools, small host allocations (constant)
          + params                                  all conv kernels + biases (float32), plus a transformed copy of
                                                    the kernels up to the deepest used layer (input gradients), and
                                                    with ``conv="winograd"`` the Winograd kernels (36/9 x each kernel
                                                    in that form) a solve prepares once
          + targets                                 content features (H_l W_l C_l) + GRAM_COPIES x the Grams (S C_l^2)
          + K x solver state                        L-BFGS: 2 m H W C (history s, y); adam: 2 H W C
          + K x IMAGE_COPIES H W C                  x, grad, direction, two-loop vectors, new iterate (float32)
          + K x (PEAK_LAYERS x max_l H_l W_l C_l    float activations live at once: at the widest layer (conv1_2 of
                 + sum_taps H_l W_l C_l)            VGG) its input and output, plus every layer the loss reads, whose
                                                    feature map (or, after XLA's rewrite, the same-sized product
                                                    F (dG + dG^T) of the Gram's gradient) waits for the backward pass
          + K x residuals                           what the backward pass keeps from the forward pass: 1 bit per ReLU
                                                    output and 1 byte per max-pool output (with remat: the float block
                                                    inputs instead)
          + K x WINOGRAD_WORKSPACE x 36/16 x        with ``conv="winograd"``: the transformed input and output tiles
                max_l (in_l + out_l)                of the largest layer that takes the Winograd form (float32), and
                                                    as much again for the transforms' intermediates

(K: members of a vmapped sweep; activations in the compute dtype, bf16: 2 bytes.) The residuals are those of the
memory-lean network ops (:mod:`nst_jax.lean_ops`: a bit-packed ReLU mask, a 1-byte max-pool code) and of the Gram's
custom JVP (:func:`nst_jax.losses.gram_sum`). The layer shapes come from the network itself
(:func:`feature_shapes`). The constants are calibrated on CPU against XLA's own buffer assignment
(``Compiled.memory_analysis()``) and against :func:`measure_peak_bytes` (resident-set growth of a fresh process);
the calibration runs are in ``benchmarks/RESULTS.md``. With these residuals ``remat`` has nothing left to save for
VGG (the float block inputs it keeps are larger than the masks it drops); its term models accelerators, as does
bfloat16's (XLA:CPU computes bf16 convolutions in float32).
"""

from __future__ import annotations

import math
import os
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

from nst_jax import backend, vgg, winograd
from nst_jax.config import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, SOLVERS

__all__ = [
    "PEAK_LAYERS",
    "IMAGE_COPIES",
    "GRAM_COPIES",
    "RUNTIME_OVERHEAD",
    "WINOGRAD_WORKSPACE",
    "winograd_elements",
    "winograd_kernel_elements",
    "measure_peak_bytes",
    "estimate_peak_bytes",
    "activation_elements",
    "format_bytes",
    "available_bytes",
    "host_available_bytes",
    "check_fits",
    "estimate_for_config",
    "feature_shapes",
    "RUNTIME_BASELINE",
    "decode_bytes",
    "forward_bytes",
    "checkpoint_bytes",
    "CHECKPOINT_OVERHEAD",
    "CHECKPOINT_TRACE_BYTES",
    "estimate_run",
]

PEAK_LAYERS = 2
IMAGE_COPIES = 12
GRAM_COPIES = 2
RUNTIME_OVERHEAD = 3 * 2 ** 20  # executable buffers, thread pools and small host allocations of one solve
#: Tile buffers of one Winograd layer live at once, in units of its transformed input plus output (calibrated high:
#: XLA's extra temporaries for vgg16 / vgg19 were 0.66-0.72x / 0.85-0.96x this term at 128 and 256 px, less at 512
#: and 1024 px, benchmarks/RESULTS.md).
WINOGRAD_WORKSPACE = 4
_DEFAULT_LAYERS = DEFAULT_STYLE_LAYERS + DEFAULT_CONTENT_LAYERS


class _Counts(NamedTuple):
    """Element counts of the forward pass up to the deepest requested layer (see :func:`_layer_stats`)."""
    total: int  # every conv, relu and pool output
    pool: int  # pool outputs: the block boundaries remat keeps
    largest_block: int  # the largest block's outputs: what remat rebuilds at once
    widest: int  # the largest single layer output
    taps: int  # the requested layers themselves
    relu: int  # every ReLU output


def feature_shapes(spec, shape_HW, layers: Sequence[str], pool_rounding: str = "floor"
                   ) -> Dict[str, Tuple[int, ...]]:
    """``{layer: (H_l, W_l, C_l)}`` of every layer up to the deepest of ``layers``, from the network itself
    (``jax.eval_shape`` of :func:`nst_jax.vgg.features` with its ``pool_rounding``: no arrays are made)."""
    import jax
    import jax.numpy as jnp

    spec = vgg.get_spec(spec)
    names = vgg.layer_names(spec)
    layers = list(layers)
    if not layers:
        raise ValueError("give at least one layer, e.g. ('relu1_1', 'relu4_2')")
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown} for {spec.name}; use names such as relu4_2")
    upto = names[: max(names.index(n) for n in layers) + 1]
    sds = jax.ShapeDtypeStruct
    params = {k: {kk: sds(v, jnp.float32) for kk, v in s.items()} for k, s in vgg.expected_shapes(spec).items()}
    image = sds((int(shape_HW[0]), int(shape_HW[1]), 3), jnp.float32)
    out = jax.eval_shape(lambda p, x: vgg.features(p, x, upto, ops="lax", pool_rounding=pool_rounding), params, image)
    return {n: tuple(out[n].shape) for n in upto}


def _layer_stats(spec, shape_HW, layers: Sequence[str]) -> _Counts:
    """Counts of H_l W_l C_l per output, from :func:`feature_shapes`."""
    shapes = feature_shapes(spec, shape_HW, layers)
    wanted = set(layers)
    total = pool = block = biggest = widest = taps = relu = 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        total += n
        block += n
        widest = max(widest, n)
        taps += n if name in wanted else 0
        relu += n if name.startswith("relu") else 0
        if name.startswith("pool"):
            pool += n
            biggest = max(biggest, block)
            block = 0
    return _Counts(total, pool, max(biggest, block), widest, taps, relu)


def activation_elements(spec, shape_HW, layers: Sequence[str]) -> tuple[int, int, int]:
    """Element counts of the forward pass up to the deepest of ``layers``.

    Returns ``(total, boundaries, largest_block)``: the sum of H_l W_l C_l over every conv, relu and pool output;
    the sum over the pool outputs only (what remat keeps); and the largest single block's sum (what remat rebuilds at
    once).
    """
    c = _layer_stats(spec, shape_HW, layers)
    return c.total, c.pool, c.largest_block


def _param_elements(spec, upto: Optional[int] = None) -> int:
    """Kernel + bias elements of all convs, or of the first ``upto`` convs."""
    shapes = list(vgg.expected_shapes(spec).values())[:upto]
    return sum(math.prod(s["kernel"]) + math.prod(s["bias"]) for s in shapes)


def _convs_up_to(spec, name: str) -> int:
    """How many convs run up to and including layer ``name``."""
    names = vgg.layer_names(spec)
    return sum(n.startswith("conv") for n in names[: names.index(name) + 1])


def winograd_elements(spec, shape_HW, layers: Sequence[str]) -> int:
    """``36/16 x (in + out)`` elements of the largest conv, up to the deepest of ``layers``, that a solve puts in
    the Winograd form (:func:`nst_jax.vgg.winograd_layers`; 0 if none): its transformed tiles."""
    return max((36 * -(-h // winograd.TILE) * -(-w // winograd.TILE) * (c_in + c_out)
                for h, w, c_in, c_out in vgg.winograd_layers(spec, shape_HW, layers).values()), default=0)


def winograd_kernel_elements(spec, shape_HW, layers: Sequence[str]) -> int:
    """Elements of the Winograd kernels (36 x c_in x c_out each) a solve prepares for the layers of
    :func:`winograd_elements`."""
    return sum(36 * c_in * c_out for _, _, c_in, c_out in vgg.winograd_layers(spec, shape_HW, layers).values())


def estimate_peak_bytes(
    shape_HW,
    *,
    arch="vgg19",
    layers: Optional[Sequence[str]] = None,
    content_layers: Sequence[str] = ("relu4_2",),
    n_styles: int = 1,
    history: int = 100,
    batch: int = 1,
    remat=False,
    compute_dtype: Optional[str] = None,
    solver: str = "lbfgs",
    channels: int = 3,
    conv: str = "auto",
) -> int:
    """Estimated peak bytes of one solve of an [H, W, ``channels``] image (see the module docstring).

    Args:
      shape_HW: the content (= output) size.
      arch: a registered architecture name or :class:`nst_jax.vgg.VGGSpec`.
      layers: every layer the loss reads (default: the 2016 paper's style layers relu1_1..relu5_1 and relu4_2).
      content_layers: the subset holding content targets (their features are stored at full size).
      history: L-BFGS memory m (ignored for adam).
      batch: K members of a vmapped sweep (everything but the params scales with K).
      remat / compute_dtype: as ``LossConfig`` (bf16 halves the activations; the optimiser stays float32).
      conv: as ``LossConfig.conv`` (``"auto"``: this backend's default): ``"winograd"`` adds its tile workspace
        and the transformed kernels a solve prepares.

    Example:
      >>> full = estimate_peak_bytes((512, 512), conv="lax")        # VGG19, L-BFGS history 100
      >>> format_bytes(full)
      '1.0 GiB'
      >>> [round(estimate_peak_bytes((512, 512), conv="lax", **kw) / full, 2)  # history 20, remat, bf16, 2 members
      ...  for kw in ({"history": 20}, {"remat": True}, {"compute_dtype": "bfloat16"}, {"batch": 2})]
      [0.54, 1.01, 0.85, 1.87]
      >>> format_bytes(estimate_peak_bytes((512, 512), conv="winograd") - full)  # tile workspace, prepared kernels
      '481.5 MiB'

    """
    spec = vgg.get_spec(arch)
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    h, w = (int(v) for v in shape_HW)
    if h < 1 or w < 1:
        raise ValueError(f"image shape must be positive, got {tuple(shape_HW)}")
    if history < 1 or batch < 1:
        raise ValueError(f"history and batch must be >= 1, got history={history}, batch={batch}")
    if compute_dtype not in (None, "float32", "bfloat16"):
        raise ValueError(f"compute_dtype must be None, 'float32' or 'bfloat16', got {compute_dtype!r}")
    layers = tuple(_DEFAULT_LAYERS if layers is None else layers)
    content_layers = tuple(n for n in content_layers if n in layers)
    act_bytes = 2 if compute_dtype == "bfloat16" else 4
    n_img = h * w * channels

    chans = vgg.layer_channels(spec)
    c = _layer_stats(spec, (h, w), layers)
    residuals = c.pool * act_bytes if remat else c.relu // 8 + c.pool
    acts = (PEAK_LAYERS * c.widest + c.taps) * act_bytes + residuals
    winograd_kernels = 0
    if backend.resolve("conv", conv) == "winograd" and compute_dtype != "bfloat16":
        acts += 4 * WINOGRAD_WORKSPACE * winograd_elements(spec, (h, w), layers)
        winograd_kernels = 4 * winograd_kernel_elements(spec, (h, w), layers)

    shapes = feature_shapes(spec, (h, w), layers)
    content_el = sum(math.prod(shapes[name]) for name in content_layers)
    gram_el = sum(n_styles * chans[n] ** 2 for n in layers if n not in content_layers)
    # Gram targets, plus the generated image's Grams and their cotangents in the loss
    targets = 4 * (content_el + GRAM_COPIES * gram_el)

    if solver in ("lbfgs", "jaxopt", "optax-lbfgs"):
        state = 4 * (2 * history * n_img)
    else:
        state = 4 * (2 * n_img)
    images = 4 * IMAGE_COPIES * n_img
    # all params stay resident; the backward pass holds a transformed copy of the used kernels (input gradients)
    used = _param_elements(spec, upto=max(_convs_up_to(spec, n) for n in layers))
    params = 4 * _param_elements(spec) + act_bytes * used + winograd_kernels
    return int(RUNTIME_OVERHEAD + params + targets + batch * (state + images + acts))


def format_bytes(n: float) -> str:
    """``1536 -> "1.5 KiB"``, ``3.2e9 -> "3.0 GiB"`` (binary units, one decimal; bytes as an integer).

    Example:
      >>> format_bytes(512), format_bytes(1536), format_bytes(3.2e9), format_bytes(2 ** 50), format_bytes(2 ** 20 - 1)
      ('512 B', '1.5 KiB', '3.0 GiB', '1024.0 TiB', '1.0 MiB')
    """
    n = float(n)
    if not math.isfinite(n) or n < 0:
        raise ValueError(f"byte count must be a finite number >= 0, got {n}")
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        shown = int(n) if unit == "B" else round(n, 1)
        if shown < 1024 or unit == "TiB":
            return f"{shown} B" if unit == "B" else f"{shown:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available_bytes(device=None) -> Optional[int]:
    """Free memory for one solve: the accelerator's ``bytes_limit - bytes_in_use`` from ``device.memory_stats()``
    where the backend reports it (GPU/TPU), else the host's available memory (:func:`host_available_bytes`; CPU's
    ``memory_stats()`` is None). None if neither is known."""
    import jax

    dev = device if device is not None else jax.devices()[0]
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001 - backends without the call
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return host_available_bytes()


def host_available_bytes() -> Optional[int]:
    """The host memory a new allocation can get: Linux's ``MemAvailable`` (free pages plus the page cache and
    reclaimable memory the kernel would give up; "free" alone is small on a machine with a warm page cache), capped by
    a cgroup v2 limit (a container's ``memory.max - memory.current``); elsewhere ``SC_AVPHYS_PAGES x SC_PAGE_SIZE``.
    None if unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail


def check_fits(estimate: int, limit_bytes: Optional[int] = None) -> None:
    """Raise ``ValueError`` if ``estimate`` exceeds ``limit_bytes`` (default :func:`available_bytes`); no-op when
    the limit is unknown.

    Example:
      >>> check_fits(3 * 2 ** 30, limit_bytes=4 * 2 ** 30)          # fits: nothing happens
      >>> check_fits(6 * 2 ** 30, limit_bytes=4 * 2 ** 30)
      Traceback (most recent call last):
      ...
      ValueError: this solve needs ~6.00 GiB but only 4.00 GiB are available; try --history 20, a smaller --size, ...
    """
    if limit_bytes is None:
        limit_bytes = available_bytes()
    if limit_bytes is None:
        return
    if estimate > limit_bytes:
        gb = 1024 ** 3
        raise ValueError(f"this solve needs ~{estimate / gb:.2f} GiB but only {limit_bytes / gb:.2f} GiB are available; "
                         "try --history 20, a smaller --size, or --bf16 on a GPU/TPU")


# --------------------------------------------------------------------------------------------------- the guard
# Everything a run holds at its worst moment, not only the solve: decoding each input at full size, each image's pass
# through the network (styles at their own size, every pyramid level, every sweep member), a checkpoint being written
# and the runtime itself. :func:`estimate_run` adds them up; the command line refuses a run above the free memory.

#: Resident memory of the runtime before any solve (Python, JAX, XLA:CPU's client and compiled programs), measured as
#: the resident set of a process after importing nst_jax and running one tiny solve (benchmarks/RESULTS.md).
RUNTIME_BASELINE = 450 * 2 ** 20
#: Bytes per pixel of decoding an image file at full size and making it float: Pillow's 4-byte pixels, a mode
#: conversion, the float32 RGB copy and its resized copy.
DECODE_BYTES_PER_PIXEL = 32


def decode_bytes(shape_HW, target_HW=None, fmt: Optional[str] = None) -> int:
    """Peak bytes of loading an [H, W] image file resized to ``target_HW`` (:func:`nst_jax.image.load_image`): above
    ``image.REDUCE_ABOVE_PIXELS`` pixels the file is decoded reduced (JPEG at 1/2..1/8 scale, others in their 4-byte
    mode and box-reduced) before the float copies are made.

    Example:
      >>> format_bytes(decode_bytes((512, 512))), format_bytes(decode_bytes((11000, 15000), (256, 349), "PNG"))
      ('8.0 MiB', '1.2 GiB')
      >>> format_bytes(decode_bytes((11000, 15000), (256, 349), "JPEG"))   # libjpeg decodes it at 1/8 scale
      '78.7 MiB'
    """
    from nst_jax.image import REDUCE_ABOVE_PIXELS

    h, w = (int(v) for v in shape_HW)
    if target_HW is None or h * w <= REDUCE_ABOVE_PIXELS:
        return DECODE_BYTES_PER_PIXEL * h * w
    th, tw = (max(int(v), 1) for v in target_HW)
    if fmt == "JPEG":
        scale = max([s for s in (1, 2, 4, 8) if w // s >= 2 * tw and h // s >= 2 * th] or [1])
        return DECODE_BYTES_PER_PIXEL * (h // scale) * (w // scale)
    return 8 * h * w + DECODE_BYTES_PER_PIXEL * 4 * th * tw  # full 4-byte decode + its conversion, then small floats


def forward_bytes(shape_HW, *, arch="vgg19", layers: Optional[Sequence[str]] = None, compute_dtype=None) -> int:
    """Peak bytes of one forward pass (no gradient) of an [H, W] image up to the deepest of ``layers``: what computing
    a style image's Gram targets or the content features costs (activations at the widest layer, plus the layers
    read)."""
    spec = vgg.get_spec(arch)
    c = _layer_stats(spec, shape_HW, tuple(_DEFAULT_LAYERS if layers is None else layers))
    act_bytes = 2 if compute_dtype == "bfloat16" else 4
    return int((PEAK_LAYERS * c.widest + c.taps) * act_bytes + 4 * 3 * math.prod(shape_HW))


#: What a checkpoint holds besides image-sized arrays and the trace: the settings (JSON as UTF-32), the state's leaf
#: names and small leaves, the npz headers (a bound, checked against real checkpoints in tests/test_hardening.py).
CHECKPOINT_OVERHEAD = 64 * 1024
#: Bytes of trace per iteration in a checkpoint (value, f+g count, three terms, seconds).
CHECKPOINT_TRACE_BYTES = 4 + 4 + 3 * 4 + 8


def checkpoint_bytes(shape_HW, *, channels: int = 3, history: int = 100, solver: str = "lbfgs", batch: int = 1,
                     iters: int = 0) -> int:
    """Size of a checkpoint file of a solve of an [H, W, ``channels``] image with every history pair in use (the
    L-BFGS history dominates: 2 x history image-sized float32 arrays; see :mod:`nst_jax.checkpoint`), up to
    iteration ``iters`` (its trace), plus the settings and headers (:data:`CHECKPOINT_OVERHEAD`).

    Example:
      >>> format_bytes(checkpoint_bytes((160, 160))), format_bytes(checkpoint_bytes((160, 160), history=20))
      ('59.8 MiB', '13.0 MiB')
    """
    n = int(shape_HW[0]) * int(shape_HW[1]) * channels
    pairs = 2 * history if solver in ("lbfgs", "jaxopt", "optax-lbfgs") else 2
    return int(4 * batch * n * (pairs + 4)) + CHECKPOINT_OVERHEAD + CHECKPOINT_TRACE_BYTES * int(iters)


def estimate_run(levels, *, arch="vgg19", layers: Optional[Sequence[str]] = None,
                 content_layers: Sequence[str] = ("relu4_2",), style_shapes=(), decode=(), n_masks: int = 0,
                 history: int = 100, batch: int = 1, remat=False, compute_dtype: Optional[str] = None,
                 solver: str = "lbfgs", channels: int = 3, checkpoint: bool = True,
                 baseline: int = RUNTIME_BASELINE, conv: str = "auto") -> Dict[str, int]:
    """Peak bytes of a whole run, by phase: ``{"decode", "targets", "solve", "checkpoint", "baseline", "peak"}``.

    Args:
      levels: the (H, W) of every solve (one, or each pyramid level).
      style_shapes: per level, the (H, W) of each style image at its ``style_scale`` (a list per level, or one list
        used for every level).
      decode: ``[(full (H, W), target (H, W) or None, format)]`` of every input file (see :func:`decode_bytes`).
      n_masks: region masks / guide channels held at the content size.
      batch: members of a sweep solved at once. checkpoint: a checkpoint may be written (Ctrl-C always writes one).
      the rest: as :func:`estimate_peak_bytes`.

    ``peak = baseline + max(decode, targets, solve + checkpoint)``: the phases follow each other, the runtime stays.

    Example:
      >>> est = estimate_run([(512, 512)], style_shapes=[[(284, 512)]], decode=[((512, 512), None, "JPEG")])
      >>> est["peak"] == est["baseline"] + max(est["decode"], est["targets"], est["solve"] + est["checkpoint"])
      True
    """
    levels = [tuple(int(v) for v in hw) for hw in levels]
    if not levels:
        raise ValueError("give at least one level shape")
    per_level = list(style_shapes) if style_shapes and isinstance(style_shapes[0], (list, tuple)) and \
        style_shapes[0] and isinstance(style_shapes[0][0], (list, tuple)) else [list(style_shapes)] * len(levels)
    n_styles = max(1, max(len(s) for s in per_level))
    solve = targets = ckpt = 0
    for hw, styles in zip(levels, per_level):
        solve = max(solve, estimate_peak_bytes(hw, arch=arch, layers=layers, content_layers=content_layers,
                                               n_styles=n_styles, history=history, batch=batch, remat=remat,
                                               compute_dtype=compute_dtype, solver=solver, channels=channels,
                                               conv=conv))
        passes = [hw] + [tuple(s) for s in styles]
        masks = 2 * 4 * n_masks * hw[0] * hw[1]
        targets = max(targets, max(forward_bytes(p, arch=arch, layers=layers, compute_dtype=compute_dtype)
                                   for p in passes) + masks)
        if checkpoint:  # host copies of the state while it is written
            ckpt = max(ckpt, checkpoint_bytes(hw, channels=channels, history=history, solver=solver, batch=batch))
    dec = max([decode_bytes(full, target, fmt) for full, target, fmt in decode] or [0])
    out = {"decode": int(dec), "targets": int(targets), "solve": int(solve), "checkpoint": int(ckpt),
           "baseline": int(baseline)}
    out["peak"] = int(baseline + max(dec, targets, solve + ckpt))
    return out


# --------------------------------------------------------------------------------------------------- measurement

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_peak_bytes(
    shape_HW,
    *,
    arch="tiny19",
    history: int = 100,
    remat=False,
    compute_dtype: Optional[str] = None,
    iters: int = 2,
    interval_s: float = 0.0005,
) -> int:
    """Measured peak memory of one L-BFGS solve (the compiled path ``Solve`` takes on this backend) of a random
    [H, W, 3] image with seeded random ``arch`` params and the default layers (what :func:`estimate_peak_bytes`
    models), in the current process.

    Everything is compiled first from abstract shapes (no buffers exist yet); then params, targets and the solver
    state are created and ``iters`` iterations run while the peak is recorded: on accelerators the device's
    ``peak_bytes_in_use`` growth, on CPU the growth of the resident set (``/proc/self/statm``) sampled by a thread.
    For a faithful CPU number run it in a fresh process with ``MALLOC_MMAP_THRESHOLD_=65536`` so that large buffers
    are mapped and unmapped individually (and so show up in, and leave, the resident set).
    """
    import gc

    import jax

    from nst_jax import objective

    spec = vgg.get_spec(arch)
    h, w = (int(v) for v in shape_HW)
    cfg, weights, init_c, iterate = _compiled_solve(spec, (h, w), history, remat, compute_dtype, iters)

    def inputs():
        params = _prepared(vgg.init_params(jax.random.PRNGKey(0), spec), (h, w), cfg)
        x = jax.random.uniform(jax.random.PRNGKey(1), (h, w, 3))
        return params, x, objective.compute_targets(params, x, [x], cfg)

    jax.block_until_ready(inputs())  # compiles the (cached) target programs outside the measured window
    gc.collect()
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None

    def run():
        params, x, targets = inputs()
        jax.block_until_ready(iterate(init_c(x, params, targets, weights), params, targets, weights))

    rss_growth = _peak_rss_growth(run, interval_s)
    if stats and "peak_bytes_in_use" in stats:
        return int(dev.memory_stats()["peak_bytes_in_use"] - stats.get("bytes_in_use", 0))
    return rss_growth


def _compiled_solve(spec, shape_HW, history, remat, compute_dtype, iters):
    """(loss config, weights, compiled init, ``iterate(state, params, targets, weights)``) of the solve
    :func:`measure_peak_bytes` measures, compiled from abstract shapes (no buffers exist yet)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from nst_jax import objective, runner
    from nst_jax.config import LossConfig, SolverConfig

    run = runner.Solve(LossConfig(remat=remat, compute_dtype=compute_dtype),
                       SolverConfig(history=history, chunk=max(1, iters)))
    cfg, scfg = run.loss_cfg, run.solver_cfg
    sds = jax.ShapeDtypeStruct
    p_abs = {k: {kk: sds(v, jnp.float32) for kk, v in s.items()} for k, s in vgg.expected_shapes(spec).items()}
    p_abs = jax.eval_shape(lambda p: _prepared(p, shape_HW, cfg), p_abs)  # as Solve runs them
    x_abs = sds(tuple(shape_HW) + (3,), jnp.float32)
    targets_abs = jax.eval_shape(lambda p, x: objective.compute_targets(p, x, [x], cfg), p_abs, x_abs)
    weights = objective.make_weights(cfg, spec)  # tiny; only the channel counts are read
    weights_abs = jax.tree_util.tree_map(lambda a: sds(a.shape, a.dtype), weights)
    static = dict(loss_cfg=cfg, solver_cfg=scfg, members=None)
    init_c = runner.init_state.lower(x_abs, p_abs, targets_abs, weights_abs, **static).compile()
    state_abs = jax.eval_shape(lambda *a: runner.init_state(*a, **static), x_abs, p_abs, targets_abs, weights_abs)
    bad_abs = sds((), bool)
    if run.loop == "while":  # the whole chunk is one compiled while-loop
        chunk_c = runner.run_chunk.lower(state_abs, bad_abs, p_abs, targets_abs, weights_abs, sds((), jnp.int32),
                                         **static).compile()

        def iterate(state, params, targets, weights):
            return chunk_c(state, jnp.zeros((), bool), params, targets, weights, jnp.asarray(iters, jnp.int32))
    else:  # one compiled, donated step per iteration dispatched from Python
        static_step = dict(static, solver_cfg=dataclasses.replace(scfg, chunk=1))
        step_c = runner.step.lower(state_abs, bad_abs, p_abs, targets_abs, weights_abs, **static_step).compile()

        def iterate(state, params, targets, weights):
            bad = jnp.zeros((), bool)
            for _ in range(iters):
                state, bad, *_ = step_c(state, bad, params, targets, weights)
            return state
    return cfg, weights, init_c, iterate


def _prepared(params, shape_HW, cfg):
    return vgg.prepare_params(params, shape_HW, cfg.all_layers, conv=cfg.conv, pool_rounding=cfg.pool_rounding,
                              padding=cfg.padding, dtype=cfg.compute_dtype)


def _peak_rss_growth(fn, interval_s: float) -> int:
    """Largest growth of the resident set while ``fn()`` runs, sampled by a thread every ``interval_s``."""
    import threading

    peak = {"rss": _rss_bytes()}
    base = peak["rss"]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], _rss_bytes())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
        peak["rss"] = max(peak["rss"], _rss_bytes())
    finally:
        stop.set()
        thread.join()
    return int(peak["rss"] - base)


def estimate_for_config(shape_HW, cfg, *, arch="vgg19", n_styles: int = 1, history: int = 100, batch: int = 1,
                        solver: str = "lbfgs") -> int:
    """:func:`estimate_peak_bytes` for a :class:`nst_jax.config.LossConfig` (its layers, remat, compute dtype,
    channels, convolution form)."""
    return estimate_peak_bytes(shape_HW, arch=arch, layers=cfg.all_layers, content_layers=cfg.content_layers,
                               n_styles=n_styles, history=history, batch=batch, remat=cfg.remat,
                               compute_dtype=cfg.compute_dtype, solver=solver, channels=cfg.channels,
                               conv=cfg.conv)
