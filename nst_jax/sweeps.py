"""Sweeps: K settings of one problem as ONE compiled, vmapped solve (the 2016 paper's α/β figure, and beyond).

Member k of a sweep is the single solve with its own :class:`nst_jax.objective.Weights`; the K weights are stacked
along a leading axis and the solve is ``jax.vmap``-ed over it (:class:`nst_jax.runner.Members`), so all K compile
once. With several devices the K axis is sharded across them (:func:`shard_members`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import runner
from nst_jax.config import ProblemSpec, SettingError, SolveOptions, split_kwargs
from nst_jax.problem import ImageLike, initial_image, prepare
from nst_jax.transfer import Result, progress_bar, result_of, run_settings

__all__ = ["DEFAULT_RATIOS", "SweepResult", "sweep", "shard_members"]

DEFAULT_RATIOS = (1e-4, 1e-3, 1e-2, 1e-1)


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
        """[K, H, W, 3]."""
        return np.stack([r.image for r in self.results])


def shard_members(tree):
    """Place the leading K axis of every leaf across all devices (a no-op on one device); K must be a multiple of
    the device count."""
    devices = jax.devices()
    if len(devices) == 1:
        return tree
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    mesh = Mesh(np.array(devices), ("k",))
    return jax.device_put(tree, NamedSharding(mesh, P("k")))


def sweep(content: ImageLike, style: Union[ImageLike, Sequence[ImageLike]], ratios: Sequence[float] = DEFAULT_RATIOS,
          spec: Optional[ProblemSpec] = None, options: Optional[SolveOptions] = None, **kwargs) -> SweepResult:
    """Run K content/style ratios α/β in ONE vmapped compiled solve (2016 paper, Fig. 4).

    Member k uses ``content_weight = α`` (the preset's or the one given) and ``style_weight = α / ratios[k]``.
    With several devices the K axis is sharded across them (K padded to a multiple of the device count; padding
    members are dropped). ``spec``, ``options`` and ``**kwargs`` as :func:`nst_jax.stylize`.

    Example:
      >>> import nst_jax
      >>> sw = nst_jax.sweep(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                    ratios=[1e-3, 1e-1], weights="tiny19", size=32, iters=3, progress=False)
      >>> sw.images.shape
      (2, 32, 32, 3)
    """
    ratios = [float(r) for r in ratios]
    if not ratios:
        raise SettingError("ratios", "{setting} is empty; give at least one ratio")
    if any(not (math.isfinite(r) and r > 0) for r in ratios):
        raise SettingError("ratios", f"{{setting}} alpha/beta must be finite and > 0, got {ratios}")
    spec, options = split_kwargs(spec, options, **kwargs)
    problem = prepare(content, style, spec)
    k = len(ratios)
    ndev = len(jax.devices())
    k_pad = int(math.ceil(k / ndev) * ndev)
    alpha = float(problem.weights.content)
    member_ratios = ratios + [ratios[-1]] * (k_pad - k)
    weights = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (k_pad,) + a.shape), problem.weights)
    weights = weights.replace(style=alpha / jnp.asarray(member_ratios, jnp.float32))
    x0 = initial_image(problem, options.init, options.seed)
    x0 = np.broadcast_to(x0, (k_pad,) + x0.shape).copy()
    weights, x0 = shard_members((weights, jnp.asarray(x0)))
    run = runner.Solve(problem.cfg, options.solver, members=runner.Members(targets=None, weights=0))
    bar, update = progress_bar(options.iters, f"sweep x{k}", options.progress)
    try:
        out = run(problem.params, problem.targets, weights, x0, options.iters, progress=update,
                  report_seconds=options.report_seconds)
    finally:
        if bar is not None:
            bar.close()
    base = run_settings(problem, options)
    results = [result_of(problem, out, dict(base, ratio=r, style_weight=alpha / r), member=j)
               for j, r in enumerate(ratios)]
    return SweepResult(ratios, results, out.compile_seconds, out.run_seconds)
