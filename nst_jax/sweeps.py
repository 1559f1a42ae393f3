"""Sweeps: any grid of settings of one problem as ONE compiled, vmapped solve, in memory-sized waves.

Member k of a sweep is the single solve with its own traced :class:`nst_jax.objective.Weights`, initial image and
(for the image axes ``style`` and ``content``) targets; these are stacked along a leading K axis and the solve is
``jax.vmap``-ed over it (:class:`nst_jax.runner.Members`), so all K members compile once, and a second sweep of the
same shapes compiles nothing. What a grid may vary, and how it is written, is :mod:`nst_jax.grid`.

When the K members do not fit in memory at once (:func:`nst_jax.memory.estimate_for_config` against the free
memory or ``memory_limit``), or are more than one program should hold (:func:`nst_jax.batching.members_per_program`:
with the CPU default ``members="unroll"`` at most 8 per device, beyond which members would be evaluated batched,
the slower way on XLA:CPU), they run in the fewest equal waves that fit (:func:`plan_waves`), each the same compiled
program; with several devices (all processes' in a multi-process run, :mod:`nst_jax.distributed`) every wave's K
axis is split across them and each device runs its members in a ``shard_map`` (:class:`nst_jax.runner.Members`), padded to a
multiple of the device count. Members are independent, so grouping never changes a result.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import grid as G
from nst_jax import image as I
from nst_jax import backend, batching, distributed, memory, objective, runner, vgg
from nst_jax.config import ProblemSpec, SettingError, SolveOptions, split_kwargs
from nst_jax.problem import ImageLike, Problem, initial_image, load_input, original_shape, prepare
from nst_jax.transfer import Result, progress_bar, result_of, run_settings

__all__ = ["DEFAULT_RATIOS", "SweepResult", "sweep", "stylize_batch", "plan_waves",
           "fit_to_shape"]

DEFAULT_RATIOS = (1e-4, 1e-3, 1e-2, 1e-1)


@dataclasses.dataclass
class SweepResult:
    """The K members of one sweep, in grid order (first axis slowest).

    Attributes:
      axes: ``{axis: [values]}`` as given (JSON-able: image paths as strings, arrays as ``"array"``).
      members: each member's ``{axis: value}`` (JSON-able, as ``axes``).
      results: each member's :class:`nst_jax.transfer.Result` (image, loss trace with its content / style / TV
        terms, f+g count; ``settings`` reproduce it as a single ``stylize`` run, plus ``"grid"``: its axis values).
      shape: the axes' lengths (``(K,)`` for zipped axes). waves: how many waves the members ran in.

    Example:
      >>> import nst_jax
      >>> sw = nst_jax.sweep(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                    grid={"ratio": [1e-3, 1e-1], "tv_weight": [0.0, 1.0]}, weights="tiny19", size=32,
      ...                    iters=2, progress=False)
      >>> sw.shape, sw.images.shape, sw.members[1]
      ((2, 2), (4, 32, 32, 3), {'ratio': 0.001, 'tv_weight': 1.0})
      >>> [r.settings["style_weight"] for r in sw.results], [r.n_fg for r in sw.results]   # beta = alpha / ratio
      ([1000.0, 1000.0, 10.0, 10.0], [3, 3, 3, 3])
    """

    axes: Dict[str, List[Any]]
    members: List[Dict[str, Any]]
    results: List[Result]
    compile_seconds: float
    run_seconds: float
    shape: Tuple[int, ...] = ()
    zip: bool = False
    waves: int = 1

    @property
    def images(self) -> np.ndarray:
        """[K, H, W, 3]."""
        return np.stack([r.image for r in self.results])

    @property
    def ratios(self) -> List[float]:
        """Each member's α/β (a ``ratio`` axis's values per member; the effective ratio otherwise)."""
        return [m["ratio"] if "ratio" in m else r.settings["content_weight"] / r.settings["style_weight"]
                for m, r in zip(self.members, self.results)]


def plan_waves(k: int, n_devices: int, fits: Callable[[int], bool]) -> Tuple[int, int]:
    """``(waves, per_wave)``: the fewest equal waves of ``per_wave`` members (a multiple of ``n_devices``) that
    cover ``k`` members and of which ``fits(per_wave // n_devices)`` (members per device) holds.

    Example:
      >>> plan_waves(6, 1, lambda m: True), plan_waves(6, 1, lambda m: m <= 2), plan_waves(7, 1, lambda m: m <= 3)
      ((1, 6), (3, 2), (3, 3))
      >>> plan_waves(5, 4, lambda m: True)       # padded to the device count: one wave of 8
      (1, 8)
    """
    for waves in range(1, k + 1):
        per = math.ceil(math.ceil(k / waves) / n_devices) * n_devices
        if fits(per // n_devices):
            return math.ceil(k / per), per
    raise ValueError("one member per device does not fit in memory")


def fit_to_shape(image_HW3: np.ndarray, shape_HW: Tuple[int, int]) -> np.ndarray:
    """``image_HW3`` scaled to cover ``shape_HW`` (aspect kept) and centre-cropped to it; unchanged if it already
    has that shape. How a ``content`` axis brings its photos to the first photo's shape."""
    h, w = image_HW3.shape[:2]
    H, W = shape_HW
    if (h, w) == (H, W):
        return image_HW3
    scale = max(H / h, W / w)
    big = I.resize(image_HW3, (max(H, round(h * scale)), max(W, round(w * scale))))
    top, left = (big.shape[0] - H) // 2, (big.shape[1] - W) // 2
    return np.ascontiguousarray(big[top:top + H, left:left + W])


# --------------------------------------------------------------------------------------------------- members

def _grid_of(grid, ratios) -> Mapping[str, Sequence[Any]]:
    """The ``grid`` argument; ``ratios`` (or a plain sequence as ``grid``) is the shorthand ``{"ratio": ...}``."""
    if grid is not None and ratios is not None:
        raise SettingError("ratios", "give either grid or {setting} (the shorthand for grid={{'ratio': ...}})")
    if ratios is not None:
        return {"ratio": list(ratios)}
    if grid is None:
        return {"ratio": list(DEFAULT_RATIOS)}
    if isinstance(grid, Mapping):
        return grid
    return {"ratio": list(grid)}


def _refuse_conflicts(g: G.Grid, spec: ProblemSpec, options: SolveOptions, content, style) -> None:
    """Axes that clash with a fixed setting or with each other (one line each, with the fix)."""
    names = set(g.names)
    for name in names & {"content_weight", "style_weight", "tv_weight", "layer_weights", "style_layers",
                         "style_blend"}:
        if getattr(spec, name) is not None:
            raise G.GridError(name, f"{{axis}} is also given as the setting {name} = {getattr(spec, name)!r}; drop "
                                    "one of them")
    if "ratio" in names and ("style_weight" in names or spec.style_weight is not None):
        raise G.GridError("ratio", "{axis} sets the style weight (content weight / ratio); drop the style weight "
                                   "setting or axis")
    if "style_layers" in names and ("layer_weights" in names or not isinstance(spec.weight_settings()[
            "layer_weights"], str)):
        raise G.GridError("style_layers", "{axis} sets the layer weights (the preset's inside each set, 0 outside); "
                                          "drop the layer weights, or sweep layer_weights alone (zeros switch a "
                                          "layer off)")
    if "region_weights" in names and (spec.spatial is None or spec.spatial.region_weights is not None):
        need = "needs spatial control (content masks)" if spec.spatial is None else "is also a spatial setting"
        raise G.GridError("region_weights", f"{{axis}} {need}; give masks, or drop the fixed region weights")
    if "seed" in names and options.init != "noise":
        raise G.GridError("seed", "{axis} draws each member's initial noise; start from noise (init='noise', "
                                  "--init noise)")
    if g.batched_targets and spec.spatial is not None:
        raise G.GridError("style" if "style" in names else "content",
                          "{axis} cannot be combined with spatial control (the masks belong to one image); run one "
                          "sweep per image")
    for name, given in (("style", style), ("content", content)):
        if name in names and given is not None:
            raise G.GridError(name, f"{{axis}} replaces the {name} argument; pass {name}=None (on the command line: "
                                    "the images go in the axis only)")
        if name not in names and given is None:
            raise SettingError(name, f"no {name} image; give one (or a {name} axis)")


def _layer_union(g: G.Grid, spec: ProblemSpec) -> ProblemSpec:
    """With a ``style_layers`` axis: the spec over the union of the sets, in the network's order."""
    if "style_layers" not in g.names:
        return spec
    order = {n: j for j, n in enumerate(vgg.layer_names("vgg19"))}
    union = sorted({n for s in g.values("style_layers") for n in s}, key=lambda n: order.get(n, len(order)))
    return dataclasses.replace(spec, style_layers=tuple(union))


class _Images:
    """The member problems of the image axes: one :class:`Problem` per distinct (content, style), built lazily;
    the first loads the weights, the others reuse its params."""

    def __init__(self, g: G.Grid, content, style, spec: ProblemSpec):
        self.g, self.spec = g, spec
        self.contents = list(g.values("content")) if "content" in g.names else [content]
        self.styles = list(g.values("style")) if "style" in g.names else [style]
        self.cache: Dict[Tuple[int, int], Problem] = {}
        self.first = self.get(0, 0)
        self.params_spec = dataclasses.replace(spec, weights=self.first.params)
        self.weight_keys = {k: v for k, v in self.first.settings.items() if k.startswith("weights")}

    def _content(self, j: int):
        x = self.contents[j]
        if "content" not in self.g.names or j == 0:
            return x
        img = load_input(x, "content", self.spec.size)
        return fit_to_shape(img, self.first.content.shape[:2])

    def get(self, ci: int, si: int) -> Problem:
        if (ci, si) not in self.cache:
            style = self.styles[si]
            style = list(style) if isinstance(style, tuple) else style
            if not self.cache:
                p = prepare(self._content(ci), style, self.spec)
            else:
                p = prepare(self._content(ci), style, self.params_spec)
                p.settings.update(self.weight_keys)
            if "content" in self.g.names:
                p.settings["content"] = G.display_value(self.contents[ci])
            if "style" in self.g.names:
                p.settings["style"] = G.display_value(self.styles[si])
            self.cache[ci, si] = p
        return self.cache[ci, si]


def _check_length(axis: str, value, n: int, per: str) -> None:
    if len(value) != n:
        raise G.GridError(axis, f"{{axis}} value {list(value)} has {len(value)} numbers for {n} {per}; give one per "
                                f"{per.split(' (')[0].rstrip('s')}")


def _member_weights(p: Problem, values: Mapping[str, Any], convention: str) -> objective.Weights:
    """Member ``values`` applied to the problem's own weights (every other field, present or future, kept)."""
    cfg, fields = p.cfg, {}
    for name, v in values.items():
        axis = G.AXES[name]
        if axis.sets != "weights" or name == "ratio":
            continue
        if name == "layer_weights":
            _check_length(name, v, len(cfg.style_layers), f"style layers ({', '.join(cfg.style_layers)})")
        elif name == "style_blend":
            _check_length(name, v, len(p.styles_in), "style images")
        elif name == "region_weights":
            _check_length(name, v, len(p.region_names), f"regions ({', '.join(p.region_names)})")
        elif name == "style_layers":
            own = objective.make_weights(dataclasses.replace(cfg, style_layers=v), p.params, layer_weights=convention)
            per = dict(zip(v, np.asarray(own.style_layers).tolist()))
            v = [per.get(n, 0.0) for n in cfg.style_layers]
        fields[axis.field] = v
    if "ratio" in values:
        fields["style"] = float(fields.get("content", p.weights.content)) / values["ratio"]
    return p.weights.replace(**{k: jnp.asarray(v, jnp.float32) for k, v in fields.items()})


def _member_settings(p: Problem, options: SolveOptions, w: objective.Weights, values: Mapping[str, Any]) -> dict:
    """What reproduces member k as a single ``stylize`` run (and ``"grid"``: its axis values)."""
    s = run_settings(p, options)
    s.update(objective.weights_summary(w))
    if "style_layers" in values:
        s["style_layers"] = list(values["style_layers"])
        s["layer_weights"] = [s["layer_weights"][p.cfg.style_layers.index(n)] for n in values["style_layers"]]
    if "ratio" in values:
        s["ratio"] = values["ratio"]
    if "seed" in values:
        s["seed"] = values["seed"]
    s["grid"] = {n: G.display_value(v) for n, v in values.items()}
    return s


@dataclasses.dataclass
class _Plan:
    """Everything a sweep runs: per-member problems, stacked weights / x0 (/ targets), settings."""

    problems: List[Problem]
    weights: objective.Weights  # leaves [K, ...]
    x0: np.ndarray  # [K, H, W, C]
    targets: Any  # [K, ...] leaves when batched, else the shared targets
    settings: List[dict]
    batched: bool  # the targets carry the K axis (image axes)


def _plan(g: G.Grid, content, style, spec: ProblemSpec, options: SolveOptions) -> _Plan:
    images = _Images(g, content, style, _layer_union(g, spec))
    convention = spec.weight_settings()["layer_weights"]
    problems, weights, x0, settings = [], [], [], []
    for ix, values in zip(g.indices(), g.members()):
        p = images.get(ix.get("content", 0), ix.get("style", 0))
        w = _member_weights(p, values, convention)
        problems.append(p)
        weights.append(w)
        x0.append(initial_image(p, options.init, values.get("seed", options.seed)))
        settings.append(_member_settings(p, options, w, values))
    stacked = jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(v) for v in a]), *weights)
    objective.check_weights(stacked)
    targets = problems[0].targets
    if g.batched_targets:
        targets = jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(v) for v in a]),
                                         *[p.targets for p in problems])
    if not all(bool(np.all(np.isfinite(np.asarray(t)))) for t in jax.tree_util.tree_leaves(targets)):
        raise ValueError("the network's features of the content/style images are NaN/inf (its activations overflow "
                         "float32); check the weights (nst-jax weights info NAME) or use another --weights")
    return _Plan(problems, stacked, np.stack(x0), targets, settings, g.batched_targets)


