"""The compiled optimisation: loss assembly, targets, solvers, chunked progress, vmapped sweeps.

Shape of a run::

    targets = compute_targets(params, content_HW3, styles, cfg)      # once, own jitted function
    weights = make_weights(cfg, alpha=..., beta=..., ...)             # traced arrays: new values never recompile
    run = Solve(cfg, solver_cfg)                                      # compiled once per image shape
    out = run(params, targets, weights, x0_HWC, iters)                # lax.while_loop, chunked for progress

A sweep is the same program under ``jax.vmap`` over the leading axis of ``weights`` and ``x0`` (K members), one
compile for all K; with several devices the K axis is sharded across them.

Solvers (``SolverConfig.name``), every one counting function+gradient (f+g) evaluations:

* ``"lbfgs"`` (default) -- projected L-BFGS with one f+g per iteration: a trial step along the two-loop direction
  (circular history; the first, gradient step moves no pixel by more than 0.1), clipped to the box [0, 1], accepted
  when it passes an Armijo test and otherwise rejected with the step shrunk -- a monotone guard written with
  ``jnp.where`` instead of a line search's ``lax.cond``, so it vmaps at full efficiency and its f+g count is exact;
  its recursion starts from a smoothing preconditioner (``SolverConfig.precondition``). Measured against PyTorch's
  strong-Wolfe L-BFGS in benchmarks/RESULTS.md.
* ``"jaxopt"`` -- ``jaxopt.LBFGSB`` (L-BFGS-B with its line search) with the box [0, 1] as a true bound constraint.
* ``"optax-lbfgs"`` -- ``optax.lbfgs`` (zoom line search); the iterate is projected onto [0, 1] after each update and
  value and gradient are evaluated afresh at the projected point (counted).
* ``"adam"`` -- ``optax.adam`` with projection onto [0, 1] (one f+g per iteration).

Under ``vmap`` a line search's ``lax.cond`` runs both branches, so the f+g counts reported by the line-search
solvers are logical evaluations; the one-trial-per-iteration ``lbfgs`` count is exact in all cases.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import losses as L
from nst_jax import vgg

__all__ = [
    "LossConfig",
    "SolverConfig",
    "PRESETS",
    "SOLVERS",
    "preset",
    "compute_targets",
    "make_weights",
    "loss_terms",
    "total_loss",
    "Solve",
    "SolveOutput",
    "TRACE_COUNTER",
]

DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_CONTENT_LAYERS = ("relu4_2",)
SOLVERS = ("lbfgs", "jaxopt", "optax-lbfgs", "adam")

# Counts Python traces of the compiled bodies (one per compile); tests assert it does not grow on a second call.
TRACE_COUNTER = {"loss": 0, "chunk": 0, "targets": 0}


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Static structure of the loss (hashable: part of the compile key). Numbers that vary live in ``weights``.

    Attributes:
      content_layers / style_layers: layer names.
      pooling: "max" or "avg".
      gram_norm: "hw" (G = F^T F / (H W), gatys) or "chw" (divide by C H W, neural-style).
      channels: 3 for RGB, 1 for luminance-only transfer (the 1-channel variable is replicated to RGB for VGG).
      spatial: None, or "gram" | "sums" | "sums+gram" | "stacked" (guided losses, Gatys et al. 2017).
      remat: rematerialise VGG blocks in the backward pass (False, True, or a jax.checkpoint_policies name).
      compute_dtype: None (float32) or "bfloat16" activations (losses and optimiser state stay float32).
    """

    content_layers: Tuple[str, ...] = DEFAULT_CONTENT_LAYERS
    style_layers: Tuple[str, ...] = DEFAULT_STYLE_LAYERS
    pooling: str = "max"
    gram_norm: str = "hw"
    channels: int = 3
    spatial: Optional[str] = None
    remat: Any = False
    compute_dtype: Optional[str] = None

    @property
    def all_layers(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Static solver settings. ``history``: L-BFGS memory; ``lr``: step (lbfgs: 1.0; adam: learning rate).

    ``loop``: how the iterations of a chunk run. ``"while"``: one compiled ``lax.while_loop`` per chunk (the whole
    chunk on the device). ``"host"``: a Python loop dispatching one compiled, donated step per iteration without
    reading anything back until the chunk ends (no per-iteration host sync). ``"auto"`` (default) picks ``"while"`` on
    GPU/TPU and ``"host"`` on CPU. XLA:CPU used to run the network's input-gradient convolutions 2.5x slower inside a
    loop body (cf. jax-ml/jax#12868; VGG16 at 256 px: 2180 vs 864 ms per f+g); since :func:`nst_jax.vgg.conv3x3` gives
    them a canonical kernel order the two modes measure alike on CPU (VGG16 at 256 px, 21 f+g, best of 2: host 869
    ms, while 826 ms per f+g, same losses; measured peak at 512 px, history 20: 532 MiB each). ``"host"`` is kept
    there because the while-loop program of a sweep sharded over several CPU devices fails an XLA:CPU check on the
    preconditioner's FFT (``RET_CHECK ... fft_thunk.cc:168 IsMonotonicWithDim0Major``; jax/jaxlib 0.10.2).

    ``members``: how a sweep (``Solve(batched=True)``) evaluates its K losses. ``"vmap"``: one batched VGG pass
    (convolutions with batch K). ``"unroll"``: the solver is still vmapped, but the loss and gradient of each member
    are separate single-image computations side by side in the same compiled program (at most
    ``UNROLL_GROUPS`` groups; members beyond that are vmapped within their group). ``"auto"`` (default) unrolls on
    CPU, where XLA's batched convolutions are slower than single ones (measured: VGG16 at 256 px, K = 4,
    value_and_grad batched 1.04-1.13x the time of 4 single calls, unrolled 0.82x), and vmaps on GPU/TPU.

    ``precondition`` (``"lbfgs"`` only): start each two-loop recursion from ``H0 = gamma P`` with the smoothing
    filter ``P`` of :func:`smoothing_spectrum` instead of ``gamma I`` (see :class:`_FixedStepLBFGS`).
    """

    name: str = "lbfgs"
    history: int = 100
    lr: Optional[float] = None
    chunk: int = 25
    loop: str = "auto"
    members: str = "auto"
    precondition: bool = True

    def __post_init__(self):
        if self.loop not in ("auto", "while", "host"):
            raise ValueError(f"loop must be 'auto', 'while' or 'host', got {self.loop!r}")
        if self.members not in ("auto", "vmap", "unroll"):
            raise ValueError(f"members must be 'auto', 'vmap' or 'unroll', got {self.members!r}")
        if self.name not in SOLVERS:
            raise ValueError(f"unknown solver {self.name!r}; choose one of {', '.join(SOLVERS)}")
        if self.history < 1:
            raise ValueError(f"L-BFGS history must be >= 1, got {self.history}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if not isinstance(self.precondition, bool):
            raise ValueError(f"precondition must be True or False, got {self.precondition!r}")

    @property
    def step(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 0.02 if self.name == "adam" else 1.0


# --------------------------------------------------------------------------------------------------- presets

PRESETS: Dict[str, Dict[str, Any]] = {
    # Gatys et al. 2016/2017 as in the 2017 paper's code: Gram / (H W), layer weights 1/C_l^2, alpha 1, beta 1e3.
    "gatys": dict(content_weight=1.0, style_weight=1e3, tv_weight=0.0, gram_norm="hw", layer_weights="inv_c2"),
    # jcjohnson/neural-style: Gram / (C H W), equal layer weights, content 5, style 100, TV 1e-3.
    "neural-style": dict(content_weight=5.0, style_weight=100.0, tv_weight=1e-3, gram_norm="chw",
                         layer_weights="ones"),
}


def preset(name: str) -> Dict[str, Any]:
    """The settings of a named convention (see ``PRESETS``)."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------------------------------- the loss

def _as_rgb(image_HWC: jax.Array) -> jax.Array:
    return jnp.repeat(image_HWC, 3, axis=-1) if image_HWC.shape[-1] == 1 else image_HWC


def _features(params, image_HWC, layers, cfg: LossConfig):
    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else None
    return vgg.features(params, _as_rgb(image_HWC), layers, pooling=cfg.pooling, remat=cfg.remat, dtype=dtype)


def loss_terms(params, image_HWC: jax.Array, targets: Mapping, weights: Mapping, cfg: LossConfig) -> Dict[str, jax.Array]:
    """Unweighted-by-alpha/beta terms and the weighted total for one image.

    Args:
      image_HWC: the generated image in [0, 1], [H, W, 3] (or [H, W, 1] for luminance-only transfer).
      targets: from :func:`compute_targets` (``content``: {layer: [H, W, C]}; ``grams``: {layer: [S, C, C]}; guided
        targets when ``cfg.spatial`` is set).
      weights: from :func:`make_weights` (``content``, ``style``, ``tv`` scalars; ``content_layers`` [Lc];
        ``style_layers`` [Ls]; ``blend`` [S]; ``regions`` [R] for spatial control).

    Returns:
      ``{"content", "style", "tv", "total"}`` with total = alpha content + beta style + tv_weight tv.
    """
    TRACE_COUNTER["loss"] += 1
    feats = _features(params, image_HWC, cfg.all_layers, cfg)
    content = jnp.zeros((), jnp.float32)
    for j, name in enumerate(cfg.content_layers):
        content = content + weights["content_layers"][j] * L.content_loss(feats[name], targets["content"][name])
    if cfg.spatial is None:
        grams = {name: L.blend_grams(targets["grams"][name], weights["blend"]) for name in cfg.style_layers}
        style = L.style_loss(feats, grams, cfg.style_layers, weights["style_layers"], cfg.gram_norm)
    else:
        from nst_jax import guidance  # spatial control: guided losses (Gatys et al. 2017, Sec. 4)

        style = guidance.spatial_style_loss(feats, targets, weights, cfg)
    tv = L.tv_loss(image_HWC)
    total = weights["content"] * content + weights["style"] * style + weights["tv"] * tv
    return {"content": content, "style": style, "tv": tv, "total": total}


def total_loss(image_HWC, params, targets, weights, cfg: LossConfig) -> jax.Array:
    """Scalar total loss (argument order suited to ``jax.value_and_grad`` w.r.t. the image)."""
    return loss_terms(params, image_HWC, targets, weights, cfg)["total"]


def _targets_impl(params, content_HWC, style_HWC, cfg: LossConfig):
    TRACE_COUNTER["targets"] += 1
    out = {}
    if content_HWC is not None:
        cf = _features(params, content_HWC, cfg.content_layers, cfg)
        out["content"] = {name: cf[name] for name in cfg.content_layers}
    if style_HWC is not None:
        sf = _features(params, style_HWC, cfg.style_layers, cfg)
        out["grams"] = {name: L.gram(sf[name], cfg.gram_norm) for name in cfg.style_layers}
    return out


_targets_jit = jax.jit(_targets_impl, static_argnames=("cfg",))


def compute_targets(params, content_HWC, styles: Sequence, cfg: LossConfig) -> Dict[str, Any]:
    """Content features and stacked Gram targets, computed once (jitted per image shape).

    Args:
      content_HWC: the content image [H, W, 3|1] in [0, 1] (None for no content term, e.g. style mixing).
      styles: S style images, each [H_s, W_s, 3|1] (sizes may differ).

    Returns:
      ``{"content": {layer: [H_l, W_l, C_l]}, "grams": {layer: [S, C_l, C_l]}}``.
    """
    out: Dict[str, Any] = {}
    if content_HWC is not None:
        out.update(_targets_jit(params, jnp.asarray(content_HWC, jnp.float32), None, cfg))
    else:
        out["content"] = {}
    per_style = [_targets_jit(params, None, jnp.asarray(s, jnp.float32), cfg)["grams"] for s in styles]
    if per_style:
        out["grams"] = {name: jnp.stack([g[name] for g in per_style]) for name in cfg.style_layers}
    return out


def make_weights(
    cfg: LossConfig,
    params,
    *,
    content_weight: float = 1.0,
    style_weight: float = 1e3,
    tv_weight: float = 0.0,
    layer_weights: Any = "inv_c2",
    content_layer_weights: Optional[Sequence[float]] = None,
    blend: Optional[Sequence[float]] = None,
    n_styles: int = 1,
    region_weights: Optional[Sequence[float]] = None,
    n_regions: int = 0,
) -> Dict[str, jax.Array]:
    """The traced weights pytree. ``layer_weights``: "inv_c2" (1/C_l^2), "ones", or a sequence of floats."""
    chans = vgg.layer_channels(vgg.spec_from_params(params))
    if isinstance(layer_weights, str):
        lw = L.default_layer_weights([chans[n] for n in cfg.style_layers], layer_weights)
    else:
        lw = jnp.asarray(list(layer_weights), jnp.float32)
        if lw.shape != (len(cfg.style_layers),):
            raise ValueError(f"{len(lw)} layer weights given for {len(cfg.style_layers)} style layers "
                             f"({', '.join(cfg.style_layers)}); give one per layer")
    for value, what in ((content_weight, "content weight"), (style_weight, "style weight"), (tv_weight, "tv weight")):
        if not (math.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"{what} must be a finite number >= 0, got {value}")
    if bool(jnp.any(~jnp.isfinite(lw)) or jnp.any(lw < 0)):
        raise ValueError(f"layer weights must be finite and >= 0, got {list(np.asarray(lw))}")
    cw = (jnp.ones(len(cfg.content_layers), jnp.float32) if content_layer_weights is None
          else jnp.asarray(list(content_layer_weights), jnp.float32))
    bl = jnp.ones(n_styles, jnp.float32) if blend is None else jnp.asarray(list(blend), jnp.float32)
    if bl.shape != (n_styles,):
        raise ValueError(f"{bl.shape[0]} blend weights given for {n_styles} style images; give one per style")
    if bool(jnp.any(bl < 0) | ~jnp.all(jnp.isfinite(bl))) or float(jnp.sum(bl)) <= 0:
        raise ValueError(f"style blend weights must be >= 0 with a positive sum, got {list(np.asarray(bl))}")
    w = {
        "content": jnp.asarray(content_weight, jnp.float32),
        "style": jnp.asarray(style_weight, jnp.float32),
        "tv": jnp.asarray(tv_weight, jnp.float32),
        "content_layers": cw,
        "style_layers": lw.astype(jnp.float32),
        "blend": bl,
    }
    if n_regions:
        rw = (jnp.full(n_regions, 1.0 / n_regions, jnp.float32) if region_weights is None
              else jnp.asarray(list(region_weights), jnp.float32))
        if rw.shape != (n_regions,):
            raise ValueError(f"{rw.shape[0]} region weights given for {n_regions} regions; give one per region")
        w["regions"] = rw
    return w


# --------------------------------------------------------------------------------------------------- solvers

class LBFGSState(NamedTuple):
    x: jax.Array  # the accepted iterate (what the user gets)
    value: jax.Array  # f(x)
    grad: jax.Array  # grad f(x)
    s_hist: jax.Array  # [m, *x.shape]
    y_hist: jax.Array
    rho: jax.Array  # [m]
    head: jax.Array  # next slot to write
    count: jax.Array  # pairs stored (<= m)
    it: jax.Array
    nfev: jax.Array
    step: jax.Array  # step multiplier in (0, 1]: shrunk when a trial is rejected, doubled (up to 1) when accepted
    trial: jax.Array  # f at the last trial point (non-finite: the run stops)


SMOOTHING_FLOOR = 0.2  # high-frequency gain of the L-BFGS preconditioner (1 at the lowest frequency)


def _vdot(a, b):
    return jnp.sum(a * b, dtype=jnp.float32)


def smoothing_spectrum(shape_HW: Tuple[int, int], floor: float = SMOOTHING_FLOOR) -> np.ndarray:
    """Spectrum of the L-BFGS preconditioner ``P`` for [H, W, C] images, [H, W // 2 + 1] (``rfft2`` layout).

    ``p(f) = floor + (1 - floor) f0 / max(|f|, f0)`` with ``|f|`` in cycles per pixel and ``f0 = 1 / max(H, W)``:
    1 for the lowest frequency, falling as ``1/|f|`` (the 1/f spectrum of natural images) to ``floor`` at the
    highest. ``P v = irfft2(p * rfft2(v))`` per channel (circular) is symmetric positive definite, so ``gamma P`` is
    a valid initial inverse Hessian for L-BFGS.

    Example:
      >>> p = smoothing_spectrum((4, 6))
      >>> p.shape, float(p[0, 0]), bool(p.min() >= SMOOTHING_FLOOR)
      ((4, 4), 1.0, True)
    """
    h, w = int(shape_HW[0]), int(shape_HW[1])
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f0 = 1.0 / max(h, w)
    radius = np.sqrt(fy ** 2 + fx ** 2)
    return (floor + (1.0 - floor) * f0 / np.maximum(radius, f0)).astype(np.float32)


def _smoother(shape) -> Callable[[jax.Array], jax.Array]:
    """``v -> P v`` for iterates of ``shape`` ([H, W, C] images); the identity for any other shape."""
    if len(shape) != 3 or min(shape[:2]) < 2:
        return lambda v: v
    h, w = shape[:2]
    spec = smoothing_spectrum((h, w))[:, :, None]

    def apply(v):
        return jnp.fft.irfft2(jnp.fft.rfft2(v, axes=(0, 1)) * spec, s=(h, w), axes=(0, 1)).astype(v.dtype)

    return apply


def _two_loop(g, s_hist, y_hist, rho, head, count, precond=lambda v: v):
    """Two-loop recursion: returns H g for the L-BFGS inverse-Hessian approximation (circular history), started
    from ``H0 = gamma P`` (``precond``: ``v -> P v``, symmetric positive definite; ``gamma = s.y / y.P y`` of the
    newest pair, 1 while the history is empty).

    Both loops run ``count`` times (a traced trip count), not ``m``: with a short history the unused slots cost
    nothing (at 256 px and m = 100, with the preconditioner: 6.7 ms instead of 39.5 ms at count 10). Under ``vmap`` the loop runs to the largest
    member's count and masks the others, which is the same arithmetic."""
    m = s_hist.shape[0]

    def back(j, carry):
        q, alpha = carry
        idx = (head - 1 - j) % m
        a = rho[idx] * _vdot(s_hist[idx], q)
        return q - a * y_hist[idx], alpha.at[idx].set(a)

    q, alpha = jax.lax.fori_loop(0, count, back, (g, jnp.zeros_like(rho)))
    newest = (head - 1) % m
    sy = _vdot(s_hist[newest], y_hist[newest])
    yPy = _vdot(y_hist[newest], precond(y_hist[newest]))
    gamma = jnp.where((count > 0) & (yPy > 0), sy / jnp.where(yPy > 0, yPy, 1.0), 1.0)
    r = gamma * precond(q)

    def fwd(j, r):
        idx = (head - count + j) % m
        b = rho[idx] * _vdot(y_hist[idx], r)
        return r + s_hist[idx] * (alpha[idx] - b)

    return jax.lax.fori_loop(0, count, fwd, r)


class _StateFields:
    """Accessors for solvers whose state names its iterate, loss and f+g count ``x``, ``value``, ``nfev``."""

    @staticmethod
    def x(st):
        return st.x

    @staticmethod
    def value(st):
        return st.value

    @staticmethod
    def nfev(st):
        return st.nfev

    @classmethod
    def failed(cls, st) -> jax.Array:
        """True when the step produced a non-finite loss or iterate (the run then stops, keeping the old state)."""
        return ~jnp.isfinite(cls.value(st)) | ~jnp.all(jnp.isfinite(cls.x(st)))

    @staticmethod
    def revert(old, new, keep_old):
        """``old`` where ``keep_old`` else ``new`` (a whole-state select; solvers may do it more cheaply)."""
        return jax.tree_util.tree_map(lambda a, b: jnp.where(keep_old, a, b), old, new)


class _FixedStepLBFGS(_StateFields):
    """Projected L-BFGS with one f+g per iteration and a monotone (Armijo) guard that needs no ``lax.cond``.

    Each iteration evaluates one trial point ``x_t = clip(x + t d, 0, 1)`` with ``d = -H g`` the two-loop
    direction and ``t = step``. While the history is empty ``d = -P g`` and ``t = step * FIRST_STEP / max|d|``: the
    first move changes no pixel by more than ``FIRST_STEP`` (a scale-free choice; the loss scale varies by orders of
    magnitude between presets and layer weightings). The trial is accepted when ``f(x_t) <= f(x) + 1e-4
    g.(x_t - x)``; then ``step`` doubles (up to 1) and the pair ``(x_t - x, g_t - g)`` enters the history if its
    curvature ``s.y > 1e-10``. Otherwise ``x`` and the history stay and ``step`` shrinks to the minimiser of the
    quadratic through ``f(x)``, the slope ``g.(x_t - x)`` and ``f(x_t)``, kept within 0.1-0.5 of its value (0.5 when
    the fit has no minimum). Every branch is a ``jnp.where``, so under ``vmap`` each member pays exactly one f+g per
    iteration and the reported count is exact.

    Preconditioning (``SolverConfig.precondition``, default on; images only): the recursion starts from
    ``H0 = gamma P`` rather than ``gamma I``, ``P`` a fixed smoothing filter (:func:`smoothing_spectrum`: gain 1 at
    the lowest frequency falling as 1/|f| to 0.2), ``gamma = s.y / y.P y``. Pixel-space gradients of a VGG loss are
    dominated by high frequencies, while much of the loss sits in broad structure; damping the former in the first
    guess of the inverse Hessian lets the early iterations move the latter. Two forward+inverse FFT pairs per iteration.

    Measured (VGG16 at 256 px, ``benchmarks/RESULTS.md``): the plain fixed step (jcjohnson/neural-style) overshoots
    after its first pair and spends ~40 f+g recovering; keeping rejected trials' pairs, or torch's first step
    ``min(1, 1/|g|_1)``, cost 9% and 6% more f+g to PyTorch's 100-f+g loss than this variant without
    preconditioning (76 -> 83, 72 -> 76); preconditioning reaches that loss in 66-67 f+g instead of 74 (blue_marble +
    great_wave, floors 0.1-0.5 and exponents 0.5-1.5 alike) and, on tetons + starry_night, 4% lower loss after 80 f+g.
    """

    ARMIJO = 1e-4
    FIRST_STEP = 0.1  # largest pixel change of the first (gradient) step, images in [0, 1]

    def __init__(self, vg: Callable, cfg: SolverConfig):
        self.vg, self.cfg = vg, cfg

    def init(self, x0, *args):
        f, g = self.vg(x0, *args)
        m = self.cfg.history
        z = jnp.zeros((m,) + x0.shape, x0.dtype)
        return LBFGSState(x0, f, g, z, z, jnp.zeros(m, jnp.float32), jnp.asarray(0), jnp.asarray(0),
                          jnp.asarray(0), jnp.asarray(1), jnp.asarray(1.0, jnp.float32), f)

    def propose(self, st: LBFGSState) -> jax.Array:
        """The trial point of the next iteration, [H, W, C] in [0, 1]."""
        precond = _smoother(st.x.shape) if self.cfg.precondition else (lambda v: v)
        d = -_two_loop(st.grad, st.s_hist, st.y_hist, st.rho, st.head, st.count, precond)
        first = self.FIRST_STEP / jnp.maximum(jnp.max(jnp.abs(d)), 1e-30)
        t = jnp.where(st.count == 0, first, 1.0) * self.cfg.step * st.step
        return jnp.clip(st.x + t * d, 0.0, 1.0)

    def step(self, st: LBFGSState, *args, active=True) -> LBFGSState:
        xt = self.propose(st)
        ft, gt = self.vg(xt, *args)
        s, y = xt - st.x, gt - st.grad
        sy = _vdot(s, y)
        gs = _vdot(st.grad, s)  # directional derivative along the (projected) trial step
        accept = (ft <= st.value + self.ARMIJO * gs) & active  # False for NaN too
        ok = (sy > 1e-10) & accept
        m = self.cfg.history
        # write one slot (in place, the state is donated); a skipped pair rewrites the slot with its old contents
        s_hist = st.s_hist.at[st.head].set(jnp.where(ok, s, st.s_hist[st.head]))
        y_hist = st.y_hist.at[st.head].set(jnp.where(ok, y, st.y_hist[st.head]))
        rho = st.rho.at[st.head].set(jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), st.rho[st.head]))
        head = jnp.where(ok, (st.head + 1) % m, st.head)
        count = jnp.where(ok, jnp.minimum(st.count + 1, m), st.count)
        # on rejection: the minimiser of the quadratic through f, its slope and f_t, kept within [0.1, 0.5] x the step
        # (0.5 when the fit has no minimum or f_t is not finite)
        curv = ft - st.value - gs
        shrink = jnp.where(curv > 0, -gs / (2.0 * jnp.where(curv > 0, curv, 1.0)), 0.5)
        shrink = jnp.clip(jnp.where(jnp.isfinite(shrink), shrink, 0.5), 0.1, 0.5)
        step = jnp.where(accept, jnp.minimum(2.0 * st.step, 1.0), shrink * st.step)
        return LBFGSState(jnp.where(accept, xt, st.x), jnp.where(accept, ft, st.value), jnp.where(accept, gt, st.grad),
                          s_hist, y_hist, rho, head, count, st.it + 1, st.nfev + 1, step, ft)

    @staticmethod
    def failed(st: LBFGSState) -> jax.Array:
        return (~jnp.isfinite(st.trial) | ~jnp.isfinite(st.value) | ~jnp.all(jnp.isfinite(st.grad))
                | ~jnp.all(jnp.isfinite(st.x)))

    @staticmethod
    def revert(old: LBFGSState, new: LBFGSState, keep_old: jax.Array) -> LBFGSState:
        # the histories need no select: an inactive or failed step (rejected, non-finite) never writes them
        pick = lambda a, b: jnp.where(keep_old, a, b)  # noqa: E731
        return new._replace(**{f: pick(getattr(old, f), getattr(new, f))
                               for f in LBFGSState._fields if f not in ("s_hist", "y_hist")})


