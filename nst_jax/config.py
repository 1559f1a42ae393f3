"""Static settings, validated once: loss structure, solver, solve options, colour and spatial control, the problem.

Everything here is a frozen dataclass checked in its ``__post_init__``, so an object that exists is valid and every
check lives in exactly one place. Numbers that vary between runs of one compiled program (α, β, layer weights, ...)
are not here: they are the traced :class:`nst_jax.objective.Weights`.

* :class:`LossConfig` -- the structure of the loss (layers, pooling, Gram normalisation, spatial mode, network op
  path): part of the compile key.
* :class:`SolverConfig` -- which optimiser and how its iterations run (history, step, chunking, loop mode).
* :class:`SolveOptions` -- one run's solve settings: iterations, initial image, seed, solver, progress, saves.
* :class:`ColorConfig`, :class:`SpatialConfig` -- the 2017 paper's colour and spatial control.
* :class:`ProblemSpec` -- what a transfer is made of: weights, size, preset, loss weights, layers, controls.

:func:`split_kwargs` routes flat keyword arguments (``size=256, iters=150, solver="adam"``) to the object and field
they belong to, which is how :func:`nst_jax.stylize` keeps its flat keyword form without re-listing them.

A refused value raises :class:`SettingError`, a ``ValueError`` that names the setting (``iters must be an integer
>= 0, got -1``); the command line prints the same message with the flag (``--iters``).

The module is longer than the project's ~600-line guide on purpose: it is the one place every setting and its check
lives, and splitting it would scatter the checks that relate settings to each other.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

__all__ = [
    "SettingError",
    "DEFAULT_CONTENT_LAYERS",
    "DEFAULT_STYLE_LAYERS",
    "SOLVERS",
    "BOUNDS",
    "POOLINGS",
    "GRAM_NORMS",
    "SPATIAL_MODES",
    "PROPAGATIONS",
    "POOL_ROUNDINGS",
    "PADDINGS",
    "TV_FORMS",
    "LAYER_WEIGHTINGS",
    "SIZE_RULES",
    "COLOR_MODES",
    "MATCH_MODES",
    "LUM_MATCH_MODES",
    "INITS",
    "NETWORK_OPS",
    "NETWORK_CONVS",
    "PRECISIONS",
    "STYLE_LOSSES",
    "style_loss_kinds",
    "PRESETS",
    "WARM_STARTS",
    "MIN_SIDE",
    "LossConfig",
    "SolverConfig",
    "SolveOptions",
    "ColorConfig",
    "SpatialConfig",
    "ProblemSpec",
    "preset",
    "split_kwargs",
]

DEFAULT_CONTENT_LAYERS = ("relu4_2",)
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
SOLVERS = ("lbfgs", "jaxopt", "jaxopt-lbfgs", "optax-lbfgs", "adam")
BOUNDS = ("auto", "clamp", "project")  # how optax-lbfgs / jaxopt-lbfgs keep the image in its box
POOLINGS = ("max", "avg")
GRAM_NORMS = ("hw", "chw", "none")
SPATIAL_MODES = ("gram", "sums", "sums+gram", "stacked")
PROPAGATIONS = ("simple", "area", "inside", "all")
POOL_ROUNDINGS = ("floor", "ceil")  # = vgg.POOL_ROUNDINGS (config imports nothing of the package)
PADDINGS = ("zero", "reflect", "replicate", "reflect-first", "replicate-first")  # = vgg.PADDINGS
TV_FORMS = ("sum", "neural-style")
LAYER_WEIGHTINGS = ("inv_c2", "ones", "equal")
SIZE_RULES = ("longest", "area")
COLOR_MODES = ("none", "luminance", "match-style", "match-content", "original")
MATCH_MODES = ("chol", "pca", "sym")
LUM_MATCH_MODES = ("meanstd", "mean", "none")
INITS = ("content", "noise", "style")
NETWORK_OPS = ("auto", "lax", "lean")
#: Convolution forms of the network (:mod:`nst_jax.winograd`; "auto" per backend, :mod:`nst_jax.backend`).
NETWORK_CONVS = ("auto", "lax", "winograd")
PRECISIONS = ("auto", "highest", "high", "default", "tensorfloat32", "bfloat16")
LOOPS = ("auto", "while", "host")
MEMBERS = ("auto", "vmap", "unroll")
COMPUTE_DTYPES = (None, "float32", "bfloat16")
#: Style loss kinds (:mod:`nst_jax.style_losses`): Gram matrices, Gaussian 2-Wasserstein, sliced Wasserstein, histogram.
STYLE_LOSSES = ("gram", "w2", "sliced", "hist")
#: The style loss kinds each spatial mode combines with (guided per region: "gram" and "w2" in the "gram" mode).
_SPATIAL_KINDS = {
    "gram": ("gram", "w2"),
    "sums": ("gram",), "sums+gram": ("gram",), "stacked": ("gram",),
}
WARM_STARTS = ("auto", "off")  # multi-resolution warm start of a single-size run (nst_jax.warmstart)

#: Smallest image side (px), before and after resizing: VGG halves the size 4 times before relu5_1.
MIN_SIDE = 16
#: Largest seed accepted (seeds feed ``jax.random.PRNGKey``, which takes 32-bit values).
MAX_SEED = 2 ** 32 - 1
#: Largest image side (px) a problem accepts (JPEG's and WebP's limit; one float copy of such an image is 48 GiB).
MAX_SIDE = 65535
#: Largest iteration count and history (the solvers count iterations and f+g evaluations in int32).
MAX_COUNT = 2 ** 31 - 2

PRESETS: Dict[str, Dict[str, Any]] = {
    # the 2017 paper's code: Gram / (H W), layer weights 1/C_l^2, alpha 1, beta 1e3, guided sums 1e9 (SpatialControl)
    "gatys": dict(content_weight=1.0, style_weight=1e3, tv_weight=0.0, gram_norm="hw", layer_weights="inv_c2",
                  sums_weight=1e9, input_scale=255.0, tv_form="sum"),
    # its notebooks' "norm net" cells: style 1e9 split equally over the layers, content 1e6 (no official sums weight)
    "gatys-normalized": dict(content_weight=1e6, style_weight=1e9, tv_weight=0.0, gram_norm="hw",
                             layer_weights="equal", sums_weight=1e9, input_scale=255.0, tv_form="sum"),
    # neural_style.lua: Gram / (C H W), layer weights 1, content 5, style 100, TV 1e-3 in its form, x256 input
    "neural-style": dict(content_weight=5.0, style_weight=100.0, tv_weight=1e-3, gram_norm="chw",
                         layer_weights="ones", sums_weight=1e9, input_scale=256.0, tv_form="neural-style"),
}


class SettingError(ValueError):
    """A refused setting. ``setting`` is its name (the keyword argument; the CLI flag without ``--``), ``template``
    the message with ``{setting}`` where the name goes: ``str(e)`` uses the keyword, :meth:`for_flag` the flag.

    Example:
      >>> e = SettingError("save_every", "{setting} must be an integer >= 1, got 0")
      >>> str(e), e.for_flag()
      ('save_every must be an integer >= 1, got 0', '--save-every must be an integer >= 1, got 0')
    """

    def __init__(self, setting: str, template: str):
        self.setting, self.template = setting, template
        super().__init__(template.format(setting=setting))

    def for_flag(self) -> str:
        """The message naming the command-line flag (``--save-every``) instead of the keyword."""
        return self.template.format(setting="--" + self.setting.replace("_", "-"))


# --------------------------------------------------------------------------------------------------- checks

def _choice(setting: str, value, choices: Sequence) -> None:
    if value not in choices:
        shown = ", ".join(str(c) for c in choices)
        raise SettingError(setting, f"{{setting}} must be one of {shown}, got {value!r}")


def _int(setting: str, value, lo: int, hi: Optional[int] = None, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= lo and (
        hi is None or value <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        raise SettingError(setting, f"{{setting}} must be an integer {rng}, got {value!r}")


def _number(setting: str, value, *, positive: bool = False, optional: bool = False) -> None:
    """A finite real number, >= 0 (or > 0 with ``positive``)."""
    if optional and value is None:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) and (
        float(value) > 0 if positive else float(value) >= 0)
    if not ok:
        raise SettingError(setting, f"{{setting}} must be a finite number {'> 0' if positive else '>= 0'}, "
                                    f"got {value!r}")


def _reals(setting: str, value, what: str) -> Tuple[float, ...]:
    """A sequence of finite real numbers >= 0 (not complex, strings or booleans) as a tuple of floats."""
    try:
        items = list(value.reshape(-1)) if hasattr(value, "reshape") else list(value)
    except TypeError:
        raise SettingError(setting, f"{what} ({{setting}}) must be a sequence of numbers, got {value!r}") from None
    bad = [v for v in items if isinstance(v, (bool, str, bytes)) or not isinstance(v, numbers.Real)
           or not math.isfinite(float(v)) or float(v) < 0]
    if bad:
        raise SettingError(setting, f"{what} ({{setting}}) must be finite real numbers >= 0, got {bad[0]!r}")
    return tuple(float(v) for v in items)


def _layers(setting: str, value, allow_empty: bool) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    names = tuple(str(v).strip() for v in value)
    if any(not n for n in names) or (not names and not allow_empty):
        raise SettingError(setting, f"{{setting}} must be layer names such as relu4_2, got {list(value)!r}")
    return names


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


def style_loss_kinds(value) -> Tuple[str, ...]:
    """Style loss kinds as a tuple: ``"gram,w2"`` or a sequence, each of :data:`STYLE_LOSSES` once.

    Example:
      >>> style_loss_kinds("w2, sliced"), style_loss_kinds(["gram"])
      (('w2', 'sliced'), ('gram',))
    """
    kinds = tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else tuple(value)
    bad = [k for k in kinds if k not in STYLE_LOSSES]
    if not kinds or bad or len(set(kinds)) != len(kinds):
        raise SettingError("style_loss", f"{{setting}} takes distinct kinds of {', '.join(STYLE_LOSSES)} "
                                         f"(comma-separated), got {value!r}")
    return kinds


# --------------------------------------------------------------------------------------------------- loss, solver

@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Static structure of the loss (hashable: part of the compile key). Numbers that vary live in ``Weights``.

    Attributes:
      content_layers / style_layers: layer names (checked against a network by :meth:`check_layers`).
      pooling: "max" or "avg".
      gram_norm: "hw" (G = F^T F / (H W), gatys), "chw" (/ (C H W), neural-style) or "none".
      channels: 3 for RGB, 1 for luminance-only transfer (the 1-channel variable is replicated to RGB for VGG).
      spatial: None, or "gram" | "sums" | "sums+gram" | "stacked" (guided losses, Gatys et al. 2017).
      remat: rematerialise VGG blocks in the backward pass (False, True, or a ``jax.checkpoint_policies`` name).
      compute_dtype: None (float32) or "bfloat16" activations (losses and optimiser state stay float32).
      ops: network op path, "lax" (plain ``lax`` ops, the reference), "lean" (memory-lean custom derivatives,
        :mod:`nst_jax.lean_ops`) or "auto" (per backend, :mod:`nst_jax.backend`).
      conv: the 3x3 convolutions' form, "lax" (``lax.conv_general_dilated``, the reference), "winograd" (Winograd
        F(4x4, 3x3) on the layers where :func:`nst_jax.winograd.worthwhile` measured it cheaper, ``lax`` elsewhere)
        or "auto" (per backend). Equal values to a few 1e-6 of their scale.
      precision: float32 matmul/convolution precision of the network: a ``jax.default_matmul_precision`` name
        ("highest", "high", "default", "tensorfloat32", "bfloat16") or "auto" (per backend).
      pool_rounding: odd sizes at the pools, "floor" (Keras' VGG) or "ceil" (Caffe's, the official codes').
      padding: the convs' padding, "zero", "reflect" (the official 2017 code's ``-reflectance``), "replicate", or
        "reflect-first" / "replicate-first" (the first conv only), see :mod:`nst_jax.vgg`.
      input_scale: the network input is ``scale * BGR - mean``: 255 (Caffe) or 256 (jcjohnson/neural-style).
      tv_form: "sum" or "neural-style" (neural_style.lua's), see :func:`nst_jax.losses.tv_loss`.
      style_losses: the style loss kinds computed, any of "gram", "w2", "sliced", "hist" (:data:`STYLE_LOSSES`), each
        weighted by its entry of ``Weights.style_losses`` (traced: mixing weights never recompile).
      sliced_projections: directions P of the sliced Wasserstein loss (None: C_l per layer, as Heitz et al.'s code).
      hist_bins: equal-mass bins of the histogram loss's targets (None: every sorted value of the style).
      normalize_gradients: divide each loss term's gradient with respect to its layer's features by its L1 norm
        (+ 1e-8) before it is weighted (jcjohnson/neural-style's ``-normalize_gradients``, :mod:`nst_jax.gradnorm`).
    """

    content_layers: Tuple[str, ...] = DEFAULT_CONTENT_LAYERS
    style_layers: Tuple[str, ...] = DEFAULT_STYLE_LAYERS
    pooling: str = "max"
    gram_norm: str = "hw"
    channels: int = 3
    spatial: Optional[str] = None
    remat: Any = False
    compute_dtype: Optional[str] = None
    ops: str = "auto"
    conv: str = "auto"
    precision: str = "auto"
    pool_rounding: str = "floor"
    padding: str = "zero"
    input_scale: float = 255.0
    tv_form: str = "sum"
    style_losses: Tuple[str, ...] = ("gram",)
    sliced_projections: Optional[int] = None
    hist_bins: Optional[int] = 256
    normalize_gradients: bool = False

    def __post_init__(self):
        _set(self, "content_layers", _layers("content_layers", self.content_layers, allow_empty=True))
        _set(self, "style_layers", _layers("style_layers", self.style_layers, allow_empty=True))
        if not self.content_layers and not self.style_layers:
            raise SettingError("style_layers", "{setting} and content layers are both empty; give at least one layer")
        _choice("pooling", self.pooling, POOLINGS)
        _choice("gram_norm", self.gram_norm, GRAM_NORMS)
        _choice("channels", self.channels, (1, 3))
        _choice("spatial", self.spatial, (None,) + SPATIAL_MODES)
        _choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        _choice("ops", self.ops, NETWORK_OPS)
        _choice("conv", self.conv, NETWORK_CONVS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("pool_rounding", self.pool_rounding, POOL_ROUNDINGS)
        _choice("padding", self.padding, PADDINGS)
        _number("input_scale", self.input_scale, positive=True)
        _choice("tv_form", self.tv_form, TV_FORMS)
        if not (isinstance(self.remat, bool) or isinstance(self.remat, str)):
            raise SettingError("remat", f"{{setting}} must be True, False or a jax.checkpoint_policies name, "
                                        f"got {self.remat!r}")
        _set(self, "style_losses", style_loss_kinds(self.style_losses))
        _int("sliced_projections", self.sliced_projections, 1, optional=True)
        _int("hist_bins", self.hist_bins, 1, optional=True)
        if not isinstance(self.normalize_gradients, bool):
            raise SettingError("normalize_gradients", f"{{setting}} must be True or False, got "
                                                      f"{self.normalize_gradients!r}")
        allowed = _SPATIAL_KINDS.get(self.spatial, STYLE_LOSSES)
        refused = [k for k in self.style_losses if k not in allowed]
        if refused and self.spatial == "gram":
            raise SettingError("style_loss", f"{{setting}} {', '.join(refused)} has no guided variant (sorting matches "
                                             "a whole distribution; soft region guides would need weighted quantiles); "
                                             "use gram or w2 with spatial control")
        if refused:
            raise SettingError("style_loss", f"{{setting}} {', '.join(refused)} does not combine with spatial mode "
                                             f"{self.spatial!r} (its guided terms are its own); use --spatial gram for "
                                             "a guided w2, or gram alone")

    @property
    def all_layers(self) -> Tuple[str, ...]:
        """Content then style layers, each once."""
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))

    def check_layers(self, layer_names: Sequence[str]) -> None:
        """Refuse layers the network lacks; ``layer_names``: every layer of the network (``vgg.layer_names``)."""
        names = set(layer_names)
        for layer in self.all_layers:
            if layer not in names:
                relus = ", ".join(n for n in layer_names if n.startswith("relu"))
                setting = "content_layers" if layer in self.content_layers else "style_layers"
                raise SettingError(setting, f"unknown layer {layer!r} in {{setting}}; valid layers are conv/relu/pool "
                                            f"names such as relu4_2 (this network: {relus})")


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Static solver settings.

    Attributes:
      name: ``"lbfgs"`` (projected, preconditioned L-BFGS with one f+g per iteration, :mod:`nst_jax.lbfgs`),
        ``"jaxopt"`` (jaxopt.LBFGSB), ``"jaxopt-lbfgs"`` (jaxopt.LBFGS), ``"optax-lbfgs"`` (optax.lbfgs) or
        ``"adam"``.
      history: L-BFGS memory (pairs kept).
      lr: step multiplier (lbfgs; default 1.0) or learning rate (adam; default 0.02).
      chunk: iterations between host reports (progress, checkpoints); chunks never change the result.
      loop: ``"while"`` (one compiled ``lax.while_loop`` per chunk), ``"host"`` (one compiled, donated step per
        iteration dispatched from Python, read back once per chunk) or ``"auto"`` (:mod:`nst_jax.backend`).
      members: how a sweep evaluates its K losses, ``"vmap"`` (one batched network pass), ``"unroll"`` (K
        single-image passes side by side in one program, :mod:`nst_jax.batching`) or ``"auto"``.
      precondition: start each L-BFGS recursion from a smoothing filter ``gamma P`` instead of ``gamma I``
        (``"lbfgs"`` only).
      first_step: largest pixel change of the first (gradient) step, images in [0, 1] (every L-BFGS solver; None:
        the solver's default, :mod:`nst_jax.solvers`). The line-search solvers get it by scaling the objective.
      max_linesearch: at most this many f+g per (zoom) line search (None: the solver's default).
      bounds: how ``optax-lbfgs`` and ``jaxopt-lbfgs`` keep the image in [0, 1]: ``"clamp"`` (optimise an
        unconstrained ``u``, evaluate the loss at ``clip(u, 0, 1)`` and report ``clip(u)``, as PyTorch runs Gatys),
        ``"project"`` (``optax-lbfgs`` only: project after each line search) or ``"auto"`` (clamp). ``jaxopt`` keeps
        true bounds, ``lbfgs`` and ``adam`` project.
      ema: None, or the decay d in (0, 1) of an exponential moving average of the iterates, returned as the result
        (:class:`nst_jax.solvers.EMASolver`: crowsonkb/style-transfer-pytorch's bias-corrected average).
    """

    name: str = "lbfgs"
    history: int = 100
    lr: Optional[float] = None
    chunk: int = 25
    loop: str = "auto"
    members: str = "auto"
    precondition: bool = True
    first_step: Optional[float] = None
    max_linesearch: Optional[int] = None
    bounds: str = "auto"
    ema: Optional[float] = None

    def __post_init__(self):
        if self.name not in SOLVERS:
            raise SettingError("solver", f"unknown {{setting}} {self.name!r}; choose one of {', '.join(SOLVERS)}")
        _int("history", self.history, 1, MAX_COUNT)
        _number("lr", self.lr, positive=True, optional=True)
        _int("chunk", self.chunk, 1)
        _choice("loop", self.loop, LOOPS)
        _choice("members", self.members, MEMBERS)
        if not isinstance(self.precondition, bool):
            raise SettingError("precondition", f"{{setting}} must be True or False, got {self.precondition!r}")
        _number("first_step", self.first_step, positive=True, optional=True)
        _int("max_linesearch", self.max_linesearch, 1, optional=True)
        _choice("bounds", self.bounds, BOUNDS)
        if self.bounds == "project" and self.name != "optax-lbfgs":
            raise SettingError("bounds", f"{{setting}} 'project' is for optax-lbfgs ({self.name} keeps its own box)")
        if self.bounds == "clamp" and self.name not in ("optax-lbfgs", "jaxopt-lbfgs"):
            raise SettingError("bounds", f"{{setting}} 'clamp' is for optax-lbfgs and jaxopt-lbfgs, not {self.name}")
        if self.ema is not None and not (isinstance(self.ema, numbers.Real) and not isinstance(self.ema, bool)
                                         and 0.0 < float(self.ema) < 1.0):
            raise SettingError("ema", f"{{setting}} must be a decay between 0 and 1 (e.g. 0.9), got {self.ema!r}")

    @property
    def step(self) -> float:
        """The step multiplier or learning rate in effect."""
        if self.lr is not None:
            return float(self.lr)
        return 0.02 if self.name == "adam" else 1.0


@dataclasses.dataclass(frozen=True)
class SolveOptions:
    """How one solve runs (everything but the problem and the run's files).

    Attributes:
      iters: solver iterations (``lbfgs``/``adam``: one f+g each; line-search solvers use more).
      init: ``"content"``, ``"noise"`` (uniform, from ``seed``), ``"style"``, or an image path / [H, W, 3] array.
      seed: PRNG seed of ``init="noise"`` (0 .. 2^32 - 1).
      solver: a :class:`SolverConfig`.
      progress: show a progress bar.
      save_every: call ``callback(iteration, image_HW3)`` every N iterations.
      checkpoint_every: write a checkpoint every N iterations (with a checkpoint path, see ``solve_problem``).
      report_seconds: report progress (and poll for interruption) about this often; chunks of iterations are sized
        to it, at most ``solver.chunk`` iterations each (chunking never changes the result).
      warm_start: ``"auto"`` (solve first at 1/4 and 1/2 of the size when the size and ``iters`` allow, then
        ``iters`` iterations at full size, :mod:`nst_jax.warmstart`) or ``"off"``; single-image runs
        (``nst_jax.stylize``) only.
      callback: ``callback(iteration, image_HW3)`` for intermediate saves.
      print_every: print one line with the loss and its content, style and TV terms every N iterations (stdout).
      verbose: with ``print_every``, the term of every layer too.
    """

    iters: int = 500
    init: Any = "content"
    seed: int = 0
    solver: SolverConfig = SolverConfig()
    progress: bool = True
    save_every: Optional[int] = None
    checkpoint_every: Optional[int] = None
    report_seconds: float = 1.0
    warm_start: str = "off"
    callback: Optional[Callable] = dataclasses.field(default=None, compare=False)
    print_every: Optional[int] = None
    verbose: bool = False

    def __post_init__(self):
        _int("iters", self.iters, 0, MAX_COUNT)
        _int("print_every", self.print_every, 1, optional=True)
        if not isinstance(self.verbose, bool):
            raise SettingError("verbose", f"{{setting}} must be True or False, got {self.verbose!r}")
        _choice("warm_start", self.warm_start, WARM_STARTS)
        _int("seed", self.seed, 0, MAX_SEED)
        _int("save_every", self.save_every, 1, optional=True)
        _int("checkpoint_every", self.checkpoint_every, 1, optional=True)
        _number("report_seconds", self.report_seconds, positive=True)
        if not isinstance(self.solver, SolverConfig):
            raise SettingError("solver", f"{{setting}} must be a SolverConfig, got {type(self.solver).__name__}")
        if isinstance(self.init, str) and self.init not in INITS and not _looks_like_path(self.init):
            raise SettingError("init", f"{{setting}} must be 'content', 'noise', 'style' or an image file, "
                                      f"got {self.init!r}")

    @property
    def chunk_ends(self) -> Tuple[int, ...]:
        """Iteration counts whose multiples must end a chunk: where saves and checkpoints fall."""
        return tuple(v for v in (self.save_every, self.checkpoint_every, self.print_every if self.verbose else None)
                     if v)


def _looks_like_path(text: str) -> bool:
    """A file name (it has a suffix or a folder), as opposed to a misspelt init mode."""
    return bool(os.path.splitext(text)[1]) or os.sep in text or "/" in text


# --------------------------------------------------------------------------------------------------- controls

@dataclasses.dataclass(frozen=True)
class ColorConfig:
    """Colour control (Gatys et al. 2017, Sec. 5), see :mod:`nst_jax.color`.

    Attributes:
      mode: "none", "luminance" (luminance-only transfer), "match-style" (recolour the style to the content),
        "match-content" (recolour the content to the style) or "original" (keep the content's colours afterwards).
      match_mode: colour matching transform, "chol", "pca" or "sym".
      lum_match: luminance matching of the style to the content, "meanstd" (the paper's), "mean" or "none".
    """

    mode: str = "none"
    match_mode: str = "pca"
    lum_match: str = "meanstd"

    def __post_init__(self):
        for setting, what, value, choices in (("color", "colour mode", self.mode, COLOR_MODES),
                                              ("match_mode", "colour match mode", self.match_mode, MATCH_MODES),
                                              ("lum_match", "luminance match mode", self.lum_match, LUM_MATCH_MODES)):
            if value not in choices:
                raise SettingError(setting, f"unknown {what} {value!r} ({{setting}}); choose one of "
                                            f"{', '.join(choices)}")

    @property
    def channels(self) -> int:
        """Channels of the optimised variable: 1 for luminance-only transfer, else 3."""
        return 1 if self.mode == "luminance" else 3


@dataclasses.dataclass(frozen=True)
class SpatialConfig:
    """Spatial control (Gatys et al. 2017, Sec. 4), see :mod:`nst_jax.guidance`.

    Regions are named. Give the content's regions as ``content_masks`` ``{region: path or [H, W] array}`` or as one
    colour-coded ``content_labels`` image with a ``legend``; each style image's regions as ``style_masks`` (one
    ``{region: mask}`` or None per style; None lends the whole image to the regions assigned to it) or
    ``style_labels``.

    Attributes:
      mode: guided loss, "gram", "sums", "sums+gram" or "stacked".
      region_to_style: ``{region: style index}`` (default: each region from the one style naming it).
      propagation: guides to each layer, "simple" (the official code's cubic resize), "area" (2x2 means per pooling),
        "inside" or "all" (:mod:`nst_jax.guidance`); ``erode``: extra erosion (> 0) or dilation (< 0) in feature
        pixels (the official code's ``k`` is ``-erode``); ``threshold``: binarisation of the binary modes (and of
        "simple" with ``erode``); ``global_channel``: add an all-ones guide.
      guide_scale: stacked mode's scale of the guide channels (default: the style's mean activation per layer).
      region_weights: one weight per region (default 1/R).
    """

    mode: str = "gram"
    content_masks: Optional[Mapping[str, Any]] = None
    style_masks: Optional[Sequence[Any]] = None
    content_labels: Any = None
    style_labels: Optional[Sequence[Any]] = None
    legend: Any = None
    region_to_style: Optional[Mapping[str, int]] = None
    propagation: str = "simple"
    erode: int = 0
    threshold: float = 0.5
    global_channel: bool = False
    guide_scale: Optional[float] = None
    region_weights: Optional[Sequence[float]] = None

    def __post_init__(self):
        if self.mode not in SPATIAL_MODES:
            raise SettingError("spatial", f"unknown {{setting}} mode {self.mode!r}; choose one of "
                                          f"{', '.join(SPATIAL_MODES)}")
        if self.propagation not in PROPAGATIONS:
            raise SettingError("propagation", f"unknown guide {{setting}} {self.propagation!r}; choose one of "
                                              f"{', '.join(PROPAGATIONS)}")
        _int("erode", self.erode, -10 ** 6, 10 ** 6)
        if not (isinstance(self.threshold, numbers.Real) and 0.0 < float(self.threshold) <= 1.0):
            raise SettingError("threshold", f"{{setting}} must be a number in (0, 1], got {self.threshold!r}")
        _number("guide_scale", self.guide_scale, positive=True, optional=True)
        if self.region_weights is not None:
            _set(self, "region_weights", _reals("region_weights", self.region_weights, "region weights"))
        if self.content_labels is not None and self.content_masks:
            raise SettingError("content_labels", "give the content regions either as masks or as a label image "
                                                 "({setting}), not both")
        if self.content_labels is not None and not self.legend:
            raise SettingError("legend", "a label image needs a {setting}: region=colour pairs such as "
                                         "'sky=#87ceeb;ground=#228b22'")

    @property
    def summary(self) -> Dict[str, Any]:
        """The scalar settings (for the settings written beside an output)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if isinstance(v, (str, int, float, bool, type(None)))}


# --------------------------------------------------------------------------------------------------- the problem

def preset(name: str) -> Dict[str, Any]:
    """The settings of a named loss convention (see :data:`PRESETS`).

    Example:
      >>> preset("gatys")["style_weight"], preset("neural-style")["gram_norm"], preset("neural-style")["input_scale"]
      (1000.0, 'chw', 256.0)
    """
    if name not in PRESETS:
        raise SettingError("preset", f"unknown {{setting}} {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
    """What a transfer is made of (everything but the images): network, sizes, loss weights, layers and controls.

    Attributes:
      weights: a weight source name or file (see ``nst-jax weights list``) or a params tree.
      size: longest side of the output in pixels (None: the content's own size); at least 16.
      size_rule: how ``size`` sizes the content: "longest" (its longest side becomes ``size``) or "area" (the official
        notebooks' rule, :func:`nst_jax.problem.fit_area`: area ~``size^2``, sides rounded up, never upscaled). The
        styles' longest side follows the content's either way (times ``style_scale``).
      style_scale: the style images' longest side relative to the content's.
      preset: "gatys", "gatys-normalized" or "neural-style" (:data:`PRESETS`): the defaults of the loss weights, the
        Gram normalisation, the input scale and the TV form.
      content_weight / style_weight / tv_weight: α, β and the total-variation weight (None: the preset's).
      sums_weight: the weight of the guided sums of spatial control ("sums" and "sums+gram"; None: the preset's,
        1e9 as in the official code), applied with the style layer weights and the region weights like β.
      style_blend: one weight per style image (blended Gram targets); None: equal.
      content_layers / style_layers: layer names (None: relu4_2 and relu1_1 .. relu5_1).
      layer_weights: per style layer: "inv_c2" (1/C_l^2), "ones", "equal" (1/L), a sequence, or None (the preset's).
      pooling: "max" or "avg" (the 2016 paper's choice).
      pool_rounding: "auto" (the weights' convention: "ceil" for weights converted from Caffe, else "floor"),
        "floor" or "ceil" (see :class:`LossConfig`).
      padding: the convs' padding (see :class:`LossConfig`).
      freeze_mask: None, or a mask (file or [H, W] array at the content's size) whose non-zero pixels keep their
        initial value (the official code's ``-mask_file``; in a coarse-to-fine run, each level's initial image):
        resized to the working size by nearest neighbour.
      color: a :class:`ColorConfig` (or its mode as a string).
      spatial: a :class:`SpatialConfig` (or a dict of its fields), or None.
      remat, compute_dtype, ops, conv, precision: as :class:`LossConfig`.
      style_loss: the style loss kinds, e.g. "gram" (default), "w2", "gram,w2" (see :class:`LossConfig`).
      style_loss_weights: one weight per kind (None: each kind's default, :data:`nst_jax.objective.STYLE_LOSS_WEIGHTS`,
        calibrated so that each kind alone at the preset's style weight stylises).
      sliced_projections, hist_bins, normalize_gradients: as :class:`LossConfig`.
      sliced_seed: the seed of the sliced Wasserstein loss's projections (drawn once, when the targets are made).
      style_ref_size: None, or the reference size (px) of the resolution rule: the layer weights are rescaled for
        the working size so that the result looks as it would at this size (:func:`nst_jax.objective.resolution_factors`).
    """

    weights: Any = "auto"
    size: Optional[int] = 512
    size_rule: str = "longest"
    style_scale: float = 1.0
    preset: str = "gatys"
    content_weight: Optional[float] = None
    style_weight: Optional[float] = None
    tv_weight: Optional[float] = None
    style_blend: Optional[Sequence[float]] = None
    content_layers: Optional[Sequence[str]] = None
    style_layers: Optional[Sequence[str]] = None
    layer_weights: Any = None
    pooling: str = "max"
    color: Any = ColorConfig()
    spatial: Any = None
    remat: Any = False
    compute_dtype: Optional[str] = None
    ops: str = "auto"
    conv: str = "auto"
    precision: str = "auto"
    sums_weight: Optional[float] = None
    pool_rounding: str = "auto"
    padding: str = "zero"
    freeze_mask: Any = None
    style_loss: Any = ("gram",)
    style_loss_weights: Optional[Sequence[float]] = None
    sliced_projections: Optional[int] = None
    hist_bins: Optional[int] = 256
    sliced_seed: int = 0
    normalize_gradients: bool = False
    style_ref_size: Optional[int] = None

    def __post_init__(self):
        preset(self.preset)
        if self.size is not None and not (isinstance(self.size, numbers.Integral) and not isinstance(self.size, bool)
                                          and self.size >= MIN_SIDE):
            raise SettingError("size", f"{{setting}} must be at least {MIN_SIDE} px (the network halves the image 4 "
                                       f"times), got {self.size!r}")
        if self.size is not None and self.size > MAX_SIDE:
            raise SettingError("size", f"{{setting}} must be at most {MAX_SIDE} px, got {self.size!r}")
        _choice("size_rule", self.size_rule, SIZE_RULES)
        _number("style_scale", self.style_scale, positive=True)
        for setting in ("content_weight", "style_weight", "tv_weight", "sums_weight"):
            _number(setting, getattr(self, setting), optional=True)
        _choice("pool_rounding", self.pool_rounding, ("auto",) + POOL_ROUNDINGS)
        if isinstance(self.color, str):
            _set(self, "color", ColorConfig(mode=self.color))
        elif not isinstance(self.color, ColorConfig):
            raise SettingError("color", f"{{setting}} must be a colour mode or a ColorConfig, got {self.color!r}")
        if isinstance(self.spatial, Mapping):
            _set(self, "spatial", SpatialConfig(**self.spatial))
        elif self.spatial is not None and not isinstance(self.spatial, SpatialConfig):
            raise SettingError("spatial", f"{{setting}} must be a SpatialConfig, a dict of its fields or None, "
                                          f"got {self.spatial!r}")
        for setting in ("content_layers", "style_layers"):
            value = getattr(self, setting)
            if value is not None:
                _set(self, setting, _layers(setting, value, allow_empty=setting == "content_layers"))
        if self.style_blend is not None:
            _set(self, "style_blend", _reals("style_blend", self.style_blend, "style blend weights"))
        _set(self, "style_loss", style_loss_kinds(self.style_loss))
        if self.style_loss_weights is not None:
            _set(self, "style_loss_weights", _reals("style_loss_weights", self.style_loss_weights, "style loss weights"))
        _int("sliced_seed", self.sliced_seed, 0, MAX_SEED)
        _int("style_ref_size", self.style_ref_size, MIN_SIDE, optional=True)
        if isinstance(self.layer_weights, str):
            _choice("layer_weights", self.layer_weights, LAYER_WEIGHTINGS)
        elif self.layer_weights is not None:
            _set(self, "layer_weights", _reals("layer_weights", self.layer_weights, "layer weights"))
        self.loss_config()  # validates pooling, layers, remat, compute dtype, ops, conv, padding

    def loss_config(self, weights_pool_rounding: str = "floor") -> LossConfig:
        """The static loss structure this problem compiles to; ``weights_pool_rounding``: the weights' own convention
        (``WeightsInfo.pool_rounding``), which ``pool_rounding="auto"`` takes."""
        pre = PRESETS[self.preset]
        return LossConfig(
            content_layers=DEFAULT_CONTENT_LAYERS if self.content_layers is None else self.content_layers,
            style_layers=DEFAULT_STYLE_LAYERS if self.style_layers is None else self.style_layers,
            pooling=self.pooling, gram_norm=pre["gram_norm"], channels=self.color.channels,
            spatial=None if self.spatial is None else self.spatial.mode, remat=self.remat,
            compute_dtype=self.compute_dtype, ops=self.ops, conv=self.conv, precision=self.precision,
            pool_rounding=weights_pool_rounding if self.pool_rounding == "auto" else self.pool_rounding,
            padding=self.padding, input_scale=pre["input_scale"], tv_form=pre["tv_form"],
            style_losses=self.style_loss, sliced_projections=self.sliced_projections, hist_bins=self.hist_bins,
            normalize_gradients=self.normalize_gradients)

    def weight_settings(self) -> Dict[str, Any]:
        """Content, style, TV and sums weight and the layer weights: the given ones, else the preset's."""
        pre = PRESETS[self.preset]
        return {key: pre[key] if getattr(self, key) is None else getattr(self, key)
                for key in ("content_weight", "style_weight", "tv_weight", "sums_weight", "layer_weights")}

    def summary(self) -> Dict[str, Any]:
        """The settings written beside an output (JSON-able; the weights as their name, a freeze mask as its path
        or "array")."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("weights", "color", "spatial", "freeze_mask")}
        out.update(self.weight_settings())
        cfg = self.loss_config()
        out.update(color=self.color.mode, match_mode=self.color.match_mode, lum_match=self.color.lum_match,
                   gram_norm=cfg.gram_norm, content_layers=cfg.content_layers, style_layers=cfg.style_layers,
                   input_scale=cfg.input_scale, tv_form=cfg.tv_form)
        if self.freeze_mask is not None:
            out["freeze_mask"] = os.fspath(self.freeze_mask) if isinstance(self.freeze_mask, (str, os.PathLike)) \
                else "array"
        for key in ("style_blend", "content_layers", "style_layers", "layer_weights", "style_loss",
                    "style_loss_weights"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        return out


# --------------------------------------------------------------------------------------------------- keywords

_COLOR_KEYS = {"color": "mode", "match_mode": "match_mode", "lum_match": "lum_match"}
_SOLVER_KEYS = {"solver": "name", "history": "history", "lr": "lr", "chunk": "chunk", "loop": "loop",
                "members": "members", "precondition": "precondition", "first_step": "first_step",
                "max_linesearch": "max_linesearch", "bounds": "bounds", "ema": "ema"}


def split_kwargs(spec: Optional[ProblemSpec] = None, options: Optional[SolveOptions] = None,
                 **kwargs) -> Tuple[ProblemSpec, SolveOptions]:
    """Apply flat keyword arguments to a problem and its solve options; returns the new ``(spec, options)``.

    Each keyword is a field of :class:`ProblemSpec`, :class:`SolveOptions`, :class:`ColorConfig` (``color`` for
    its mode, ``match_mode``, ``lum_match``) or :class:`SolverConfig` (``solver`` for its name, ``history``,
    ``lr``, ``chunk``, ``loop``, ``members``, ``precondition``, ``first_step``, ``max_linesearch``,
    ``bounds``, ``ema``). An unknown keyword raises ``TypeError``.

    Example:
      >>> spec, opts = split_kwargs(size=256, color="luminance", iters=10, solver="adam", lr=0.05)
      >>> spec.size, spec.color.mode, opts.iters, opts.solver.name, opts.solver.lr
      (256, 'luminance', 10, 'adam', 0.05)
    """
    spec = ProblemSpec() if spec is None else spec
    options = SolveOptions() if options is None else options
    spec_keys = {f.name for f in dataclasses.fields(ProblemSpec)} - {"color"}
    opt_keys = {f.name for f in dataclasses.fields(SolveOptions)} - {"solver"}
    problem_kw, option_kw, color_kw, solver_kw = {}, {}, {}, {}
    for key, value in kwargs.items():
        if key == "color" and isinstance(value, ColorConfig):
            problem_kw["color"] = value
        elif key == "solver" and isinstance(value, SolverConfig):
            option_kw["solver"] = value
        elif key in _COLOR_KEYS:
            color_kw[_COLOR_KEYS[key]] = value
        elif key in _SOLVER_KEYS:
            solver_kw[_SOLVER_KEYS[key]] = value
        elif key in spec_keys:
            problem_kw[key] = value
        elif key in opt_keys:
            option_kw[key] = value
        else:
            known = sorted(spec_keys | opt_keys | set(_COLOR_KEYS) | set(_SOLVER_KEYS))
            raise TypeError(f"unexpected keyword argument {key!r}; known: {', '.join(known)}")
    if color_kw:
        problem_kw["color"] = dataclasses.replace(problem_kw.get("color", spec.color), **color_kw)
    if solver_kw:
        option_kw["solver"] = dataclasses.replace(option_kw.get("solver", options.solver), **solver_kw)
    return dataclasses.replace(spec, **problem_kw), dataclasses.replace(options, **option_kw)
