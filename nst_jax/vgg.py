"""VGG16 / VGG19 convolutional stacks as pure JAX functions over a Flax-style params tree.

Params are a plain dict keyed by conv layer name, in the Flax ``nn.Conv`` layout::

    params["conv3_1"]["kernel"]  # [3, 3, C_in, C_out]  (HWIO)
    params["conv3_1"]["bias"]    # [C_out]

The architecture is read off the params: block ``b`` has as many convs as there are ``conv{b}_*`` keys (2,2,3,3,3
for VGG16; 2,2,4,4,4 for VGG19), each followed by a ReLU, and each block but the last is followed by a 2x2/stride-2
pooling layer (``pool1`` ... ``pool4``; ``pool5`` is added after block 5 too). Layer names are the literature's:
``conv1_1``, ``relu1_1``, ``conv1_2``, ``relu1_2``, ``pool1``, ``conv2_1``, ... ``relu5_4``, ``pool5``.

Convs are 3x3, stride 1, zero padding 1 ("SAME"); pooling windows are 2x2, stride 2, with floor division of odd sizes
("VALID"), as in Caffe's and Keras' VGG. Images enter as RGB floats in [0, 1] of shape [H, W, 3] and are turned into
the Caffe input (BGR, x255, minus the ImageNet mean) by :func:`preprocess`. Batches go through ``jax.vmap``.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ARCHITECTURES",
    "CAFFE_MEAN_BGR",
    "VGGSpec",
    "register_architecture",
    "get_spec",
    "spec_from_params",
    "layer_names",
    "layer_sequence",
    "expected_shapes",
    "layer_channels",
    "init_params",
    "preprocess",
    "deprocess",
    "features",
    "Features",
]

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

_CONV_RE = re.compile(r"^conv(\d)_(\d)$")


class VGGSpec:
    """The structure of a VGG-style conv stack: convs per block and channels per block.

    ``convs_per_block[b]`` convs of ``channels[b]`` output channels make block ``b + 1``.
    """

    def __init__(self, name: str, convs_per_block: Sequence[int], channels: Sequence[int]):
        if len(convs_per_block) != len(channels) or not convs_per_block:
            raise ValueError("convs_per_block and channels must be non-empty and of equal length")
        self.name = name
        self.convs_per_block = tuple(int(c) for c in convs_per_block)
        self.channels = tuple(int(c) for c in channels)

    def __repr__(self) -> str:
        return f"VGGSpec({self.name!r}, convs_per_block={self.convs_per_block}, channels={self.channels})"

    def conv_names(self) -> List[str]:
        return [f"conv{b + 1}_{i + 1}" for b, n in enumerate(self.convs_per_block) for i in range(n)]


ARCHITECTURES: Dict[str, VGGSpec] = {}


def register_architecture(spec: VGGSpec) -> VGGSpec:
    """Register a network structure by name (used by weight sources and the tiny test network)."""
    ARCHITECTURES[spec.name] = spec
    return spec


register_architecture(VGGSpec("vgg16", (2, 2, 3, 3, 3), (64, 128, 256, 512, 512)))
register_architecture(VGGSpec("vgg19", (2, 2, 4, 4, 4), (64, 128, 256, 512, 512)))
# A tiny network with VGG19's layer names and few channels: fast tests of everything above the network.
register_architecture(VGGSpec("tiny19", (2, 2, 4, 4, 4), (4, 6, 8, 8, 8)))
register_architecture(VGGSpec("tiny16", (2, 2, 3, 3, 3), (4, 6, 8, 8, 8)))


def get_spec(arch: str | VGGSpec) -> VGGSpec:
    if isinstance(arch, VGGSpec):
        return arch
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}") from None


def spec_from_params(params: Mapping[str, Mapping[str, "jax.Array"]]) -> VGGSpec:
    """Infer the block structure and channel counts from a params tree's conv keys and kernel shapes."""
    per_block: Dict[int, int] = {}
    channels: Dict[int, int] = {}
    for key in params:
        m = _CONV_RE.match(key)
        if not m:
            continue
        b, i = int(m.group(1)), int(m.group(2))
        per_block[b] = max(per_block.get(b, 0), i)
        channels[b] = int(np.shape(params[key]["kernel"])[-1])
    if not per_block:
        raise ValueError("params hold no conv{b}_{i} layers")
    blocks = sorted(per_block)
    if blocks != list(range(1, len(blocks) + 1)):
        raise ValueError(f"params skip a block: found blocks {blocks}")
    return VGGSpec("params", [per_block[b] for b in blocks], [channels[b] for b in blocks])


