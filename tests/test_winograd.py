"""Winograd F(4x4, 3x3) convolution against a float64 NumPy convolution and ``lax.conv_general_dilated``: values,
both Jacobians, vmap, odd sizes, both paddings; its transforms against the 1-D closed form; the network path."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import backend, vgg, winograd
from nst_jax.config import LossConfig, SettingError


def _np_correlate(x_HWC, k_HWIO, pad):
    """Direct 3x3 cross-correlation in float64 with ``pad`` zeros on every side (1: "SAME", 0: "VALID")."""
    x = np.pad(np.asarray(x_HWC, np.float64), ((pad, pad), (pad, pad), (0, 0)))
    k = np.asarray(k_HWIO, np.float64)
    h, w = x.shape[0] - 2, x.shape[1] - 2
    out = np.zeros((h, w, k.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("hwi,io->hwo", x[dy:dy + h, dx:dx + w], k[dy, dx])
    return out


def _lax(x, k, padding):
    return jax.lax.conv_general_dilated(x[None], k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def test_one_dimensional_transforms_compute_a_correlation_exactly():
    """F(4, 3) in 1-D, from the module's matrices in float64: A^T [(G g) * (B^T d)] is the correlation of the 6
    inputs with the 3 taps, for random integers, to rounding."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.integers(-9, 10, 6).astype(np.float64), rng.integers(-9, 10, 3).astype(np.float64)
        want = np.array([d[i:i + 3] @ g for i in range(4)])
        got = winograd._AT @ ((winograd._G @ g) * (winograd._BT @ d))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


_SHAPES = [(4, 4, 3, 2), (5, 7, 3, 4), (9, 13, 5, 3), (17, 6, 4, 1), (8, 12, 6, 7)]


@pytest.mark.parametrize("shape, padding", [((1, 1, 2, 3), "SAME"), ((3, 3, 2, 2), "VALID")]
                         + [(s, p) for s in _SHAPES for p in ("SAME", "VALID")])
def test_values_equal_a_float64_numpy_convolution(shape, padding):
    """Odd and even sides (one tile, partial tiles, several tiles), both paddings: within 5e-6 of the output's scale
    (float32 rounding through the transforms; lax's own convolution within 2e-6)."""
    h, w, i, o = shape
    rng = np.random.default_rng(h * 31 + w)
    x = rng.standard_normal((h, w, i)).astype(np.float32)
    k = rng.standard_normal((3, 3, i, o)).astype(np.float32)
    want = _np_correlate(x, k, 1 if padding == "SAME" else 0)
    got = jax.jit(winograd.conv3x3, static_argnums=2)(x, k, padding)
    assert got.shape == want.shape
    assert _rel(got, want) < 5e-6
    assert _rel(_lax(x, k, padding), want) < 2e-6


@pytest.mark.parametrize("shape", [(5, 7, 3, 4), (8, 8, 2, 5), (6, 9, 4, 1)])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_every_derivative_equals_the_lax_convolution(shape, padding):
    """Gradients w.r.t. input and kernel (a nonlinear loss), forward- and reverse-mode Jacobians w.r.t. the input,
    the forward-mode Jacobian w.r.t. the kernel: all equal lax's to float32 rounding (reverse mode runs the
    transposed algorithm). The Jacobians are exact maps (5e-6); the gradients go through sin of the outputs."""
    h, w, i, o = shape
    kx, kk, kc = jax.random.split(jax.random.PRNGKey(h * w + i), 3)
    x, k = jax.random.normal(kx, (h, w, i)), jax.random.normal(kk, (3, 3, i, o))
    out = (h, w) if padding == "SAME" else (h - 2, w - 2)
    c = jax.random.normal(kc, out + (o,))
    mine = lambda x, k: winograd.conv3x3(x, k, padding)  # noqa: E731
    ref = lambda x, k: _lax(x, k, padding)  # noqa: E731
    J = jax.jit
    for argnums in (0, 1, (0, 1)):
        a = J(jax.grad(lambda x, k: jnp.sum(jnp.sin(mine(x, k)) * c), argnums=argnums))(x, k)
        b = J(jax.grad(lambda x, k: jnp.sum(jnp.sin(ref(x, k)) * c), argnums=argnums))(x, k)
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            assert _rel(u, v) < 5e-5  # sin' at outputs of size ~10 that differ by ~2e-6 of their scale
    for jac in (jax.jacfwd, jax.jacrev):
        assert _rel(J(jac(lambda x: mine(x, k)))(x), J(jac(lambda x: ref(x, k)))(x)) < 5e-6
    assert _rel(J(jax.jacfwd(lambda k: mine(x, k)))(k), J(jax.jacfwd(lambda k: ref(x, k)))(k)) < 5e-6


