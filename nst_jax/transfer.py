"""The user-facing API: ``stylize`` (one image) and ``sweep`` (K style weightings in one vmapped solve).

Both take paths or arrays, load weights by name (``weights="auto"``) or take a params tree, and return results
carrying the image, the loss trace, the f+g count and compile/run seconds. Everything numeric that varies between
calls (images of the same size, alpha, beta, layer and blend weights) is a traced argument of one cached compiled
program.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import image as I
from nst_jax import solve as S
from nst_jax import vgg

__all__ = ["Result", "SweepResult", "stylize", "sweep", "prepare", "Problem", "solve_problem", "initial_image",
           "DEFAULT_RATIOS"]

ImageLike = Union[str, "os.PathLike", np.ndarray, jax.Array]
DEFAULT_RATIOS = (1e-4, 1e-3, 1e-2, 1e-1)
INITS = ("content", "noise", "style")


@dataclasses.dataclass
class Result:
    """One stylised image and how it was made.

    Attributes:
      image: [H, W, 3] float32 in [0, 1].
      loss_trace: one dict per iteration: ``{"iter", "fg", "loss"}`` (iteration 0 is the initial image).
      n_fg: function+gradient evaluations spent.
      compile_seconds / run_seconds: time spent compiling (0 when cached) and running.
      terms: final ``content``, ``style``, ``tv`` and ``total`` loss values.
      settings: everything needed to reproduce the run (written into the PNG and the JSON trace).

    Example:
      >>> import nst_jax
      >>> r = nst_jax.stylize(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                     weights="tiny19", size=32, iters=3, progress=False)
      >>> [e["iter"] for e in r.loss_trace], sorted(r.terms)       # iteration 0 is the initial image
      ([0, 1, 2, 3], ['content', 'style', 'total', 'tv'])
      >>> r.image.dtype, r.settings["weights"], r.settings["weights_random"], r.iters_done
      (dtype('float32'), 'tiny19', True, 3)
    """

    image: np.ndarray
    loss_trace: List[Dict[str, float]]
    n_fg: int
    compile_seconds: float
    run_seconds: float
    terms: Dict[str, float]
    settings: Dict[str, Any]
    stopped_nonfinite: bool = False
    nonfinite_term: Optional[str] = None
    interrupted: bool = False  # stopped by ``stop()`` (Ctrl-C) before ``iters``; a checkpoint was saved if asked
    iters_done: int = 0  # solver iterations run in total (including those before a resume)


#: Smallest image side (px) the CLI accepts, before and after resizing: VGG halves the size 4 times (2x2 pools)
#: before the default deepest style layer relu5_1, so 16 px leaves it 1x1 feature pixel. (The API checks the exact
#: need of the chosen layers in :func:`prepare`.)
MIN_SIDE = 16


@dataclasses.dataclass
class SweepResult:
    """K results of one vmapped solve, in the order of ``ratios``.

    Example:
      >>> import nst_jax
      >>> sw = nst_jax.sweep(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                    ratios=[1e-3, 1e-1], weights="tiny19", size=32, iters=2, progress=False)
      >>> sw.ratios, [r.settings["style_weight"] for r in sw.results]   # beta = alpha / ratio, alpha = 1 (gatys)
      ([0.001, 0.1], [1000.0, 10.0])
      >>> sw.images.shape, [len(r.loss_trace) for r in sw.results]
      ((2, 32, 32, 3), [3, 3])
    """

    ratios: List[float]
    results: List[Result]
    compile_seconds: float
    run_seconds: float

    @property
    def images(self) -> np.ndarray:
        return np.stack([r.image for r in self.results])


def _original_shape(x: ImageLike) -> Tuple[int, int]:
    """(H, W) of an image as given (on disk, after EXIF orientation), without decoding a file's pixels."""
    if isinstance(x, (str, bytes)) or hasattr(x, "__fspath__"):
        from PIL import Image, ImageOps

        with Image.open(x) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
        return h, w
    return tuple(np.shape(x)[:2])