def layer_sequence(spec: str | VGGSpec) -> List[Tuple[str, str]]:
    """All layers in order as (name, kind) with kind in {"conv", "relu", "pool"}."""
    spec = get_spec(spec)
    seq: List[Tuple[str, str]] = []
    for b, n in enumerate(spec.convs_per_block, start=1):
        for i in range(1, n + 1):
            seq.append((f"conv{b}_{i}", "conv"))
            seq.append((f"relu{b}_{i}", "relu"))
        seq.append((f"pool{b}", "pool"))
    return seq


def layer_names(spec: str | VGGSpec) -> List[str]:
    """Every layer name of the network in forward order.

    Example:
      >>> layer_names("vgg19")[:5]
      ['conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1']
    """
    return [name for name, _ in layer_sequence(spec)]


def layer_channels(spec: str | VGGSpec) -> Dict[str, int]:
    """Output channels of every layer: ``{"relu3_1": 256, "pool3": 256, ...}``."""
    spec = get_spec(spec)
    return {name: spec.channels[int(re.search(r"\d", name).group()) - 1] for name, _ in layer_sequence(spec)}


def expected_shapes(spec: str | VGGSpec) -> Dict[str, Dict[str, Tuple[int, ...]]]:
    """``{conv_name: {"kernel": (3, 3, C_in, C_out), "bias": (C_out,)}}`` for a registered structure."""
    spec = get_spec(spec)
    shapes: Dict[str, Dict[str, Tuple[int, ...]]] = {}
    c_in = 3
    for b, (n, c_out) in enumerate(zip(spec.convs_per_block, spec.channels), start=1):
        for i in range(1, n + 1):
            shapes[f"conv{b}_{i}"] = {"kernel": (3, 3, c_in, c_out), "bias": (c_out,)}
            c_in = c_out
    return shapes


def init_params(seed: "int | jax.Array" = 0, spec: str | VGGSpec = "vgg19") -> Dict[str, Dict[str, jax.Array]]:
    """Seeded random params (He-normal kernels, small random biases) for a registered structure.

    ``seed`` is an int or a ``jax.random.PRNGKey`` (its key data seed NumPy's generator, so no per-shape XLA
    compiles are spent on random numbers). Used by the ``random`` weight source and by tests.

    Example:
      >>> params = init_params(0, "tiny19")
      >>> params["conv1_1"]["kernel"].shape, params["conv5_4"]["bias"].shape   # [3, 3, C_in, C_out], [C_out]
      ((3, 3, 3, 4), (8,))
      >>> bool(jnp.array_equal(init_params(0, "tiny19")["conv3_2"]["kernel"], params["conv3_2"]["kernel"]))  # seeded
      True
    """
    if not isinstance(seed, (int, np.integer)):
        data = np.asarray(jax.random.key_data(seed) if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) else seed)
        seed = [int(v) for v in data.ravel()]
    rng = np.random.default_rng(seed)
    params = {}
    for name, s in expected_shapes(spec).items():
        fan_in = s["kernel"][0] * s["kernel"][1] * s["kernel"][2]
        kernel = rng.standard_normal(s["kernel"]).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        bias = rng.standard_normal(s["bias"]).astype(np.float32) * np.float32(0.01)
        params[name] = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}
    return params