class _JaxoptLBFGSB(_StateFields):
    """jaxopt.LBFGSB on the objective scaled by ``c = 1 / max|g(x0)|`` (a traced number kept in the state).

    Style losses are O(1e5..1e10) with gradients to match, while the line search's step bounds (``max_stepsize`` 1,
    ``min_stepsize`` 1e-6) assume unit scale: unscaled, the first steps pin every pixel to a bound and the search
    stalls. Scaling leaves the minimiser unchanged; reported values are unscaled.
    """

    def __init__(self, vg: Callable, cfg: SolverConfig):
        import jaxopt

        self.cfg = cfg

        def scaled(x, c, *args):
            f, g = vg(x, *args)
            return f * c, g * c

        self.vg = vg
        self.solver = jaxopt.LBFGSB(fun=scaled, value_and_grad=True, history_size=cfg.history, maxiter=10 ** 9,
                                    tol=0.0)

    def _bounds(self, x):
        return (jnp.zeros_like(x), jnp.ones_like(x))

    def init(self, x0, *args):
        _, g0 = self.vg(x0, *args)
        c = 1.0 / jnp.maximum(jnp.max(jnp.abs(g0)), 1e-30)
        st = self.solver.init_state(x0, self._bounds(x0), c, *args)
        return (x0, st, c)

    def step(self, st, *args, active=True):  # inactive members are reverted by the caller
        x, s, c = st
        x, s = self.solver.update(x, s, self._bounds(x), c, *args)
        return (x, s, c)

    @staticmethod
    def x(st):
        return st[0]

    @staticmethod
    def value(st):
        return st[1].value / st[2]

    @staticmethod
    def nfev(st):
        # + 1: the f+g at x0 that set the scale (jaxopt counts its own evaluations only)
        return st[1].num_fun_eval.astype(jnp.int32) + 1


