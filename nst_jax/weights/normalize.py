"""Gatys et al. 2016 normalisation: every filter rescaled so its mean ReLU activation over calibration images is one.

The scales are measured on the original network by :func:`nst_jax.vgg.features` (one forward pass per image, all
ReLU layers), since the normalised network's activations are the original ones divided per channel by the scales;
this module computes no layer itself. Calibration images are RGB in [0, 1], resized so their long side is ``size``
px; by default the bundled samples :data:`CALIBRATION_SAMPLES` at :data:`CALIBRATION_SIZE` px, which define the
registered ``*-normalized`` sources.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import vgg
from nst_jax.files import one_line
from nst_jax.weights.cache import file_digest, to_jax

__all__ = [
    "SAMPLES_DIR",
    "CALIBRATION_SAMPLES",
    "CALIBRATION_SIZE",
    "IMAGE_SUFFIXES",
    "load_calibration_images",
    "images_digest",
    "normalize_params",
    "calibrate",
    "normalized_name",
]

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
#: The bundled images used to calibrate the ``*-normalized`` sources (the masks are left out).
CALIBRATION_SAMPLES = (
    "blue_marble.jpg",
    "tetons_snake_river.jpg",
    "wheat_field_with_cypresses.jpg",
    "great_wave.jpg",
    "starry_night.jpg",
)
#: Long side in px of the calibration images of the ``*-normalized`` sources.
CALIBRATION_SIZE = 256
#: File name suffixes read as images from a calibration folder.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def _image_paths(folder: Optional[str | os.PathLike]) -> List[Path]:
    """The bundled samples (``folder=None``) or every image file of ``folder``, sorted."""
    if folder is None:
        return [SAMPLES_DIR / n for n in CALIBRATION_SAMPLES]
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: calibration image folder not found")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) to calibrate on")
    return paths


def load_calibration_images(folder: str | os.PathLike | None = None, *, size: int = CALIBRATION_SIZE
                            ) -> List[np.ndarray]:
    """RGB images in [0, 1] as float32 [H, W, 3], resized (Lanczos) so the long side is ``size`` px.

    ``folder=None``: the bundled samples :data:`CALIBRATION_SAMPLES`; else every image file in ``folder`` (sorted).

    Example:
      >>> [x.shape for x in load_calibration_images(size=32)][:2]
      [(32, 32, 3), (26, 32, 3)]
    """
    from PIL import Image

    images = []
    for p in _image_paths(folder):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                scale = size / max(im.size)
                new = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
                im = im.resize(new, Image.LANCZOS)
                images.append(np.asarray(im, np.float32) / 255.0)
        except OSError as e:
            raise ValueError(f"{p}: cannot read image ({one_line(e)})") from None
    return images


def images_digest(folder: Path, size: int) -> str:
    """10 hex digits identifying the image files of ``folder`` (names and contents) and ``size`` (for cache names)."""
    h = hashlib.sha256(str(size).encode())
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            h.update(p.name.encode())
            h.update(file_digest(p, "sha256").encode())
    return h.hexdigest()[:10]


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
    conv) and every ReLU output has mean 1 (0 for dead filters) over the calibration set. Hence ``m_l`` is also the
    ORIGINAL network's mean ``relu_l`` activation, and all the scales come from one forward pass of the original
    network per image. Features change only by these per-channel factors (the paper: possible because VGG has only
    ReLUs and no normalisation or pooling over feature maps); what changes is the relative size of the layers' Gram
    matrices and losses.

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
    norm, scales = _normalize_jit(to_jax(params), images, pooling)
    return norm, {k: np.asarray(v, np.float32) for k, v in scales.items()}


@functools.partial(jax.jit, static_argnames=("pooling",))
def _normalize_jit(params, images_HW3: Tuple[jax.Array, ...], pooling: str):
    """:func:`normalize_params` as one compiled function (one compile per set of image shapes)."""
    seq = vgg.layer_sequence(vgg.spec_from_params(params))
    relus = [name for name, kind in seq if kind == "relu"]
    convs = [name for name, kind in seq if kind == "conv"]  # conv{b}_{i} feeds relu{b}_{i}
    feats = [vgg.features(params, x, relus, pooling=pooling) for x in images_HW3]
    p = {k: dict(v) for k, v in params.items()}
    scales = {}
    for c, (conv, relu) in enumerate(zip(convs, relus)):
        m = jnp.mean(jnp.stack([jnp.mean(f[relu], axis=(0, 1)) for f in feats]), axis=0)  # mean of per-image means
        s = jnp.where(m > 0, m, 1.0)
        scales[conv] = s
        p[conv] = {"kernel": p[conv]["kernel"] / s, "bias": p[conv]["bias"] / s}
        if c + 1 < len(convs):
            nxt = convs[c + 1]
            p[nxt] = {"kernel": p[nxt]["kernel"] * s[None, None, :, None], "bias": p[nxt]["bias"]}
    return p, scales


def calibrate(params: Mapping[str, Mapping[str, object]], images_dir: str | os.PathLike | None = None, *,
              size: int | None = None, pooling: str = "avg"
              ) -> Tuple[Dict[str, Dict[str, jax.Array]], Dict[str, np.ndarray], Dict[str, object]]:
    """:func:`normalize_params` on the calibration images of ``images_dir`` (None: the bundled samples) at ``size``
    (None: :data:`CALIBRATION_SIZE`). Returns ``(params_normalized, scales, metadata)``, the metadata saying how.

    Example:
      >>> _, scales, meta = calibrate(vgg.init_params(0, "tiny16"), size=16)
      >>> scales["conv5_3"].shape, meta["calibration_size"], meta["pooling"], len(meta["calibration_images"])
      ((8,), 16, 'avg', 5)
    """
    size = CALIBRATION_SIZE if size is None else size
    params_n, scales = normalize_params(params, load_calibration_images(images_dir, size=size), pooling=pooling)
    meta = {"calibration_images": str(images_dir) if images_dir else list(CALIBRATION_SAMPLES),
            "calibration_size": size, "pooling": pooling, "normalized": True}
    return params_n, scales, meta


def normalized_name(stem: str, images_dir: str | os.PathLike | None, size: int, pooling: str) -> str:
    """The cache name of source ``stem`` normalised on these calibration settings.

    ``{stem}-normalized`` (the registered source) for the bundled samples at the default size and pooling, else
    ``{stem}-normalized-{pooling}{size}-{digest of the images, or "samples"}``.

    Example:
      >>> normalized_name("vgg19", None, CALIBRATION_SIZE, "avg"), normalized_name("vgg19", None, 128, "max")
      ('vgg19-normalized', 'vgg19-normalized-max128-samples')
    """
    if images_dir is None and size == CALIBRATION_SIZE and pooling == "avg":
        return f"{stem}-normalized"
    return f"{stem}-normalized-{pooling}{size}-{images_digest(Path(images_dir), size) if images_dir else 'samples'}"
