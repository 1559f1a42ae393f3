"""Grids: what a sweep can vary, how each axis is written and checked, and the K members a grid makes.

A grid is ``{axis: [values]}``. Its members are the Cartesian product of the axes, the first axis varying slowest
(``zip=True``: the axes side by side, all of one length). Every axis is an :class:`Axis` in :data:`AXES`: its name
(the keyword; the command line writes it with ``-``, as the ``stylize`` flag: ``tv-weight``), the kind of value it
takes, how command-line text parses into values, and what of a member it sets: a field of the traced
:class:`nst_jax.objective.Weights`, the initial image, or the targets (the image axes ``style`` and ``content``,
whose members each get their own targets). Axes change traced values only, so all K members run as one compiled
program (:func:`nst_jax.sweeps.sweep`); a setting that changes the program's structure is refused by name, with the
reason (:data:`STRUCTURAL`).

Example:
  >>> g = make_grid({"ratio": [1e-3, 1e-2], "style_layers": ["relu1_1", "relu1_1,relu2_1"]})
  >>> g.shape, len(g.members()), g.members()[1]
  ((2, 2), 4, {'ratio': 0.001, 'style_layers': ('relu1_1', 'relu2_1')})
  >>> parse_axis("style-layers", "relu1_1|relu1_1,relu2_1")        # '|' separates set and vector values
  ('style_layers', [('relu1_1',), ('relu1_1', 'relu2_1')])
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nst_jax.config import MAX_SEED, SettingError

__all__ = ["Axis", "AXES", "STRUCTURAL", "MAX_MEMBERS", "GridError", "Grid", "make_grid", "parse_axis",
           "display_value", "file_part"]

#: Largest grid run without an explicit ``max_members`` (``--max-members``): a typo in a product of axes can ask for
#: millions of solves.
MAX_MEMBERS = 10_000

KINDS = ("number", "vector", "layers", "seed", "image")


class GridError(SettingError):
    """A refused grid. ``template`` holds ``{axis}`` where the axis goes (``grid axis 'tv_weight'`` in Python,
    ``--grid tv-weight`` on the command line) and may hold ``{axes}`` (the known axes, spelt the same way)."""

    def __init__(self, axis: str, template: str):
        self.axis = axis
        self.setting, self.template = "grid", template
        ValueError.__init__(self, self._text(False))

    def _text(self, flag: bool) -> str:
        spell = (lambda n: n.replace("_", "-")) if flag else (lambda n: n)
        axis = f"--grid {spell(self.axis)}" if flag else f"grid axis {self.axis!r}"
        # replace, not str.format: the message may quote the user's text, braces and all
        return self.template.replace("{axis}", axis).replace("{axes}", ", ".join(spell(n) for n in AXES))

    def for_flag(self) -> str:
        return self._text(True)


@dataclasses.dataclass(frozen=True)
class Axis:
    """One kind of grid axis.

    Attributes:
      name: the keyword (``tv_weight``); :attr:`flag` is the command line's spelling (``tv-weight``).
      kind: "number" (a float >= 0; > 0 with ``positive``), "vector" (floats >= 0, ``|`` between values on the
        command line), "layers" (a set of layer names, ``|`` between sets), "seed" (an integer) or "image" (a path
        or an [H, W, 3] array; ``style`` also takes a list of images, blended).
      sets: what a member's value changes: "weights" (a field of the traced ``Weights``), "x0" (the initial image)
        or "targets" (the member gets its own targets: batched targets, ``runner.Members(targets=0)``).
      what: one value, in words (messages and help).
      field: the ``Weights`` field a "weights" axis sets (``ratio`` sets ``style`` to content / ratio;
        ``style_layers`` sets ``style_layers`` to the preset's layer weights inside the member's set, 0 outside).
      positive: numbers must be > 0 (not only >= 0).
    """

    name: str
    kind: str
    sets: str
    what: str
    field: Optional[str] = None
    positive: bool = False

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")

    @property
    def batched_targets(self) -> bool:
        return self.sets == "targets"

    def parse(self, text: str) -> List[Any]:
        """Command-line text to values: ``,`` between numbers, seeds and images; ``|`` between vectors and layer
        sets, whose own elements are comma-separated as the ``stylize`` flag takes them."""
        sep = "|" if self.kind in ("vector", "layers") else ","
        items = [v.strip() for v in str(text).split(sep)]
        if not any(items):
            raise GridError(self.name, "{axis} is empty; give at least one value")
        if not all(items):
            raise GridError(self.name, f"{{axis}} has an empty value in {text!r}; separate values by {sep!r} once")
        if self.kind == "vector":
            return [[self._number_text(x) for x in item.split(",")] for item in items]
        if self.kind == "layers":
            return [tuple(x.strip() for x in item.split(",")) for item in items]
        if self.kind == "number":
            return [self._number_text(item) for item in items]
        if self.kind == "seed":
            try:
                return [int(item) for item in items]
            except ValueError:
                raise GridError(self.name, f"{{axis}} takes integers from 0 to {MAX_SEED}, got {text!r}") from None
        return items

    def _number_text(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            hint = " (separate vectors by '|')" if self.kind == "vector" else ""
            raise GridError(self.name, f"{{axis}} takes numbers{hint}, got {text!r}") from None

    def check(self, value, j: int):
        """The ``j``-th value, normalised (floats, tuples of floats or layer names, int seeds); one-line errors."""
        where = f"value {j + 1}"
        if self.kind == "number":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) \
                and (float(value) > 0 if self.positive else float(value) >= 0)
            if not ok:
                bound = "> 0" if self.positive else ">= 0"
                raise GridError(self.name, f"{{axis}} takes finite numbers {bound}; {where} is {value!r}")
            return float(value)
        if self.kind == "vector":
            return self._vector(value, where)
        if self.kind == "layers":
            return self._layers(value, where)
        if self.kind == "seed":
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= MAX_SEED):
                raise GridError(self.name, f"{{axis}} takes integers from 0 to {MAX_SEED}; {where} is {value!r}")
            return int(value)
        return self._image(value, where)

    def _vector(self, value, where: str) -> Tuple[float, ...]:
        if isinstance(value, (str, bytes)) or np.ndim(value) != 1 or np.size(value) == 0:
            raise GridError(self.name, f"{{axis}} takes one vector of numbers per value; {where} is {value!r}")
        try:
            v = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            raise GridError(self.name, f"{{axis}} takes vectors of numbers; {where} is {value!r}") from None
        if not (np.all(np.isfinite(v)) and np.all(v >= 0)):
            raise GridError(self.name, f"{{axis}} takes finite numbers >= 0; {where} is {v.tolist()}")
        return tuple(float(x) for x in v)

    def _layers(self, value, where: str) -> Tuple[str, ...]:
        names = value.split(",") if isinstance(value, str) else value
        if isinstance(names, (bytes, Mapping)) or not isinstance(names, Sequence):
            raise GridError(self.name, f"{{axis}} takes sets of layer names such as 'relu1_1,relu2_1'; {where} is "
                                       f"{value!r}")
        names = tuple(str(n).strip() for n in names)
        if not names or not all(names) or len(set(names)) != len(names):
            raise GridError(self.name, f"{{axis}} takes non-empty sets of distinct layer names; {where} is "
                                       f"{value!r}")
        return names

    def _image(self, value, where: str):
        single = lambda v: isinstance(v, (str, os.PathLike)) or (hasattr(v, "shape") and np.ndim(v) in (2, 3))  # noqa
        if single(value):
            return value
        if self.name == "style" and isinstance(value, (list, tuple)) and value and all(single(v) for v in value):
            return tuple(value)
        also = " or a list of them (blended)" if self.name == "style" else ""
        raise GridError(self.name, f"{{axis}} takes image paths or [H, W, 3] arrays{also}; {where} is a "
                                   f"{type(value).__name__}")


#: Every grid axis, by keyword.
AXES: Dict[str, Axis] = {a.name: a for a in (
    Axis("ratio", "number", "weights", "alpha/beta: the member's style weight is its content weight / ratio",
         "style", positive=True),
    Axis("content_weight", "number", "weights", "alpha, the content weight", "content"),
    Axis("style_weight", "number", "weights", "beta, the style weight", "style"),
    Axis("tv_weight", "number", "weights", "the total-variation weight", "tv"),
    Axis("layer_weights", "vector", "weights", "one weight per style layer", "style_layers"),
    Axis("style_layers", "layers", "weights", "a set of style layers (one program over the union of the sets, "
                                              "zero layer weights outside each member's set)", "style_layers"),
    Axis("style_blend", "vector", "weights", "one blend weight per style image", "blend"),
    Axis("region_weights", "vector", "weights", "one weight per region of spatial control", "regions"),
    Axis("style_loss_weights", "vector", "weights", "one weight per style loss kind (style_loss: gram, w2, sliced, "
                                                    "hist)", "style_losses"),
    Axis("seed", "seed", "x0", "the seed of the noise initialisation (init='noise')"),
    Axis("style", "image", "targets", "a style image (a list of them: blended)"),
    Axis("content", "image", "targets", "a content photo (resized, and centre-cropped, to the first photo's shape)"),
)}

#: Settings that change the compiled program's structure, and why: refused as grid axes (run one sweep per value).
STRUCTURAL: Dict[str, str] = {
    "pooling": "max and average pooling are different networks",
    "size": "the image size is the shape of every array in the program",
    "style_scale": "the style images' size changes the target programs' shapes",
    "preset": "a preset sets the Gram normalisation, part of the program",
    "content_layers": "the content layers are part of the program's structure",
    "weights": "each network is its own program",
    "color": "colour control changes the optimised channels and the targets",
    "match_mode": "colour matching changes the targets' preparation",
    "lum_match": "luminance matching changes the targets' preparation",
    "spatial": "the spatial-control mode is part of the program's structure",
    "solver": "each solver is its own program", "history": "the L-BFGS history sets the state's shape",
    "lr": "the step size is a static solver setting", "precondition": "preconditioning is part of the solver",
    "iters": "all members run the same iterations", "init": "all members start alike (vary the noise by 'seed')",
    "remat": "rematerialisation is part of the program", "compute_dtype": "the compute dtype is part of the program",
    "ops": "the network op path is part of the program", "conv": "the convolution form is part of the program",
    "precision": "the matmul precision is part of the program",
    "loop": "the loop mode is part of the runner", "members": "the member evaluation mode is part of the program",
    "chunk": "the chunk length is part of the runner",
    "style_loss": "the style loss kinds are part of the program (compute several and sweep style-loss-weights)",
    "sliced_projections": "the number of projections sets the targets' shapes",
    "hist_bins": "the number of bins sets the targets' shapes",
    "sliced_seed": "the projections are drawn when the targets are made",
    "normalize_gradients": "gradient normalisation is part of the program",
    "style_ref_size": "the resolution rule sets the layer weights (sweep layer-weights)",
    "ema": "iterate averaging is part of the solver",
}


@dataclasses.dataclass(frozen=True)
class Grid:
    """Checked axes and how they combine. ``axes``: ((Axis, values), ...) in the order given."""

    axes: Tuple[Tuple[Axis, Tuple[Any, ...]], ...]
    zip: bool = False

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(a.name for a, _ in self.axes)

    @property
    def shape(self) -> Tuple[int, ...]:
        """The axes' lengths (a product grid), or (K,) (zipped)."""
        return (len(self.axes[0][1]),) if self.zip else tuple(len(v) for _, v in self.axes)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def values(self, name: str) -> Tuple[Any, ...]:
        return dict((a.name, v) for a, v in self.axes)[name]

    def indices(self) -> List[Dict[str, int]]:
        """Each member's index into each axis's values."""
        names = self.names
        if self.zip:
            return [{n: k for n in names} for k in range(self.size)]
        return [dict(zip(names, ix)) for ix in itertools.product(*(range(len(v)) for _, v in self.axes))]

    def members(self) -> List[Dict[str, Any]]:
        """Each member's values ``{axis: value}``, first axis slowest."""
        vals = {a.name: v for a, v in self.axes}
        return [{n: vals[n][j] for n, j in ix.items()} for ix in self.indices()]

    @property
    def batched_targets(self) -> bool:
        return any(a.batched_targets for a, _ in self.axes)