class _OptaxState(NamedTuple):
    x: jax.Array
    opt: Any
    value: jax.Array
    grad: jax.Array
    nfev: jax.Array


class _Optax(_StateFields):
    """optax.lbfgs (zoom line search) or optax.adam, projected onto [0, 1] after each update."""

    def __init__(self, vg: Callable, cfg: SolverConfig, f: Optional[Callable] = None):
        import optax

        self.vg, self.cfg = vg, cfg
        # the zoom line search differentiates its value function itself: give it the loss alone (taking the value
        # out of ``vg`` would make each line-search f+g run a second, discarded backward pass)
        self.f = f if f is not None else (lambda x, *args: vg(x, *args)[0])
        if cfg.name == "adam":
            self.opt = optax.adam(cfg.step)
        else:
            self.opt = optax.lbfgs(memory_size=cfg.history)

    def init(self, x0, *args):
        f, g = self.vg(x0, *args)
        return _OptaxState(x0, self.opt.init(x0), f, g, jnp.asarray(1))

    def step(self, st: _OptaxState, *args, active=True):  # inactive members are reverted by the caller
        import optax

        if self.cfg.name == "adam":
            upd, opt = self.opt.update(st.grad, st.opt, st.x)
            extra = jnp.asarray(0)
        else:
            fn = lambda x: self.f(x, *args)  # noqa: E731
            upd, opt = self.opt.update(st.grad, st.opt, st.x, value=st.value, grad=st.grad, value_fn=fn)
            extra = jnp.asarray(optax.tree_utils.tree_get(opt, "num_linesearch_steps"), jnp.int32)
        x = jnp.clip(optax.apply_updates(st.x, upd), 0.0, 1.0)
        f, g = self.vg(x, *args)
        return _OptaxState(x, opt, f, g, st.nfev + 1 + extra)