def _load(x: ImageLike, what: str, size: Optional[int]) -> np.ndarray:
    if isinstance(x, (str, bytes)) or hasattr(x, "__fspath__"):
        return I.load_image(x, size=size)
    arr = np.asarray(x, np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3) or min(arr.shape[:2]) < 1:
        raise ValueError(f"{what} image must be [H, W, 3] (or [H, W]), got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, -1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} image contains NaN or inf values")
    if size is not None and max(arr.shape[:2]) != size:
        arr = I.resize_longest(arr, size)
    return np.clip(arr, 0.0, 1.0)


def _check_big_enough(img: np.ndarray, what: str, layers: Sequence[str]) -> None:
    """The deepest layer after b-1 poolings needs at least 2^(b-1) pixels per side."""
    blocks = [int(name[4]) if name.startswith(("conv", "relu", "pool")) else 1 for name in layers]
    deepest = max([b for b in blocks] + [1])
    pools = deepest if any(n.startswith("pool") and int(n[4]) == deepest for n in layers) else deepest - 1
    need = 2 ** pools
    h, w = img.shape[:2]
    if min(h, w) < need:
        raise ValueError(f"{what} is {w}x{h} px after resizing, but layer {max(layers, key=lambda n: int(n[4]))} "
                         f"needs at least {need} px per side; raise --size (or --style-scale)")


def _resolve_params(weights):
    """``weights``: a source name / file path (loaded via ``nst_jax.weights``) or a params tree."""
    if isinstance(weights, Mapping):
        return {k: {kk: jnp.asarray(vv, jnp.float32) for kk, vv in v.items()} for k, v in weights.items()}, None
    from nst_jax import weights as W

    params, info = W.load_weights(weights)
    return params, info


@dataclasses.dataclass
class Problem:
    """A prepared problem: params, loss structure, targets, weights and the images they came from.

    Example:
      >>> from nst_jax.image import sample_path
      >>> p = prepare(sample_path("blue_marble"), sample_path("great_wave"), weights="tiny19", size=32)
      >>> p.cfg.content_layers, p.cfg.style_layers[-1], p.cfg.channels
      (('relu4_2',), 'relu5_1', 3)
      >>> p.targets["content"]["relu4_2"].shape                   # content features: 32 px after 3 poolings
      (4, 4, 8)
      >>> {k: p.targets["grams"][k].shape for k in ("relu1_1", "relu5_1")}   # [S, C, C] Gram targets
      {'relu1_1': (1, 4, 4), 'relu5_1': (1, 8, 8)}
    """

    params: Any
    cfg: S.LossConfig
    targets: Dict[str, Any]
    weights: Dict[str, jax.Array]
    content: np.ndarray  # [H, W, 3] as the user gave it (resized)
    content_in: np.ndarray  # [H, W, 3] what the network sees for content (after colour control; grey for luminance)
    styles_in: List[np.ndarray]
    settings: Dict[str, Any]
    weights_info: Any = None


