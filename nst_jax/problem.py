"""A prepared problem: the images loaded and sized, colour control applied, loss structure, targets and weights.

:func:`prepare` turns a :class:`nst_jax.config.ProblemSpec` and the images into a :class:`Problem`, the input of
:func:`nst_jax.transfer.solve_problem`; :func:`initial_image` makes its starting image and :func:`finish` its
colour-finished result. Images are paths (any Pillow-readable file) or arrays ``[H, W, 3]`` (or ``[H, W]``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color as C
from nst_jax import image as I
from nst_jax import objective, vgg
from nst_jax.config import ProblemSpec
from nst_jax.objective import Targets, Weights

__all__ = ["ImageLike", "Problem", "prepare", "load_input", "fit_area", "original_shape", "resolve_params",
           "spec_with_params", "check_big_enough", "initial_image", "finish", "weights_settings"]

ImageLike = Union[str, "os.PathLike", np.ndarray, jax.Array]


def _is_path(x) -> bool:
    return isinstance(x, (str, bytes)) or hasattr(x, "__fspath__")


def original_shape(x: ImageLike) -> Tuple[int, int]:
    """(H, W) of an image as given (a file: from its header, EXIF orientation applied, without decoding pixels)."""
    if _is_path(x):
        from PIL import Image

        with Image.open(x) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
        return h, w
    return tuple(np.shape(x)[:2])


def fit_area(shape_HW, side: int) -> Tuple[int, int]:
    """The official notebooks' image size for a working size ``side`` (their ``img_size``, 512 then 1024): with
    ``d = sqrt(H W) / side``, ``(ceil(H / d), ceil(W / d))`` when ``d > 1`` (area ~``side^2``, sides rounded up:
    ``skimage.transform.pyramid_reduce`` on H and W), else ``(H, W)``: a small image is never upscaled.

    Example:
      >>> fit_area((600, 800), 512), fit_area((1200, 1600), 1024), fit_area((300, 400), 512)
      ((444, 592), (887, 1183), (300, 400))
    """
    h, w = int(shape_HW[0]), int(shape_HW[1])
    d = math.sqrt(float(h * w)) / float(side)
    if d <= 1.0:
        return h, w
    return int(math.ceil(h / d)), int(math.ceil(w / d))


def load_input(x: ImageLike, what: str, size: Optional[int], rule: str = "longest") -> np.ndarray:
    """An input image as float32 [H, W, 3] in [0, 1], its longest side resized to ``size`` (None: as is; ``rule=
    "area"``: to :func:`fit_area`'s size instead).

    Arrays: [H, W], [H, W, 1] or [H, W, 3]; integer arrays are scaled by their dtype's range; float arrays must
    already lie in [0, 1] and be finite (refused otherwise, with the reason).
    """
    if _is_path(x) and rule == "longest":
        return I.load_image(x, size=size)
    if _is_path(x):
        return load_input(I.load_image(x), what, size, rule)
    arr = np.asarray(x)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3) or min(arr.shape[:2]) < 1:
        raise ValueError(f"{what} image must be [H, W, 3] (or [H, W]), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        top = 1 if arr.dtype == bool else np.iinfo(arr.dtype).max
        arr = arr.astype(np.float64) / top
    elif not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} image has dtype {arr.dtype}; pass floats in [0, 1] or integers")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} image contains NaN or inf values; pass finite values in [0, 1]")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"{what} image has values in [{arr.min():.3g}, {arr.max():.3g}], outside [0, 1]; scale it "
                         "to [0, 1] (or pass an integer array)")
    arr = np.repeat(arr, 3, -1) if arr.shape[-1] == 1 else arr
    arr = arr.astype(np.float32)
    if size is not None:
        target = fit_area(arr.shape[:2], size) if rule == "area" else I.fit_shape(arr.shape[:2], size=size)
        if target != arr.shape[:2]:
            arr = np.clip(I.resize(arr, target), 0.0, 1.0)
    return arr


def check_big_enough(img: np.ndarray, what: str, layers: Sequence[str], pool_rounding: str = "floor") -> None:
    """The deepest layer after b-1 poolings needs at least 2^(b-1) pixels per side (2^b for a ``pool{b}`` layer) when
    the pools floor odd sizes; with ``pool_rounding="ceil"`` every layer keeps at least one pixel."""
    blocks = [int(name[4]) if name.startswith(("conv", "relu", "pool")) else 1 for name in layers]
    deepest = max(blocks + [1])
    pools = deepest if any(n.startswith("pool") and int(n[4]) == deepest for n in layers) else deepest - 1
    need = 2 ** pools if pool_rounding == "floor" else 1
    h, w = img.shape[:2]
    if min(h, w) < need:
        raise ValueError(f"{what} is {w}x{h} px after resizing, but layer {max(layers, key=lambda n: int(n[4]))} "
                         f"needs at least {need} px per side; raise --size (or --style-scale)")


def resolve_params(weights) -> Tuple[Any, Any]:
    """``weights``: a source name / file path (loaded with :func:`nst_jax.weights.load_weights`) or a params tree.
    Returns ``(params, WeightsInfo or None)``."""
    if isinstance(weights, Mapping):
        return {k: {kk: jnp.asarray(vv, jnp.float32) for kk, vv in v.items()} for k, v in weights.items()}, None
    from nst_jax import weights as W

    return W.load_weights(weights)


def spec_with_params(spec: ProblemSpec) -> Tuple[ProblemSpec, Any, Any]:
    """``(spec, params, WeightsInfo or None)``: the weights loaded once (:func:`resolve_params`), the spec holding
    the params tree and ``pool_rounding="auto"`` resolved to the weights' convention (for callers that prepare
    several problems, e.g. the levels of a coarse-to-fine run). Warns when normalised weights run with another
    pooling than the one they were calibrated with (their mean activations are 1 only under that pooling)."""
    params, info = resolve_params(spec.weights)
    rounding = spec.pool_rounding if spec.pool_rounding != "auto" else (
        info.pool_rounding if info is not None else "floor")
    calibrated = None if info is None or not info.normalized else info.metadata.get("pooling", "avg")
    if calibrated is not None and calibrated != spec.pooling:
        warnings.warn(f"the normalised weights {info.name!r} were calibrated with {calibrated} pooling; with "
                      f"{spec.pooling} pooling their mean activations drift away from 1 (up to ~100x), which changes "
                      f"the balance of the layers; use --pooling {calibrated}", stacklevel=3)
    return dataclasses.replace(spec, weights=params, pool_rounding=rounding), params, info


@dataclasses.dataclass
class Problem:
    """A prepared problem.

    Attributes:
      params: the network's params tree. cfg: the static :class:`nst_jax.config.LossConfig`.
      targets / weights: the traced :class:`nst_jax.objective.Targets` and :class:`~nst_jax.objective.Weights`.
      content: [H, W, 3] the content as given (resized); content_in / styles_in: what the network sees (after
        colour control). spec: the :class:`ProblemSpec`; settings: its JSON-able summary with the weights in use.
      region_names: the regions of spatial control (empty without).

    Example:
      >>> from nst_jax.image import sample_path
      >>> p = prepare(sample_path("blue_marble"), sample_path("great_wave"), weights="tiny19", size=32)
      >>> p.cfg.content_layers, p.cfg.style_layers[-1], p.cfg.channels
      (('relu4_2',), 'relu5_1', 3)
      >>> p.targets.content["relu4_2"].shape                  # content features: 32 px after 3 poolings
      (4, 4, 8)
      >>> {k: p.targets.style.grams[k].shape for k in ("relu1_1", "relu5_1")}   # [S, C, C] Gram targets
      {'relu1_1': (1, 4, 4), 'relu5_1': (1, 8, 8)}
    """

    params: Any
    cfg: Any
    targets: Targets
    weights: Weights
    content: np.ndarray
    content_in: np.ndarray
    styles_in: List[np.ndarray]
    spec: ProblemSpec
    settings: dict
    weights_info: Any = None
    region_names: Tuple[str, ...] = ()


def weights_settings(info, name: Optional[str] = None) -> dict:
    """What the settings record of the weights in use: ``weights`` (the source's name, "file", else ``name`` or
    "params" for a params tree), ``weights_random``, and for weights read from a file (a path or a cached source) its
    absolute ``weights_path`` and ``weights_sha256``."""
    import os

    out = {"weights": info.name if info is not None else (name or "params"),
           "weights_random": bool(info is not None and info.is_random)}
    if info is not None and getattr(info, "path", None):
        out["weights_path"], out["weights_sha256"] = os.path.abspath(info.path), info.sha256
    return out


def _settings(spec: ProblemSpec, cfg, weights: Weights, info) -> dict:
    out = spec.summary()
    out.update(objective.weights_summary(weights))
    out["pool_rounding"] = cfg.pool_rounding
    out.update(weights_settings(info))
    if spec.spatial is not None:
        out["spatial"] = spec.spatial.summary
    return out


def prepare(content: ImageLike, style: Union[ImageLike, Sequence[ImageLike]], spec: Optional[ProblemSpec] = None,
            **overrides) -> Problem:
    """Load images and weights, apply colour control, build the loss structure, targets and traced weights.

    ``spec`` (default ``ProblemSpec()``) with ``overrides`` applied (its field names, e.g. ``size=256``).

    Example:
      >>> from nst_jax.image import sample_path
      >>> p = prepare(sample_path("blue_marble"), sample_path("great_wave"), weights="tiny19", size=32)
      >>> p.content.shape, p.styles_in[0].shape        # the style's longest side follows the content's (style_scale)
      ((32, 32, 3), (18, 32, 3))
      >>> p.settings["content_weight"], p.settings["style_weight"], p.settings["style_layers"][-1]   # gatys preset
      (1.0, 1000.0, 'relu5_1')
    """
    spec = dataclasses.replace(spec or ProblemSpec(), **overrides)
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    if not styles:
        raise ValueError("give at least one style image")
    named = spec.weights
    spec, params, info = spec_with_params(spec)
    cfg = spec.loss_config()
    cfg.check_layers(vgg.layer_names(vgg.spec_from_params(params)))
    content_img = load_input(content, "content", spec.size, spec.size_rule)
    style_size = None if spec.size is None else max(16, int(round(max(content_img.shape[:2]) * spec.style_scale)))
    style_imgs = [load_input(s, "style", style_size) for s in styles]
    check_big_enough(content_img, "content", cfg.all_layers, cfg.pool_rounding)
    for j, img in enumerate(style_imgs):
        check_big_enough(img, f"style image {j + 1}", cfg.style_layers or cfg.all_layers, cfg.pool_rounding)
    col = spec.color
    content_in, styles_in = C.prepare_color(content_img, style_imgs, col.mode, match_mode=col.match_mode,
                                            lum_match=col.lum_match)
    content_in, styles_in = np.asarray(content_in), [np.asarray(s) for s in styles_in]
    region_names: Tuple[str, ...] = ()
    if spec.spatial is not None:
        from nst_jax import guidance

        targets, region_names = guidance.spatial_targets(
            params, content_in, styles_in, spec.spatial, cfg, content_original_HW=original_shape(content),
            style_original_HW=[original_shape(s) for s in styles])
    else:
        targets = objective.compute_targets(params, content_in, styles_in, cfg, sliced_seed=spec.sliced_seed)
    if spec.freeze_mask is not None:
        from nst_jax import masks

        frozen = masks.freeze_mask_at(spec.freeze_mask, content_img.shape[:2], original_shape(content))
        targets = targets.replace(frozen=jnp.asarray(frozen))
    w = spec.weight_settings()
    weights = objective.make_weights(
        cfg, params, content_weight=w["content_weight"], style_weight=w["style_weight"], tv_weight=w["tv_weight"],
        layer_weights=w["layer_weights"], blend=spec.style_blend, n_styles=len(styles_in),
        region_weights=None if spec.spatial is None else spec.spatial.region_weights, n_regions=len(region_names),
        sums_weight=w["sums_weight"], style_loss_weights=spec.style_loss_weights)
    if spec.style_ref_size is not None:
        factors = objective.resolution_factors(cfg.style_layers, content_img.shape[:2], spec.style_ref_size)
        weights = weights.replace(style_layers=weights.style_layers * factors)
    objective.check_weights(weights)
    spec = dataclasses.replace(spec, weights=named)
    return Problem(params, cfg, targets, weights, content_img, content_in, styles_in, spec,
                   _settings(spec, cfg, weights, info), info, region_names)


def initial_image(problem: Problem, init: Union[str, ImageLike] = "content", seed: int = 0) -> np.ndarray:
    """The solver's starting image [H, W, C] (C = 1 for luminance-only transfer): ``"content"`` (what the network
    sees), ``"noise"`` (uniform in [0, 1] from ``jax.random.PRNGKey(seed)``), ``"style"`` (the first style image
    resized to the content), or an image path / array (resized to the content)."""
    h, w = problem.content_in.shape[:2]
    c = problem.cfg.channels
    if isinstance(init, str) and init == "content":
        x = problem.content_in
    elif isinstance(init, str) and init == "noise":
        x = np.asarray(jax.random.uniform(jax.random.PRNGKey(seed), (h, w, 3), jnp.float32))
    elif isinstance(init, str) and init == "style":
        x = I.resize(problem.styles_in[0], (h, w))
    elif isinstance(init, np.ndarray) and init.ndim == 3 and init.shape[:2] == (h, w) and init.shape[-1] in (1, 3):
        x = np.asarray(init, np.float32)  # the solver's own variable (e.g. a coarser level's result): taken as is
    else:
        img = load_input(init, "init", None)
        x = I.resize(img, (h, w)) if img.shape[:2] != (h, w) else img
    x = np.asarray(x, np.float32)
    return x[..., :1] if c == 1 else (np.repeat(x, 3, -1) if x.shape[-1] == 1 else x)


def finish(problem: Problem, x_HWC: np.ndarray) -> np.ndarray:
    """The optimised variable as the output image [H, W, 3]: replicated to RGB (luminance transfer) and colour
    control's finishing step applied (:func:`nst_jax.color.finish_color`)."""
    x = np.repeat(x_HWC, 3, -1) if x_HWC.shape[-1] == 1 else x_HWC
    return np.asarray(C.finish_color(x, problem.content, problem.spec.color.mode), np.float32)
