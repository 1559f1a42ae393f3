"""VGG forward pass against an independent NumPy reference; jit, vmap and grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import lean_ops, vgg


def _np_conv_same(x_HWC, k_HWIO, b):
    h, w, _ = x_HWC.shape
    xp = np.pad(x_HWC, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, k_HWIO.shape[-1]), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("hwi,io->hwo", xp[dy:dy + h, dx:dx + w], k_HWIO[dy, dx])
    return out + b


def _np_pool(x, mode):
    h, w, c = x.shape
    x = x[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c)
    return x.max(axis=(1, 3)) if mode == "max" else x.mean(axis=(1, 3))


def _np_features(params, image, pooling):
    x = image[..., ::-1].astype(np.float64) * 255.0 - np.array(vgg.CAFFE_MEAN_BGR)
    out = {}
    for name, kind in vgg.layer_sequence(vgg.spec_from_params(params)):
        if kind == "conv":
            x = _np_conv_same(x, np.asarray(params[name]["kernel"], np.float64), np.asarray(params[name]["bias"]))
        elif kind == "relu":
            x = np.maximum(x, 0)
        else:
            x = _np_pool(x, pooling)
        out[name] = x
    return out


@pytest.mark.parametrize("ops", ["lax", "lean"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_features_match_numpy_reference(tiny_params, pooling, ops):
    img = np.random.default_rng(1).uniform(size=(37, 22, 3)).astype(np.float32)  # non-square, odd sizes
    layers = ["conv1_1", "relu1_2", "pool1", "relu3_1", "pool2", "relu4_2", "relu5_4"]
    got = vgg.features(tiny_params, img, layers, pooling=pooling, ops=ops)
    ref = _np_features(tiny_params, img, pooling)
    for name in layers:
        assert got[name].shape == ref[name].shape, name
        scale = np.abs(ref[name]).max()
        np.testing.assert_allclose(np.asarray(got[name]), ref[name], rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def test_feature_shapes_stop_at_deepest_layer(tiny_params):
    img = jnp.zeros((33, 17, 3))
    f = vgg.features(tiny_params, img, ["relu2_1"])
    assert list(f) == ["relu2_1"] and f["relu2_1"].shape == (16, 8, 6)
    # The forward pass stops at relu2_1: its jaxpr holds 3 convolutions (conv1_1, conv1_2, conv2_1), not 16.
    jaxpr = jax.make_jaxpr(lambda x: vgg.features(tiny_params, x, ["relu2_1"]))(img)
    assert str(jaxpr).count("conv_general_dilated") == 3


def test_jit_vmap_grad(tiny_params):
    imgs = jax.random.uniform(jax.random.PRNGKey(0), (3, 24, 20, 3))
    f = jax.jit(lambda p, x: vgg.features(p, x, ["relu3_1"])["relu3_1"])
    batched = jax.jit(jax.vmap(f, in_axes=(None, 0)))(tiny_params, imgs)
    for j in range(3):
        np.testing.assert_allclose(batched[j], f(tiny_params, imgs[j]), rtol=1e-5, atol=1e-5)
    g = jax.jit(jax.grad(lambda x: jnp.sum(vgg.features(tiny_params, x, ["relu4_1"])["relu4_1"] ** 2)))(imgs[0])
    assert g.shape == imgs[0].shape and np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0


def test_remat_same_values_and_grads(tiny_params):
    x = jax.random.uniform(jax.random.PRNGKey(2), (20, 20, 3))
    loss = lambda x, r: jnp.sum(vgg.features(tiny_params, x, ["relu5_1"], remat=r)["relu5_1"] ** 2)  # noqa: E731
    vg = jax.jit(jax.value_and_grad(loss), static_argnums=1)  # one compiled program each, not op-by-op dispatch
    v0, g0 = vg(x, False)
    v1, g1 = vg(x, True)
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-6 * np.abs(g0).max())


def test_preprocess_roundtrip_and_values():
    x = jnp.array([[[1.0, 0.5, 0.0]]])
    p = vgg.preprocess(x)
    np.testing.assert_allclose(p[0, 0], [0 - 103.939, 127.5 - 116.779, 255 - 123.68], rtol=1e-6)
    np.testing.assert_allclose(vgg.deprocess(p), x, atol=1e-6)


def test_bad_layer_and_pooling(tiny_params):
    with pytest.raises(ValueError, match="unknown layer"):
        vgg.features(tiny_params, jnp.zeros((8, 8, 3)), ["relu9_9"])
    with pytest.raises(ValueError, match="pooling"):
        vgg.features(tiny_params, jnp.zeros((8, 8, 3)), ["pool1"], pooling="median")


def test_layer_names_literature():
    names = vgg.layer_names("vgg19")
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "relu5_4" in names and "relu5_4" not in vgg.layer_names("vgg16")
    assert vgg.expected_shapes("vgg16")["conv3_1"] == {"kernel": (3, 3, 128, 256), "bias": (256,)}
    assert vgg.layer_channels("vgg19")["relu4_2"] == 512


@pytest.mark.parametrize("shape", [(6, 8, 3), (7, 9, 2), (2, 2, 1), (4, 6, 13), (3, 5, 16)])
def test_memory_lean_relu_and_max_pool_equal_the_reference_ops(shape):
    """The max pool differentiated through a 1-byte code of each window's maximum gives exactly the values,
    gradients and Jacobians of ``lax.reduce_window`` max pooling (random inputs: no ties), odd sizes included;
    ``relu`` with its bit-packed mask is ``jax.nn.relu`` in value, gradient and Jacobian (channel counts that are
    and are not multiples of 8)."""
    x = jax.random.normal(jax.random.PRNGKey(sum(shape)), shape)
    ref_pool = lambda a: jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (2, 2, 1), (2, 2, 1), "VALID")  # noqa
    c = jax.random.normal(jax.random.PRNGKey(1), ref_pool(x).shape)
    J = jax.jit  # each side compiled as one program (op-by-op dispatch of the Jacobians is slow to compile)
    np.testing.assert_array_equal(J(lean_ops.max_pool)(x), J(ref_pool)(x))
    np.testing.assert_array_equal(J(jax.grad(lambda a: (lean_ops.max_pool(a) * c).sum()))(x),
                                  J(jax.grad(lambda a: (ref_pool(a) * c).sum()))(x))
    np.testing.assert_array_equal(J(lean_ops.relu)(x), J(jax.nn.relu)(x))
    np.testing.assert_array_equal(J(jax.grad(lambda a: (lean_ops.relu(a) * c.sum()).sum()))(x),
                                  J(jax.grad(lambda a: (jax.nn.relu(a) * c.sum()).sum()))(x))
    # forward mode too (the receptive-field tests take Jacobians with jacfwd)
    np.testing.assert_array_equal(J(jax.jacfwd(lean_ops.max_pool))(x), J(jax.jacfwd(ref_pool))(x))
    np.testing.assert_array_equal(J(jax.jacfwd(lean_ops.relu))(x), J(jax.jacfwd(jax.nn.relu))(x))
    np.testing.assert_array_equal(J(jax.jacrev(lean_ops.relu))(x), J(jax.jacrev(jax.nn.relu))(x))


@pytest.mark.parametrize("channels", [1, 3, 7, 8, 9, 64])
def test_relu_mask_bit_packing_round_trips(channels):
    """Bit k of byte j holds channel 8 j + k; unpacking restores the mask exactly (padding bits dropped)."""
    mask = np.random.default_rng(channels).random((3, 5, channels)) > 0.5
    packed = lean_ops.pack_bits(jnp.asarray(mask))
    assert packed.dtype == jnp.uint8 and packed.shape == (3, 5, -(-channels // 8))
    ref = np.packbits(np.pad(mask, [(0, 0), (0, 0), (0, -channels % 8)]), axis=-1, bitorder="little")
    np.testing.assert_array_equal(packed, ref)
    np.testing.assert_array_equal(lean_ops.unpack_bits(packed, channels), mask)


def test_max_pool_code_marks_the_first_maximum_of_each_window():
    """Bit k (k = 2 a + b, row-major in the window) is set for the first maximum only, ties included."""
    x = jnp.array([[1.0, 3.0, 2.0, 2.0], [3.0, 0.0, 2.0, 2.0]])[..., None]  # windows: max 3 twice; all equal
    code = lean_ops.first_max_code(lean_ops.windows(x))
    assert code[..., 0].tolist() == [[2, 1]]


def test_max_pool_gradient_goes_to_one_member_of_a_tied_window():
    x = jnp.zeros((2, 2, 1))
    g = jax.grad(lambda a: lean_ops.max_pool(a).sum())(x)
    assert float(g.sum()) == 1.0 and float(g[0, 0, 0]) == 1.0


@pytest.mark.parametrize("shape", [(7, 5, 3, 4), (4, 6, 8, 1)])
def test_conv3x3_equals_lax_conv_in_value_and_every_derivative(shape):
    """``conv3x3`` (custom JVP) is ``lax.conv_general_dilated`` in value, gradients w.r.t. input and kernel, and
    forward- and reverse-mode Jacobians (odd sizes, one output channel)."""
    h, w, i, o = shape
    kx, kk, kc = jax.random.split(jax.random.PRNGKey(h * w), 3)
    x, k = jax.random.normal(kx, (h, w, i)), jax.random.normal(kk, (3, 3, i, o))
    c = jax.random.normal(kc, (h, w, o))
    ref = lambda x, k: jax.lax.conv_general_dilated(x[None], k, (1, 1), "SAME",  # noqa: E731
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    J = jax.jit
    np.testing.assert_array_equal(J(lean_ops.conv3x3)(x, k), J(ref)(x, k))
    for argnums in (0, 1, (0, 1)):
        mine = J(jax.grad(lambda x, k: jnp.sum(jnp.sin(lean_ops.conv3x3(x, k)) * c), argnums=argnums))(x, k)
        theirs = J(jax.grad(lambda x, k: jnp.sum(jnp.sin(ref(x, k)) * c), argnums=argnums))(x, k)
        for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for jac in (jax.jacfwd, jax.jacrev):
        np.testing.assert_allclose(J(jac(lambda x: lean_ops.conv3x3(x, k)))(x), J(jac(lambda x: ref(x, k)))(x),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(J(jax.jacfwd(lambda k: lean_ops.conv3x3(x, k)))(k), J(jax.jacfwd(lambda k: ref(x, k)))(k),
                               rtol=1e-5, atol=1e-5)


def test_input_gradient_convolutions_read_the_kernel_in_hwio_order(tiny_params):
    """Every convolution of the network's value-and-gradient, the input-gradient ones included, takes its kernel in
    HWIO order (output features last): the order XLA:CPU's convolution library takes inside loop bodies too."""
    x = jnp.zeros((16, 16, 3))
    loss = lambda x: jnp.sum(vgg.features(tiny_params, x, ["relu3_1"], ops="lean")["relu3_1"] ** 2)  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.value_and_grad(loss))(x)

    def convs(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                yield eqn
            for v in eqn.params.values():
                inner = getattr(v, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    yield from convs(inner)

    found = list(convs(jaxpr.jaxpr))
    assert len(found) == 2 * 5  # conv1_1 .. conv3_1: forward and input gradient (none for conv1_1's kernel)
    for eqn in found:
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature dim, in feature dim, spatial...)
        assert rhs_spec == (3, 2, 0, 1), rhs_spec


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_lean_and_lax_network_paths_are_equal_in_value_and_gradient(tiny_params, pooling):
    """The two network op paths (``ops="lax"``, the reference, and ``ops="lean"``) give the same features and the
    same input and parameter gradients of a style-like loss, at odd sizes."""
    x = jax.random.uniform(jax.random.PRNGKey(3), (23, 30, 3))
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_2", "relu5_1"]

    def loss(params, x, ops):
        f = vgg.features(params, x, layers, pooling=pooling, ops=ops)
        return sum(jnp.mean(jnp.sin(f[n])) for n in layers)

    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    (va, (gpa, gxa)), (vb, (gpb, gxb)) = vg(tiny_params, x, "lax"), vg(tiny_params, x, "lean")
    np.testing.assert_allclose(va, vb, rtol=1e-6)
    np.testing.assert_allclose(gxa, gxb, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree_util.tree_leaves(gpa), jax.tree_util.tree_leaves(gpb)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="ops"):
        vgg.features(tiny_params, x, layers, ops="fast")