def preprocess(image_HW3: jax.Array) -> jax.Array:
    """RGB in [0, 1] -> Caffe input: BGR, x255, minus the ImageNet mean (103.939, 116.779, 123.68). [..., H, W, 3].

    Example:
      >>> red = jnp.array([[[1.0, 0.0, 0.0]]])           # one RGB pixel -> (B, G, R) * 255 - mean
      >>> [round(float(v), 3) for v in preprocess(red)[0, 0]]
      [-103.939, -116.779, 131.32]
    """
    bgr = image_HW3[..., ::-1] * 255.0
    return bgr - jnp.asarray(CAFFE_MEAN_BGR, dtype=bgr.dtype)


def deprocess(x_HW3: jax.Array) -> jax.Array:
    """Inverse of :func:`preprocess` (no clipping).

    Example:
      >>> x = jnp.linspace(0.0, 1.0, 12).reshape(2, 2, 3)
      >>> bool(jnp.allclose(deprocess(preprocess(x)), x, atol=1e-5))
      True
    """
    bgr = (x_HW3 + jnp.asarray(CAFFE_MEAN_BGR, dtype=x_HW3.dtype)) / 255.0
    return bgr[..., ::-1]


def _conv_nhwc(x_HWC: jax.Array, kernel: jax.Array, kernel_spec: str = "HWIO") -> jax.Array:
    return jax.lax.conv_general_dilated(x_HWC[None], kernel, window_strides=(1, 1), padding="SAME",
                                        dimension_numbers=("NHWC", kernel_spec, "NHWC"))[0]


@jax.custom_jvp
def conv3x3(x_HWC: jax.Array, kernel_HWIO: jax.Array) -> jax.Array:
    """3x3 "SAME" convolution of one [H, W, I] image with an [3, 3, I, O] kernel -> [H, W, O] (no bias).

    The same numbers and derivatives as ``lax.conv_general_dilated``; only the derivative's form differs. Its JVP
    applies the input tangent with the kernel stored [3, 3, O, I], so that reverse mode's input-gradient convolution
    (the JVP's transpose) reads its kernel in the canonical HWIO order. Autodiff's own transpose leaves it HWOI,
    which XLA:CPU turns into HWIO at the top level of a program but not inside a ``while`` or ``cond`` body, where
    such a convolution misses XLA's fast convolution library: vgg16's value and gradient at 256 px took 2.5x as long
    inside a ``fori_loop`` or ``lax.cond`` as at the top level (2180 vs 864 ms), which is where the line searches of
    jaxopt and optax evaluate.

    Example:
      >>> x, k = jnp.ones((4, 4, 2)), jnp.ones((3, 3, 2, 5))
      >>> conv3x3(x, k).shape, float(conv3x3(x, k)[1, 1, 0]), float(conv3x3(x, k)[0, 0, 0])
      ((4, 4, 5), 18.0, 8.0)
    """
    return _conv_nhwc(x_HWC, kernel_HWIO)


def _conv3x3_jvp(primals, tangents):
    x, kernel = primals
    dx, dkernel = tangents
    terms = []
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        terms.append(_conv_nhwc(dx, jnp.swapaxes(kernel, 2, 3), "HWOI"))
    if not isinstance(dkernel, jax.custom_derivatives.SymbolicZero):
        terms.append(_conv_nhwc(x, dkernel))
    y = _conv_nhwc(x, kernel)
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


conv3x3.defjvp(_conv3x3_jvp, symbolic_zeros=True)