def _subset(plan: _Plan, idx: Sequence[int]) -> _Plan:
    """The plan of the members ``idx`` only (a resumed sweep runs the members not yet written)."""
    take = lambda a: np.asarray(a)[np.asarray(idx)]  # noqa: E731
    return _Plan([plan.problems[i] for i in idx], jax.tree_util.tree_map(take, plan.weights), take(plan.x0),
                 jax.tree_util.tree_map(take, plan.targets) if plan.batched else plan.targets,
                 [plan.settings[i] for i in idx], plan.batched)


# --------------------------------------------------------------------------------------------------- running

def _fits(plan: _Plan, options: SolveOptions, memory_limit, per_device: Optional[int] = None
          ) -> Callable[[int], bool]:
    """``fits(m)``: m members on one device are within :func:`nst_jax.batching.members_per_program` (and
    ``per_device``) and their estimated peak is within ``memory_limit`` (None: the free memory; ``math.inf``: no
    limit). Batched targets add (m - 1) copies of one member's targets."""
    cap = min(batching.members_per_program(backend.resolve("members", options.solver.members)) or math.inf,
              per_device or math.inf)
    limit = memory.available_bytes() if memory_limit is None else memory_limit
    if limit is None or limit == math.inf:
        return lambda m: m <= cap
    p = plan.problems[0]
    shape = p.content_in.shape[:2]
    target_bytes = sum(np.asarray(t).nbytes for t in jax.tree_util.tree_leaves(p.targets))
    arch = vgg.spec_from_params(p.params)

    def fits(m: int) -> bool:
        est = memory.estimate_for_config(shape, p.cfg, arch=arch, n_styles=len(p.styles_in), batch=m,
                                         history=options.solver.history, solver=options.solver.name)
        return m <= cap and est + (m - 1) * target_bytes * plan.batched <= limit

    return fits


