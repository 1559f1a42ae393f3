"""Scale control (Gatys et al. 2017, Section 6): coarse-to-fine synthesis and style mixing across scales.

* :func:`scale_schedule` -- the image sizes of a coarse-to-fine run: explicit longest sides, the official code's two
  levels by pixel area (~512^2 then ~1024^2, sides rounded up, a small image never upscaled:
  :func:`nst_jax.problem.fit_area`), or automatic steps by ``factor`` from ``min_size`` up to ``size``.
* :func:`stylize_pyramid` -- coarse-to-fine transfer: each level re-prepares the problem at its size (targets
  recomputed from the full-resolution inputs, the same colour and spatial control at every level) and starts from
  the previous level's optimised image upsampled to the new size (the first level starts from ``init``). The
  paper uses this for high-resolution results: the coarse level fixes the large-scale structure that a direct
  high-resolution solve (whose receptive fields are then small relative to the image) would not produce.
* :func:`mix_styles` -- a *new style image* (paper Fig. 5): start from the coarse-scale style image and match, with
  no content loss, only the Gram matrices of the lower layers (relu1_1 up to ``fine_layers``' last) of the fine-scale
  style image, each layer weighted equally (β / L, as the official code), so the large-scale structure of the coarse
  style survives while its fine texture is replaced. :func:`mixed_style` is the official procedure's step at one
  size: both styles recoloured to the content (PCA) at the working size, relu1_1..relu2_1 at ~512^2 and
  relu1_1..relu4_1 at ~1024^2; :func:`stylize_pyramid` with ``mix_with`` re-mixes at every level (500, then 200
  iterations), as the official code does at its high-resolution level.
* :func:`mixed_targets_transfer` -- the one-pass variant: a single transfer whose Gram targets come from the fine
  style on shallow layers (up to ``split_layer``) and from the coarse style on the deeper layers.

Every level is an ordinary solve of a prepared problem, so each image size compiles once and a second run at the
same sizes compiles nothing.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import jax.numpy as jnp
import numpy as np

from nst_jax import color as C
from nst_jax import image as I
from nst_jax import vgg
from nst_jax.config import DEFAULT_STYLE_LAYERS, ProblemSpec, SolveOptions, split_kwargs
from nst_jax.objective import GramTargets
from nst_jax.problem import Problem, fit_area, load_input, prepare, spec_with_params, weights_settings
from nst_jax.transfer import LevelsResult, Result, solve_levels, solve_problem

__all__ = [
    "PAPER_AREAS",
    "PAPER_SIDES",
    "PyramidResult",
    "scale_schedule",
    "default_iters",
    "stylize_pyramid",
    "default_fine_layers",
    "mix_styles",
    "mixed_style",
    "mixed_targets_transfer",
]

# The paper's two levels (Section 6): the first pass at ~512^2 pixels, the second at ~1024^2 (the official code's
# img_size 512 and hr_img_size 1024, applied by fit_area).
PAPER_SIDES = (512, 1024)
PAPER_AREAS = (512 * 512, 1024 * 1024)
# mix_styles picks the fine-scale layers by pixel area: below the geometric mean of the two paper areas up to
# relu2_1 (the paper's 512^2 setting), above it up to relu4_1 (its 1024^2 setting).
_FINE_LAYERS_SMALL = ("relu1_1", "relu2_1")
_FINE_LAYERS_LARGE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
_FINE_AREA_SPLIT = 512 * 1024


#: The result of a coarse-to-fine run (:class:`nst_jax.transfer.LevelsResult`: the last level's image, the whole
#: run's trace with cumulative ``iter``, ``fg`` and ``seconds`` and each entry's ``level``, ``levels`` and ``inits``).
PyramidResult = LevelsResult


# --------------------------------------------------------------------------------------------------- schedule

def _levels(content_shape_HW, scales, size, auto_scales, factor, min_size) -> Tuple[List[Tuple[int, int]], List[int],
                                                                                   str]:
    """(shapes, each level's ``ProblemSpec.size``, the ``size_rule`` that makes them) of :func:`scale_schedule`."""
    shape = I.fit_shape(content_shape_HW)  # validates (H, W)
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1):
        raise ValueError(f"scale factor must be a number > 1, got {factor!r}")
    if size is not None and (not isinstance(size, (int, np.integer)) or size < 16):
        raise ValueError(f"size must be an integer >= 16 pixels, got {size!r}")
    if scales is not None:
        if auto_scales:
            raise ValueError("give either explicit scales or auto_scales, not both")
        sides = [int(s) if isinstance(s, (int, np.integer)) and not isinstance(s, bool) else s for s in scales]
        if not sides or any(not isinstance(s, int) or s < 16 for s in sides):
            raise ValueError(f"scales must be a non-empty list of integer sizes >= 16 pixels, got {list(scales)!r}")
        if any(b <= a for a, b in zip(sides, sides[1:])):
            raise ValueError(f"scales must increase from coarse to fine, got {sides}")
        if size is not None and sides[-1] != size:
            raise ValueError(f"the last scale ({sides[-1]}) must equal size ({size}); drop one of them")
    elif auto_scales:
        if size is None:
            raise ValueError("auto_scales needs size (the finest level's longest side), e.g. size=1024")
        if not isinstance(min_size, (int, np.integer)) or min_size < 16:
            raise ValueError(f"min_size must be an integer >= 16 pixels, got {min_size!r}")
        sides = [int(size)]
        s = float(size)
        while s / factor >= min_size - 1e-9:
            s /= factor
            sides.insert(0, int(round(s)))
    elif size is not None:
        sides = [int(round(size / factor)), int(size)]
        if sides[0] < 16:
            raise ValueError(f"size {size} / factor {factor} is below 16 pixels; use a larger size")
    else:
        return [fit_area(shape, s) for s in PAPER_SIDES], list(PAPER_SIDES), "area"
    shapes = [I.fit_shape(shape, size=s) for s in sides]
    bigger = [f"{w}x{h}" for h, w in shapes if max(h, w) > max(shape)]
    if bigger:
        warnings.warn(f"the coarse-to-fine levels {', '.join(bigger)} px upscale the {shape[1]}x{shape[0]} px "
                      "content (the official code never upscales); give smaller scales, or none for its rule",
                      stacklevel=3)
    return shapes, sides, "longest"


