"""Winograd F(4x4, 3x3) convolution: the VGG 3x3 convolution as 36 small matrix products instead of a direct one.

Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural Networks". Each 4x4 block of outputs is computed
from the 6x6 input tile around it: the tile is transformed (``B^T d B``), multiplied elementwise -- per channel
pair, i.e. as 36 matrix products [tiles, I] x [I, O] -- with the transformed kernel (``U = G g G^T``), and
transformed back (``A^T m A``). That is 36 multiplications per 16 outputs and input-output channel pair instead of
144, at the price of additions in the transforms, which are cheap where the channel counts are large. The
interpolation points are 0, +-1, +-2 and infinity (the paper's matrices); in float32 the result differs from a
direct float64 convolution by a few 1e-6 of the values' scale (tested: below 5e-6; XLA's own below 2e-6).

The custom JVP applies the input tangent with the forward pass's transformed kernel, so reverse mode (autodiff's
transpose of that tangent map) runs the transposed algorithm, ``B [U^T (A dy A^T)] B^T`` with the tiles
overlap-added, without transforming the kernel again. The overlapping tiles are cut with reshapes and slices, whose
transposes are pads and additions; gathers, whose transposes are scatters, made a layer's value and input gradient
up to twice as slow (strided slices, whose transposes are interior pads, were slow in a first test too).

A solve transforms its kernels once, before its iterations (``nst_jax.vgg.prepare_params``, which
:class:`nst_jax.runner.Solve` applies), and its layers call :func:`conv3x3_transformed`: inside a value and
gradient XLA:CPU fused the kernel transform into the products and recomputed it, which cost the 512-channel layers
as much as their products. The prepared kernels are traced arguments like the weights, so new weights of the same
shapes never recompile. :func:`worthwhile` says for which layer shapes the form is cheaper than XLA:CPU's own
convolution (``benchmarks/RESULTS.md``); :mod:`nst_jax.vgg` uses it there when ``LossConfig.conv`` is ``"winograd"``
(:mod:`nst_jax.backend`: the CPU default). ``lax.conv_general_dilated`` stays the reference: the tests prove both
equal in value, both Jacobians, under ``vmap``, for odd sizes and both paddings.
"""

from __future__ import annotations

import functools
from typing import List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["conv3x3", "conv3x3_transformed", "kernel_transform", "worthwhile", "TILE"]

#: Output block side of F(4x4, 3x3); the input tile side is TILE + 2.
TILE = 4

# The transforms of F(4x4, 3x3) with the points 0, 1, -1, 2, -2, infinity (Lavin & Gray 2016, section 4.3).
_BT = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], np.float64)
_G = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)

Pads = Tuple[Tuple[int, int], Tuple[int, int]]


def worthwhile(height: int, width: int, channels_in: int, channels_out: int, transformed: bool = False) -> bool:
    """True where the Winograd form was measured clearly cheaper than XLA:CPU's convolution (value and input
    gradient, whole-program timings in ``benchmarks/RESULTS.md``): at least 64 input and output channels, one side
    of them at least 128, and outputs of 24x24 (12x12 when the kernel comes ``transformed``, as in a solve, see
    :func:`conv3x3_transformed`) to 128x128.

    Why the bounds: 64 -> 64 layers have too few channels to repay the tile transforms; on small maps a kernel
    transformed in every value and gradient costs more than the products save; above 128x128 the gain is small
    while the tile buffers grow with the image (the bound also caps that workspace).

    Example:
      >>> worthwhile(16, 16, 512, 512), worthwhile(16, 16, 512, 512, transformed=True), worthwhile(64, 64, 64, 64)
      (False, True, False)
    """
    low = 12 * 12 if transformed else 24 * 24
    return (min(channels_in, channels_out) >= 64 and max(channels_in, channels_out) >= 128
            and low <= height * width <= 128 * 128)


def _mix(matrix: np.ndarray, parts: Sequence[jax.Array], axis: int) -> jax.Array:
    """``stack([sum_a matrix[r, a] * parts[a] for r], axis)``, skipping zeros and multiplications by +-1."""
    rows = []
    for r in range(matrix.shape[0]):
        acc = None
        for a, c in enumerate(matrix[r]):
            if c == 0:
                continue
            term = parts[a] if c == 1 else -parts[a] if c == -1 else parts[a] * parts[a].dtype.type(c)
            acc = term if acc is None else acc + term
        rows.append(acc)
    return jnp.stack(rows, axis)


def _split_tiles(x: jax.Array, axis: int, tiles: int) -> List[jax.Array]:
    """``x`` with ``4 * tiles + 4`` entries on ``axis`` -> 6 arrays of ``tiles`` entries: array ``a`` holds entry
    ``4 i + a`` for tile ``i`` (the overlapping 6-wide input tiles, by a reshape and slices, see the module
    docstring)."""
    shape = x.shape
    blocks = x.reshape(shape[:axis] + (tiles + 1, TILE) + shape[axis + 1:])
    head = jax.lax.slice_in_dim(blocks, 0, tiles, axis=axis)
    nxt = jax.lax.slice_in_dim(blocks, 1, tiles + 1, axis=axis)
    return ([jax.lax.index_in_dim(head, a, axis + 1, keepdims=False) for a in range(TILE)]
            + [jax.lax.index_in_dim(nxt, a, axis + 1, keepdims=False) for a in range(2)])