def prepare(
    content: ImageLike,
    style: Union[ImageLike, Sequence[ImageLike]],
    *,
    weights: Any = "auto",
    size: Optional[int] = 512,
    style_scale: float = 1.0,
    preset: str = "gatys",
    content_weight: Optional[float] = None,
    style_weight: Optional[float] = None,
    tv_weight: Optional[float] = None,
    style_blend: Optional[Sequence[float]] = None,
    content_layers: Optional[Sequence[str]] = None,
    style_layers: Optional[Sequence[str]] = None,
    layer_weights: Any = None,
    pooling: str = "max",
    color: str = "none",
    match_mode: str = "pca",
    lum_match: str = "meanstd",
    remat: Any = False,
    compute_dtype: Optional[str] = None,
    spatial: Optional[Mapping[str, Any]] = None,
) -> Problem:
    """Load images and weights, apply colour control, build the loss structure, targets and traced weights.

    Arguments: see :func:`stylize` (its ``**problem_kwargs``); returns a :class:`Problem` for :func:`solve_problem`.

    Example:
      >>> from nst_jax.image import sample_path
      >>> p = prepare(sample_path("blue_marble"), sample_path("great_wave"), weights="tiny19", size=32)
      >>> p.content.shape, p.styles_in[0].shape        # the style's longest side follows the content's (style_scale)
      ((32, 32, 3), (18, 32, 3))
      >>> p.settings["content_weight"], p.settings["style_weight"], p.settings["style_layers"][-1]   # gatys preset
      (1.0, 1000.0, 'relu5_1')
    """
    from nst_jax import color as C

    pre = S.preset(preset)
    if size is not None and (not isinstance(size, (int, np.integer)) or size < 16):
        raise ValueError(f"size must be an integer >= 16 pixels, got {size!r}")
    if not (style_scale > 0 and math.isfinite(style_scale)):
        raise ValueError(f"style scale must be a positive number, got {style_scale}")
    if pooling not in ("max", "avg"):
        raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    if not styles:
        raise ValueError("give at least one style image")
    params, info = _resolve_params(weights)
    names = set(vgg.layer_names(vgg.spec_from_params(params)))
    c_layers = tuple(content_layers) if content_layers is not None else S.DEFAULT_CONTENT_LAYERS
    s_layers = tuple(style_layers) if style_layers is not None else S.DEFAULT_STYLE_LAYERS
    for lay in c_layers + s_layers:
        if lay not in names:
            raise ValueError(f"unknown layer {lay!r}; valid layers are conv/relu/pool names such as relu4_2 "
                             f"(this network: {', '.join(n for n in vgg.layer_names(vgg.spec_from_params(params)) if n.startswith('relu'))})")
    content_img = _load(content, "content", size)
    h, w = content_img.shape[:2]
    style_size = None if size is None else max(16, int(round(max(h, w) * style_scale)))
    style_imgs = [_load(s, "style", style_size) for s in styles]
    _check_big_enough(content_img, "content", c_layers + s_layers)
    for j, img in enumerate(style_imgs):
        _check_big_enough(img, f"style image {j + 1}", s_layers)

    C._check_choice("colour mode", color, C.COLOR_MODES)
    content_in, styles_in = C.prepare_color(content_img, style_imgs, color, match_mode=match_mode, lum_match=lum_match)
    content_in = np.asarray(content_in)
    styles_in = [np.asarray(s) for s in styles_in]
    channels = 1 if color == "luminance" else 3

    spatial_mode = None if not spatial else spatial.get("mode", "gram")
    cfg = S.LossConfig(content_layers=c_layers, style_layers=s_layers, pooling=pooling, gram_norm=pre["gram_norm"],
                       channels=channels, spatial=spatial_mode, remat=remat, compute_dtype=compute_dtype)
    n_regions = 0
    if spatial:
        from nst_jax import guidance

        spatial = dict(spatial, content_original_HW=_original_shape(content),
                       style_original_HW=[_original_shape(s) for s in styles])
        targets, n_regions = guidance.spatial_targets(params, content_in, styles_in, spatial, cfg)
    else:
        targets = S.compute_targets(params, content_in, styles_in, cfg)
    wts = S.make_weights(
        cfg, params,
        content_weight=pre["content_weight"] if content_weight is None else content_weight,
        style_weight=pre["style_weight"] if style_weight is None else style_weight,
        tv_weight=pre["tv_weight"] if tv_weight is None else tv_weight,
        layer_weights=pre["layer_weights"] if layer_weights is None else layer_weights,
        blend=style_blend, n_styles=len(styles_in),
        region_weights=(spatial or {}).get("region_weights"), n_regions=n_regions,
    )
    settings = {
        "preset": preset, "size": size, "style_scale": style_scale,
        "content_weight": float(wts["content"]), "style_weight": float(wts["style"]), "tv_weight": float(wts["tv"]),
        "style_blend": [float(b) for b in np.asarray(wts["blend"])],
        "content_layers": list(c_layers), "style_layers": list(s_layers),
        "layer_weights": [float(v) for v in np.asarray(wts["style_layers"])],
        "pooling": pooling, "gram_norm": cfg.gram_norm, "color": color, "match_mode": match_mode,
        "lum_match": lum_match, "remat": remat, "compute_dtype": compute_dtype,
        "weights": (info.name if info is not None else "params"),
        "weights_random": bool(info is not None and info.is_random),
    }
    if spatial:
        settings["spatial"] = {k: v for k, v in spatial.items() if isinstance(v, (str, int, float, bool, type(None)))}
    return Problem(params, cfg, targets, wts, content_img, content_in, styles_in, settings, info)


