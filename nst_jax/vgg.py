"""VGG16 / VGG19 convolutional stacks as pure JAX functions over a Flax-style params tree.

Params are a plain dict keyed by conv layer name, in the Flax ``nn.Conv`` layout::

    params["conv3_1"]["kernel"]  # [3, 3, C_in, C_out]  (HWIO)
    params["conv3_1"]["bias"]    # [C_out]

The architecture is read off the params: block ``b`` has as many convs as there are ``conv{b}_*`` keys (2,2,3,3,3
for VGG16; 2,2,4,4,4 for VGG19), each followed by a ReLU, and each block but the last is followed by a 2x2/stride-2
pooling layer (``pool1`` ... ``pool4``; ``pool5`` is added after block 5 too). Layer names are the literature's:
``conv1_1``, ``relu1_1``, ``conv1_2``, ``relu1_2``, ``pool1``, ``conv2_1``, ... ``relu5_4``, ``pool5``.

Convs are 3x3, stride 1, padding 1: zeros by default (Caffe's and Keras'), or a mirror of the image
(``padding="reflect"``, Torch's ``SpatialReflectionPadding``: the edge pixel is not repeated, the official 2017 code's
``-reflectance``) or a copy of the edge pixel (``"replicate"``), before every conv or, with the ``-first`` scopes,
before ``conv1_1`` only (:data:`PADDINGS`). Pooling windows are 2x2, stride 2; odd sizes are rounded by
``pool_rounding`` (:data:`POOL_ROUNDINGS`): ``"floor"`` drops the last row/column (Keras' VGG, TF "VALID"),
``"ceil"`` keeps it in a window of its own (Caffe and loadcaffe, which the official codes ran: max over the in-image
elements, average divided by their count). The plain ``lax`` ops are the reference; ``ops="lean"`` swaps in the
memory-lean custom derivatives of :mod:`nst_jax.lean_ops` (same values and derivatives), and ``conv="winograd"``
computes the float32 3x3 convolutions of the layers where it is cheaper by :mod:`nst_jax.winograd` (the same values
to a few 1e-6 of their scale; :func:`prepare_params` transforms their kernels once per solve). Images enter as RGB
floats in [0, 1] of shape [H, W, 3] and are turned into the Caffe input (BGR, x255 -- x256 for jcjohnson/neural-style,
``input_scale`` --, minus the ImageNet mean) by :func:`preprocess`. Batches go through ``jax.vmap``.
"""

from __future__ import annotations

import functools
import re
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import backend, lean_ops, winograd

__all__ = [
    "ARCHITECTURES",
    "CAFFE_MEAN_BGR",
    "PADDINGS",
    "POOL_ROUNDINGS",
    "conv_padding",
    "pooled_size",
    "layer_sizes",
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
    "prepare_params",
    "winograd_layers",
    "WINOGRAD_KERNEL",
]

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: Padding of the 3x3 convs: zeros, mirror (edge pixel not repeated) or edge copy; before every conv, or ("-first")
#: before conv1_1 only (against edge artefacts of the image border, the other convs zero-padded).
PADDINGS = ("zero", "reflect", "replicate", "reflect-first", "replicate-first")
#: Rounding of odd sizes by the 2x2/stride-2 pools: "floor" (Keras, TF VALID) or "ceil" (Caffe, loadcaffe).
POOL_ROUNDINGS = ("floor", "ceil")

#: Key of a conv layer's Winograd-transformed kernel ([36, C_in, C_out]) in params made by :func:`prepare_params`.
WINOGRAD_KERNEL = "kernel_winograd"

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


def preprocess(image_HW3: jax.Array, scale: float = 255.0) -> jax.Array:
    """RGB in [0, 1] -> Caffe input: BGR, x ``scale``, minus the ImageNet mean (103.939, 116.779, 123.68).
    [..., H, W, 3]. ``scale`` is 255 (Caffe, the 2017 paper's code) or 256 (jcjohnson/neural-style).

    Example:
      >>> red = jnp.array([[[1.0, 0.0, 0.0]]])           # one RGB pixel -> (B, G, R) * 255 - mean
      >>> [round(float(v), 3) for v in preprocess(red)[0, 0]]
      [-103.939, -116.779, 131.32]
    """
    bgr = image_HW3[..., ::-1] * scale
    return bgr - jnp.asarray(CAFFE_MEAN_BGR, dtype=bgr.dtype)


