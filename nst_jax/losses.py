"""The 2016 paper's losses as pure functions: Gram matrix, content, style and total-variation loss.

Conventions (the ``gatys`` preset; every function states its own):

* feature maps are ``feats_HWC`` of one image, N = H*W positions, C channels;
* Gram matrix ``G = F^T F / N`` ([C, C]), i.e. the 2016 paper's Eq. 3 averaged over positions ("hw" normalisation);
  the ``neural-style`` convention divides by C*N instead ("chw");
* content loss ``mean((F - P)^2)`` over positions and channels (2016 Eq. 1 up to the constant 1/2 and the mean);
* style loss ``sum_l w_l * mean((G_l - A_l)^2)`` (2016 Eqs. 4-5, mean instead of the 1/(4 N^2 M^2) sum), with
  ``w_l = 1 / C_l^2`` by default (the 2017 paper's code);
* total loss ``alpha * content + beta * style + tv_weight * tv`` (2016 Eq. 7 plus a TV regulariser).

Weights are arguments (traced arrays under jit), never Python constants closed over by compiled code. The guided
losses of the 2017 paper's spatial control are in :mod:`nst_jax.guided`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "gram",
    "gram_sum",
    "gram_divisor",
    "content_loss",
    "gram_loss",
    "gram_layer_loss",
    "style_loss",
    "tv_loss",
    "blend_grams",
    "default_layer_weights",
]


@jax.custom_jvp
def gram_sum(f_NC: jax.Array) -> jax.Array:
    """``F^T F`` of [N, C] features, [C, C]. Its JVP is ``S + S^T`` with ``S = F^T dF``, so reverse mode needs one
    [N, C] product ``F (dG + dG^T)`` instead of the two that differentiating the einsum gives (XLA computes these
    products as early as it can, so each one it needs is memory held through the backward pass)."""
    return jnp.einsum("nc,nd->cd", f_NC, f_NC, precision=jax.lax.Precision.HIGHEST)


@gram_sum.defjvp
def _gram_sum_jvp(primals, tangents):
    (f_NC,), (t_NC,) = primals, tangents
    s_CxC = jnp.einsum("nc,nd->cd", f_NC, t_NC, precision=jax.lax.Precision.HIGHEST)
    return gram_sum(f_NC), s_CxC + s_CxC.T


def gram_divisor(norm: str, h: int, w: int, c: int) -> int:
    """What a Gram sum is divided by: H*W (``"hw"``, gatys), C*H*W (``"chw"``, neural-style) or 1 (``"none"``).

    Example:
      >>> gram_divisor("hw", 2, 3, 4), gram_divisor("chw", 2, 3, 4), gram_divisor("none", 2, 3, 4)
      (6, 24, 1)
    """
    if norm == "hw":
        return h * w
    if norm == "chw":
        return c * h * w
    if norm == "none":
        return 1
    raise ValueError(f"gram norm must be 'hw', 'chw' or 'none', got {norm!r}")


def gram(feats_HWC: jax.Array, norm: str = "hw") -> jax.Array:
    """Gram matrix ``G = F^T F / N`` of a [H, W, C] feature map, [C, C].

    ``norm="hw"``: N = H*W (gatys); ``norm="chw"``: divide by C*H*W (jcjohnson/neural-style); ``norm="none"``: raw sum.
    
    Example:
      >>> import jax.numpy as jnp
      >>> G = gram(jnp.ones((2, 3, 4)))        # feats_HWC with H=2, W=3, C=4; G = F^T F / (H W)
      >>> G.shape, float(G[0, 0])
      ((4, 4), 1.0)
    """
    h, w, c = feats_HWC.shape
    return gram_sum(feats_HWC.reshape(h * w, c)) / gram_divisor(norm, h, w, c)


def content_loss(feats_HWC: jax.Array, target_HWC: jax.Array) -> jax.Array:
    """``mean((F - P)^2)`` over all positions and channels (2016 paper, Eq. 1, averaged).

    Example:
      >>> import jax.numpy as jnp
      >>> float(content_loss(jnp.zeros((2, 2, 3)), jnp.full((2, 2, 3), 2.0)))   # mean((F - P)^2)
      4.0
    """
    return jnp.mean(jnp.square(feats_HWC - target_HWC))


def gram_loss(gram_CxC: jax.Array, target_CxC: jax.Array) -> jax.Array:
    """``mean((G - A)^2)`` over the C*C entries (2016 paper, Eq. 4, averaged)."""
    return jnp.mean(jnp.square(gram_CxC - target_CxC))


def gram_layer_loss(feats_HWC: jax.Array, target_CxC: jax.Array, norm: str = "hw") -> jax.Array:
    """One layer's Gram loss, ``mean((G(F) - A)^2)`` with ``G`` = :func:`gram` (``norm`` as there)."""
    return gram_loss(gram(feats_HWC, norm), target_CxC)