def _axis(name: str) -> Axis:
    key = str(name).strip().replace("-", "_")
    if key in AXES:
        return AXES[key]
    if key in STRUCTURAL:
        raise GridError(key, f"{{axis}} cannot be swept in one program: {STRUCTURAL[key]}; run one sweep per value")
    raise GridError(key, "unknown {axis}; grid axes are {axes}")


def parse_axis(name: str, text: str) -> Tuple[str, List[Any]]:
    """``("tv-weight", "0,1e-3")`` -> ``("tv_weight", [0.0, 0.001])``: one ``--grid NAME=VALUES`` (see
    :meth:`Axis.parse`)."""
    axis = _axis(name)
    return axis.name, axis.parse(text)


def _key(value) -> Any:
    """A hashable identity of a checked value (arrays by identity: equal pixels in two arrays count as two)."""
    if isinstance(value, tuple):
        return tuple(_key(v) for v in value)
    return ("array", id(value)) if hasattr(value, "shape") else value


def make_grid(grid: Mapping[str, Sequence[Any]], zip: bool = False, max_members: int = MAX_MEMBERS) -> Grid:
    """Check a grid ``{axis: values}`` and return its :class:`Grid`.

    Refuses (one line, naming the axis and the fix): an unknown or structure-changing axis, an axis given twice
    (``tv_weight`` and ``tv-weight``), no axes, an empty axis, a value of the wrong type, axes of unequal lengths with
    ``zip``, more than ``max_members`` members, and two members with the same values.
    """
    if not isinstance(grid, Mapping) or not grid:
        raise SettingError("grid", f"{{setting}} needs at least one axis such as {{{{'ratio': [1e-4, 1e-3]}}}}; axes "
                                   f"are {', '.join(AXES)}")
    if not isinstance(zip, bool):
        raise SettingError("zip", f"{{setting}} must be True or False, got a {type(zip).__name__} (pass spec and "
                                  "options by keyword)")
    if not (isinstance(max_members, numbers.Integral) and max_members >= 1):
        raise SettingError("max_members", f"{{setting}} must be an integer >= 1, got {max_members!r}")
    axes, seen = [], set()
    for name, values in grid.items():
        axis = _axis(name)
        if axis.name in seen:
            raise GridError(axis.name, "{axis} is given twice; give each axis once")
        seen.add(axis.name)
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            values = axis.parse(values) if isinstance(values, str) else [values]
        if len(values) == 0:
            raise GridError(axis.name, "{axis} is empty; give at least one value")
        axes.append((axis, tuple(axis.check(v, j) for j, v in enumerate(values))))
    g = Grid(tuple(axes), bool(zip))
    if g.zip and len({len(v) for _, v in axes}) > 1:
        lens = ", ".join(f"{a.name} {len(v)}" for a, v in axes)
        raise GridError(axes[0][0].name, f"zipped axes need equal lengths, got {lens}; give every axis as many values "
                                         "or drop zip (--zip) for the product")
    if g.size > max_members:
        raise SettingError("max_members", f"the grid has {g.size} members, more than {{setting}} {max_members}; "
                                          f"raise {{setting}} to {g.size} to run it, or give fewer values")
    _refuse_repeats(g)
    return g