def _conv(x_HWC: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    y = conv3x3(x_HWC, kernel.astype(x_HWC.dtype))
    return y + bias.astype(y.dtype)


@jax.custom_jvp
def relu(x: jax.Array) -> jax.Array:
    """``max(x, 0)`` (gradient 0 at 0, as ``jax.nn.relu``). Its JVP selects on the mask ``x > 0`` packed into bits
    (8 channels per byte) by a reduction, so reverse mode keeps 1 bit per element: XLA materialises a reduction's
    result, whereas a plain comparison gets fused into the backward pass, keeping the float input alive until then
    (XLA:CPU drops ``lax.optimization_barrier``, so a barrier cannot prevent that).

    Example:
      >>> x = jnp.array([-1.0, 0.0, 2.0])
      >>> relu(x).tolist(), jax.grad(lambda x: relu(x).sum())(x).tolist()
      ([0.0, 0.0, 2.0], [0.0, 0.0, 1.0])
    """
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _pack_bits(mask: jax.Array) -> jax.Array:
    """bool [..., C] -> uint8 [..., ceil(C / 8)], bit k of byte j = mask[..., 8 j + k]."""
    c = mask.shape[-1]
    pad = -c % 8
    m = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)]).astype(jnp.uint8)
    m = m.reshape(mask.shape[:-1] + ((c + pad) // 8, 8))
    return jnp.sum(m << jnp.arange(8, dtype=jnp.uint8), axis=-1, dtype=jnp.uint8)


def _unpack_bits(packed: jax.Array, c: int) -> jax.Array:
    """Inverse of :func:`_pack_bits`: uint8 [..., ceil(C / 8)] -> bool [..., C]."""
    bits = (packed[..., None] >> jnp.arange(8, dtype=jnp.uint8)) & jnp.uint8(1)
    return bits.reshape(packed.shape[:-1] + (-1,))[..., :c] > 0


@relu.defjvp
def _relu_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    mask = _unpack_bits(_pack_bits(x > 0), x.shape[-1])
    return relu(x), jnp.where(mask, t, jnp.zeros((), t.dtype))


def _windows(x_HWC: jax.Array) -> jax.Array:
    """The 2x2 stride-2 windows as [H // 2, 2, W // 2, 2, C] (a reshape: no copy; odd last row/column dropped)."""
    h, w = x_HWC.shape[0] // 2, x_HWC.shape[1] // 2
    return x_HWC[: 2 * h, : 2 * w].reshape(h, 2, w, 2, x_HWC.shape[2])


def _window_shifts() -> jax.Array:
    """Bit position ``k = 2 a + b`` of each window member, broadcastable against [H / 2, 2, W / 2, 2, C]."""
    return jnp.array([[0, 1], [2, 3]], jnp.uint8)[None, :, None, :, None]


def _first_max_code(win: jax.Array) -> jax.Array:
    """Which member of each window is its first maximum (row-major k = 2a + b; ties go to the first, as
    ``lax.reduce_window``'s gradient does), as bit k of a uint8 [H // 2, W // 2, C].

    Built by a reduction, which XLA materialises (1 byte per output) instead of fusing the comparisons into the
    backward pass and keeping the float input alive until then."""
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
    """2x2 stride-2 VALID max pooling, [H, W, C] -> [H // 2, W // 2, C].

    Differentiated through a 1-byte code per output marking its window's first maximum (the tangent of each output
    is the tangent of that member), so reverse mode keeps the code instead of the float input that the gradient of
    ``lax.reduce_window`` max pooling keeps (16x less memory for this layer's residual), and the cotangent is
    scattered back by one select over the reshaped windows (no per-window-member copies); forward mode works too.

    Example:
      >>> x = jnp.arange(16.0).reshape(4, 4, 1)
      >>> max_pool(x)[..., 0].tolist()
      [[5.0, 7.0], [13.0, 15.0]]
      >>> jax.grad(lambda x: max_pool(x).sum())(x)[..., 0].astype(int).tolist()
      [[0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 1]]
    """
    return jnp.max(_windows(x_HWC), axis=(1, 3))


@max_pool.defjvp
def _max_pool_jvp(primals, tangents):
    (x_HWC,), (t_HWC,) = primals, tangents
    win = _windows(x_HWC)
    code = _first_max_code(win)
    chosen = ((code[:, None, :, None, :] >> _window_shifts()) & jnp.uint8(1)) > 0  # [H/2, 2, W/2, 2, C]
    t_win = _windows(t_HWC)
    t_out = jnp.sum(jnp.where(chosen, t_win, jnp.zeros((), t_win.dtype)), axis=(1, 3))
    return jnp.max(win, axis=(1, 3)), t_out


def _pool(x_HWC: jax.Array, pooling: str) -> jax.Array:
    window, strides = (2, 2, 1), (2, 2, 1)
    if pooling == "max":
        return max_pool(x_HWC)
    if pooling == "avg":
        s = jax.lax.reduce_window(x_HWC, 0.0, jax.lax.add, window, strides, "VALID")
        return s / 4.0
    raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")


Features = Dict[str, jax.Array]


def features(
    params: Mapping[str, Mapping[str, jax.Array]],
    image_HW3: jax.Array,
    layers: Iterable[str],
    *,
    pooling: str = "max",
    preprocessed: bool = False,
    remat: bool | str = False,
    dtype=None,
) -> Features:
    """Feature maps of one image at the named layers.

    Args:
      params: ``{conv_name: {"kernel": [3, 3, C_in, C_out], "bias": [C_out]}}``.
      image_HW3: RGB image in [0, 1], [H, W, 3] (or already :func:`preprocess`-ed if ``preprocessed``).
      layers: layer names (``relu4_2``, ``conv1_1``, ``pool3`` ...); the forward pass stops after the deepest.
      pooling: ``"max"`` or ``"avg"`` (the 2016 paper's choice).
      remat: rematerialise each block's activations in the backward pass (``jax.checkpoint``): ``True`` or a
        policy name from ``jax.checkpoint_policies`` (e.g. ``"dots_saveable"``). Saves memory on large images.
      dtype: compute dtype of the activations (e.g. ``jnp.bfloat16``); returned features are cast back to float32.

    Returns:
      ``{name: feats_HWC}`` for each requested layer, [H_l, W_l, C_l], in the input's dtype (float32 when a
      reduced ``dtype`` is used for the activations).
    
    Example:
      >>> params = init_params(0, "tiny19")
      >>> feats = features(params, jnp.zeros((32, 32, 3)), ["relu1_1", "relu4_2"])
      >>> [feats[k].shape[:2] for k in ("relu1_1", "relu4_2")]
      [(32, 32), (4, 4)]
    """
    layers = list(dict.fromkeys(layers))
    spec = spec_from_params(params)
    seq = layer_sequence(spec)
    order = {name: j for j, (name, _) in enumerate(seq)}
    unknown = [name for name in layers if name not in order]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; this network has {[n for n, _ in seq]}")
    if not layers:
        return {}
    last = max(order[name] for name in layers)
    wanted = set(layers)

    x = image_HW3 if preprocessed else preprocess(image_HW3)
    if dtype is not None:
        x = x.astype(dtype)

    # Group the sequence into blocks (for rematerialisation), each ending at a pool.
    blocks: List[List[Tuple[str, str]]] = [[]]
    for name, kind in seq[: last + 1]:
        blocks[-1].append((name, kind))
        if kind == "pool":
            blocks.append([])
    blocks = [b for b in blocks if b]

    out: Features = {}
    for block in blocks:
        def run_block(x, block_params, block=block):
            taps = {}
            for name, kind in block:
                if kind == "conv":
                    x = _conv(x, block_params[name]["kernel"], block_params[name]["bias"])
                elif kind == "relu":
                    x = relu(x)
                else:
                    x = _pool(x, pooling)
                if name in wanted:
                    taps[name] = x
            return x, taps

        block_params = {name: params[name] for name, kind in block if kind == "conv"}
        if remat:
            policy = None
            if isinstance(remat, str):
                policy = getattr(jax.checkpoint_policies, remat)
            run_block = jax.checkpoint(run_block, policy=policy)
        x, taps = run_block(x, block_params)
        out.update(taps)
    if dtype is None:
        return {name: out[name] for name in layers}
    return {name: out[name].astype(jnp.float32) for name in layers}