def scale_schedule(
    content_shape_HW,
    *,
    scales: Optional[Sequence[int]] = None,
    size: Optional[int] = None,
    auto_scales: bool = False,
    factor: float = 2.0,
    min_size: int = 256,
) -> List[Tuple[int, int]]:
    """The (H, W) of each level of a coarse-to-fine run, coarsest first, aspect ratio of ``content_shape_HW`` kept.

    * ``scales``: explicit longest sides (strictly increasing), e.g. ``[512, 1024]``.
    * ``auto_scales=True``: ``size``, ``size / factor``, ``size / factor^2``, ... down to the last one >= ``min_size``
      (consecutive levels differ by exactly ``factor``); a single level when ``size < factor * min_size``.
    * neither, ``size`` given: two levels, longest sides ``round(size / factor)`` and ``size``.
    * neither, no ``size``: the official code's two levels, area ~512^2 then ~1024^2 with sides rounded up and a
      small content never upscaled (:func:`nst_jax.problem.fit_area`).

    Levels given by longest sides are what :func:`nst_jax.transfer.prepare` produces for ``size=max(H, W)``; one that
    is larger than the content warns (it upscales the content, which the official code never does).

    Example:
      >>> scale_schedule((1200, 1600), size=1024)                   # two levels: size / 2, then size
      [(384, 512), (768, 1024)]
      >>> scale_schedule((1200, 1600), size=1024, auto_scales=True, min_size=128)   # 128, 256, 512, 1024
      [(96, 128), (192, 256), (384, 512), (768, 1024)]
      >>> scale_schedule((600, 800))                                # ~512^2, then 1024^2 > 600 x 800: not upscaled
      [(444, 592), (600, 800)]
      >>> scale_schedule((1500, 2000))
      [(444, 592), (887, 1183)]
    """
    return _levels(content_shape_HW, scales, size, auto_scales, factor, min_size)[0]