def _run_waves(plan: _Plan, options: SolveOptions, waves: int, per: int,
               on_wave: Optional[Callable[[List[int], List[Result], int], None]] = None
               ) -> Tuple[List[Result], float, float]:
    """Run the members wave by wave with one compiled program; returns (results, compile s, run s). With several
    devices each wave's members lie across them (``Members.sharded``); ``on_wave(member indices, results, per)``
    after each wave (every process sees every member's result; member ``j`` of a wave of ``per`` lies on device
    ``j // (per / device count)``)."""
    k, batched = len(plan.problems), plan.batched
    p0 = plan.problems[0]
    sharded = len(jax.devices()) > 1
    members = runner.Members(targets=0 if batched else None, weights=0, sharded=sharded)
    run = runner.Solve(p0.cfg, options.solver, members=members)
    params = distributed.place(p0.params, sharded=False) if sharded else p0.params
    shared_targets = plan.targets if batched or not sharded else distributed.place(plan.targets, sharded=False)
    bar, update = progress_bar(waves * options.iters, f"sweep K={k}", options.progress)
    results, compile_s, run_s = [], 0.0, 0.0
    try:
        for w in range(waves):
            real = list(range(w * per, min((w + 1) * per, k)))
            idx = real + [real[-1]] * (per - len(real))  # padding members repeat the last one; dropped below
            if bar is not None:
                bar.set_description(f"sweep K={k}: wave {w + 1}/{waves}, members {real[0] + 1}-{real[-1] + 1}")
            take = lambda a: np.asarray(a)[np.asarray(idx)]  # noqa: E731
            weights, x0 = jax.tree_util.tree_map(take, plan.weights), take(plan.x0)
            targets = jax.tree_util.tree_map(take, plan.targets) if batched else shared_targets
            if sharded:
                weights, x0 = distributed.place((weights, x0))
                targets = distributed.place(targets) if batched else targets
            offset = w * options.iters
            out = run(params, targets, weights, x0, options.iters,
                      progress=lambda done, loss, nfev: update(offset + done, loss, nfev),
                      report_seconds=options.report_seconds)
            wave = [result_of(plan.problems[i], out, plan.settings[i], member=j) for j, i in enumerate(real)]
            if on_wave is not None:
                on_wave(real, wave, per)
            results += wave
            compile_s, run_s = compile_s + out.compile_seconds, run_s + out.run_seconds
    finally:
        if bar is not None:
            bar.close()
    return results, compile_s, run_s