UNROLL_GROUPS = 8


def _unrolled_over_members(vg: Callable) -> Callable:
    """``vg`` whose batching rule evaluates members as separate single-image calls (see ``SolverConfig.members``).

    Only the vmap rule changes: unbatched calls are ``vg`` itself. ``vg``'s outputs are never differentiated by
    the solvers that use this (``custom_vmap`` has no reverse-mode rule).
    """

    @jax.custom_batching.custom_vmap
    def fn(x, params, targets, weights):
        return vg(x, params, targets, weights)

    @fn.def_vmap
    def rule(axis_size, in_batched, x, params, targets, weights):
        args, in_batched = (x, params, targets, weights), tuple(in_batched)
        groups = np.array_split(np.arange(axis_size), min(axis_size, UNROLL_GROUPS))

        def take(lo, hi, single):
            def pick(a, batched):
                if not batched:
                    return a
                return a[lo] if single else a[lo:hi]
            return jax.tree_util.tree_map(pick, args, in_batched)

        values, grads = [], []
        for g in groups:
            lo, hi = int(g[0]), int(g[-1]) + 1
            if hi - lo == 1:
                v, gr = vg(*take(lo, hi, True))
                v, gr = v[None], gr[None]
            else:
                axes = jax.tree_util.tree_map(lambda b: 0 if b else None, in_batched)
                v, gr = jax.vmap(vg, in_axes=tuple(axes))(*take(lo, hi, False))
            values.append(v)
            grads.append(gr)
        return (jnp.concatenate(values), jnp.concatenate(grads)), (True, True)

    return fn


