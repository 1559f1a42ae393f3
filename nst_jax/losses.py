"""Style-transfer losses as pure functions (Gatys et al. 2016, 2017).

Conventions (the ``gatys`` preset; every function states its own):

* feature maps are ``feats_HWC`` of one image, N = H*W positions, C channels;
* Gram matrix ``G = F^T F / N`` ([C, C]), i.e. the 2016 paper's Eq. 3 averaged over positions ("hw" normalisation);
  the ``neural-style`` convention divides by C*N instead ("chw");
* content loss ``mean((F - P)^2)`` over positions and channels (2016 Eq. 1 up to the constant 1/2 and the mean);
* style loss ``sum_l w_l * mean((G_l - A_l)^2)`` (2016 Eqs. 4-5, mean instead of the 1/(4 N^2 M^2) sum), with
  ``w_l = 1 / C_l^2`` by default (the 2017 paper's code);
* total loss ``alpha * content + beta * style + tv_weight * tv`` (2016 Eq. 7 plus a TV regulariser).

Weights are arguments (traced arrays under jit), never Python constants closed over by compiled code.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "gram",
    "content_loss",
    "gram_loss",
    "style_loss",
    "tv_loss",
    "blend_grams",
    "default_layer_weights",
]


def gram(feats_HWC: jax.Array, norm: str = "hw") -> jax.Array:
    """Gram matrix ``G = F^T F / N`` of a [H, W, C] feature map, [C, C].

    ``norm="hw"``: N = H*W (gatys); ``norm="chw"``: divide by C*H*W (jcjohnson/neural-style); ``norm="none"``: raw sum.
    """
    h, w, c = feats_HWC.shape
    f_NC = feats_HWC.reshape(h * w, c)
    g = jnp.einsum("nc,nd->cd", f_NC, f_NC, precision=jax.lax.Precision.HIGHEST)
    if norm == "hw":
        return g / (h * w)
    if norm == "chw":
        return g / (c * h * w)
    if norm == "none":
        return g
    raise ValueError(f"gram norm must be 'hw', 'chw' or 'none', got {norm!r}")


def content_loss(feats_HWC: jax.Array, target_HWC: jax.Array) -> jax.Array:
    """``mean((F - P)^2)`` over all positions and channels (2016 paper, Eq. 1, averaged)."""
    return jnp.mean(jnp.square(feats_HWC - target_HWC))


def gram_loss(gram_CxC: jax.Array, target_CxC: jax.Array) -> jax.Array:
    """``mean((G - A)^2)`` over the C*C entries (2016 paper, Eq. 4, averaged)."""
    return jnp.mean(jnp.square(gram_CxC - target_CxC))


def default_layer_weights(channels: Sequence[int], convention: str = "inv_c2") -> jax.Array:
    """Per-layer style weights: ``1 / C_l^2`` ("inv_c2", the 2017 paper's code) or all ones ("ones")."""
    c = jnp.asarray(channels, jnp.float32)
    if convention == "inv_c2":
        return 1.0 / jnp.square(c)
    if convention == "ones":
        return jnp.ones_like(c)
    raise ValueError(f"layer weight convention must be 'inv_c2' or 'ones', got {convention!r}")


def blend_grams(grams_SxCxC: jax.Array, blend_S: jax.Array) -> jax.Array:
    """Blend the Gram targets of S style images: ``sum_s b_s A_s / sum_s b_s`` ([S, C, C], [S] -> [C, C])."""
    b = blend_S / jnp.sum(blend_S)
    return jnp.einsum("s,scd->cd", b, grams_SxCxC)


def style_loss(
    feats: Mapping[str, jax.Array],
    target_grams: Mapping[str, jax.Array],
    layers: Sequence[str],
    layer_weights_L: jax.Array,
    norm: str = "hw",
) -> jax.Array:
    """``sum_l w_l * mean((G_l(x) - A_l)^2)`` over ``layers`` (2016 paper, Eq. 5).

    Args:
      feats: ``{layer: feats_HWC}`` of the generated image.
      target_grams: ``{layer: gram_CxC}`` targets (already blended over style images).
      layer_weights_L: [L] weights in the order of ``layers``.
    """
    total = jnp.zeros((), jnp.float32)
    for j, name in enumerate(layers):
        total = total + layer_weights_L[j] * gram_loss(gram(feats[name], norm), target_grams[name])
    return total


def tv_loss(image_HWC: jax.Array) -> jax.Array:
    """Total variation: sum of squared differences of vertical and horizontal neighbours, over channels.

    Computed on the image in [0, 1]; as a sum (not a mean) it grows with the image area, like neural-style's.
    """
    dy = image_HWC[1:, :, :] - image_HWC[:-1, :, :]
    dx = image_HWC[:, 1:, :] - image_HWC[:, :-1, :]
    return jnp.sum(jnp.square(dy)) + jnp.sum(jnp.square(dx))
