"""Image I/O: load any Pillow-readable file as float32 RGB in [0, 1], resize, save atomically.

Conventions (shared by the whole package):

* An image is a NumPy ``float32`` array ``image_HW3`` of shape ``[H, W, 3]``, RGB, values in ``[0, 1]``
  (``vgg.preprocess`` turns it into the Caffe BGR/255/mean-subtracted input).
* A mask is ``mask_HW`` of shape ``[H, W]`` in ``[0, 1]``; white (1) means "inside the region", as in the
  masks published with Gatys et al. 2017.
* Shapes are given as ``(H, W)`` (NumPy order); Pillow's ``(W, H)`` never leaves this module.

Decoding rules of :func:`load_image` (applied in this order):

1. ``Image.open`` + ``.load()`` inside one ``try`` so corrupt or truncated files fail here with a one-line
   ``ValueError`` (``LOAD_TRUNCATED_IMAGES`` is never switched on).
2. Animated files (GIF, APNG, multi-page TIFF): frame 0 only.
3. EXIF orientation is applied (``ImageOps.exif_transpose``), so a portrait phone photo comes out portrait.
4. Mode to float RGB: 8-bit modes divide by 255; 16-bit greyscale (``I;16*``, as Pillow opens 16-bit PNG/TIFF)
   and 32-bit integer ``I`` divide by 65535 (clipped to [0, 1]); float ``F`` is taken as already in [0, 1]
   (clipped); palette ``P``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` go through Pillow's ``convert``;
   greyscale is repeated over the 3 channels. Pillow reads 16-bit-per-channel RGB PNGs as 8-bit ``RGB``,
   so those lose precision but keep their range.
5. Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent index) is composited over **white** in
   float: ``rgb * a + (1 - a)``, with straight (not premultiplied) alpha ``a`` in [0, 1].
6. Optional resize in float (per channel in Pillow mode ``F``, so no 8-bit rounding), Lanczos for images.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Iterable, Mapping, Optional

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from nst_jax.files import atomic_write, one_line

__all__ = [
    "load_image",
    "load_mask",
    "resize",
    "resize_longest",
    "resize_area",
    "fit_shape",
    "save_image",
    "read_png_metadata",
    "sample_path",
    "available_samples",
    "SAMPLES",
    "SAVE_SUFFIXES",
    "IMAGE_SUFFIXES",
]

SAMPLES_DIR = pathlib.Path(__file__).parent / "samples"

#: Default bundled inputs (file names inside ``nst_jax/samples/``; pass them to :func:`sample_path`).
SAMPLES = {
    "content": "blue_marble.jpg",
    "styles": ("great_wave.jpg", "starry_night.jpg", "wheat_field_with_cypresses.jpg"),
    # Extra bundled files: a greyscale content photo and sky/nosky region masks ({image: {region: mask file}}).
    "content_grey": "tetons_snake_river.jpg",
    "masks": {
        "wheat_field_with_cypresses.jpg": {
            "sky": "wheat_field_with_cypresses_sky.jpg",
            "nosky": "wheat_field_with_cypresses_nosky.jpg",
        },
        "tetons_snake_river.jpg": {
            "sky": "tetons_snake_river_sky.png",
            "nosky": "tetons_snake_river_nosky.png",
        },
    },
}

#: Output formats of :func:`save_image`, chosen by (case-insensitive) suffix.
SAVE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
JPEG_QUALITY = 95

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")
_RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
_UINT16_MAX = 65535.0


# --------------------------------------------------------------------------------------------------- shapes


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def fit_shape(shape_HW, size: int | None = None, area: int | None = None) -> tuple[int, int]:
    """Target ``(H, W)`` for an image of shape ``shape_HW``, keeping the aspect ratio.

    * ``size``: the longest side becomes exactly ``size`` (small images are upscaled); the other side is
      ``round(side * size / max(H, W))``.
    * ``area``: both sides are scaled by ``s = sqrt(area / (H * W))`` and rounded, so ``H' * W' ~= area``.
    * both ``None``: ``shape_HW`` unchanged. Giving both is an error.

    Rounding is half-up (``floor(x + 0.5)``, not Python's banker's rounding) and every side is at least 1.
    
    Example:
      >>> fit_shape((600, 749), size=32)            # (H, W): the longest side becomes 32
      (26, 32)
    """
    if len(tuple(shape_HW)) != 2:
        raise ValueError(f"shape_HW must be (H, W), got {tuple(shape_HW)!r}")
    H = _check_positive_int(shape_HW[0], "image height")
    W = _check_positive_int(shape_HW[1], "image width")
    if size is not None and area is not None:
        raise ValueError("give either size (longest side) or area (H*W), not both")
    if size is not None:
        size = _check_positive_int(size, "size")
        scale = size / max(H, W)
        if H >= W:
            return size, max(1, _round_half_up(W * scale))
        return max(1, _round_half_up(H * scale)), size
    if area is not None:
        area = _check_positive_int(area, "area")
        scale = math.sqrt(area / (H * W))
        return max(1, _round_half_up(H * scale)), max(1, _round_half_up(W * scale))
    return H, W


# --------------------------------------------------------------------------------------------------- resize


def resize(image_HWC, shape_HW, *, resample: str = "lanczos", clip: bool = True) -> np.ndarray:
    """Resize ``image_HWC`` (``[H, W, C]`` or ``[H, W]``) to ``shape_HW = (H', W')``; returns float32.

    Each channel is resized by Pillow in 32-bit float mode ``F`` (no 8-bit quantisation). Pillow's filters
    are antialiased when downscaling (the kernel is stretched by the scale factor). ``resample`` is one of
    ``lanczos`` (photos), ``bicubic``, ``bilinear`` (masks), ``box``, ``nearest``. Lanczos/bicubic ring a
    little at edges, so with ``clip=True`` (default, for images and masks) the result is clipped to [0, 1].
    """
    arr = np.asarray(image_HWC, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"resize expects an [H, W] or [H, W, C] array, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"cannot resize a zero-size image of shape {arr.shape}")
    if resample not in _RESAMPLE:
        raise ValueError(f"unknown resample {resample!r}; use one of {sorted(_RESAMPLE)}")
    if len(tuple(shape_HW)) != 2:
        raise ValueError(f"shape_HW must be (H, W), got {tuple(shape_HW)!r}")
    H = _check_positive_int(shape_HW[0], "target height")
    W = _check_positive_int(shape_HW[1], "target width")
    if (H, W) == arr.shape[:2]:
        out = arr.copy()
    else:
        chans = arr[..., None] if arr.ndim == 2 else arr
        out = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(chans[..., c])).resize((W, H), _RESAMPLE[resample]),
                    dtype=np.float32,
                )
                for c in range(chans.shape[-1])
            ],
            axis=-1,
        )
        if arr.ndim == 2:
            out = out[..., 0]
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def resize_longest(image_HWC, size: int, *, resample: str = "lanczos") -> np.ndarray:
    """Resize so the longest side is ``size`` (aspect kept, see :func:`fit_shape`); float32, clipped to [0, 1]."""
    return resize(image_HWC, fit_shape(np.shape(image_HWC)[:2], size=size), resample=resample)


def resize_area(image_HWC, area: int, *, resample: str = "lanczos") -> np.ndarray:
    """Resize so ``H * W ~= area`` (aspect kept, see :func:`fit_shape`); float32, clipped to [0, 1]."""
    return resize(image_HWC, fit_shape(np.shape(image_HWC)[:2], area=area), resample=resample)


# --------------------------------------------------------------------------------------------------- loading


def _check_file(path) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path} (check the path)")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image file (pass the path of an image file)")
    return path


def _open_pil(path) -> Image.Image:
    """Open, pick frame 0, decode fully and apply EXIF orientation; clear errors for bad paths/files."""
    path = _check_file(path)
    # Opening the file ourselves lets PermissionError and friends surface as themselves.
    with open(path, "rb") as fh:
        try:
            with Image.open(fh) as im:
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                im.load()
                im = ImageOps.exif_transpose(im)  # returns a new, loaded image; safe after the file closes
                im.load()
        except Exception as exc:  # Pillow raises OSError, SyntaxError, EOFError, struct.error, ... for bad data
            raise ValueError(f"cannot read image {path}: {one_line(exc)} (is it an image file?)") from exc
    if im.width < 1 or im.height < 1:
        raise ValueError(f"image {path} has zero size ({im.width}x{im.height} px); use a non-empty image")
    return im


def _composite_white(color_HWC: np.ndarray, alpha_HW: np.ndarray) -> np.ndarray:
    a = alpha_HW[..., None]
    return color_HWC * a + (1.0 - a)


def _pil_to_float_rgb(im: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> float32 ``[H, W, 3]`` in [0, 1] (rules in the module docstring)."""
    mode = im.mode
    if mode.startswith("I;16"):
        grey = np.asarray(im).astype(np.float64) / _UINT16_MAX
    elif mode == "I":
        grey = np.clip(np.asarray(im).astype(np.float64) / _UINT16_MAX, 0.0, 1.0)
    elif mode == "F":
        grey = np.clip(np.asarray(im).astype(np.float64), 0.0, 1.0)
    elif mode in ("L", "1"):
        grey = np.asarray(im.convert("L")).astype(np.float64) / 255.0
    elif mode in ("LA", "La"):
        la = np.asarray(im.convert("LA")).astype(np.float64) / 255.0
        grey = _composite_white(la[..., :1], la[..., 1])[..., 0]
    elif mode == "RGB":
        return (np.asarray(im).astype(np.float64) / 255.0).astype(np.float32)
    elif mode in ("RGBA", "RGBa", "PA") or (
        mode == "P" and ("transparency" in im.info or getattr(im.palette, "mode", "RGB") == "RGBA")
    ):
        rgba = np.asarray(im.convert("RGBA")).astype(np.float64) / 255.0
        return _composite_white(rgba[..., :3], rgba[..., 3]).astype(np.float32)
    else:  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        return (np.asarray(im.convert("RGB")).astype(np.float64) / 255.0).astype(np.float32)
    return np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)


