"""nst-jax: optimisation-based neural style transfer in JAX (public API is listed in __all__)."""
from nst_jax import vgg, losses
from nst_jax.vgg import features, preprocess, deprocess, init_params, layer_names
from nst_jax.losses import gram, content_loss, style_loss, tv_loss

__version__ = "0.1.0"