def _make_solver(loss_cfg: LossConfig, solver_cfg: SolverConfig):
    def f(x, params, targets, weights):
        return total_loss(x, params, targets, weights, loss_cfg)

    vg = jax.value_and_grad(f)
    members = solver_cfg.members
    if members == "auto":
        members = "unroll" if jax.default_backend() == "cpu" else "vmap"
    if solver_cfg.name == "optax-lbfgs":
        return _Optax(vg, solver_cfg, f)  # its line search differentiates the value function: keep plain vmap
    if members == "unroll":
        vg = _unrolled_over_members(vg)
    if solver_cfg.name == "lbfgs":
        return _FixedStepLBFGS(vg, solver_cfg)
    if solver_cfg.name == "jaxopt":
        return _JaxoptLBFGSB(vg, solver_cfg)
    return _Optax(vg, solver_cfg)


# --------------------------------------------------------------------------------------------------- chunked run

class ChunkOut(NamedTuple):
    state: Any
    values: jax.Array  # [chunk] loss after each iteration (NaN past the end)
    nfevs: jax.Array  # [chunk] cumulative f+g after each iteration
    done: jax.Array  # iterations actually run in this chunk
    bad: jax.Array  # True if a non-finite loss stopped the run (the state is the last finite one)


def _guarded_step(solver, st, params, targets, weights, active=True):
    """One solver step that refuses a non-finite result: returns (state, bad, value, nfev); on ``bad`` (or when the
    member is not ``active``) the state is the previous one."""
    new = solver.step(st, params, targets, weights, active=active)
    bad = solver.failed(new) & active
    keep = bad | ~jnp.asarray(active)
    st = solver.revert(st, new, keep)
    return st, bad, jnp.where(keep, jnp.nan, solver.value(new)), solver.nfev(new)


