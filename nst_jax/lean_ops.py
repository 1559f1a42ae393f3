"""Memory-lean VGG ops: the same values and derivatives as the plain ``lax`` ops, other residuals and forms.

The plain ops of :mod:`nst_jax.vgg` (``lax.conv_general_dilated``, ``jax.nn.relu``, ``lax.reduce_window``) are the
reference network path. These replacements change only what reverse mode keeps and how it computes:

* :func:`conv3x3` -- its JVP applies the input tangent with the kernel stored [3, 3, O, I], so reverse mode's
  input-gradient convolution (the JVP's transpose) reads its kernel in the canonical HWIO order; autodiff's own
  transpose leaves it HWOI, which XLA:CPU canonicalises at a program's top level but not inside ``while``/``cond``
  bodies, where such a convolution misses its fast convolution library.
* :func:`relu` -- keeps a bit-packed mask (1 bit per element) instead of its float input.
* :func:`max_pool` -- keeps a 1-byte code of each window's first maximum instead of its float input (VALID windows;
  :mod:`nst_jax.vgg` pads odd sizes with -inf first for Caffe's ceil rounding, so both rounding modes share it).

Both residuals are built by reductions, which XLA materialises, instead of comparisons that it would fuse into the
backward pass (keeping the float input alive until then; XLA:CPU drops ``lax.optimization_barrier``, so a barrier
cannot prevent that). :mod:`nst_jax.backend` says where they are the default (``LossConfig.ops``); the tests prove
them equal to the reference ops in value, gradient and both Jacobians. Measurements: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["conv3x3", "relu", "max_pool", "pack_bits", "unpack_bits", "first_max_code", "windows"]


def conv_nhwc(x_HWC: jax.Array, kernel: jax.Array, kernel_spec: str = "HWIO", padding: str = "SAME") -> jax.Array:
    """3x3 convolution of one [H, W, I] image, kernel in the layout ``kernel_spec``, no bias; ``padding`` "SAME"
    (zero padding, same size) or "VALID" (no padding: the caller has padded the input itself)."""
    return jax.lax.conv_general_dilated(x_HWC[None], kernel, window_strides=(1, 1), padding=padding,
                                        dimension_numbers=("NHWC", kernel_spec, "NHWC"))[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def conv3x3(x_HWC: jax.Array, kernel_HWIO: jax.Array, padding: str = "SAME") -> jax.Array:
    """3x3 convolution of one [H, W, I] image with an [3, 3, I, O] kernel -> [H, W, O] (no bias); ``padding`` as
    :func:`conv_nhwc` ("VALID" gives [H - 2, W - 2, O]).

    The numbers and derivatives of ``lax.conv_general_dilated``; only the derivative's form differs (its reverse
    mode reads the kernel in HWIO order, see the module docstring).

    Example:
      >>> x, k = jnp.ones((4, 4, 2)), jnp.ones((3, 3, 2, 5))
      >>> conv3x3(x, k).shape, float(conv3x3(x, k)[1, 1, 0]), float(conv3x3(x, k)[0, 0, 0])
      ((4, 4, 5), 18.0, 8.0)
      >>> conv3x3(x, k, "VALID").shape
      (2, 2, 5)
    """
    return conv_nhwc(x_HWC, kernel_HWIO, padding=padding)


def _conv3x3_jvp(padding, primals, tangents):
    x, kernel = primals
    dx, dkernel = tangents
    terms = []
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        terms.append(conv_nhwc(dx, jnp.swapaxes(kernel, 2, 3), "HWOI", padding))
    if not isinstance(dkernel, jax.custom_derivatives.SymbolicZero):
        terms.append(conv_nhwc(x, dkernel, padding=padding))
    y = conv_nhwc(x, kernel, padding=padding)
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


conv3x3.defjvp(_conv3x3_jvp, symbolic_zeros=True)


@jax.custom_jvp
def relu(x: jax.Array) -> jax.Array:
    """``max(x, 0)`` (gradient 0 at 0, as ``jax.nn.relu``); its JVP selects on the mask ``x > 0`` packed 8 per byte.

    Example:
      >>> x = jnp.array([-1.0, 0.0, 2.0])
      >>> relu(x).tolist(), jax.grad(lambda x: relu(x).sum())(x).tolist()
      ([0.0, 0.0, 2.0], [0.0, 0.0, 1.0])
    """
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def pack_bits(mask: jax.Array) -> jax.Array:
    """bool [..., C] -> uint8 [..., ceil(C / 8)], bit k of byte j = mask[..., 8 j + k] (``np.packbits`` little).

    Example:
      >>> pack_bits(jnp.array([True, False, True, True, False, False, False, False, True])).tolist()
      [13, 1]
    """
    c = mask.shape[-1]
    pad = -c % 8
    m = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)]).astype(jnp.uint8)
    m = m.reshape(mask.shape[:-1] + ((c + pad) // 8, 8))
    return jnp.sum(m << jnp.arange(8, dtype=jnp.uint8), axis=-1, dtype=jnp.uint8)


def unpack_bits(packed: jax.Array, c: int) -> jax.Array:
    """Inverse of :func:`pack_bits`: uint8 [..., ceil(C / 8)] -> bool [..., C]."""
    bits = (packed[..., None] >> jnp.arange(8, dtype=jnp.uint8)) & jnp.uint8(1)
    return bits.reshape(packed.shape[:-1] + (-1,))[..., :c] > 0


@relu.defjvp
def _relu_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    mask = unpack_bits(pack_bits(x > 0), x.shape[-1])
    return relu(x), jnp.where(mask, t, jnp.zeros((), t.dtype))


def windows(x_HWC: jax.Array) -> jax.Array:
    """The 2x2 stride-2 windows as [H // 2, 2, W // 2, 2, C] (a reshape; odd last row/column dropped)."""
    h, w = x_HWC.shape[0] // 2, x_HWC.shape[1] // 2
    return x_HWC[: 2 * h, : 2 * w].reshape(h, 2, w, 2, x_HWC.shape[2])


def _window_shifts() -> jax.Array:
    """Bit position ``k = 2 a + b`` of each window member, broadcastable against [H / 2, 2, W / 2, 2, C]."""
    return jnp.array([[0, 1], [2, 3]], jnp.uint8)[None, :, None, :, None]


def first_max_code(win: jax.Array) -> jax.Array:
    """Which member of each window is its first maximum (row-major k = 2 a + b; ties go to the first, as
    ``lax.reduce_window``'s gradient does), as bit k of a uint8 [H // 2, W // 2, C]; ``win`` from :func:`windows`."""
    m = jnp.max(win, axis=(1, 3), keepdims=True)
    hit = win == m  # [H/2, 2, W/2, 2, C]
    seen = jnp.zeros_like(hit[:, :1, :, :1])
    first = []
    for a in (0, 1):
        for b in (0, 1):
            h = hit[:, a:a + 1, :, b:b + 1] & ~seen
            seen = seen | h
            first.append(h)
    first = jnp.concatenate([jnp.concatenate(first[0:2], axis=3), jnp.concatenate(first[2:4], axis=3)], axis=1)
    return jnp.sum(first.astype(jnp.uint8) << _window_shifts(), axis=(1, 3), dtype=jnp.uint8)


@jax.custom_jvp
def max_pool(x_HWC: jax.Array) -> jax.Array:
    """2x2 stride-2 VALID max pooling, [H, W, C] -> [H // 2, W // 2, C]; differentiated through the 1-byte code of
    :func:`first_max_code` (the tangent of each output is its window's first maximum's; forward mode works too).

    Example:
      >>> x = jnp.arange(16.0).reshape(4, 4, 1)
      >>> max_pool(x)[..., 0].tolist()
      [[5.0, 7.0], [13.0, 15.0]]
      >>> jax.grad(lambda x: max_pool(x).sum())(x)[..., 0].astype(int).tolist()
      [[0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 1]]
    """
    return jnp.max(windows(x_HWC), axis=(1, 3))


@max_pool.defjvp
def _max_pool_jvp(primals, tangents):
    (x_HWC,), (t_HWC,) = primals, tangents
    win = windows(x_HWC)
    code = first_max_code(win)
    chosen = ((code[:, None, :, None, :] >> _window_shifts()) & jnp.uint8(1)) > 0  # [H/2, 2, W/2, 2, C]
    t_win = windows(t_HWC)
    t_out = jnp.sum(jnp.where(chosen, t_win, jnp.zeros((), t_win.dtype)), axis=(1, 3))
    return jnp.max(win, axis=(1, 3)), t_out