def test_vmap_equals_a_loop_over_images():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 7, 2))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 3))
    batched = jax.vmap(winograd.conv3x3, (0, None))(x, k)
    grads = jax.vmap(jax.grad(lambda a: jnp.sum(winograd.conv3x3(a, k) ** 2)))(x)
    for j in range(3):
        np.testing.assert_allclose(batched[j], winograd.conv3x3(x[j], k), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(grads[j], jax.grad(lambda a: jnp.sum(winograd.conv3x3(a, k) ** 2))(x[j]),
                                   rtol=1e-5, atol=1e-5)


def test_bad_padding_is_refused():
    with pytest.raises(ValueError, match="padding must be"):
        winograd.conv3x3(jnp.ones((4, 4, 1)), jnp.ones((3, 3, 1, 1)), "FULL")


def test_worthwhile_holds_on_the_measured_layer_shapes_only():
    """The rule of benchmarks/RESULTS.md: large channel counts on 24x24 to 128x128 outputs; not the first block's
    64 -> 64 or 3 -> 64 layers, not 16x16 or 256x256 maps."""
    assert winograd.worthwhile(64, 64, 256, 256) and winograd.worthwhile(32, 32, 512, 512)
    assert winograd.worthwhile(128, 128, 64, 128) and winograd.worthwhile(32, 41, 256, 512)
    assert not winograd.worthwhile(256, 256, 64, 64) and not winograd.worthwhile(256, 256, 3, 64)
    assert not winograd.worthwhile(16, 16, 512, 512) and not winograd.worthwhile(20, 20, 512, 512)
    assert winograd.worthwhile(32, 25, 512, 512) and winograd.worthwhile(24, 24, 256, 512)
    assert winograd.worthwhile(128, 128, 128, 128) and not winograd.worthwhile(128, 129, 128, 128)
    assert not winograd.worthwhile(256, 256, 128, 128)
    # kernels transformed once per solve (vgg.prepare_params): maps down to 12x12 qualify
    assert winograd.worthwhile(16, 16, 512, 512, transformed=True) and winograd.worthwhile(12, 12, 256, 512, True)
    assert winograd.worthwhile(12, 16, 512, 512, transformed=True) and not winograd.worthwhile(11, 12, 512, 512, True)
    assert not winograd.worthwhile(8, 8, 512, 512, transformed=True) and not winograd.worthwhile(64, 64, 64, 64, True)
    assert not winograd.worthwhile(129, 128, 128, 128, transformed=True)


# A small network whose second block meets the rule at 64 px input (64 -> 128 channels at 32x32).
_WIDE = vgg.VGGSpec("wide-test", (1, 2, 1, 1, 1), (64, 128, 8, 8, 8))


@pytest.fixture(scope="module")
def wide_params():
    return vgg.init_params(0, _WIDE)


@pytest.mark.parametrize("padding", ["zero", "reflect"])
def test_network_features_and_gradient_equal_the_lax_path(wide_params, padding, monkeypatch):
    """``vgg.features(conv="winograd")`` equals ``conv="lax"`` in the features and in a Gram loss's image gradient,
    and really takes the Winograd form where the rule holds (counted), XLA's elsewhere."""
    calls = []
    real = winograd.conv3x3

    def counting(x, k, padding="SAME"):
        calls.append((x.shape, k.shape))
        return real(x, k, padding)

    monkeypatch.setattr(winograd, "conv3x3", counting)
    image = jax.random.uniform(jax.random.PRNGKey(2), (64, 64, 3))
    layers = ["relu1_1", "relu2_1", "relu2_2", "relu3_1"]

    def loss(img, conv):
        f = vgg.features(wide_params, img, layers, conv=conv, padding=padding)
        return sum(jnp.sum((v.reshape(-1, v.shape[-1]).T @ v.reshape(-1, v.shape[-1])) ** 2) for v in f.values())

    fw = vgg.features(wide_params, image, layers, conv="winograd", padding=padding)
    fl = vgg.features(wide_params, image, layers, conv="lax", padding=padding)
    for name in layers:
        assert _rel(fw[name], fl[name]) < 1e-5, name
    assert _rel(jax.grad(loss)(image, "winograd"), jax.grad(loss)(image, "lax")) < 1e-4
    in_shape = (34, 34) if padding == "reflect" else (32, 32)  # reflect pads before a VALID conv
    assert {(s[:2], k[2:]) for s, k in calls} == {(in_shape, (64, 128)), (in_shape, (128, 128))}


def test_bfloat16_activations_keep_the_lax_convolution(wide_params):
    image = jax.random.uniform(jax.random.PRNGKey(4), (64, 64, 3))
    a = vgg.features(wide_params, image, ["relu2_2"], conv="winograd", dtype=jnp.bfloat16)["relu2_2"]
    b = vgg.features(wide_params, image, ["relu2_2"], conv="lax", dtype=jnp.bfloat16)["relu2_2"]
    np.testing.assert_array_equal(a, b)


def test_setting_is_validated_and_resolved_per_backend():
    assert backend.resolve("conv", "auto", "cpu") == "winograd"
    assert backend.resolve("conv", "auto", "gpu") == "lax" and backend.resolve("conv", "auto", "tpu") == "lax"
    with pytest.raises(SettingError, match="conv"):
        LossConfig(conv="fft")
    with pytest.raises(ValueError, match="conv must be"):
        vgg.features(vgg.init_params(0, "tiny19"), jnp.zeros((32, 32, 3)), ["relu1_1"], conv="fft")


# At 64 px input: conv2_1 on 32x32 maps (either rule), conv3_1 on 16x16 (prepared kernels only), conv4_1 on 8x8
# (neither).
_DEEP = vgg.VGGSpec("deep-test", (1, 1, 1, 1, 1), (64, 128, 128, 128, 8))


def _count_calls(monkeypatch):
    calls = {"conv3x3": [], "conv3x3_transformed": []}
    for name in calls:
        real = getattr(winograd, name)

        def counting(x, k, padding="SAME", real=real, name=name):
            calls[name].append(x.shape[:2])
            return real(x, k, padding)

        monkeypatch.setattr(winograd, name, counting)
    return calls


def test_prepared_params_give_the_same_features_and_gradient(monkeypatch):
    """``vgg.prepare_params`` adds the transformed kernel of exactly the layers that take the Winograd form with
    it (up to the deepest requested layer), leaves its input alone, and the features and image gradient equal both
    the unprepared Winograd path and XLA's."""
    params = vgg.init_params(1, _DEEP)
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    prepared = vgg.prepare_params(params, (64, 64), layers, conv="winograd")
    assert sorted(k for k, v in prepared.items() if vgg.WINOGRAD_KERNEL in v) == ["conv2_1", "conv3_1"]
    assert all(set(v) == {"kernel", "bias"} for v in params.values())  # the input is not changed
    np.testing.assert_allclose(prepared["conv3_1"][vgg.WINOGRAD_KERNEL],
                               winograd.kernel_transform(params["conv3_1"]["kernel"]), rtol=0, atol=0)
    only2 = vgg.prepare_params(params, (64, 64), ["relu2_1"], conv="winograd")
    assert [k for k, v in only2.items() if vgg.WINOGRAD_KERNEL in v] == ["conv2_1"]
    for kw in ({"conv": "lax"}, {"conv": "winograd", "dtype": jnp.bfloat16}):
        assert not any(vgg.WINOGRAD_KERNEL in v for v in vgg.prepare_params(params, (64, 64), **kw).values())

    calls = _count_calls(monkeypatch)
    image = jax.random.uniform(jax.random.PRNGKey(5), (64, 64, 3))

    def loss(img, p, conv):
        f = vgg.features(p, img, layers, conv=conv)
        return sum(jnp.sum((v.reshape(-1, v.shape[-1]).T @ v.reshape(-1, v.shape[-1])) ** 2) for v in f.values())

    fp = vgg.features(prepared, image, layers, conv="winograd")
    assert calls == {"conv3x3": [], "conv3x3_transformed": [(32, 32), (16, 16)]}
    fu = vgg.features(params, image, layers, conv="winograd")
    assert calls["conv3x3"] == [(32, 32)]  # unprepared: 16x16 maps stay with XLA
    fl = vgg.features(params, image, layers, conv="lax")
    for name in layers:
        assert _rel(fp[name], fl[name]) < 1e-5 and _rel(fp[name], fu[name]) < 1e-5, name
    gp = jax.grad(loss)(image, prepared, "winograd")
    assert _rel(gp, jax.grad(loss)(image, params, "lax")) < 1e-4
    assert _rel(gp, jax.grad(loss)(image, params, "winograd")) < 1e-4


def test_a_solve_transforms_its_kernels_once(monkeypatch):
    """``runner.Solve`` runs on prepared params: no kernel transform inside its compiled steps (the unprepared
    conv3x3 is never traced), and its result equals a solve with XLA's convolutions."""
    from nst_jax import objective, runner
    from nst_jax.config import SolverConfig

    params = vgg.init_params(1, _DEEP)
    cfg = LossConfig(content_layers=("relu3_1",), style_layers=("relu1_1", "relu2_1", "relu3_1"), conv="winograd")
    content = jax.random.uniform(jax.random.PRNGKey(6), (64, 64, 3))
    style = jax.random.uniform(jax.random.PRNGKey(7), (64, 64, 3))
    targets = objective.compute_targets(params, content, [style], cfg)
    weights = objective.make_weights(cfg, params)
    calls = _count_calls(monkeypatch)
    out = runner.Solve(cfg, SolverConfig(history=5, chunk=3))(params, targets, weights, content, 6)
    assert calls["conv3x3"] == [] and set(calls["conv3x3_transformed"]) == {(32, 32), (16, 16)}
    ref = runner.Solve(dataclasses.replace(cfg, conv="lax"), SolverConfig(history=5, chunk=3))(
        params, targets, weights, content, 6)
    assert out.values[-1] < out.values[0]
    np.testing.assert_allclose(out.values, ref.values, rtol=1e-4)