def initial_image(problem: Problem, init: Union[str, ImageLike] = "content", seed: int = 0) -> np.ndarray:
    """``content``, ``noise`` (uniform in [0, 1] from ``jax.random.PRNGKey(seed)``), ``style`` (the first style image
    resized to the content), or an image path/array (resized to the content). Shape [H, W, C] of the variable."""
    h, w = problem.content_in.shape[:2]
    c = problem.cfg.channels
    if isinstance(init, str) and init == "content":
        x = problem.content_in
    elif isinstance(init, str) and init == "noise":
        x = np.asarray(jax.random.uniform(jax.random.PRNGKey(seed), (h, w, 3), jnp.float32))
    elif isinstance(init, str) and init == "style":
        x = I.resize(problem.styles_in[0], (h, w))
    else:
        if isinstance(init, str) and not (init.endswith(tuple(I._IMAGE_SUFFIXES)) or "/" in init):
            raise ValueError(f"init must be 'content', 'noise', 'style' or an image file, got {init!r}")
        img = _load(init, "init", None)
        x = I.resize(img, (h, w)) if img.shape[:2] != (h, w) else img
    x = np.asarray(x, np.float32)
    return x[..., :1] if c == 1 else x


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None, lambda *a: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="it", leave=False)
    state = {"done": 0}

    def update(done, loss, nfev):
        bar.update(done - state["done"])
        state["done"] = done
        loss = np.asarray(loss)
        bar.set_postfix(loss=f"{float(np.min(loss)):.4g}", fg=int(np.max(nfev)))

    return bar, update


def _finish(problem: Problem, x_HWC: np.ndarray) -> np.ndarray:
    from nst_jax import color as C

    x = np.repeat(x_HWC, 3, -1) if x_HWC.shape[-1] == 1 else x_HWC
    return np.asarray(C.finish_color(x, problem.content, problem.settings["color"]), np.float32)


def _trace(values: np.ndarray, nfevs: np.ndarray) -> List[Dict[str, float]]:
    return [{"iter": i, "fg": int(n), "loss": float(v)} for i, (v, n) in enumerate(zip(values, nfevs))]


def stylize(
    content: ImageLike,
    style: Union[ImageLike, Sequence[ImageLike]],
    *,
    iters: int = 500,
    init: Union[str, ImageLike] = "content",
    seed: int = 0,
    solver: str = "lbfgs",
    history: int = 100,
    precondition: bool = True,
    lr: Optional[float] = None,
    chunk: int = 25,
    progress: bool = True,
    callback: Optional[Callable[[int, np.ndarray], None]] = None,
    save_every: Optional[int] = None,
    **problem_kwargs,
) -> Result:
    """Stylise ``content`` with ``style`` (Gatys et al. 2016) in one compiled L-BFGS solve.

    Args:
      content, style: paths or [H, W, 3] arrays in [0, 1]; ``style`` may be a list (blended Gram targets, weights
        ``style_blend``).
      iters: solver iterations (for ``lbfgs``/``adam`` one f+g each; line-search solvers use more, see ``n_fg``).
      init: ``"content"``, ``"noise"``, ``"style"`` or an image.
      solver: ``"lbfgs"`` (projected L-BFGS, one f+g per iteration with a monotone guard; the default, chosen by measured time-to-quality),
        ``"jaxopt"`` (jaxopt L-BFGS-B), ``"optax-lbfgs"``, ``"adam"``.
      callback: ``callback(iteration, image_HW3)`` every ``save_every`` iterations (intermediate saves).
      **problem_kwargs: see :func:`prepare` (weights, size, preset, content/style/tv weights, layers, pooling,
        colour control, spatial control, remat, compute dtype).

    Example:
      >>> import nst_jax
      >>> r = nst_jax.stylize(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                     weights="tiny19", size=32, iters=5, progress=False)
      >>> r.image.shape, r.n_fg
      ((32, 32, 3), 6)
    """
    problem = prepare(content, style, **problem_kwargs)
    return solve_problem(problem, iters=iters, init=init, seed=seed, solver=solver, history=history, lr=lr,
                         precondition=precondition, chunk=chunk, progress=progress, callback=callback,
                         save_every=save_every)