def deprocess(x_HW3: jax.Array, scale: float = 255.0) -> jax.Array:
    """Inverse of :func:`preprocess` (no clipping).

    Example:
      >>> x = jnp.linspace(0.0, 1.0, 12).reshape(2, 2, 3)
      >>> bool(jnp.allclose(deprocess(preprocess(x)), x, atol=1e-5))
      True
    """
    bgr = (x_HW3 + jnp.asarray(CAFFE_MEAN_BGR, dtype=x_HW3.dtype)) / scale
    return bgr[..., ::-1]


def conv_padding(padding: str, conv_name: str) -> str:
    """The padding one conv gets under a :data:`PADDINGS` setting: "zero", "reflect" or "replicate".

    Example:
      >>> cases = [("reflect-first", "conv1_1"), ("reflect-first", "conv1_2"), ("reflect", "conv5_1")]
      >>> [conv_padding(p, n) for p, n in cases]
      ['reflect', 'zero', 'reflect']
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    mode, _, scope = padding.partition("-")
    return "zero" if scope == "first" and conv_name != "conv1_1" else mode


def pooled_size(n: int, rounding: str = "floor") -> int:
    """Size of a side of ``n`` after a 2x2/stride-2 pooling: ``n // 2`` ("floor") or ``ceil(n / 2)`` ("ceil").

    Example:
      >>> pooled_size(7), pooled_size(7, "ceil"), pooled_size(8, "ceil")
      (3, 4, 4)
    """
    if rounding not in POOL_ROUNDINGS:
        raise ValueError(f"pool rounding must be one of {', '.join(POOL_ROUNDINGS)}, got {rounding!r}")
    return n // 2 if rounding == "floor" else (n + 1) // 2


def layer_sizes(spec: str | VGGSpec, shape_HW, pool_rounding: str = "floor") -> Dict[str, Tuple[int, int]]:
    """``{layer: (H_l, W_l)}`` of every layer for an [H, W] input: convs and ReLUs keep the size, pools halve it
    (:func:`pooled_size`). The same sizes as :func:`features` (tested), without running anything.

    Example:
      >>> s = layer_sizes("vgg19", (33, 20), "ceil")
      >>> s["relu1_1"], s["relu2_1"], s["relu5_1"], layer_sizes("vgg19", (33, 20))["relu5_1"]
      ((33, 20), (17, 10), (3, 2), (2, 1))
    """
    h, w = int(shape_HW[0]), int(shape_HW[1])
    out = {}
    for name, kind in layer_sequence(spec):
        if kind == "pool":
            h, w = pooled_size(h, pool_rounding), pooled_size(w, pool_rounding)
        out[name] = (h, w)
    return out


def prepare_params(params: Mapping[str, Mapping[str, jax.Array]], shape_HW, layers: Iterable[str] | None = None, *,
                   conv: str = "auto", pool_rounding: str = "floor", padding: str = "zero",
                   dtype=None) -> Dict[str, Dict[str, jax.Array]]:
    """``params`` with each conv layer that :func:`features` runs in Winograd form on an [H, W] image (up to the
    deepest of ``layers``; all when None) given its transformed kernel (``params[name][WINOGRAD_KERNEL]``,
    :func:`nst_jax.winograd.kernel_transform`), so a solve transforms its kernels once instead of in every value and
    gradient. The features equal those of ``params``; nothing is added where ``conv`` resolves to ``"lax"`` or
    ``dtype`` is a reduced one (those runs use no Winograd form). ``params`` itself is not changed.

    Example:
      >>> p = prepare_params(init_params(0, "vgg16"), (128, 128), ["relu4_1"], conv="winograd")
      >>> sorted(k for k in p if WINOGRAD_KERNEL in p[k]), p["conv3_1"][WINOGRAD_KERNEL].shape
      (['conv2_1', 'conv2_2', 'conv3_1', 'conv3_2', 'conv3_3', 'conv4_1'], (36, 128, 256))
    """
    out = {name: dict(layer) for name, layer in params.items()}
    if backend.resolve("conv", conv) != "winograd" or (dtype is not None and jnp.dtype(dtype) != jnp.float32):
        return out
    for name in winograd_layers(spec_from_params(params), shape_HW, layers, pool_rounding=pool_rounding,
                                padding=padding):
        out[name][WINOGRAD_KERNEL] = _kernel_transform(jnp.asarray(params[name]["kernel"], jnp.float32))
    return out


def winograd_layers(spec: str | VGGSpec, shape_HW, layers: Iterable[str] | None = None, *,
                    pool_rounding: str = "floor", padding: str = "zero") -> Dict[str, Tuple[int, int, int, int]]:
    """``{conv_name: (H_l, W_l, C_in, C_out)}`` of the convs, up to the deepest of ``layers`` (all when None), that
    run in Winograd form on an [H, W] image with prepared kernels (:func:`nst_jax.winograd.worthwhile`, transformed):
    the layers :func:`prepare_params` transforms and the memory estimate counts. ``H_l, W_l``: the conv's input as
    it sees it (with the one-pixel border of a non-zero ``padding``).

    Example:
      >>> winograd_layers("vgg16", (128, 128), ["relu3_1"])
      {'conv2_1': (64, 64, 64, 128), 'conv2_2': (64, 64, 128, 128), 'conv3_1': (32, 32, 128, 256)}
    """
    spec = get_spec(spec)
    order = {name: j for j, (name, _) in enumerate(layer_sequence(spec))}
    last = len(order) if layers is None else max((order[n] for n in layers if n in order), default=-1)
    shapes = expected_shapes(spec)
    out = {}
    for name, (h, w) in layer_sizes(spec, shape_HW, pool_rounding).items():
        if name in shapes and order[name] <= last:
            edge = 0 if conv_padding(padding, name) == "zero" else 2
            c_in, c_out = shapes[name]["kernel"][2:]
            if winograd.worthwhile(h + edge, w + edge, c_in, c_out, transformed=True):
                out[name] = (h + edge, w + edge, c_in, c_out)
    return out


_kernel_transform = jax.jit(winograd.kernel_transform)


def _pad_image(x_HWC: jax.Array, mode: str) -> jax.Array:
    """One pixel of mirror ("reflect": ``jnp.pad`` mode "reflect", edge not repeated) or edge-copy padding."""
    return jnp.pad(x_HWC, ((1, 1), (1, 1), (0, 0)), mode="reflect" if mode == "reflect" else "edge")


def _conv(x_HWC: jax.Array, layer: Mapping[str, jax.Array], ops: str, pad: str = "zero",
          conv: str = "lax") -> jax.Array:
    kernel, bias = layer["kernel"].astype(x_HWC.dtype), layer["bias"]
    conv_pad = "SAME"
    if pad != "zero":
        x_HWC, conv_pad = _pad_image(x_HWC, pad), "VALID"
    prepared = WINOGRAD_KERNEL in layer
    if conv == "winograd" and x_HWC.dtype == jnp.float32 and winograd.worthwhile(*x_HWC.shape, kernel.shape[-1],
                                                                                 transformed=prepared):
        y = (winograd.conv3x3_transformed(x_HWC, layer[WINOGRAD_KERNEL], conv_pad) if prepared
             else winograd.conv3x3(x_HWC, kernel, conv_pad))
    elif ops == "lean":
        y = lean_ops.conv3x3(x_HWC, kernel, conv_pad)
    else:
        y = lean_ops.conv_nhwc(x_HWC, kernel, padding=conv_pad)
    return y + bias.astype(y.dtype)


def _relu(x: jax.Array, ops: str) -> jax.Array:
    return lean_ops.relu(x) if ops == "lean" else jax.nn.relu(x)


def _pool(x_HWC: jax.Array, pooling: str, ops: str, rounding: str = "floor") -> jax.Array:
    """2x2 stride-2 pooling, max or average; odd sizes floored, or with ``rounding="ceil"`` padded by one row/column
    that no output counts: -inf for max, and the average divides by the in-image elements only (Caffe's rule)."""
    h, w = x_HWC.shape[0], x_HWC.shape[1]
    extra = ((0, h % 2), (0, w % 2), (0, 0)) if rounding == "ceil" else ((0, 0), (0, 0), (0, 0))
    window, strides = (2, 2, 1), (2, 2, 1)
    if pooling == "max":
        if rounding == "ceil" and (h % 2 or w % 2):
            x_HWC = jnp.pad(x_HWC, extra, constant_values=-jnp.inf)
        if ops == "lean":
            return lean_ops.max_pool(x_HWC)
        return jax.lax.reduce_window(x_HWC, -jnp.inf, jax.lax.max, window, strides, "VALID")
    if pooling == "avg":
        s = jax.lax.reduce_window(x_HWC, 0.0, jax.lax.add, window, strides, extra)
        if rounding != "ceil" or not (h % 2 or w % 2):
            return s / 4.0
        count = np.ones((h, w, 1), np.float32)
        count = np.pad(count, extra).reshape(s.shape[0], 2, s.shape[1], 2, 1).sum(axis=(1, 3))
        return s / jnp.asarray(count, s.dtype)
    raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")


def _blocks(seq: Sequence[Tuple[str, str]]) -> List[List[Tuple[str, str]]]:
    """The layer sequence cut into blocks, each ending at a pool (the unit of rematerialisation)."""
    blocks: List[List[Tuple[str, str]]] = [[]]
    for name, kind in seq:
        blocks[-1].append((name, kind))
        if kind == "pool":
            blocks.append([])
    return [b for b in blocks if b]


def _run_block(x, block_params, *, block, wanted, pooling: str, ops: str, conv: str, pool_rounding: str,
               padding: str):
    """One block's layers: (its output, {requested layer: its map})."""
    taps = {}
    for name, kind in block:
        if kind == "conv":
            x = _conv(x, block_params[name], ops, conv_padding(padding, name), conv)
        elif kind == "relu":
            x = _relu(x, ops)
        else:
            x = _pool(x, pooling, ops, pool_rounding)
        if name in wanted:
            taps[name] = x
    return x, taps


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
    ops: str = "auto",
    conv: str = "auto",
    pool_rounding: str = "floor",
    padding: str = "zero",
    input_scale: float = 255.0,
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
      ops: ``"lax"`` (plain ``lax`` ops, the reference), ``"lean"`` (:mod:`nst_jax.lean_ops`: same values and
        derivatives, less memory in reverse mode) or ``"auto"`` (per backend, :mod:`nst_jax.backend`).
      conv: ``"lax"`` (``lax.conv_general_dilated``, the reference), ``"winograd"`` (:mod:`nst_jax.winograd` on the
        float32 layers where :func:`nst_jax.winograd.worthwhile` holds, ``lax`` elsewhere: the transforms lose too
        much precision in bfloat16) or ``"auto"`` (per backend).
      pool_rounding: odd sizes at the pools, ``"floor"`` (Keras) or ``"ceil"`` (Caffe), see the module docstring.
      padding: the convs' padding, one of :data:`PADDINGS` (default zeros).
      input_scale: the x255 (Caffe) or x256 (neural-style) of :func:`preprocess`.

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
    ops = backend.resolve("ops", ops)
    if ops not in ("lax", "lean"):
        raise ValueError(f"ops must be 'auto', 'lax' or 'lean', got {ops!r}")
    conv = backend.resolve("conv", conv)
    if conv not in ("lax", "winograd"):
        raise ValueError(f"conv must be 'auto', 'lax' or 'winograd', got {conv!r}")
    pooled_size(2, pool_rounding)  # validates
    conv_padding(padding, "conv1_1")  # validates

    x = image_HW3 if preprocessed else preprocess(image_HW3, input_scale)
    if dtype is not None:
        x = x.astype(dtype)

    out: Features = {}
    for block in _blocks(seq[: last + 1]):
        run_block = functools.partial(_run_block, block=tuple(block), wanted=frozenset(wanted), pooling=pooling,
                                      ops=ops, conv=conv, pool_rounding=pool_rounding,
                                      padding=padding)
        if remat:
            policy = getattr(jax.checkpoint_policies, remat) if isinstance(remat, str) else None
            run_block = jax.checkpoint(run_block, policy=policy)
        x, taps = run_block(x, {name: params[name] for name, kind in block if kind == "conv"})
        out.update(taps)
    if dtype is None:
        return {name: out[name] for name in layers}
    return {name: out[name].astype(jnp.float32) for name in layers}