def default_layer_weights(channels: Sequence[int], convention: str = "inv_c2") -> jax.Array:
    """Per-layer style weights: ``1 / C_l^2`` ("inv_c2", the 2017 paper's code), all ones ("ones", neural-style) or
    ``1 / L`` for L layers ("equal": a weight split equally, the 2017 code's normalised network and style mixing).

    Example:
      >>> [default_layer_weights([64, 128], c).tolist() for c in ("inv_c2", "ones", "equal")]
      [[0.000244140625, 6.103515625e-05], [1.0, 1.0], [0.5, 0.5]]
    """
    c = jnp.asarray(channels, jnp.float32)
    if convention == "inv_c2":
        return 1.0 / jnp.square(c)
    if convention == "ones":
        return jnp.ones_like(c)
    if convention == "equal":
        return jnp.full_like(c, 1.0 / max(c.size, 1))
    raise ValueError(f"layer weight convention must be 'inv_c2', 'ones' or 'equal', got {convention!r}")


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

    Example:
      >>> import jax.numpy as jnp
      >>> feats = {"relu1_1": jnp.ones((4, 4, 2))}                  # its Gram is all ones, [2, 2]
      >>> float(style_loss(feats, {"relu1_1": jnp.zeros((2, 2))}, ["relu1_1"], jnp.array([0.5])))  # 0.5 * mean(1^2)
      0.5
      >>> float(style_loss(feats, {"relu1_1": gram(feats["relu1_1"])}, ["relu1_1"], jnp.array([0.5])))  # on target
      0.0
    """
    total = jnp.zeros((), jnp.float32)
    for j, name in enumerate(layers):
        total = total + layer_weights_L[j] * gram_layer_loss(feats[name], target_grams[name], norm)
    return total


def tv_loss(image_HWC: jax.Array, form: str = "sum", input_scale: float = 255.0) -> jax.Array:
    """Total variation of an image in [0, 1], [H, W, C] -> [].

    * ``"sum"``: the sum of the squared differences of all vertical and horizontal neighbours, over channels;
    * ``"neural-style"``: jcjohnson/neural-style's TV on the network input ``x = input_scale * u - mean``,
      ``(1/2) sum_c sum_{i < H-1, j < W-1} [(x_ij - x_i,j+1)^2 + (x_ij - x_i+1,j)^2]``, i.e.
      ``input_scale^2 / 2`` times the same differences of ``u`` restricted to the top-left (H-1) x (W-1) block (its
      TVLoss defines only this energy's gradient; the value is what that gradient integrates to).

    Both are sums (not means): they grow with the image area, like neural-style's.

    Example:
      >>> import jax.numpy as jnp
      >>> u = jnp.array([[[0.0], [1.0]], [[0.0], [1.0]]])
      >>> float(tv_loss(u)), float(tv_loss(u, "neural-style", 256.0))   # two horizontal steps; one in the block
      (2.0, 32768.0)
    """
    if form == "sum":
        dy = image_HWC[1:, :, :] - image_HWC[:-1, :, :]
        dx = image_HWC[:, 1:, :] - image_HWC[:, :-1, :]
        return jnp.sum(jnp.square(dy)) + jnp.sum(jnp.square(dx))
    if form == "neural-style":
        block = image_HWC[:-1, :-1, :]
        dx = block - image_HWC[:-1, 1:, :]
        dy = block - image_HWC[1:, :-1, :]
        return 0.5 * input_scale ** 2 * (jnp.sum(jnp.square(dx)) + jnp.sum(jnp.square(dy)))
    raise ValueError(f"tv form must be 'sum' or 'neural-style', got {form!r}")