def sweep(content: Optional[ImageLike], style: Union[None, ImageLike, Sequence[ImageLike]] = None,
          grid: Union[None, Mapping[str, Sequence[Any]], Sequence[float]] = None, zip: bool = False,
          spec: Optional[ProblemSpec] = None, options: Optional[SolveOptions] = None, *,
          ratios: Optional[Sequence[float]] = None, memory_limit: Optional[float] = None,
          max_members: int = G.MAX_MEMBERS, on_wave: Optional[Callable[[List[int], List[Result], int], None]] = None,
          only: Optional[Sequence[int]] = None, members_per_device: Optional[int] = None, **kwargs) -> SweepResult:
    """Run every member of a grid of settings as ONE compiled, vmapped solve (2016 paper, Figs. 2-4, and beyond).

    Args:
      content, style: as :func:`nst_jax.stylize`; None where a ``content`` / ``style`` axis gives the images.
      grid: ``{axis: [values]}`` over the axes of :data:`nst_jax.grid.AXES`: ``ratio`` (α/β; the member's style
        weight is its content weight / ratio), ``content_weight``, ``style_weight``, ``tv_weight``,
        ``layer_weights`` (one vector per value), ``style_layers`` (one set of layers per value: one program over
        the union, the preset's layer weights inside each set and 0 outside), ``style_blend``, ``region_weights``,
        ``seed`` (the noise initialisation; needs ``init="noise"``), ``style`` (style images) and ``content``
        (photos, resized and centre-cropped to the first photo's shape). A plain sequence means ``{"ratio": ...}``.
      zip: members are the axes side by side (equal lengths) instead of their Cartesian product.
      ratios: shorthand for ``grid={"ratio": ratios}`` (default :data:`DEFAULT_RATIOS`).
      memory_limit: bytes the members of one wave (per device) may take (None: the free memory; ``math.inf``: no
        limit); members that do not fit at once (or are more than one program holds with ``members="unroll"``, see
        the module docstring) run in the fewest equal waves that do, with the same program.
      max_members: refuse larger grids (a guard against typos; default :data:`nst_jax.grid.MAX_MEMBERS`).
      on_wave: ``on_wave(member indices, results, members per wave)`` after each wave (e.g. to write members as
        they finish).
      only: run just these members (grid order; e.g. those a stopped run did not write); the result holds them.
      members_per_device: at most this many members per device in one wave (smaller waves: finished members are
        handed to ``on_wave`` sooner).
      spec, options, **kwargs: as :func:`nst_jax.stylize`.

    Member k equals the single ``stylize`` run with its settings (``results[k].settings``). Bad grids are refused
    before anything is computed (:func:`nst_jax.grid.make_grid`), and values of the wrong length when the problem
    is known (one line naming the axis and the fix).

    Example:
      >>> import nst_jax
      >>> sw = nst_jax.sweep(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                    ratios=[1e-3, 1e-1], weights="tiny19", size=32, iters=3, progress=False)
      >>> sw.images.shape, sw.ratios
      ((2, 32, 32, 3), [0.001, 0.1])
    """
    g = G.make_grid(_grid_of(grid, ratios), zip=zip, max_members=max_members)
    spec, options = split_kwargs(spec, options, **kwargs)
    _refuse_conflicts(g, spec, options, content, style)
    if members_per_device is not None and not (isinstance(members_per_device, int) and members_per_device >= 1):
        raise SettingError("members_per_device", f"{{setting}} must be an integer >= 1, got {members_per_device!r}")
    if memory_limit is not None and not (isinstance(memory_limit, (int, float)) and memory_limit > 0):
        raise SettingError("memory_limit", f"{{setting}} must be a number of bytes > 0 (or None), got "
                                           f"{memory_limit!r}")
    plan = _plan(g, content, style, spec, options)
    members = [{n: G.display_value(v) for n, v in m.items()} for m in g.members()]
    if only is not None:
        only = sorted(set(int(i) for i in only))
        if not only or not all(0 <= i < len(plan.problems) for i in only):
            raise SettingError("only", f"{{setting}} must name members 0..{len(plan.problems) - 1}, got {only}")
        plan, members = _subset(plan, only), [members[i] for i in only]
        if on_wave is not None:
            user = on_wave
            on_wave = lambda idx, res, per: user([only[i] for i in idx], res, per)  # noqa: E731
    n_dev = len(jax.devices())
    try:
        waves, per = plan_waves(len(plan.problems), n_dev, _fits(plan, options, memory_limit, members_per_device))
    except ValueError:
        h, w = plan.problems[0].content_in.shape[:2]
        raise ValueError(f"{w}x{h} px: one member per device does not fit in the memory allowed; try a smaller size, "
                         "history=20 (--history 20), or raise memory_limit (--memory-limit)") from None
    results, compile_s, run_s = _run_waves(plan, options, waves, per, on_wave)
    axes = {a.name: [G.display_value(v) for v in vals] for a, vals in g.axes}
    return SweepResult(axes, members, results, compile_s, run_s, g.shape, g.zip, waves)


