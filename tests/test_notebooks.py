"""The example notebooks: well-formed, stripped, in sync with their generator, and they run top to bottom.

Each notebook is executed with nbclient in a python3 kernel of this environment with ``NST_SMALL=1`` (32 px,
3 iterations, tiny19 random weights) and must show at least one matplotlib figure (a ``display_data`` image/png
output). A persistent JAX compilation cache (under pytest's cache folder) is shared by the kernels, so programs that
several notebooks use compile once.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NB_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["quickstart", "alpha_beta_sweep", "spatial_control", "color_control", "scale_control"]
COLAB = "https://colab.research.google.com/github/nst-jax/nst-jax/blob/main/notebooks/{}.ipynb"
INSTALL = '%pip install -q "nst-jax @ git+https://github.com/nst-jax/nst-jax"'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read(name: str):
    return nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NB_DIR / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == sorted(NAMES)
    assert list(_generator().NOTEBOOKS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_structure(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert f"]({COLAB.format(name)})" in first.source and "colab-badge.svg" in first.source
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = code[0].source
    # the install is guarded by the Colab check and comes before any nst_jax import
    guard = setup.index('if "google.colab" in sys.modules:')
    assert guard < setup.index(INSTALL) < setup.index("from nst_jax")
    assert setup.splitlines()[[i for i, l in enumerate(setup.splitlines()) if INSTALL in l][0]].startswith("    ")
    # a parameter cell switching on NST_SMALL, with the small and the real settings
    params = next(c.source for c in code if "NST_SMALL" in c.source)
    for needle in ('SIZE = 32 if SMALL', 'ITERS = 3 if SMALL', 'WEIGHTS = "tiny19" if SMALL else "auto"'):
        assert needle in params
    # stripped: no outputs, no execution counts
    for c in code:
        assert c.outputs == [] and c.execution_count is None
    # the library is imported, not copied: no notebook defines a loss, a Gram matrix or a solver
    src = "\n".join(c.source for c in code)
    assert "import nst_jax" in src or "from nst_jax" in src
    for forbidden in ("def gram", "def style_loss", "def content_loss", "jax.grad(", "value_and_grad", "def lbfgs"):
        assert forbidden not in src
    assert "plt.imshow" in src or "ax.imshow" in src
    assert "semilogy" in src  # a loss curve


@pytest.mark.parametrize("name", NAMES)
def test_notebook_matches_generator(name):
    """The committed file is exactly what ``make_notebooks.py`` writes (edit the generator, then regenerate)."""
    text = (NB_DIR / f"{name}.ipynb").read_text(encoding="utf-8")
    assert text == _generator().render(name), f"run: python notebooks/make_notebooks.py ({name} is stale)"


def test_sweep_notebook_has_six_ratios_and_a_timing_comparison():
    src = "\n".join(c.source for c in _read("alpha_beta_sweep").cells if c.cell_type == "code")
    line = next(l for l in src.splitlines() if l.startswith("RATIOS = "))
    expr = ast.parse(line.split("=", 1)[1].split("#")[0].strip(), mode="eval").body  # SMALL list if SMALL else full
    assert isinstance(expr, ast.IfExp) and ast.unparse(expr.test) == "SMALL"
    ratios, small = ast.literal_eval(expr.orelse), ast.literal_eval(expr.body)
    assert len(ratios) >= 6 and len(set(ratios)) == len(ratios)
    assert 2 <= len(small) < len(ratios) and set(small) <= set(ratios)  # the smoke run still sweeps
    assert "labelled_grid" in src and "format_ratio" in src
    assert "sweep(" in src and "stylize(" in src and "run_seconds / K" in src
    # a two-axis grid and the paper's Fig. 3 (style layers x alpha/beta), each one sweep laid out by sweep_pages
    assert '{"style": PAINTINGS, "ratio": GRID_RATIOS}' in src and '{"style_layers": LAYER_ROWS' in src
    assert src.count("sweep_pages(") >= 2


# Appended to each notebook before running: every result the notebook made is small (NST_SMALL really took effect:
# a call that forgot ``size=SIZE`` would silently work at the library's default 512 px).
SMALL_CHECK = """
from nst_jax import Result as _R, SweepResult as _SR
_vals = list(globals().values())
_vals += [x for v in list(_vals) if isinstance(v, (list, tuple, dict))
          for x in (v.values() if isinstance(v, dict) else v)]
_shapes = [tuple(np.shape(v.images)[1:3]) if isinstance(v, _SR) else tuple(np.shape(v.image)[:2])
           for v in _vals if isinstance(v, (_R, _SR))]
assert _shapes and max(max(s) for s in _shapes) <= 64, _shapes
print("NST_SMALL_OK", len(_shapes))
"""


def _images(nb) -> list[bytes]:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.get("output_type") == "display_data" and "image/png" in o.get("data", {}):
                out.append(base64.b64decode(o["data"]["image/png"]))
    return out


def _errors(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, tmp_path, monkeypatch, request):
    monkeypatch.setenv("NST_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # no GUI; the notebooks select the inline backend themselves
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(request.config.cache.mkdir("nst-jax-notebook-xla-cache")))
    monkeypatch.setenv("PYTHONPATH", str(NB_DIR.parent))
    nb = _read(name)
    nb.cells.append(nbformat.v4.new_code_cell(SMALL_CHECK))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert _errors(nb) == []
    images = _images(nb)
    assert len(images) >= 1, f"{name} showed no figure"
    assert all(img.startswith(PNG_MAGIC) for img in images)
    # every code cell ran, in order
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    assert "NST_SMALL_OK" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    if name == "quickstart":
        assert (tmp_path / "quickstart_result.png").is_file()


def test_kernel_is_this_python():
    """The python3 kernel the executions use is this interpreter (so they test this checkout)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    exe = spec.argv[0]
    assert exe in ("python", sys.executable) or pathlib.Path(exe).resolve() == pathlib.Path(sys.executable).resolve()