def default_iters(n_levels: int) -> List[int]:
    """Iterations per level, coarsest first: the paper's two-level budget (500 at ~512^2, 200 at ~1024^2), and for
    more levels the same ratio again at every finer one (/2.5, at least 20).

    A level has 4x the pixels of the previous one (factor 2) and so costs ~4x per iteration, while it starts from
    the upsampled result of the previous level and needs fewer iterations; dividing by 2.5 per level (the paper's
    500 -> 200) keeps the finest level from dominating: ``--size 1024 --auto-scales`` (256, 512, 1024 px: 500, 200,
    80) costs ~2600 f+g in 256 px equivalents (counting 4x per level) instead of ~4500 with 200 at every finer level.

    Example:
      >>> default_iters(1), default_iters(2), default_iters(4)
      ([500], [500, 200], [500, 200, 80, 32])
    """
    if n_levels < 1:
        raise ValueError(f"need at least one level, got {n_levels}")
    iters = [500]
    for _ in range(n_levels - 1):
        iters.append(max(20, int(round(iters[-1] / 2.5))))
    return iters


# --------------------------------------------------------------------------------------------------- pyramid

def _level_iters(iters_per_scale, n: int, shapes) -> List[int]:
    if iters_per_scale is None:
        iters = default_iters(n)
    elif isinstance(iters_per_scale, (int, np.integer)):
        iters = [int(iters_per_scale)] * n
    else:
        iters = [int(i) for i in iters_per_scale]
        if len(iters) != n:
            raise ValueError(f"{len(iters)} iteration counts given for {n} levels {shapes}; give one per level")
    if any(i < 0 for i in iters):
        raise ValueError(f"iterations per scale must be >= 0, got {iters}")
    return iters