def kernel_transform(kernel_HWIO: jax.Array) -> jax.Array:
    """``U = G g G^T`` of a [3, 3, I, O] kernel, as [36, I, O] (tile position r * 6 + s first)."""
    g = _G.astype(kernel_HWIO.dtype)
    rows = _mix(g, [kernel_HWIO[a] for a in range(3)], 0)                # [6, 3, I, O]
    both = _mix(g, [rows[:, b] for b in range(3)], 1)                    # [6, 6, I, O]
    return both.reshape((36,) + kernel_HWIO.shape[2:])


def _tile_counts(out_h: int, out_w: int) -> Tuple[int, int]:
    return -(-out_h // TILE), -(-out_w // TILE)


def _forward(x_HWC: jax.Array, u: jax.Array, pads: Pads) -> jax.Array:
    """The convolution of one [H, W, I] image with the transformed kernel ``u`` [36, I, O], zero ``pads``."""
    (top, bottom), (left, right) = pads
    h, w, c = x_HWC.shape
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    th, tw = _tile_counts(out_h, out_w)
    bt, at = _BT.astype(x_HWC.dtype), _AT.astype(x_HWC.dtype)
    xp = jnp.pad(x_HWC, ((top, TILE * th + 4 - h - top), (left, TILE * tw + 4 - w - left), (0, 0)))
    v = _mix(bt, _split_tiles(xp, 0, th), 0)                             # [6, th, Wp, I]
    v = _mix(bt, _split_tiles(v, 2, tw), 1)                              # [6, 6, th, tw, I]
    m = jnp.einsum("ptc,pco->pto", v.reshape(36, th * tw, c), u)
    m = m.reshape(6, 6, th, tw, u.shape[-1])
    y = _mix(at, [m[r] for r in range(6)], 0)                            # [4, 6, th, tw, O]
    y = _mix(at, [y[:, s] for s in range(6)], 1)                         # [4, 4, th, tw, O]
    y = y.transpose(2, 0, 3, 1, 4).reshape(TILE * th, TILE * tw, u.shape[-1])
    return y[:out_h, :out_w]


def _pads(padding: str) -> Pads:
    if padding == "SAME":
        return (1, 1), (1, 1)
    if padding == "VALID":
        return (0, 0), (0, 0)
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def conv3x3(x_HWC: jax.Array, kernel_HWIO: jax.Array, padding: str = "SAME") -> jax.Array:
    """3x3 convolution (cross-correlation, as ``lax.conv_general_dilated``) of one [H, W, I] image with an
    [3, 3, I, O] kernel -> [H, W, O] ("SAME": zero padding) or [H - 2, W - 2, O] ("VALID"), no bias.

    Example:
      >>> x, k = jnp.ones((5, 6, 2)), jnp.ones((3, 3, 2, 3))
      >>> y = conv3x3(x, k)
      >>> y.shape, round(float(y[2, 2, 0]), 4), round(float(y[0, 0, 0]), 4), conv3x3(x, k, "VALID").shape
      ((5, 6, 3), 18.0, 8.0, (3, 4, 3))
    """
    return _forward(x_HWC, kernel_transform(kernel_HWIO), _pads(padding))


def _conv3x3_jvp(padding, primals, tangents):
    x, kernel = primals
    dx, dkernel = tangents
    pads, u = _pads(padding), kernel_transform(kernel)
    y = _forward(x, u, pads)
    terms = []
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        terms.append(_forward(dx, u, pads))  # reverse mode transposes this, reusing ``u``
    if not isinstance(dkernel, jax.custom_derivatives.SymbolicZero):
        terms.append(_forward(x, kernel_transform(dkernel), pads))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


conv3x3.defjvp(_conv3x3_jvp, symbolic_zeros=True)


def conv3x3_transformed(x_HWC: jax.Array, u: jax.Array, padding: str = "SAME") -> jax.Array:
    """:func:`conv3x3` with the kernel already transformed (``u = kernel_transform(kernel)``, [36, I, O]).

    A solve transforms its kernels once (``nst_jax.vgg.prepare_params``) instead of in every value and gradient:
    inside the program XLA:CPU fused the transform into the products' operands and recomputed it, which doubled the
    time of the 512-channel layers. Plain autodiff suffices here (the map is linear in both arguments).

    Example:
      >>> x, k = jnp.ones((5, 6, 2)), jnp.ones((3, 3, 2, 3))
      >>> bool(jnp.allclose(conv3x3_transformed(x, kernel_transform(k)), conv3x3(x, k)))
      True
    """
    return _forward(x_HWC, u, _pads(padding))
