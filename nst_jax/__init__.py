"""nst-jax: optimisation-based neural style transfer in JAX (Gatys et al. 2016, 2017).

The public API, all importable from ``nst_jax``:

* running a transfer: :func:`stylize`, :func:`sweep` (any grid of settings as one compiled program, see
  :mod:`nst_jax.grid`), :func:`stylize_batch`, :class:`Result`, :class:`SweepResult`, and the parts they compose:
  :func:`prepare` -> :class:`Problem` -> :func:`solve_problem`;
  runs of several sizes (multi-resolution warm start, coarse-to-fine): :func:`solve_levels` -> :class:`LevelsResult`;
* settings (frozen, validated once): :class:`ProblemSpec`, :class:`SolveOptions`, :class:`SolverConfig`,
  :class:`LossConfig`, :class:`ColorConfig`, :class:`SpatialConfig`, :class:`SettingError`;
* the objective (pure, traced): :class:`Weights`, :class:`Targets`, :func:`make_weights`, :func:`compute_targets`,
  :func:`loss_terms`, :func:`total_loss`;
* the optimiser: :func:`guarded_lbfgs` (pure ``init/propose/update``) and the compiled runner :class:`Solve`;
* the network: :func:`features`, :func:`preprocess`, :func:`deprocess`, :func:`init_params`, :func:`layer_names`;
* weights: :func:`load_weights`, :class:`WeightsInfo`;
* losses: :func:`gram`, :func:`content_loss`, :func:`style_loss`, :func:`tv_loss`, :func:`guided_gram`,
  :func:`guided_sum`, :func:`stacked_gram`;
* colour control: :func:`rgb_to_yiq`, :func:`yiq_to_rgb`, :func:`match_color`, :func:`match_luminance`,
  :func:`original_colors`;
* spatial control: :func:`propagate_guides`, :func:`load_guides`;
* images: :func:`load_image`, :func:`save_image`, :func:`sample_path`, :func:`atomic_write`;
* modules (one concept each; see the README's "How it is built"): ``config``, ``objective``, ``losses``,
  ``style_losses``, ``gradnorm``, ``guided``, ``guidance``, ``masks``, ``color``, ``vgg``, ``lean_ops``, ``winograd``,
  ``backend``, ``weights``, ``lbfgs``, ``solvers``, ``batching``, ``runner``, ``progress``, ``problem``, ``transfer``, ``grid``,
  ``sweeps``, ``warmstart``, ``distributed``, ``pyramid``, ``checkpoint``, ``interrupts``, ``memory``, ``image``, ``files``,
  ``figures``.

Everything is imported on first use (PEP 562): ``import nst_jax`` costs nothing until a name is used.
"""

import importlib

__version__ = "0.1.0"

#: The submodules, imported on first use (PEP 562): ``import nst_jax`` and ``import nst_jax.cli`` stay light, so the
#: command starts at once and answers Ctrl-C while JAX is still loading.
_MODULES = ("backend", "batching", "checkpoint", "color", "config", "distributed", "figures", "files", "gradnorm",
            "grid", "guidance", "guided", "image", "interrupts", "lbfgs", "lean_ops", "losses", "masks", "memory",
            "objective", "problem", "progress", "pyramid", "runner", "solvers", "style_losses", "sweeps", "transfer",
            "vgg", "warmstart", "weights", "winograd")

#: Public name -> the module defining it (imported on first use, as the submodules).
_API = {
    "nst_jax.color": ("match_color", "match_luminance", "original_colors", "rgb_to_yiq", "yiq_to_rgb"),
    "nst_jax.config": ("ColorConfig", "LossConfig", "ProblemSpec", "SettingError", "SolveOptions", "SolverConfig",
                       "SpatialConfig"),
    "nst_jax.files": ("atomic_write",),
    "nst_jax.guidance": ("propagate_guides",),
    "nst_jax.guided": ("guided_gram", "guided_sum", "stacked_gram"),
    "nst_jax.image": ("load_image", "sample_path", "save_image"),
    "nst_jax.lbfgs": ("guarded_lbfgs",),
    "nst_jax.losses": ("content_loss", "gram", "style_loss", "tv_loss"),
    "nst_jax.masks": ("load_guides",),
    "nst_jax.objective": ("Targets", "Weights", "compute_targets", "loss_terms", "make_weights", "total_loss"),
    "nst_jax.problem": ("Problem", "prepare"),
    "nst_jax.runner": ("Solve",),
    "nst_jax.sweeps": ("SweepResult", "stylize_batch", "sweep"),
    "nst_jax.transfer": ("LevelsResult", "Result", "solve_levels", "solve_problem", "stylize"),
    "nst_jax.vgg": ("deprocess", "features", "init_params", "layer_names", "preprocess"),
    "nst_jax.weights": ("WeightsInfo", "load_weights"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}

__all__ = [
    "stylize", "sweep", "stylize_batch", "Result", "SweepResult", "prepare", "Problem", "solve_problem",
    "solve_levels", "LevelsResult",
    "ProblemSpec", "SolveOptions", "SolverConfig", "LossConfig", "ColorConfig", "SpatialConfig", "SettingError",
    "Weights", "Targets", "make_weights", "compute_targets", "loss_terms", "total_loss",
    "guarded_lbfgs", "Solve",
    "features", "preprocess", "deprocess", "init_params", "layer_names",
    "load_weights", "WeightsInfo",
    "gram", "content_loss", "style_loss", "tv_loss", "guided_gram", "guided_sum", "stacked_gram",
    "rgb_to_yiq", "yiq_to_rgb", "match_color", "match_luminance", "original_colors",
    "propagate_guides", "load_guides",
    "load_image", "save_image", "sample_path", "atomic_write",
    "backend", "batching", "checkpoint", "color", "config", "distributed", "figures", "files", "gradnorm", "grid",
    "guidance", "guided", "image", "interrupts", "lbfgs", "lean_ops", "losses", "masks", "memory", "objective",
    "problem", "progress", "pyramid", "runner", "solvers", "style_losses", "sweeps", "transfer", "vgg", "warmstart",
    "weights", "winograd",
]


def __getattr__(name: str):
    """A submodule or public name, imported on first use (PEP 562)."""
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
