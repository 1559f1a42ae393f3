"""Params trees on disk: the ``.npz`` round trip, validation against an architecture, and the checksummed cache.

A params tree is ``{conv_name: {"kernel": [3, 3, C_in, C_out], "bias": [C_out]}}`` (:mod:`nst_jax.vgg`). On disk it
is a flat float32 ``.npz`` keyed ``conv1_1/kernel`` (no pickles), plus optional string entries ``__meta__/KEY`` (e.g.
``__meta__/pool_rounding = "ceil"`` for weights converted from Caffe, :func:`npz_metadata`). The cache folder
(:func:`cache_dir`) holds each converted source as ``NAME.npz`` plus ``NAME.npz.json`` (its metadata and the npz's
sha256), written atomically, so that a truncated or modified cache file is detected, reported in one line and rebuilt
instead of being used.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import vgg
from nst_jax.files import atomic_write, one_line

__all__ = [
    "Params",
    "JaxParams",
    "cache_dir",
    "cache_origin",
    "make_folder",
    "cache_paths",
    "file_digest",
    "say",
    "to_numpy",
    "to_jax",
    "param_count",
    "params_to_npz",
    "params_from_npz",
    "npz_metadata",
    "infer_arch",
    "validate_params",
    "write_cache",
    "read_cache",
]

#: A params tree of numpy arrays, as read from a file.
Params = Dict[str, Dict[str, np.ndarray]]
#: A validated params tree of float32 jax arrays, as :func:`validate_params` returns it.
JaxParams = Dict[str, Dict[str, jax.Array]]


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``override``, else ``$NST_JAX_CACHE``, else ``$XDG_CACHE_HOME/nst-jax``, else
    ``~/.cache/nst-jax``."""
    if override is not None:
        return _usable(Path(override).expanduser(), "the cache folder")
    env = os.environ.get("NST_JAX_CACHE")
    if env:
        return _usable(Path(env).expanduser(), f"NST_JAX_CACHE={env}")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return _usable(Path(xdg).expanduser() / "nst-jax", f"XDG_CACHE_HOME={xdg}")
    return Path.home() / ".cache" / "nst-jax"


def cache_origin() -> str:
    """Where the cache folder comes from, for messages: ``NST_JAX_CACHE=...``, ``XDG_CACHE_HOME=...`` or the
    default."""
    for var in ("NST_JAX_CACHE", "XDG_CACHE_HOME"):
        if os.environ.get(var):
            return f"{var}={os.environ[var]}"
    return "the default ~/.cache/nst-jax"


def make_folder(folder: Path) -> Path:
    """Create a cache folder (and its parents); a one-line ``ValueError`` naming the variable that chose it when that
    fails (a read-only file system, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write the weights cache {folder} ({cache_origin()}): {e.strerror or one_line(e)}; "
                         "point NST_JAX_CACHE to a writable folder") from None
    return folder


def _usable(folder: Path, origin: str) -> Path:
    """``folder``, unless it (or a parent) is an existing file: then a one-line ``ValueError`` naming ``origin``."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"the weights cache {folder} ({origin}) is not a folder: {p} is a file; point "
                                 "NST_JAX_CACHE to a folder")
            break
    return folder


def cache_paths(name: str, cdir: Path) -> Tuple[Path, Path]:
    """The cache files of source ``name`` in folder ``cdir``: ``(NAME.npz, NAME.npz.json)``."""
    return cdir / f"{name}.npz", cdir / f"{name}.npz.json"