def stylize_pyramid(
    content,
    style,
    *,
    scales: Optional[Sequence[int]] = None,
    iters_per_scale: Optional[Union[int, Sequence[int]]] = None,
    auto_scales: bool = False,
    factor: float = 2.0,
    min_size: int = 256,
    mix_with=None,
    mix_iters: Optional[Union[int, Sequence[int]]] = None,
    match_mode: str = "pca",
    spec: Optional[ProblemSpec] = None,
    options: Optional[SolveOptions] = None,
    checkpoint=None,
    checkpoint_settings: Optional[Dict[str, Any]] = None,
    resume=None,
    stop=None,
    on_chunk=None,
    **kwargs,
) -> PyramidResult:
    """Coarse-to-fine style transfer (2017 paper, Section 6).

    Args:
      content, style: paths or [H, W, 3] arrays in [0, 1] (``style`` may be a list); loaded once at full
        resolution and resized from there for every level.
      scales / auto_scales / factor / min_size (and ``spec.size``): the levels, see :func:`scale_schedule`; with
        ``scales`` given, ``size`` is their last one.
      iters_per_scale: one count for every level, or one per level (default :func:`default_iters`: 500, 200, 80, ...).
      mix_with: a fine-scale style (path/array): the style (the coarse scale) is mixed with it anew at every level,
        the official procedure (:func:`mixed_style`: colours matched to the content with ``match_mode``, fine layers
        by the level's size), for ``mix_iters`` iterations per level (default as ``iters_per_scale``: 500, 200, ...).
      spec / options / **kwargs: as :func:`nst_jax.stylize`, applied at every level (``options.iters`` is not used;
        ``options.init`` starts the first level; later levels start from the previous level's optimised image
        resized (Lanczos) to their size; ``options.callback`` counts iterations across levels).
      checkpoint, checkpoint_settings, resume, stop, on_chunk: checkpoints across levels and resuming from them
        (and interrupting, watching), as :func:`nst_jax.transfer.solve_levels`.

    Returns:
      :class:`PyramidResult` (the last level's image; ``levels``: per-level results; ``settings["levels"]``: a JSON
      summary per level).
    """
    size_given = "size" in kwargs or (spec is not None and spec.size is not None)
    spec, options = split_kwargs(spec, options, **kwargs)
    content_img = load_input(content, "content", None)
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    if not styles:
        raise ValueError("give at least one style image")
    style_imgs = [load_input(s, "style", None) for s in styles]
    if mix_with is not None and len(style_imgs) != 1:
        raise ValueError("mix_with takes exactly one style (the coarse scale)")
    size = spec.size if size_given and (auto_scales or scales is None) else None
    shapes, sides, rule = _levels(content_img.shape[:2], scales, size, auto_scales, factor, min_size)
    iters = _level_iters(iters_per_scale, len(shapes), shapes)
    mix_iters = _level_iters(mix_iters, len(shapes), shapes) if mix_with is not None else []
    name = spec.weights if isinstance(spec.weights, str) else None
    spec, _, info = spec_with_params(spec)
    mixes: List[dict] = []

    def problem_at(k: int) -> Problem:
        level_spec = dataclasses.replace(spec, size=sides[k], size_rule=rule)
        level_styles = style_imgs if len(style_imgs) > 1 else style_imgs[0]
        if mix_with is not None:
            mixed = mixed_style(content_img, style_imgs[0], mix_with, level_spec, options, iters=mix_iters[k],
                                match_mode=match_mode)
            mixes.append(dict(mixed.settings["mix"], iters=mix_iters[k]))
            level_styles = mixed.image
        problem = prepare(content_img, level_styles, level_spec)
        problem.settings.update(weights_settings(info, name))  # the file's path and sha256 too
        if problem.content_in.shape[:2] != shapes[k]:  # prepare and scale_schedule disagree: a bug, say so
            raise RuntimeError(f"level {k + 1} prepared at {problem.content_in.shape[:2]}, scheduled at {shapes[k]}")
        return problem

    out = solve_levels(problem_at, iters, options, checkpoint=checkpoint, checkpoint_settings=checkpoint_settings,
                       resume=resume, stop=stop, on_chunk=on_chunk)
    out.settings.update(iters=sum(iters), init=options.init if isinstance(options.init, str) else "array",
                        scales=[max(sh) for sh in shapes], iters_per_scale=iters)
    if mixes:
        out.settings["mix_with"] = mixes
    return out


# --------------------------------------------------------------------------------------------------- style mixing

def _layer_order(params) -> Dict[str, int]:
    return {name: j for j, (name, _) in enumerate(vgg.layer_sequence(vgg.spec_from_params(params)))}


def _check_layer(name: str, order: Dict[str, int], what: str) -> None:
    if name not in order:
        relus = ", ".join(n for n in order if n.startswith("relu"))
        raise ValueError(f"unknown {what} {name!r}; choose a layer of this network such as relu2_1 ({relus})")


def default_fine_layers(shape_HW) -> Tuple[str, ...]:
    """The fine-scale layers of :func:`mix_styles` by pixel area: relu1_1..relu2_1 at ~512^2 (areas below
    512 x 1024, the geometric mean of the paper's two sizes), relu1_1..relu4_1 at ~1024^2 (paper Fig. 5).

    Example:
      >>> default_fine_layers((512, 512))
      ('relu1_1', 'relu2_1')
      >>> default_fine_layers((768, 1024))                          # 768 * 1024 >= 512 * 1024
      ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1')
    """
    h, w = shape_HW
    return _FINE_LAYERS_SMALL if h * w < _FINE_AREA_SPLIT else _FINE_LAYERS_LARGE


