"""nst-jax: optimisation-based neural style transfer in JAX (Gatys et al. 2016, 2017).

The public API, all importable from ``nst_jax``:

* running a transfer: :func:`stylize`, :func:`sweep` (any grid of settings as one compiled program, see
  :mod:`nst_jax.grid`), :func:`stylize_batch`, :class:`Result`, :class:`SweepResult`, and the parts they compose: :func:`prepare` -> :class:`Problem` -> :func:`solve_problem`;
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
  ``guided``, ``guidance``, ``masks``, ``color``, ``vgg``, ``lean_ops``, ``backend``, ``weights``, ``lbfgs``,
  ``solvers``, ``batching``, ``runner``, ``problem``, ``transfer``, ``warmstart``, ``grid``, ``sweeps``, ``pyramid``,
  ``checkpoint``, ``memory``, ``image``, ``files``, ``figures``.
"""

from nst_jax import (backend, batching, checkpoint, color, config, figures, files, grid, guidance, guided, image,
                     lbfgs, lean_ops, losses, masks, memory, objective, problem, pyramid, runner, solvers, sweeps,
                     transfer, vgg, warmstart, weights)

from nst_jax.color import match_color, match_luminance, original_colors, rgb_to_yiq, yiq_to_rgb
from nst_jax.config import (ColorConfig, LossConfig, ProblemSpec, SettingError, SolveOptions, SolverConfig,
                            SpatialConfig)
from nst_jax.files import atomic_write
from nst_jax.guidance import propagate_guides
from nst_jax.guided import guided_gram, guided_sum, stacked_gram
from nst_jax.image import load_image, sample_path, save_image
from nst_jax.lbfgs import guarded_lbfgs
from nst_jax.losses import content_loss, gram, style_loss, tv_loss
from nst_jax.masks import load_guides
from nst_jax.objective import Targets, Weights, compute_targets, loss_terms, make_weights, total_loss
from nst_jax.problem import Problem, prepare
from nst_jax.runner import Solve
from nst_jax.sweeps import SweepResult, stylize_batch, sweep
from nst_jax.transfer import LevelsResult, Result, solve_levels, solve_problem, stylize
from nst_jax.vgg import deprocess, features, init_params, layer_names, preprocess
from nst_jax.weights import WeightsInfo, load_weights

__version__ = "0.1.0"

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
    "backend", "batching", "checkpoint", "color", "config", "figures", "files", "grid", "guidance", "guided", "image",
    "lbfgs", "lean_ops", "losses", "masks", "memory", "objective", "problem", "pyramid", "runner", "solvers",
    "sweeps", "transfer", "vgg", "warmstart", "weights",
]