def file_digest(path: Path, algo: str) -> str:
    """Hex digest (``algo``: a :mod:`hashlib` name such as "sha256" or "md5") of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def say(msg: str, verbose: bool = True) -> None:
    """Print ``nst-jax: msg`` on stderr when ``verbose`` (the weights package's progress and repair lines)."""
    if verbose:
        print(f"nst-jax: {msg}", file=sys.stderr, flush=True)


def to_numpy(params: Mapping[str, Mapping[str, object]]) -> Params:
    """A params tree as float32 numpy arrays (for writing; a copy only where a conversion is needed)."""
    return {k: {n: np.asarray(a, dtype=np.float32) for n, a in v.items()} for k, v in params.items()}


def to_jax(params: Mapping[str, Mapping[str, object]]) -> JaxParams:
    """A params tree as float32 jax arrays (for computing)."""
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


_META = "__meta__/"


def params_to_npz(params: Mapping[str, Mapping[str, object]], path: str | os.PathLike,
                  metadata: Optional[Mapping[str, str]] = None) -> str:
    """Write a params tree as a flat float32 ``.npz`` (keys ``conv1_1/kernel``), atomically, creating its folder;
    ``metadata`` ``{key: text}`` is stored as string entries ``__meta__/key`` (read back by :func:`npz_metadata`).

    Returns the file's sha256.

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
    flat.update({_META + str(k): np.asarray(str(v)) for k, v in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **flat))
    return file_digest(path, "sha256")


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
        raise ValueError(f"{path}: not a readable .npz weights file ({one_line(e)})") from None
    params: Params = {}
    for key, arr in flat.items():
        if key.startswith(_META):
            continue
        layer, sep, name = key.partition("/")
        if not sep or "/" in name:
            raise ValueError(f"{path}: key {key!r} is not of the form 'conv1_1/kernel'")
        params.setdefault(layer, {})[name] = np.asarray(arr, dtype=np.float32)
    return params


def _mismatch_score(params: Mapping[str, Mapping[str, object]], arch: str) -> int:
    """1000 per missing or extra key plus 1 per mis-shaped entry, against ``vgg.expected_shapes(arch)``."""
    expected = vgg.expected_shapes(arch)
    keys = {f"{k}/{n}" for k, v in params.items() for n in v}
    exp_keys = {f"{k}/{n}" for k, v in expected.items() for n in v}
    score = 1000 * len(keys ^ exp_keys)
    for k, v in expected.items():
        for n, shape in v.items():
            if k in params and n in params[k] and tuple(np.shape(params[k][n])) != shape:
                score += 1
    return score


def npz_metadata(path: str | os.PathLike) -> Dict[str, str]:
    """The ``__meta__/KEY`` string entries of a weights ``.npz`` (see :func:`params_to_npz`); {} when it has none.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     _ = params_to_npz(vgg.init_params(0, "tiny16"), f"{tmp}/w.npz", {"pool_rounding": "ceil"})
      ...     meta, n = npz_metadata(f"{tmp}/w.npz"), len(params_from_npz(f"{tmp}/w.npz"))
      >>> meta, n
      ({'pool_rounding': 'ceil'}, 13)
    """
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            return {k[len(_META):]: str(z[k]) for k in z.files if k.startswith(_META)}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error ...
        raise ValueError(f"{path}: not a readable .npz weights file ({one_line(e)})") from None


def infer_arch(params: Mapping[str, Mapping[str, object]]) -> str:
    """The registered architecture whose expected keys and shapes the params match best (exactly, when valid).

    Example:
      >>> infer_arch(vgg.init_params(0, "tiny16")), infer_arch(vgg.init_params(0, "tiny19"))
      ('tiny16', 'tiny19')
    """
    return min(vgg.ARCHITECTURES, key=lambda a: _mismatch_score(params, a))


def _problems(params: Mapping[str, Mapping[str, object]], arch: str) -> List[str]:
    """Every missing, mis-shaped, non-finite or unexpected entry of ``params`` for ``arch``, in key order."""
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
    return problems


def validate_params(params: Mapping[str, Mapping[str, object]], arch: str | None, origin: str) -> JaxParams:
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
    problems = _problems(params, arch)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ValueError(f"{origin}: {problems[0]}{more}")
    return to_jax(params)


def write_cache(name: str, params: Mapping[str, Mapping[str, object]], meta: Mapping[str, object],
                cdir: Path) -> Tuple[Path, str]:
    """Write ``NAME.npz`` and its ``NAME.npz.json`` (``meta`` plus the npz's sha256) into ``cdir``, atomically.

    Returns ``(npz path, sha256)``.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path, sha = write_cache("tiny", vgg.init_params(0, "tiny16"), {"source": "tiny"}, Path(tmp) / "c")
      ...     side = json.loads(path.with_name("tiny.npz.json").read_text())
      >>> path.name, side == {"file": "tiny.npz", "sha256": sha, "source": "tiny"}
      ('tiny.npz', True)
    """
    npz, side = cache_paths(name, cdir)
    try:
        sha = params_to_npz(params, npz)
        meta = dict(meta, sha256=sha, file=npz.name)
        atomic_write(side, lambda f: f.write(json.dumps(meta, indent=2, sort_keys=True).encode()))
    except OSError as e:
        raise ValueError(f"cannot write the weights cache {cdir} ({cache_origin()}): {e.strerror or one_line(e)}; "
                         "point NST_JAX_CACHE to a writable folder") from None
    return npz, sha


def _verified(npz: Path, side: Path, arch: str) -> Tuple[JaxParams, Dict]:
    """The params of a cache entry and its metadata; ``ValueError`` saying why when it does not verify."""
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"its checksum file {side.name} is missing or unreadable ({type(e).__name__})") from None
    sha = file_digest(npz, "sha256")
    if sha != meta.get("sha256"):
        raise ValueError(f"sha256 {sha[:12]}... != recorded {str(meta.get('sha256'))[:12]}... (truncated or modified)")
    meta["sha256"] = sha
    return validate_params(params_from_npz(npz), arch, str(npz)), meta


def read_cache(name: str, arch: str, cdir: Path) -> Optional[Tuple[JaxParams, Dict, Path]]:
    """``(params, metadata, npz path)`` of a cached source, validated for ``arch``; None when absent.

    A cache entry whose checksum or contents do not verify is reported in one line, removed, and read as absent.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     _ = write_cache("tiny", vgg.init_params(0, "tiny16"), {"source": "tiny"}, Path(tmp))
      ...     params, meta, path = read_cache("tiny", "tiny16", Path(tmp))
      ...     missing = read_cache("other", "tiny16", Path(tmp))
      >>> path.name, meta["source"], params["conv1_1"]["kernel"].shape, missing
      ('tiny.npz', 'tiny', (3, 3, 3, 4), None)
    """
    npz, side = cache_paths(name, cdir)
    if not npz.exists():
        return None
    try:
        params, meta = _verified(npz, side, arch)
    except ValueError as e:
        say(f"cached weights {npz} are corrupted ({e}); rebuilding them")
        for p in (npz, side):
            try:
                p.unlink()
            except OSError:
                pass
        return None
    return params, meta, npz
