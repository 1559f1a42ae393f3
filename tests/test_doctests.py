"""The docstring examples of the public modules run and print what they claim (``doctest``, ELLIPSIS and
NORMALIZE_WHITESPACE).

``MIN_EXAMPLES`` pins how many examples a module has at least, so examples cannot silently disappear (or stop being
collected, e.g. when a function moves to another module and is only re-exported). Modules not listed there may have
none yet; any examples they gain are run and must pass.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import nst_jax  # noqa: E402

#: every module of the package (found by walking it, so a new module's examples run without being listed here)
MODULES = sorted(m.name for m in pkgutil.walk_packages(nst_jax.__path__, "nst_jax.")
                 if not m.name.endswith("__main__"))
# module -> minimum number of doctest examples (">>>" lines) expected to run
MIN_EXAMPLES = {"nst_jax.transfer": 12, "nst_jax.losses": 12, "nst_jax.guided": 17, "nst_jax.color": 26,
                "nst_jax.image": 8, "nst_jax.guidance": 5, "nst_jax.masks": 4, "nst_jax.figures": 10, "nst_jax.vgg": 18,
                "nst_jax.winograd": 6,
                "nst_jax.lean_ops": 8, "nst_jax.lbfgs": 8, "nst_jax.config": 5, "nst_jax.objective": 4,
                "nst_jax.problem": 9, "nst_jax.sweeps": 13, "nst_jax.grid": 3, "nst_jax.backend": 1, "nst_jax.files": 3,
                "nst_jax.cli.outputs": 2, "nst_jax.style_losses": 45, "nst_jax.weights": 2,
                "nst_jax.weights.sources": 13, "nst_jax.weights.cache": 22, "nst_jax.weights.keras_h5": 5,
                "nst_jax.weights.download": 2, "nst_jax.weights.normalize": 9,
                "nst_jax.pyramid": 6, "nst_jax.memory": 6, "nst_jax.checkpoint": 9, "nst_jax.gradnorm": 3}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module(name: str):
    return importlib.import_module(name)  # the module object even if the package re-exports a same-named function


@pytest.mark.parametrize("name", MODULES)
def test_doctests_pass(name):
    mod = _module(name)
    result = doctest.testmod(mod, optionflags=FLAGS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples of {name} failed (see output)"
    assert result.attempted >= MIN_EXAMPLES.get(name, 0), (
        f"{name}: {result.attempted} doctest examples ran, expected at least {MIN_EXAMPLES.get(name, 0)}")


def test_min_examples_refers_to_tested_modules():
    assert set(MIN_EXAMPLES) <= set(MODULES)


def test_a_wrong_example_is_reported_as_failed():
    """The runner used above does catch a wrong expected output (guards against a test that cannot fail)."""
    import types

    mod = types.ModuleType("nst_jax_fake_doctest_module")
    mod.__doc__ = """
    >>> 1 + 1
    3
    >>> list(range(30))
    [0, 1, ..., 29]
    """
    result = doctest.testmod(mod, optionflags=FLAGS, verbose=False, report=False)
    assert result.attempted == 2 and result.failed == 1