def solve_problem(problem: Problem, *, iters: int = 500, init: Union[str, ImageLike, np.ndarray] = "content",
                  seed: int = 0, solver: str = "lbfgs", history: int = 100, lr: Optional[float] = None,
                  precondition: bool = True,
                  chunk: int = 25, progress: bool = True, callback=None, save_every: Optional[int] = None,
                  desc: str = "stylize", checkpoint=None, checkpoint_every: Optional[int] = None,
                  checkpoint_settings: Optional[Mapping[str, Any]] = None, resume=None,
                  stop: Optional[Callable[[], bool]] = None) -> Result:
    """Run the compiled solve on a prepared :class:`Problem` (used by ``stylize``, the pyramid and the CLI).

    Checkpointing and resuming (see :mod:`nst_jax.checkpoint`):
      checkpoint: path of the ``.ckpt.npz`` file to write; it is written every ``checkpoint_every`` iterations
        (chunks are cut so that these fall on chunk ends) and when ``stop()`` turns True (Ctrl-C), with
        ``checkpoint_settings`` (a JSON-able dict describing the run) stored inside.
      resume: a :class:`nst_jax.checkpoint.Checkpoint` to continue from (its solver state, iteration and loss
        trace); the caller checks that its settings match. The finished run equals an uninterrupted one.
      stop: polled after each chunk; True ends the run early (``Result.interrupted``).

    Example:
      >>> from nst_jax.image import sample_path
      >>> p = prepare(sample_path("blue_marble"), sample_path("great_wave"), weights="tiny19", size=32)
      >>> a = solve_problem(p, iters=3, progress=False)
      >>> b = solve_problem(p, iters=3, progress=False)    # same shapes: the compiled program is reused
      >>> b.compile_seconds, bool(np.array_equal(a.image, b.image)), a.loss_trace[-1]["loss"] < a.loss_trace[0]["loss"]
      (0.0, True, True)
    """
    if not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iters!r}")
    if save_every is not None and save_every < 1:
        raise ValueError(f"save-every must be >= 1, got {save_every}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1):
        raise ValueError(f"checkpoint-every must be an integer >= 1, got {checkpoint_every!r}")
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every needs a checkpoint path to write to")
    if lr is not None and not (math.isfinite(float(lr)) and float(lr) > 0):
        raise ValueError(f"the step size (--lr) must be a finite number > 0, got {lr}")
    if not all(bool(np.all(np.isfinite(np.asarray(t)))) for t in jax.tree_util.tree_leaves(problem.targets)):
        raise ValueError("the network's features of the content/style images are NaN/inf (its activations overflow "
                         "float32); check the weights (nst-jax weights info NAME) or use another --weights")
    x0 = initial_image(problem, init, seed) if not isinstance(init, np.ndarray) or init.ndim != 3 or \
        init.shape[:2] != problem.content_in.shape[:2] else np.asarray(init, np.float32)[..., :problem.cfg.channels]
    if resume is not None and tuple(resume.image.shape) != tuple(x0.shape):
        raise ValueError(f"the checkpoint holds a {list(resume.image.shape)} image but this run makes "
                         f"{list(x0.shape)}; resume with the same size and colour settings")
    step = min(v for v in (chunk, save_every, checkpoint_every) if v)
    scfg = S.SolverConfig(name=solver, history=history, lr=lr, chunk=step, precondition=precondition)
    run = S.Solve(problem.cfg, scfg)
    bar, update = _progress_bar(iters, desc, progress)

    cb = None
    if callback is not None and save_every:
        def cb(it, x, _values):
            if it % save_every == 0 or it == iters:
                callback(it, _finish(problem, np.asarray(x)))

    on_chunk = None
    if checkpoint is not None:
        from nst_jax import checkpoint as CK

        last = {"done": 0 if resume is None else resume.iteration}

        def on_chunk(done, x, state, values, nfevs):
            # due when this chunk crossed a multiple of checkpoint_every (chunks need not divide it)
            due = bool(checkpoint_every) and done // checkpoint_every > last["done"] // checkpoint_every
            last["done"] = done
            due = due and done < iters
            if due or (stop is not None and stop() and done < iters):
                CK.save_checkpoint(checkpoint, image=np.asarray(x), state=state, iteration=done,
                                   n_fg=int(np.asarray(nfevs)[-1]), values=values, nfevs=nfevs,
                                   settings=dict(checkpoint_settings or {}), seed=seed)

    try:
        out = run(problem.params, problem.targets, problem.weights, x0, iters, callback=cb, progress=update,
                  resume=None if resume is None else resume.resume_args(), on_chunk=on_chunk, stop=stop)
    finally:
        if bar is not None:
            bar.close()
    settings = dict(problem.settings, iters=iters, init=init if isinstance(init, str) else "array", seed=seed,
                    solver=solver, history=history, lr=scfg.step, precondition=precondition)
    return Result(
        image=_finish(problem, out.image), loss_trace=_trace(out.values, out.nfevs), n_fg=int(out.nfevs[-1]),
        compile_seconds=out.compile_seconds, run_seconds=out.run_seconds,
        terms={k: float(v) for k, v in out.terms.items()}, settings=settings,
        stopped_nonfinite=out.stopped_nonfinite, nonfinite_term=out.nonfinite_term,
        interrupted=out.interrupted, iters_done=out.iters_done,
    )


def _shard_k(tree, k_padded: int):
    """Place the leading K axis of every leaf across all devices (no-op on one device)."""
    devices = jax.devices()
    if len(devices) == 1:
        return tree
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    mesh = Mesh(np.array(devices), ("k",))
    return jax.device_put(tree, NamedSharding(mesh, P("k")))


def sweep(
    content: ImageLike,
    style: Union[ImageLike, Sequence[ImageLike]],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    iters: int = 500,
    init: Union[str, ImageLike] = "content",
    seed: int = 0,
    solver: str = "lbfgs",
    history: int = 100,
    precondition: bool = True,
    lr: Optional[float] = None,
    chunk: int = 25,
    progress: bool = True,
    **problem_kwargs,
) -> SweepResult:
    """Run K content/style ratios alpha/beta in ONE vmapped compiled solve (2016 paper, Fig. 4).

    Member k uses ``content_weight = alpha`` (the preset's or the one given) and ``style_weight = alpha / ratios[k]``.
    With several devices the K axis is sharded across them (K padded to a multiple of the device count; padding
    members are dropped from the result).

    Example:
      >>> import nst_jax
      >>> sw = nst_jax.sweep(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                    ratios=[1e-3, 1e-1], weights="tiny19", size=32, iters=3, progress=False)
      >>> sw.images.shape
      (2, 32, 32, 3)
    """
    ratios = [float(r) for r in ratios]
    if not ratios:
        raise ValueError("give at least one ratio")
    if any(not (math.isfinite(r) and r > 0) for r in ratios):
        raise ValueError(f"ratios alpha/beta must be finite and > 0, got {ratios}")
    problem = prepare(content, style, **problem_kwargs)
    k = len(ratios)
    ndev = len(jax.devices())
    k_pad = int(math.ceil(k / ndev) * ndev)
    alpha = problem.weights["content"]
    member_ratios = ratios + [ratios[-1]] * (k_pad - k)
    weights = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (k_pad,) + a.shape), problem.weights)
    weights = dict(weights, style=alpha / jnp.asarray(member_ratios, jnp.float32))
    x0 = initial_image(problem, init, seed)
    x0 = np.broadcast_to(x0, (k_pad,) + x0.shape).copy()
    weights, x0 = _shard_k((weights, jnp.asarray(x0)), k_pad)
    scfg = S.SolverConfig(name=solver, history=history, lr=lr, chunk=chunk, precondition=precondition)
    run = S.Solve(problem.cfg, scfg, batched=True)
    bar, update = _progress_bar(iters, f"sweep x{k}", progress)
    try:
        out = run(problem.params, problem.targets, weights, x0, iters, progress=update)
    finally:
        if bar is not None:
            bar.close()
    results = []
    for j in range(k):
        settings = dict(problem.settings, iters=iters, init=init if isinstance(init, str) else "array", seed=seed,
                        solver=solver, history=history, lr=scfg.step, precondition=precondition, ratio=ratios[j],
                        style_weight=float(alpha) / ratios[j])
        results.append(Result(
            image=_finish(problem, out.image[j]), loss_trace=_trace(out.values[j], out.nfevs[j]),
            n_fg=int(out.nfevs[j, -1]), compile_seconds=out.compile_seconds, run_seconds=out.run_seconds,
            terms={n: float(v[j]) for n, v in out.terms.items()}, settings=settings,
            stopped_nonfinite=out.stopped_nonfinite,
        ))
    return SweepResult(ratios, results, out.compile_seconds, out.run_seconds)