def _resolve_fine_layers(fine_layers, shape_HW, order) -> Tuple[str, ...]:
    """``None`` -> by size; a layer name -> relu1_1, relu2_1, ... up to it (and it); a sequence -> as given."""
    if fine_layers is None:
        return default_fine_layers(shape_HW)
    if isinstance(fine_layers, str):
        _check_layer(fine_layers, order, "fine layer")
        layers = [n for n in DEFAULT_STYLE_LAYERS if n in order and order[n] <= order[fine_layers]]
        return tuple(dict.fromkeys(layers + [fine_layers]))
    layers = tuple(fine_layers)
    if not layers:
        raise ValueError("fine_layers is empty; give at least one layer, e.g. ('relu1_1', 'relu2_1')")
    for name in layers:
        _check_layer(name, order, "fine layer")
    return layers


def mix_styles(
    coarse,
    fine,
    *,
    size: Optional[int] = 512,
    fine_layers: Optional[Union[str, Sequence[str]]] = None,
    match_colors_to=None,
    match_mode: str = "pca",
    spec: Optional[ProblemSpec] = None,
    options: Optional[SolveOptions] = None,
    **kwargs,
) -> Result:
    """A new style image mixing the coarse scale of one style with the fine scale of another (paper Fig. 5).

    The image is initialised with the coarse-scale style image (resized so its longest side is ``size``) and optimised
    against the Gram matrices of the fine-scale style image (resized to the same longest side) on the lower layers
    only, with NO content loss. The lower layers' small receptive fields carry the fine texture; the coarse structure
    is left to the initialisation, which the low-layer loss does not constrain. As in the official code, every layer
    weighs the same, ``β / L`` (``layer_weights="equal"``), unless ``layer_weights`` is given (``"inv_c2"``: the
    1/C_l^2 weights of an ordinary transfer, which favour relu1_1 4:1 over relu2_1).

    Args:
      coarse, fine: paths or [H, W, 3] arrays in [0, 1].
      size: the output's longest side (the coarse image's aspect ratio is kept; None: the coarse image's own size).
      fine_layers: ``None`` (by size, :func:`default_fine_layers`), the last layer (e.g. ``"relu3_1"``: relu1_1 up to
        it) or an explicit sequence of layers.
      match_colors_to: an optional content image (path/array): both style images are first recoloured to its colour
        mean and covariance at the same working size (``nst_jax.color.match_color``, ``match_mode``, then clipped to
        [0, 1]), as the official code does before mixing; the mix then has the content's palette.
      spec / options / **kwargs: as :func:`nst_jax.stylize` (weights, preset, style/TV/layer weights, pooling,
        iterations, solver); layers, content weight, colour and spatial control are set here.

    Returns:
      :class:`nst_jax.transfer.Result` (``terms["content"]`` is 0; ``settings["mix"]`` records the layers).
    """
    spec, options = split_kwargs(spec, options, **kwargs)
    spec = dataclasses.replace(spec, size=size, size_rule="longest")  # validates size
    name = spec.weights if isinstance(spec.weights, str) else None
    spec, params, info = spec_with_params(spec)
    order = _layer_order(params)
    coarse_img = load_input(coarse, "coarse style", size)
    fine_img = load_input(fine, "fine style", size)
    if match_colors_to is not None:
        C.check_choice("colour match mode", match_mode, C.MATCH_MODES)
        target = load_input(match_colors_to, "colour reference", size)
        coarse_img = np.clip(np.asarray(C.match_color(coarse_img, target, match_mode)[0]), 0.0, 1.0)
        fine_img = np.clip(np.asarray(C.match_color(fine_img, target, match_mode)[0]), 0.0, 1.0)
    layers = _resolve_fine_layers(fine_layers, coarse_img.shape[:2], order)
    spec = dataclasses.replace(spec, content_weight=0.0, content_layers=(), style_layers=layers, style_scale=1.0,
                               style_blend=None, color="none", spatial=None, freeze_mask=None,
                               layer_weights="equal" if spec.layer_weights is None else spec.layer_weights)
    problem = prepare(np.asarray(coarse_img, np.float32), np.asarray(fine_img, np.float32), spec)
    problem.settings.update(weights_settings(info, name), size=size,
                            mix={"fine_layers": list(layers), "colors_matched": match_colors_to is not None})
    r = solve_problem(problem, dataclasses.replace(options, init="content"), desc="mix styles")
    r.settings["init"] = "coarse"
    return r