def load_image(path, *, size: int | None = None, area: int | None = None, mode: str = "RGB") -> np.ndarray:
    """Load any Pillow-readable image as float32 in [0, 1].

    Returns ``image_HW3`` ``[H, W, 3]`` RGB for ``mode="RGB"``, or ``luma_HW`` ``[H, W]`` for ``mode="L"``
    (Rec. 601 luma ``0.299 R + 0.587 G + 0.114 B`` computed in float from the RGB result).
    ``size`` resizes so the longest side is ``size``; ``area`` so ``H * W ~= area`` (both keep the aspect
    ratio, see :func:`fit_shape`; Lanczos in float). Decoding rules (EXIF orientation, frame 0, 16-bit,
    alpha composited on white, ...) are in the module docstring.

    Raises ``FileNotFoundError`` for a missing path and a one-line ``ValueError`` for a directory, a
    corrupt/truncated/non-image file or a zero-size image.
    
    Example:
      >>> load_image(sample_path("great_wave"), size=64).shape
      (35, 64, 3)
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    image_HW3 = _pil_to_float_rgb(_open_pil(path))
    shape_HW = fit_shape(image_HW3.shape[:2], size=size, area=area)
    if shape_HW != image_HW3.shape[:2]:
        image_HW3 = resize(image_HW3, shape_HW, resample="lanczos")
    if mode == "L":
        luma = image_HW3.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(luma, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(image_HW3, dtype=np.float32)


def load_mask(path, *, shape_HW=None) -> np.ndarray:
    """Load a region mask as float32 ``mask_HW`` ``[H, W]`` in [0, 1] (white = inside the region).

    Like the code published with Gatys et al. 2017 (``SpatialControl.ipynb``), only the **first channel**
    is used: the grey value of a greyscale file, the red channel of an RGB file (decoded with the rules of
    :func:`load_image`, so transparent pixels count as white). No thresholding is done here (JPEG masks have
    a few in-between values at edges; threshold at 0.5 if binary masks are needed). With ``shape_HW`` the
    mask is resized bilinearly (antialiased when shrinking) to ``(H, W)``.
    """
    mask_HW = _pil_to_float_rgb(_open_pil(path))[..., 0]
    if shape_HW is not None:
        mask_HW = resize(mask_HW, shape_HW, resample="bilinear")
    return np.ascontiguousarray(mask_HW, dtype=np.float32)


# --------------------------------------------------------------------------------------------------- saving


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):  # also catches hard links
            return True
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _to_uint8(image_HW3) -> np.ndarray:
    arr = np.asarray(image_HW3)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"save_image expects an [H, W, 3] RGB array, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"cannot save a zero-size image of shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or inf values; check the optimisation (e.g. lower the step size)")
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_image(
    path,
    image_HW3,
    *,
    metadata: Mapping[str, object] | None = None,
    overwrite: bool = True,
    inputs: Iterable = (),
) -> pathlib.Path:
    """Save ``image_HW3`` (``[H, W, 3]``, float in [0, 1]) as 8-bit PNG or JPEG (quality 95) by suffix.

    Values are clipped to [0, 1] and rounded to ``uint8`` (``round(x * 255)``), so saving then loading a PNG
    is exact to 1/255. ``metadata`` is stored as PNG text chunks (``tEXt``, or ``iTXt`` for non-Latin-1 text);
    string values as-is, other values JSON-encoded. For JPEG it is stored as one JSON ``COM`` comment.

    The write is atomic: the file is written to a hidden temp file in the same folder, flushed, then moved
    over ``path`` with ``os.replace``; on any failure the temp file is removed and an existing ``path`` is
    untouched. Refuses with a one-line ``ValueError`` if ``path`` is the same file as any of ``inputs``
    (also via another relative path, a symlink or a hard link), if its folder does not exist, if the suffix
    is not ``.png``/``.jpg``/``.jpeg``, or if ``path`` exists and ``overwrite=False``. Returns ``path``.

    Example:
      >>> import tempfile
      >>> img = np.linspace(0.0, 1.0, 48, dtype=np.float32).reshape(4, 4, 3)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = save_image(f"{tmp}/out.png", img, metadata={"seed": 0, "note": "test"})
      ...     back, meta = load_image(path), read_png_metadata(path)
      >>> path.name, bool(np.array_equal(np.round(back * 255), np.round(img * 255))), meta   # 8-bit exact
      ('out.png', True, {'seed': '0', 'note': 'test'})
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise ValueError(
            f"cannot save {path}: unsupported suffix {path.suffix!r}; use one of {sorted(SAVE_SUFFIXES)}"
        )
    for inp in inputs:
        if _same_file(path, pathlib.Path(inp)):
            raise ValueError(f"refusing to write {path}: it is the input file {inp}; choose another output path")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"cannot save {path}: folder {folder} does not exist; create it first")
    if path.is_dir():
        raise ValueError(f"cannot save {path}: it is a directory; give a file name")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; pass overwrite=True or choose another output path")
    pixels = _to_uint8(image_HW3)
    fmt = SAVE_SUFFIXES[suffix]

    texts = {str(k): (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()}
    save_kwargs: dict = {}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in texts.items():
            if not 1 <= len(key) <= 79:
                raise ValueError(f"PNG metadata key {key!r} must have 1 to 79 characters; shorten it")
            info.add_text(key, value)
        save_kwargs["pnginfo"] = info
    else:
        save_kwargs["quality"] = JPEG_QUALITY
        if texts:
            save_kwargs["comment"] = json.dumps(texts)

    mode = path.stat().st_mode & 0o777 if path.exists() else None
    atomic_write(path, lambda fh: Image.fromarray(pixels).save(fh, format=fmt, **save_kwargs), mode)
    return path


def read_png_metadata(path) -> dict[str, str]:
    """Text chunks (``tEXt``/``zTXt``/``iTXt``) of a PNG as ``{key: str}`` (see :func:`save_image`)."""
    path = _check_file(path)
    try:
        with Image.open(path) as im:
            im.load()  # text chunks after the image data are only read on load
            fmt, texts = im.format, dict(getattr(im, "text", {}))
    except Exception as exc:
        raise ValueError(f"cannot read image {path}: {one_line(exc)} (is it an image file?)") from exc
    if fmt != "PNG":
        raise ValueError(f"{path} is a {fmt} file, not a PNG; metadata is only read from PNG files")
    return texts


# --------------------------------------------------------------------------------------------------- samples


def available_samples() -> list[str]:
    """Sorted file names of the images bundled in ``nst_jax/samples/``."""
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def sample_path(name: str) -> pathlib.Path:
    """Path of a bundled sample image by file name (``"great_wave.jpg"``) or stem (``"great_wave"``).

    See :data:`SAMPLES` for the defaults and ``nst_jax/samples/PROVENANCE.md`` for where each file comes from.

    Example:
      >>> sample_path("great_wave").name                       # by stem ...
      'great_wave.jpg'
      >>> sample_path("great_wave.jpg") == sample_path("great_wave")   # ... or by file name
      True
    """
    names = available_samples()
    if isinstance(name, str) and name in names:
        return SAMPLES_DIR / name
    stems = {pathlib.Path(n).stem: n for n in names}
    if isinstance(name, str) and name in stems:
        return SAMPLES_DIR / stems[name]
    raise ValueError(f"unknown sample {name!r}; available samples: {', '.join(names)}")
