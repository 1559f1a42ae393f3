"""Peak-memory estimate (against measured peaks), fit checks, and the memory-saving paths (remat, bfloat16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import backend
from nst_jax import memory as M
from nst_jax import objective
from nst_jax.config import LossConfig
from nst_jax import vgg

LAYERS = LossConfig().all_layers  # relu4_2 + relu1_1..relu5_1


# --------------------------------------------------------------------------------------------------- estimate

def test_activation_elements_match_the_network_shapes(tiny_params):
    """Independent count: run the network and sum the sizes of every conv/relu/pool output up to relu4_2."""
    shape = (37, 50)  # odd sizes exercise the floor of the pools
    names = [n for n in vgg.layer_names("tiny19")]
    upto = names[: names.index("relu4_2") + 1]
    feats = vgg.features(tiny_params, jnp.zeros(shape + (3,)), upto)
    total, bounds, biggest = M.activation_elements("tiny19", shape, ["relu1_1", "relu4_2"])
    assert total == sum(int(np.prod(f.shape)) for f in feats.values())
    assert bounds == sum(int(np.prod(feats[n].shape)) for n in upto if n.startswith("pool"))
    block3 = sum(int(np.prod(feats[n].shape)) for n in upto if n[-3] == "3" or n == "pool3")
    assert biggest >= block3 and biggest < total


def test_layer_stats_match_the_network_shapes(tiny_params):
    """Independent count from the network's own outputs: widest layer, the loss's layers, ReLU and pool outputs."""
    shape = (37, 50)
    names = vgg.layer_names("tiny19")
    upto = names[: names.index("relu4_2") + 1]
    feats = vgg.features(tiny_params, jnp.zeros(shape + (3,)), upto)
    size = {n: int(np.prod(f.shape)) for n, f in feats.items()}
    c = M._layer_stats("tiny19", shape, ["relu1_1", "relu4_2"])
    assert c.widest == max(size.values())
    assert c.taps == size["relu1_1"] + size["relu4_2"]
    assert c.relu == sum(v for n, v in size.items() if n.startswith("relu"))
    assert c.pool == sum(v for n, v in size.items() if n.startswith("pool"))
    assert c.total == sum(size.values())


def _temp_bytes_of_value_and_grad(arch: str, side: int, conv: str = "lax") -> int:
    """XLA's temporaries for the default loss's value and gradient at [side, side, 3] (compiled from shapes only),
    with the params a solve runs (:func:`nst_jax.vgg.prepare_params`)."""
    f32, sds = jnp.float32, jax.ShapeDtypeStruct
    cfg = LossConfig(conv=conv)
    p_abs = {k: {kk: sds(v, f32) for kk, v in s.items()} for k, s in vgg.expected_shapes(arch).items()}
    p_abs = jax.eval_shape(lambda p: vgg.prepare_params(p, (side, side), cfg.all_layers, conv=conv), p_abs)
    x_abs = sds((side, side, 3), f32)
    t_abs = jax.eval_shape(lambda p, x: objective.compute_targets(p, x, [x], cfg), p_abs, x_abs)
    w_abs = jax.tree_util.tree_map(lambda a: sds(a.shape, a.dtype), objective.make_weights(cfg, p_abs))
    vg = jax.jit(jax.value_and_grad(objective.total_loss), static_argnums=4)
    return vg.lower(x_abs, p_abs, t_abs, w_abs, cfg).compile().memory_analysis().temp_size_in_bytes


def test_backward_pass_keeps_no_float_activation_of_the_network():
    """Per extra pixel, XLA's temporaries for vgg16's value and gradient grow by at most 4 float32 maps of the widest
    layer (64 channels): its input and output in the forward pass, relu1_1's map for the Gram gradient and slack.
    Keeping the float ReLU/pool inputs for the backward pass (what plain jax.nn.relu, reduce_window max pooling and
    the einsum Gram lead XLA to) costs ~2200 bytes per pixel here; the lean path ~870. (With XLA's convolutions:
    the Winograd form's tile workspace is bounded by the next test.)"""
    t128, t256 = (_temp_bytes_of_value_and_grad("vgg16", n) for n in (128, 256))
    per_pixel = (t256 - t128) / (256 ** 2 - 128 ** 2)
    assert 0 < per_pixel <= 4 * 64 * 4, per_pixel


def test_winograd_workspace_stays_within_the_estimate_term():
    """The Winograd form adds tile buffers, not residuals: XLA's temporaries for the value and gradient exceed the
    lax path's by no more than the estimate's workspace term (with prepared kernels they were lower: no kernel
    transform inside the program); the prepared kernels are a term of their own, counted exactly."""
    layers = LossConfig().all_layers
    for arch in ("vgg16", "vgg19"):
        for side in (128, 256):
            extra = _temp_bytes_of_value_and_grad(arch, side, "winograd") - _temp_bytes_of_value_and_grad(arch, side)
            term = 4 * M.WINOGRAD_WORKSPACE * M.winograd_elements(arch, (side, side), layers)
            assert extra <= term, (arch, side, extra, term)
            prepared = vgg.prepare_params(vgg.init_params(0, arch), (side, side), layers, conv="winograd")
            kernels = sum(4 * np.size(v[vgg.WINOGRAD_KERNEL]) for v in prepared.values() if vgg.WINOGRAD_KERNEL in v)
            assert kernels == 4 * M.winograd_kernel_elements(arch, (side, side), layers) > 0
            term += kernels
            with_term = M.estimate_peak_bytes((side, side), arch=arch, layers=layers, conv="winograd")
            assert with_term - M.estimate_peak_bytes((side, side), arch=arch, layers=layers, conv="lax") == term
            default = M.estimate_peak_bytes((side, side), arch=arch, layers=layers)  # "auto": this backend's form
            assert default == (with_term if backend.resolve("conv", "auto") == "winograd" else with_term - term)


def test_estimate_terms_scale_as_documented():
    base = dict(arch="vgg19", layers=LAYERS, conv="lax")  # the Winograd term: the test above
    e = lambda **kw: M.estimate_peak_bytes((200, 300), **{**base, **kw})  # noqa: E731
    # one more L-BFGS pair costs exactly s and y: 2 x H W C float32
    assert e(history=11) - e(history=10) == 2 * 200 * 300 * 3 * 4
    # adam keeps no history
    assert e(solver="adam") == e(history=1) < e(history=2)  # adam: m and v, as much as one pair
    # bf16 halves the float activations (and the transformed kernel copy); the optimiser state is unchanged
    c = M._layer_stats("vgg19", (200, 300), LAYERS)
    live = M.PEAK_LAYERS * c.widest + c.taps
    used = sum(np.prod(s["kernel"]) + np.prod(s["bias"]) for n, s in vgg.expected_shapes("vgg19").items()
               if n <= "conv5_1")
    assert e() - e(compute_dtype="bfloat16") == pytest.approx(2 * live + 2 * used, rel=1e-6)
    # remat keeps the float block inputs instead of the 1-bit ReLU masks and 1-byte pool codes: more, for VGG
    bounds = M.activation_elements("vgg19", (200, 300), LAYERS)[1]
    assert bounds == c.pool
    assert e(remat=True) - e() == 4 * bounds - (c.relu // 8 + c.pool) > 0
    # a sweep of K members repeats the per-member part (state + image copies + activations), not params/targets
    n = 200 * 300 * 3
    member = 4 * (2 * 100 * n + M.IMAGE_COPIES * n) + 4 * live + c.relu // 8 + c.pool
    assert e(batch=2) - e(batch=1) == pytest.approx(member, abs=2)
    assert e(batch=3) - e(batch=1) == pytest.approx(2 * member, abs=2)
    # 4x the pixels: the pixel-proportional part grows 4x
    small, big = M.estimate_peak_bytes((100, 150), **base), M.estimate_peak_bytes((200, 300), **base)
    fixed = M.estimate_peak_bytes((1, 1), **base)
    assert (big - fixed) / (small - fixed) == pytest.approx(4.0, rel=0.05)


def test_estimate_bad_inputs():
    with pytest.raises(ValueError, match="unknown solver"):
        M.estimate_peak_bytes((64, 64), layers=LAYERS, solver="sgd")
    with pytest.raises(ValueError, match="unknown layer"):
        M.estimate_peak_bytes((64, 64), arch="tiny19", layers=["relu9_9"])
    with pytest.raises(ValueError, match="history"):
        M.estimate_peak_bytes((64, 64), layers=LAYERS, history=0)
    with pytest.raises(ValueError, match="compute_dtype"):
        M.estimate_peak_bytes((64, 64), layers=LAYERS, compute_dtype="float16")


_MEASURE = """
import json, sys
from nst_jax import memory as M
out = {}
for n in (128, 256):
    m = M.measure_peak_bytes((n, n), arch="tiny19", history=20)
    e = M.estimate_peak_bytes((n, n), arch="tiny19", layers=M._DEFAULT_LAYERS, history=20)
    out[n] = [m, e]
print(json.dumps(out))
"""


def test_estimate_within_30_percent_of_measured_peak():
    """A fresh process per run: compile first, then the resident-set growth while params, targets, L-BFGS state
    (history 20) are created and two iterations run; large buffers mmapped so that RSS tracks live buffers."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for n, (measured, estimate) in got.items():
        print(f"{n} px: measured {M.format_bytes(measured)}, estimated {M.format_bytes(estimate)}")
        assert measured > 0
        assert abs(estimate - measured) <= 0.3 * measured, (n, measured, estimate)
    # the growth from 128 to 256 px (4x the pixels) is predicted too
    (m1, e1), (m2, e2) = got["128"], got["256"]
    assert abs((e2 - e1) - (m2 - m1)) <= 0.3 * (m2 - m1)


# --------------------------------------------------------------------------------------------------- fit checks

def test_format_bytes():
    assert M.format_bytes(0) == "0 B"
    assert M.format_bytes(1023) == "1023 B"
    assert M.format_bytes(1536) == "1.5 KiB"
    assert M.format_bytes(3 * 2 ** 30) == "3.0 GiB"
    assert M.format_bytes(5 * 2 ** 40) == "5.0 TiB"
    with pytest.raises(ValueError):
        M.format_bytes(-1)


def test_available_bytes_is_the_hosts_free_memory_on_cpu():
    avail = M.available_bytes()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert avail is not None and 0 < avail <= total


def test_check_fits():
    M.check_fits(10 * 2 ** 30, 11 * 2 ** 30)  # fits: no error
    with pytest.raises(ValueError, match=r"needs ~10.00 GiB but only 4.00 GiB are available; try --history 20, a "
                                         r"smaller --size, or --bf16 on a GPU/TPU"):
        M.check_fits(10 * 2 ** 30, 4 * 2 ** 30)
    M.check_fits(1, None)  # the default limit is this machine's free memory
    with pytest.raises(ValueError, match="needs"):
        M.check_fits(2 ** 62)


# --------------------------------------------------------------------------------------------------- remat / bf16

@pytest.fixture(scope="module")
def small_problem(tiny_params):
    """A well-conditioned case: a noise image (the "noise" init) against a smooth content and a striped style, so the
    feature and Gram differences are large relative to bf16 rounding (no cancellation)."""
    h, w = 32, 24
    yy, xx = np.mgrid[0:h, 0:w] / 32.0
    content = np.stack([0.5 + 0.4 * np.sin(3 * xx), 0.5 + 0.4 * np.cos(2 * yy), 0.5 + 0.3 * np.sin(2 * (xx + yy))], -1)
    yy, xx = np.mgrid[0:28, 0:28]
    style = 0.5 + 0.4 * np.sin(1.7 * xx + 0.9 * yy)[..., None] * np.array([1.0, -0.6, 0.3])
    x = np.random.default_rng(0).random((h, w, 3))
    return tuple([tiny_params] + [jnp.asarray(a, jnp.float32) for a in (content, style, x)])


def _value_and_grad(params, content, style, x, **cfg_kw):
    cfg = LossConfig(**cfg_kw)
    targets = objective.compute_targets(params, content, [style], LossConfig())  # float32 targets for every variant
    weights = objective.make_weights(cfg, params, content_weight=1.0, style_weight=1e3)
    return _VALUE_AND_GRAD(x, params, targets, weights, cfg)


_VALUE_AND_GRAD = jax.jit(jax.value_and_grad(objective.total_loss), static_argnums=4)  # one compile per LossConfig


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_remat_gives_the_same_loss_and_gradient(small_problem):
    v0, g0 = _value_and_grad(*small_problem)
    for remat in (True,):
        v1, g1 = _value_and_grad(*small_problem, remat=remat)
        assert abs(float(v1) - float(v0)) <= 1e-5 * abs(float(v0))
        assert _rel(g1, g0) <= 1e-5


def test_bfloat16_activations_match_float32_within_bf16_tolerance(small_problem):
    """bf16 keeps 8 mantissa bits (rounding 2^-9 relative per value, kernels included). Stated tolerances through the
    ~16 layers of tiny19: loss within 2e-2 relative; gradient within 0.15 relative (L2) with cosine >= 0.99 (its
    pixel-wise error is ~9% here, larger than the loss's: it sums many rounded paths). And it is not the float32
    path in disguise: the values differ."""
    v0, g0 = _value_and_grad(*small_problem)
    v1, g1 = _value_and_grad(*small_problem, compute_dtype="bfloat16")
    assert abs(float(v1) - float(v0)) <= 2e-2 * abs(float(v0))
    assert _rel(g1, g0) <= 0.15
    assert float(jnp.vdot(g0, g1) / (jnp.linalg.norm(g0) * jnp.linalg.norm(g1))) >= 0.99
    assert float(v1) != float(v0) and _rel(g1, g0) > 1e-4
    assert g1.dtype == jnp.float32