def _step_impl(state, bad, params, targets, weights, loss_cfg: LossConfig, solver_cfg: SolverConfig):
    """The host-loop variant's unit: one guarded step; a member already ``bad`` stays as it is."""
    TRACE_COUNTER["chunk"] += 1
    solver = _make_solver(loss_cfg, solver_cfg)
    st, new_bad, v, nfev = _guarded_step(solver, state, params, targets, weights, active=~bad)
    return st, bad | new_bad, v, nfev


def _chunk_impl(state, params, targets, weights, n, loss_cfg: LossConfig, solver_cfg: SolverConfig):
    TRACE_COUNTER["chunk"] += 1
    solver = _make_solver(loss_cfg, solver_cfg)
    size = solver_cfg.chunk
    values = jnp.full((size,), jnp.nan, jnp.float32)
    nfevs = jnp.zeros((size,), jnp.int32)

    def cond(c):
        i, _, _, _, bad = c
        return (i < n) & ~bad

    def body(c):
        i, st, values, nfevs, _ = c
        st, bad, v, nfev = _guarded_step(solver, st, params, targets, weights)
        values = values.at[i].set(v)
        nfevs = nfevs.at[i].set(nfev)
        return i + 1, st, values, nfevs, bad

    i, state, values, nfevs, bad = jax.lax.while_loop(
        cond, body, (jnp.asarray(0), state, values, nfevs, jnp.asarray(False)))
    return ChunkOut(state, values, nfevs, i, bad)


