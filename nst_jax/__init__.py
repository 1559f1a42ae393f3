"""nst-jax: optimisation-based neural style transfer in JAX (Gatys et al. 2016, 2017).

Public API (everything below is importable from ``nst_jax``):

* running a transfer: :func:`stylize`, :func:`sweep`, :class:`Result`, :class:`SweepResult`;
* the network: :func:`features`, :func:`preprocess`, :func:`deprocess`, :func:`init_params`, :func:`layer_names`;
* weights: :func:`load_weights`, :class:`WeightsInfo`;
* losses: :func:`gram`, :func:`content_loss`, :func:`style_loss`, :func:`tv_loss`, :func:`guided_gram`,
  :func:`guided_sum`, :func:`stacked_gram`;
* colour control: :func:`rgb_to_yiq`, :func:`yiq_to_rgb`, :func:`match_color`, :func:`match_luminance`,
  :func:`original_colors`;
* spatial control: :func:`propagate_guides`, :func:`load_guides`;
* images: :func:`load_image`, :func:`save_image`, :func:`sample_path`;
* the compiled solve: :class:`LossConfig`, :class:`SolverConfig`, :class:`Solve`, :func:`compute_targets`,
  :func:`make_weights`, :func:`loss_terms`;
* modules: ``vgg``, ``weights``, ``losses``, ``guidance``, ``color``, ``solve``, ``transfer`` (``stylize``/``sweep``
  and their parts: ``prepare``, ``Problem``, ``solve_problem``), ``image``, ``figures``, ``pyramid``, ``memory``, ``checkpoint``.
"""

from nst_jax import checkpoint, color, figures, guidance, image, losses, memory, pyramid, solve, transfer, vgg, weights
from nst_jax.color import match_color, match_luminance, original_colors, rgb_to_yiq, yiq_to_rgb
from nst_jax.guidance import load_guides, propagate_guides
from nst_jax.image import load_image, sample_path, save_image
from nst_jax.losses import content_loss, gram, guided_gram, guided_sum, stacked_gram, style_loss, tv_loss
from nst_jax.solve import LossConfig, Solve, SolverConfig, compute_targets, loss_terms, make_weights
from nst_jax.transfer import Result, SweepResult, stylize, sweep
from nst_jax.vgg import deprocess, features, init_params, layer_names, preprocess
from nst_jax.weights import WeightsInfo, load_weights

__version__ = "0.1.0"

__all__ = [
    "stylize", "sweep", "Result", "SweepResult",
    "features", "preprocess", "deprocess", "init_params", "layer_names",
    "load_weights", "WeightsInfo",
    "gram", "content_loss", "style_loss", "tv_loss", "guided_gram", "guided_sum", "stacked_gram",
    "rgb_to_yiq", "yiq_to_rgb", "match_color", "match_luminance", "original_colors",
    "propagate_guides", "load_guides",
    "load_image", "save_image", "sample_path",
    "LossConfig", "SolverConfig", "Solve", "compute_targets", "make_weights", "loss_terms",
    "vgg", "weights", "losses", "guidance", "color", "solve", "transfer", "image", "figures", "pyramid", "memory",
    "checkpoint",
]