def stylize_batch(contents: Sequence[ImageLike], style: Union[ImageLike, Sequence[ImageLike]],
                  spec: Optional[ProblemSpec] = None, options: Optional[SolveOptions] = None, *,
                  memory_limit: Optional[float] = None, **kwargs) -> List[SweepResult]:
    """Stylise many photos with one style: the photos of each shape after resizing (``size``) run as one ``content``
    sweep, so there is one compiled program per distinct shape. Returns one :class:`SweepResult` per shape, in
    order of first appearance; together their members are every photo once.

    Example:
      >>> import numpy as np, nst_jax
      >>> a, b, c = (np.full((h, 40, 3), v, np.float32) for h, v in ((40, 0.2), (20, 0.5), (40, 0.8)))
      >>> parts = stylize_batch([a, b, c], nst_jax.sample_path("great_wave"), weights="tiny19", size=32, iters=1,
      ...                       progress=False)
      >>> [p.images.shape for p in parts]                        # two shapes: two compiled programs
      [(2, 32, 32, 3), (1, 16, 32, 3)]
    """
    spec, options = split_kwargs(spec, options, **kwargs)
    groups: Dict[Tuple[int, int], List[Any]] = {}
    for c in contents:
        hw = original_shape(c)
        groups.setdefault(hw if spec.size is None else I.fit_shape(hw, size=spec.size), []).append(c)
    return [sweep(None, style, {"content": group}, spec=spec, options=options, memory_limit=memory_limit)
            for group in groups.values()]