def _init_impl(x0, params, targets, weights, loss_cfg: LossConfig, solver_cfg: SolverConfig):
    solver = _make_solver(loss_cfg, solver_cfg)
    return solver.init(x0, params, targets, weights)


def _terms_impl(x, params, targets, weights, loss_cfg: LossConfig):
    return loss_terms(params, x, targets, weights, loss_cfg)


class SolveOutput(NamedTuple):
    """Result of a compiled solve. With a sweep, arrays carry a leading K axis."""

    image: np.ndarray  # [H, W, C] (or [K, H, W, C]) in [0, 1]
    values: np.ndarray  # [T] (or [K, T]) loss after each iteration
    nfevs: np.ndarray  # [T] (or [K, T]) cumulative f+g evaluations after each iteration
    terms: Dict[str, np.ndarray]  # final content/style/tv/total
    compile_seconds: float
    run_seconds: float
    stopped_nonfinite: bool
    nonfinite_term: Optional[str]
    interrupted: bool = False  # ``stop()`` returned True: the run ended early at ``iters_done``
    iters_done: int = 0  # iterations run in total (including those before a resume)


class Solve:
    """A compiled solve for one (loss structure, solver) pair; ``batched=True`` vmaps over K members.

    Compiled executables are cached per (configs, shapes, dtypes, shardings) across instances, so a second call with
    new images or weights of the same size compiles nothing (see ``TRACE_COUNTER``).
    """

    _cache: Dict[Any, Any] = {}

    def __init__(self, loss_cfg: LossConfig, solver_cfg: SolverConfig = SolverConfig(), *, batched: bool = False):
        self.loss_cfg, self.solver_cfg, self.batched = loss_cfg, solver_cfg, batched
        loop = solver_cfg.loop
        if loop == "auto":
            loop = "host" if jax.default_backend() == "cpu" else "while"
        self.loop = loop
        init = _init_impl
        chunk = _chunk_impl
        step = _step_impl
        terms = _terms_impl
        if batched:
            init = jax.vmap(init, in_axes=(0, None, None, 0, None, None))
            chunk = jax.vmap(chunk, in_axes=(0, None, None, 0, None, None, None))
            step = jax.vmap(step, in_axes=(0, 0, None, None, 0, None, None))
            terms = jax.vmap(terms, in_axes=(0, None, None, 0, None))
        self._init = jax.jit(init, static_argnums=(4, 5))
        self._chunk = jax.jit(chunk, static_argnums=(5, 6), donate_argnums=(0,))
        self._step = jax.jit(step, static_argnums=(5, 6), donate_argnums=(0,))
        self._terms = jax.jit(terms, static_argnums=(4,))

    def _host_chunk(self, step, state, params, targets, weights, n: int) -> ChunkOut:
        """``n`` compiled steps dispatched from Python; results are read only when the chunk ends."""
        bad = jnp.zeros(self._member_shape(state), bool)
        vs, ns = [], []
        if n == 0:
            return ChunkOut(state, jnp.full(self._member_shape(state) + (self.solver_cfg.chunk,), jnp.nan),
                            jnp.zeros(self._member_shape(state) + (self.solver_cfg.chunk,), jnp.int32),
                            jnp.zeros(self._member_shape(state), jnp.int32), bad)
        for _ in range(n):
            state, bad, v, nfev = step(state, bad, params, targets, weights)
            vs.append(v)
            ns.append(nfev)
        size = self.solver_cfg.chunk
        values = jnp.stack(vs, -1)
        nfevs = jnp.stack(ns, -1)
        bad_np = np.asarray(bad)
        # iterations run before the first non-finite value (per member, as the while-loop variant reports them)
        done = np.where(bad_np, np.argmax(~np.isfinite(np.asarray(values)), -1), n) if n else np.zeros_like(bad_np, int)
        pad = [(0, 0)] * (values.ndim - 1) + [(0, size - n)]
        return ChunkOut(state, jnp.pad(values, pad, constant_values=np.nan), jnp.pad(nfevs, pad),
                        jnp.asarray(done), jnp.asarray(bad_np))

    def _member_shape(self, state) -> Tuple[int, ...]:
        """() for a single solve, (K,) for a sweep."""
        solver = _make_solver(self.loss_cfg, self.solver_cfg)
        return (int(np.shape(solver.x(state))[0]),) if self.batched else ()

    def _compiled(self, name, fn, args, static):
        def sig(a):
            sh = getattr(a, "sharding", None)
            return (tuple(np.shape(a)), str(getattr(a, "dtype", type(a))), str(sh) if sh is not None else None)

        key = (name, self.batched, static, jax.tree_util.tree_structure(args),
               tuple(sig(a) for a in jax.tree_util.tree_leaves(args)))
        hit = self._cache.get(key)
        if hit is None:
            t0 = time.perf_counter()
            hit = fn.lower(*args, *static).compile()
            self._cache[key] = hit
            self.compile_seconds += time.perf_counter() - t0
        return hit

    def __call__(self, params, targets, weights, x0, iters: int, *, callback: Optional[Callable] = None,
                 progress: Optional[Callable] = None, resume: Optional[Mapping[str, Any]] = None,
                 on_chunk: Optional[Callable] = None, stop: Optional[Callable[[], bool]] = None) -> SolveOutput:
        """Run ``iters`` solver iterations from ``x0`` (or continue a saved run, see ``resume``).

        Args:
          x0: [H, W, C] (or [K, H, W, C] when batched) initial image in [0, 1].
          callback: called after each chunk with ``(it, x, values_so_far)`` on the host (intermediate saves).
          progress: called after each chunk with ``(done_iters, loss, nfev)`` (progress bars).
          resume: continue a run instead of starting one: ``{"leaves": [...], "iteration": int, "values": [T],
            "nfevs": [T]}`` -- the solver state's leaves in ``jax.tree_util.tree_leaves`` order (checked against the
            state this solve would build from ``x0``: count, shapes, dtypes), the iterations already run and the loss
            trace so far (including iteration 0). Chunks are the same compiled program whatever their length, so
            the continued run computes exactly what an uninterrupted one would.
          on_chunk: called after each chunk with ``(done_iters, x, state, values_so_far, nfevs_so_far)``
            (checkpoints; ``state`` is the solver state pytree, valid until the next chunk runs).
          stop: checked after each chunk (after ``on_chunk``); returning True ends the run there
            (``SolveOutput.interrupted``).
        """
        if iters < 0:
            raise ValueError(f"iterations must be >= 0, got {iters}")
        self.compile_seconds = 0.0
        t_start = time.perf_counter()
        lc, sc = self.loss_cfg, self.solver_cfg
        x0 = jnp.asarray(x0, jnp.float32)
        n0 = jnp.asarray(0, jnp.int32)
        solver = _make_solver(lc, sc)
        get_x = jax.vmap(solver.x) if self.batched else solver.x
        get_v = jax.vmap(solver.value) if self.batched else solver.value
        get_n = jax.vmap(solver.nfev) if self.batched else solver.nfev
        if resume is None:
            init = self._compiled("init", self._init, (x0, params, targets, weights), (lc, sc))
            state = init(x0, params, targets, weights)
            values = [np.asarray(get_v(state))[..., None]]
            nfevs = [np.asarray(get_n(state))[..., None]]
            done = 0
        else:
            template = jax.eval_shape(lambda *a: self._init(*a, lc, sc), x0, params, targets, weights)
            t_leaves, treedef = jax.tree_util.tree_flatten(template)
            leaves = list(resume["leaves"])
            if len(leaves) != len(t_leaves):
                raise ValueError(f"the saved solver state has {len(leaves)} arrays but the {sc.name} solver of this "
                                 f"run has {len(t_leaves)}; resume with the solver and history it was saved with")
            for j, (a, t) in enumerate(zip(leaves, t_leaves)):
                if tuple(np.shape(a)) != tuple(t.shape) or np.asarray(a).dtype != t.dtype:
                    raise ValueError(f"saved solver state array {j} is {np.asarray(a).dtype}{list(np.shape(a))} but "
                                     f"this run needs {t.dtype}{list(t.shape)}; resume with the same size, solver "
                                     f"and history")
            state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a, t.dtype) for a, t in zip(leaves, t_leaves)])
            done = int(resume["iteration"])
            if done > iters:
                raise ValueError(f"the saved run has already done {done} iterations, more than the {iters} asked for; "
                                 f"ask for at least {done}")
            values = [np.asarray(resume["values"], np.float32)]
            nfevs = [np.asarray(resume["nfevs"], np.int32)]
        if self.loop == "while":
            chunk = self._compiled("chunk", self._chunk, (state, params, targets, weights, n0), (lc, sc))
        else:
            bad0 = jnp.zeros(self._member_shape(state), bool)
            # the step does not depend on the chunk length: key it without, so runs that differ only in how
            # often they report (save-every, checkpoint-every) share one executable
            sc_step = dataclasses.replace(sc, chunk=1, loop="host")
            step = self._compiled("step", self._step, (state, bad0, params, targets, weights), (lc, sc_step))
            if len(jax.devices()) > 1:
                # outputs may come back sharded differently from how the executable takes its inputs
                compiled, (in_sh, _) = step, step.input_shardings

                def step(*args):
                    return compiled(*jax.device_put(args, in_sh))

            def chunk(state, params, targets, weights, n):
                return self._host_chunk(step, state, params, targets, weights, int(n))
        bad = interrupted = False
        while done < iters and not bad and not interrupted:
            n = min(sc.chunk, iters - done)
            out = chunk(state, params, targets, weights, jnp.asarray(n, jnp.int32))
            state = out.state
            k = int(np.max(np.asarray(out.done)))
            values.append(np.asarray(out.values)[..., :k])
            nfevs.append(np.asarray(out.nfevs)[..., :k])
            bad = bool(np.any(np.asarray(out.bad)))
            done += n
            if progress is not None:
                progress(done, np.asarray(get_v(state)), np.asarray(get_n(state)))
            if callback is not None:
                callback(done, get_x(state), np.concatenate(values, axis=-1))
            if on_chunk is not None:
                on_chunk(done, get_x(state), state, np.concatenate(values, axis=-1), np.concatenate(nfevs, axis=-1))
            interrupted = bool(stop is not None and stop() and done < iters and not bad)
        x = get_x(state)
        terms_fn = self._compiled("terms", self._terms, (x, params, targets, weights), (lc,))
        terms = {k: np.asarray(v) for k, v in terms_fn(x, params, targets, weights).items()}
        run_seconds = time.perf_counter() - t_start - self.compile_seconds
        vals = np.concatenate(values, axis=-1)
        nonfinite_term = None
        if bad:
            nonfinite_term = _first_nonfinite_term(self, params, targets, weights, state, solver)
        return SolveOutput(np.asarray(x), vals, np.concatenate(nfevs, axis=-1), terms, self.compile_seconds,
                           run_seconds, bad, nonfinite_term, interrupted, done)


def _first_nonfinite_term(solve: Solve, params, targets, weights, state, solver) -> Optional[str]:
    """After a non-finite stop: take one more step eagerly and name the first loss term that is not finite."""
    lc, sc = solve.loss_cfg, solve.solver_cfg

    def one(st, w):
        if hasattr(solver, "propose"):  # the failing evaluation was at the trial point
            x = solver.propose(st)
        else:
            x = solver.x(solver.step(st, params, targets, w))
        return loss_terms(params, x, targets, w, lc)

    fn = jax.jit(jax.vmap(one, in_axes=(0, 0)) if solve.batched else one)
    terms = fn(state, weights)
    for name in ("content", "style", "tv", "total"):
        if not np.all(np.isfinite(np.asarray(terms[name]))):
            return name
    return "gradient"