def mixed_style(content, coarse, fine, spec: ProblemSpec, options: SolveOptions, *, iters: int = 500,
                match_mode: str = "pca") -> Result:
    """The official procedure's new style for one transfer of ``content`` under ``spec`` (its size, network and
    loss convention): :func:`mix_styles` at the style's working size (the content's longest side at ``spec.size``
    times ``style_scale``), both styles recoloured to the content at its working size, the fine layers by that size
    (relu1_1..relu2_1 at ~512^2, relu1_1..relu4_1 at ~1024^2), equal layer weights, ``iters`` iterations (the
    official 500 at 512^2 and 200 at 1024^2). ``options``: the solver settings (its iterations, init, saves and
    checkpoints are not used)."""
    content_img = load_input(content, "content", spec.size, spec.size_rule)
    side = None if spec.size is None else max(16, int(round(max(content_img.shape[:2]) * spec.style_scale)))
    mix_spec = dataclasses.replace(spec, layer_weights=None, sums_weight=None)
    mix_opts = dataclasses.replace(options, iters=int(iters), callback=None, save_every=None, checkpoint_every=None)
    return mix_styles(coarse, fine, size=side, match_colors_to=content_img, match_mode=match_mode, spec=mix_spec,
                      options=mix_opts)


def mixed_targets_transfer(content, coarse, fine, *, split_layer: str = "relu2_1", spec: Optional[ProblemSpec] = None,
                           options: Optional[SolveOptions] = None, **kwargs) -> Result:
    """One transfer whose Gram targets mix two styles by depth: ``fine`` on the style layers up to and including
    ``split_layer`` (fine texture), ``coarse`` on the deeper ones (large-scale structure).

    Both styles go through the same preparation (size, ``style_scale``, colour control) as in
    :func:`nst_jax.problem.prepare`; the stacked ``[2, C, C]`` Gram targets are then cut to ``[1, C, C]`` per layer
    (the chosen style's Gram) with blend weight 1. ``spec``/``options``/``**kwargs``: as :func:`nst_jax.stylize`
    (no ``style_blend``, no ``spatial``).
    """
    spec, options = split_kwargs(spec, options, **kwargs)
    if spec.style_blend is not None or spec.spatial is not None:
        raise ValueError("mixed_targets_transfer takes no style_blend or spatial; it assigns one style per layer itself")
    problem = prepare(content, [fine, coarse], spec)
    order = _layer_order(problem.params)
    _check_layer(split_layer, order, "split layer")
    fine_set = [n for n in problem.cfg.style_layers if order[n] <= order[split_layer]]
    coarse_set = [n for n in problem.cfg.style_layers if order[n] > order[split_layer]]
    grams = problem.targets.style.grams
    grams = {n: grams[n][0:1] if n in fine_set else grams[n][1:2] for n in problem.cfg.style_layers}
    settings = dict(problem.settings, style_blend=[1.0],
                    mix={"split_layer": split_layer, "fine_layers": fine_set, "coarse_layers": coarse_set})
    problem = dataclasses.replace(problem, targets=problem.targets.replace(style=GramTargets(grams=grams)),
                                  weights=problem.weights.replace(blend=jnp.ones(1, jnp.float32)), settings=settings)
    return solve_problem(problem, options, desc="mixed targets")