def _refuse_repeats(g: Grid) -> None:
    first: Dict[Any, int] = {}
    for k, m in enumerate(g.members()):
        key = tuple(_key(v) for v in m.values())
        if key in first:
            shown = ", ".join(f"{n}={display_value(v)}" for n, v in m.items())
            raise GridError(g.names[0], f"members {first[key] + 1} and {k + 1} of the grid are the same ({shown}); "
                                        "give each value of {axis} (and each combination) once")
        first[key] = k


def display_value(value) -> Any:
    """A member's value as JSON (and PNG text) shows it: numbers, lists, image paths (``"array"`` for arrays)."""
    if isinstance(value, tuple):
        return [display_value(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return "array" if hasattr(value, "shape") else value


def file_part(name: str, value) -> str:
    """``tv-weight-0.001``: an axis and its exact value (``repr`` of the float, never rounded) for a file name;
    images by their file name's stem, sets and vectors joined by ``+``; characters outside ``[A-Za-z0-9._+-]``
    become ``_``."""
    def one(v) -> str:
        if isinstance(v, (str, os.PathLike)) and name in ("style", "content"):
            return os.path.splitext(os.path.basename(os.fspath(v)))[0]
        if hasattr(v, "shape"):
            return "array"
        return repr(v) if isinstance(v, float) else str(v)

    text = "+".join(one(v) for v in value) if isinstance(value, tuple) else one(value)
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._+-") else "_" for c in text)
    return f"{name.replace('_', '-')}-{safe}"
