"""Gatys losses against NumPy references, and a gradient check of the total loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nst_jax import losses as L
from nst_jax import config, guided, objective
from nst_jax import vgg


def test_gram_custom_jvp_matches_the_einsum_derivatives():
    """The Gram's JVP (S + S^T, S = F^T dF) and its transpose (one product F (dG + dG^T)) equal the derivatives of
    the plain einsum, forward and reverse, for the plain and the guided Gram."""
    f = jax.random.normal(jax.random.PRNGKey(0), (5, 4, 3))
    t = jax.random.uniform(jax.random.PRNGKey(1), (5, 4, 2))
    hi = jax.lax.Precision.HIGHEST
    ref = lambda a: jnp.einsum("nc,nd->cd", a.reshape(20, 3), a.reshape(20, 3), precision=hi) / 20  # noqa: E731
    ref_g = lambda a: jnp.einsum("nr,nc,nd->rcd", jnp.square(t.reshape(20, 2)), a.reshape(20, 3),  # noqa: E731
                                 a.reshape(20, 3), precision=hi) / 20
    guided_g = lambda a: guided.guided_gram(a, t)  # noqa: E731
    for mine, theirs in ((L.gram, ref), (guided_g, ref_g)):
        np.testing.assert_allclose(mine(f), theirs(f), rtol=1e-6, atol=1e-6)
        for jac in (jax.jacfwd, jax.jacrev):  # jitted: one compile per Jacobian rather than op-by-op dispatch
            np.testing.assert_allclose(jax.jit(jac(mine))(f), jax.jit(jac(theirs))(f), rtol=1e-6, atol=1e-6)


def test_gram_matches_einsum():
    f = np.random.default_rng(0).normal(size=(5, 7, 4)).astype(np.float32)
    F = f.reshape(35, 4).astype(np.float64)
    np.testing.assert_allclose(L.gram(f), F.T @ F / 35, rtol=1e-5)
    np.testing.assert_allclose(L.gram(f, "chw"), F.T @ F / (35 * 4), rtol=1e-5)
    np.testing.assert_allclose(L.gram(f, "none"), F.T @ F, rtol=1e-5)
    with pytest.raises(ValueError):
        L.gram(f, "bogus")


def test_content_style_tv_match_numpy():
    rng = np.random.default_rng(1)
    f = {"a": rng.normal(size=(6, 5, 3)), "b": rng.normal(size=(3, 2, 4))}
    p = rng.normal(size=(6, 5, 3))
    np.testing.assert_allclose(L.content_loss(f["a"], p), np.mean((f["a"] - p) ** 2), rtol=1e-5)
    targets = {k: rng.normal(size=(v.shape[-1],) * 2) for k, v in f.items()}
    w = np.array([0.3, 2.0])
    ref = 0.0
    for j, k in enumerate(["a", "b"]):
        F = f[k].reshape(-1, f[k].shape[-1])
        ref += w[j] * np.mean((F.T @ F / F.shape[0] - targets[k]) ** 2)
    np.testing.assert_allclose(L.style_loss(f, targets, ["a", "b"], jnp.asarray(w)), ref, rtol=1e-5)
    img = rng.uniform(size=(5, 4, 3))
    tv_ref = np.sum(np.diff(img, axis=0) ** 2) + np.sum(np.diff(img, axis=1) ** 2)
    np.testing.assert_allclose(L.tv_loss(img), tv_ref, rtol=1e-5)


def test_blend_and_layer_weights():
    g = np.stack([np.eye(2), 3 * np.eye(2)])
    np.testing.assert_allclose(L.blend_grams(g, jnp.array([1.0, 3.0])), 2.5 * np.eye(2))
    np.testing.assert_allclose(L.default_layer_weights([2, 4]), [0.25, 1 / 16])
    np.testing.assert_allclose(L.default_layer_weights([2, 4], "ones"), [1, 1])


def test_total_loss_assembles_terms(tiny_params):
    rng = np.random.default_rng(2)
    c, s, x = (rng.uniform(size=(24, 20, 3)).astype(np.float32) for _ in range(3))
    cfg = config.LossConfig()
    t = objective.compute_targets(tiny_params, c, [s], cfg)
    w = objective.make_weights(cfg, tiny_params, content_weight=2.0, style_weight=5.0, tv_weight=0.5)
    terms = objective.loss_terms(tiny_params, x, t, w, cfg)
    fx = vgg.features(tiny_params, x, cfg.all_layers)
    fc = vgg.features(tiny_params, c, cfg.content_layers)
    fs = vgg.features(tiny_params, s, cfg.style_layers)
    content = np.mean((np.asarray(fx["relu4_2"]) - np.asarray(fc["relu4_2"])) ** 2)
    style = 0.0
    for name in cfg.style_layers:
        a, b = (np.asarray(d[name], np.float64).reshape(-1, d[name].shape[-1]) for d in (fx, fs))
        style += np.mean((a.T @ a / len(a) - b.T @ b / len(b)) ** 2) / a.shape[1] ** 2
    tv = np.sum(np.diff(x, axis=0) ** 2) + np.sum(np.diff(x, axis=1) ** 2)
    np.testing.assert_allclose(terms["content"], content, rtol=1e-4)
    np.testing.assert_allclose(terms["style"], style, rtol=1e-3)
    np.testing.assert_allclose(terms["tv"], tv, rtol=1e-5)
    np.testing.assert_allclose(terms["total"], 2 * content + 5 * style + 0.5 * tv, rtol=1e-3)


def test_check_grads_total_loss(tiny_params):
    """Gradient of the whole loss (content + style + TV through VGG) against finite differences, in float64."""
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tiny_params)
        rng = np.random.default_rng(3)
        c, s, x = (jnp.asarray(rng.uniform(0.2, 0.8, size=(12, 10, 3))) for _ in range(3))
        cfg = config.LossConfig(content_layers=("relu3_1",), style_layers=("relu1_1", "relu2_1", "relu3_1"))
        t = objective.compute_targets(p64, c, [s], cfg)
        w = objective.make_weights(cfg, p64, content_weight=1.0, style_weight=1e-3, tv_weight=1.0)
        w = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), w)
        f = jax.jit(lambda x: objective.total_loss(x, p64, t, w, cfg))
        check_grads(f, (x,), order=1, modes=["rev"], eps=1e-4, atol=1e-6, rtol=1e-5)


def test_make_weights_rejects_bad_values(tiny_params):
    cfg = config.LossConfig()
    with pytest.raises(ValueError, match="style_weight"):
        objective.check_weights(objective.make_weights(cfg, tiny_params, style_weight=float("nan")))
    with pytest.raises(ValueError, match="content_weight"):
        objective.check_weights(objective.make_weights(cfg, tiny_params, content_weight=-1))
    with pytest.raises(ValueError, match="layer weights must be finite"):
        objective.check_weights(objective.make_weights(cfg, tiny_params, layer_weights=[1.0, 2.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="layer weights"):
        objective.make_weights(cfg, tiny_params, layer_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="blend"):
        objective.make_weights(cfg, tiny_params, blend=[1.0, 1.0], n_styles=1)
    with pytest.raises(ValueError, match="preset"):
        config.preset("unknown")
