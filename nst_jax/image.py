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

import io
import json
import math
import pathlib
import zlib
from typing import Iterable, Mapping, Optional

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from nst_jax.files import atomic_write, one_line, same_file

__all__ = [
    "load_image",
    "load_mask",
    "resize",
    "resize_longest",
    "resize_area",
    "fit_shape",
    "save_image",
    "read_png_metadata",
    "image_writer",
    "REDUCE_ABOVE_PIXELS",
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
SAVE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
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


#: Images above this many pixels are shrunk while decoding when a much smaller size is asked for (JPEG: decoded at
#: 1/2, 1/4 or 1/8 scale; others: integer box reduction in their own 8/16-bit mode), keeping at least twice the
#: target resolution for the float Lanczos resize; smaller images are decoded and resized in float exactly as before.
REDUCE_ABOVE_PIXELS = 4096 * 4096
#: The largest expansion deflate allows (1032:1, plus slack): a PNG whose compressed pixel data is smaller than its
#: header's raw size divided by this is truncated or forged, and is refused before anything is decoded.
DEFLATE_MAX_RATIO = 1040
#: The most bytes read from a pipe or other non-seekable input (``/dev/stdin``, process substitution).
PIPE_LIMIT_BYTES = 1 << 30


def _png_data_bytes(fh) -> Optional[int]:
    """Total length of a PNG's IDAT chunks (from the chunk headers, without reading the data); None if not a PNG."""
    fh.seek(0)
    if fh.read(8) != b"\x89PNG\r\n\x1a\n":
        return None
    total = 0
    while True:
        head = fh.read(8)
        if len(head) < 8:
            break
        length, kind = int.from_bytes(head[:4], "big"), head[4:]
        total += length if kind == b"IDAT" else 0
        if kind == b"IEND":
            break
        fh.seek(length + 4, 1)
    fh.seek(0)
    return total


class _Implausible(ValueError):
    """A file refused before decoding (its header promises more than its data can hold)."""


def _check_plausible(im: Image.Image, fh, path) -> None:
    """Refuse a PNG whose pixel data is too short for the size its header claims (truncated or forged): decoding it
    would allocate the full claimed size for nothing."""
    if im.format != "PNG":
        return
    data = _png_data_bytes(fh)
    bits = {"1": 1, "L": 8, "P": 8, "RGB": 24, "RGBA": 32, "LA": 16, "I": 16, "I;16": 16, "I;16B": 16}.get(im.mode, 8)
    raw = im.height * (1 + (im.width * bits + 7) // 8)
    if data is not None and data * DEFLATE_MAX_RATIO < raw:
        raise _Implausible(f"image {path} claims {im.width}x{im.height} px but holds only {data} bytes of pixel data "
                         f"(at least {raw // DEFLATE_MAX_RATIO} needed): it is truncated or its header is forged; "
                         "pass a complete image")


def _stored_target(im: Image.Image, size: Optional[int], area: Optional[int]) -> Optional[tuple[int, int]]:
    """The (W, H) the caller will resize to, in the file's stored orientation (EXIF rotations 5-8 swap the sides),
    or None when no resize is asked for."""
    if size is None and area is None:
        return None
    swap = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    h, w = fit_shape((im.width, im.height) if swap else (im.height, im.width), size=size, area=area)
    return (h, w) if swap else (w, h)


def _reduced(im: Image.Image, target_WH) -> Image.Image:
    """A large image shrunk in its own integer mode by a box factor keeping >= 2x the target (see
    :data:`REDUCE_ABOVE_PIXELS`); transparency is composited over white first, palettes expanded."""
    if target_WH is None or im.width * im.height <= REDUCE_ABOVE_PIXELS:
        return im
    factor = min(im.width // max(target_WH[0], 1), im.height // max(target_WH[1], 1)) // 2
    if factor < 2:
        return im
    if im.mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        im = im.convert("RGBA" if im.mode in ("PA", "RGBa") or "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA"):
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA")).convert(
            "RGB")
    try:
        return im.reduce(factor)
    except (ValueError, NotImplementedError):  # a mode reduce() does not take: decode at full size
        return im


def _open_pil(path, size: Optional[int] = None, area: Optional[int] = None) -> tuple[Image.Image, tuple[int, int]]:
    """Open, pick frame 0, decode fully and apply EXIF orientation; clear errors for bad paths/files. With ``size``
    or ``area`` (what the caller resizes to, see :func:`fit_shape`) a large image is decoded reduced
    (:data:`REDUCE_ABOVE_PIXELS`). Returns the image and its full (H, W) as shown (orientation applied).
    Pipes and other non-seekable files are read into memory first (up to :data:`PIPE_LIMIT_BYTES`)."""
    path = _check_file(path)
    # Opening the file ourselves lets PermissionError and friends surface as themselves.
    with open(path, "rb") as raw:
        fh = raw
        if not raw.seekable():
            data = raw.read(PIPE_LIMIT_BYTES + 1)
            if len(data) > PIPE_LIMIT_BYTES:
                raise ValueError(f"{path} is a pipe with more than {PIPE_LIMIT_BYTES >> 20} MiB; save the image to a "
                                 "file and pass that")
            fh = io.BytesIO(data)
        try:
            with Image.open(fh) as im:
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                _check_plausible(im, fh, path)
                stored = _stored_target(im, size, area)
                swap = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                full_HW = (im.width, im.height) if swap else (im.height, im.width)
                if stored is not None and im.format == "JPEG" and im.width * im.height > REDUCE_ABOVE_PIXELS:
                    im.draft(im.mode, (2 * stored[0], 2 * stored[1]))  # libjpeg's DCT scaling: 1/2 .. 1/8
                im.load()
                im = _reduced(im, stored)
                im = ImageOps.exif_transpose(im)  # returns a new, loaded image; safe after the file closes
                im.load()
        except _Implausible:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, EOFError, struct.error, ... for bad data
            raise ValueError(f"cannot read image {path}: {one_line(exc)} (is it an image file?)") from exc
    if im.width < 1 or im.height < 1:
        raise ValueError(f"image {path} has zero size ({im.width}x{im.height} px); use a non-empty image")
    return im, full_HW


def _composite_white(color_HWC: np.ndarray, alpha_HW: np.ndarray) -> np.ndarray:
    a = alpha_HW[..., None]
    return color_HWC * a + (1.0 - a)


def _float_pixels(im: Image.Image, scale: float) -> np.ndarray:
    """Pixels as float32 divided by ``scale`` (float32 division: correctly rounded, no float64 copy)."""
    return np.asarray(im, np.float32) / np.float32(scale)


def _pil_to_float_rgb(im: Image.Image, path=None) -> np.ndarray:
    """Pillow image of any mode -> float32 ``[H, W, 3]`` in [0, 1] (rules in the module docstring)."""
    mode = im.mode
    if mode.startswith("I;16"):
        grey = _float_pixels(im, _UINT16_MAX)
    elif mode == "I":
        grey = np.clip(_float_pixels(im, _UINT16_MAX), 0.0, 1.0)
    elif mode == "F":
        grey = np.asarray(im, np.float32)
        if not np.all(np.isfinite(grey)):
            raise ValueError(f"image {path or ''} holds NaN or inf pixels (a float image); pass finite values "
                             "in [0, 1]")
        grey = np.clip(grey, 0.0, 1.0)
    elif mode in ("L", "1"):
        grey = _float_pixels(im.convert("L"), 255.0)
    elif mode in ("LA", "La"):
        la = _float_pixels(im.convert("LA"), 255.0)
        grey = _composite_white(la[..., :1], la[..., 1])[..., 0]
    elif mode == "RGB":
        return _float_pixels(im, 255.0)
    elif mode in ("RGBA", "RGBa", "PA") or (
        mode == "P" and ("transparency" in im.info or getattr(im.palette, "mode", "RGB") == "RGBA")
    ):
        rgba = _float_pixels(im.convert("RGBA"), 255.0)
        return _composite_white(rgba[..., :3], rgba[..., 3])
    else:  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        return _float_pixels(im.convert("RGB"), 255.0)
    return np.repeat(grey[..., None], 3, axis=-1)


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
    im, full_HW = _open_pil(path, size, area)
    image_HW3 = _pil_to_float_rgb(im, path)
    shape_HW = fit_shape(full_HW, size=size, area=area)  # from the full size: a reduced decode keeps the shape
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
    mask_HW = _pil_to_float_rgb(_open_pil(path)[0], path)[..., 0]
    if shape_HW is not None:
        mask_HW = resize(mask_HW, shape_HW, resample="bilinear")
    return np.ascontiguousarray(mask_HW, dtype=np.float32)


# --------------------------------------------------------------------------------------------------- saving


def _quantised(image_HW3, bits: int) -> np.ndarray:
    """[H, W, 3] floats -> ``uint8`` (``round(x * 255)``) or ``uint16`` (``round(x * 65535)``), clipped to [0, 1]."""
    arr = np.asarray(image_HW3)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"save_image expects an [H, W, 3] RGB array, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"cannot save a zero-size image of shape {arr.shape}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or inf values; check the optimisation (e.g. lower the step size)")
    top = 255.0 if bits == 8 else 65535.0
    return np.round(np.clip(arr, 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big")


def _png16(pixels_HW3: np.ndarray, texts: Mapping[str, str]) -> bytes:
    """A 16-bit-per-channel RGB PNG (colour type 2, bit depth 16; Pillow cannot write one) with ``iTXt`` chunks."""
    h, w, _ = pixels_HW3.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), pixels_HW3.astype(">u2").view(np.uint8).reshape(h, -1)], 1)
    out = [b"\x89PNG\r\n\x1a\n",
           _png_chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, 2, 0, 0, 0]))]
    for key, value in texts.items():  # iTXt: keyword, no compression, no language, UTF-8 text
        out.append(_png_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")))
    out += [_png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def _tiff16(pixels_HW3: np.ndarray, description: str) -> bytes:
    """An uncompressed 16-bit-per-channel RGB TIFF (baseline tags, one strip, little endian; Pillow cannot write one),
    ``description`` in its ImageDescription tag."""
    h, w, _ = pixels_HW3.shape
    data = pixels_HW3.astype("<u2").tobytes()
    desc = description.encode("utf-8") + b"\0"
    n_tags = 12
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * n_tags + 4  # after the IFD: bits-per-sample values, resolutions, description
    bps_at, res_at, desc_at = extra_at, extra_at + 6, extra_at + 22
    data_at = desc_at + len(desc) + (len(desc) % 2)

    def tag(code, kind, count, value):  # kind 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL
        packed = value.to_bytes(2, "little") + b"\0\0" if kind == 3 and count == 1 else value.to_bytes(4, "little")
        return code.to_bytes(2, "little") + kind.to_bytes(2, "little") + count.to_bytes(4, "little") + packed

    tags = [tag(256, 4, 1, w), tag(257, 4, 1, h), tag(258, 3, 3, bps_at), tag(259, 3, 1, 1), tag(262, 3, 1, 2),
            tag(270, 2, len(desc), desc_at), tag(273, 4, 1, data_at), tag(277, 3, 1, 3), tag(278, 4, 1, h),
            tag(279, 4, 1, len(data)), tag(282, 5, 1, res_at), tag(283, 5, 1, res_at + 8)]
    head = b"II*\0" + ifd_at.to_bytes(4, "little") + n_tags.to_bytes(2, "little") + b"".join(tags) + bytes(4)
    extra = (16).to_bytes(2, "little") * 3 + ((72).to_bytes(4, "little") + (1).to_bytes(4, "little")) * 2
    return head + extra + desc + bytes(len(desc) % 2) + data


def image_writer(path, image_HW3, *, metadata: Mapping[str, object] | None = None, bits: int = 8):
    """``write(binary_file)`` that encodes ``image_HW3`` for ``path`` (format by suffix, see :func:`save_image`);
    all checks of the image, suffix and metadata happen here, before anything is written."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise ValueError(f"cannot save {path}: unsupported suffix {path.suffix!r}; use one of {sorted(SAVE_SUFFIXES)}")
    fmt = SAVE_SUFFIXES[suffix]
    if bits == 16 and fmt == "JPEG":
        raise ValueError(f"cannot save {path} with 16 bits per channel: JPEG holds 8; use .png or .tif")
    pixels = _quantised(image_HW3, bits)
    texts = {str(k): (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()}
    if fmt == "PNG":
        for key in texts:
            if not 1 <= len(key) <= 79 or not key.isascii():
                raise ValueError(f"PNG metadata key {key!r} must have 1 to 79 ASCII characters; shorten it")
    if bits == 16:
        blob = _png16(pixels, texts) if fmt == "PNG" else _tiff16(pixels, json.dumps(texts))
        return lambda fh: fh.write(blob)
    save_kwargs: dict = {}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in texts.items():
            info.add_text(key, value)
        save_kwargs["pnginfo"] = info
    elif fmt == "JPEG":
        save_kwargs["quality"] = JPEG_QUALITY
        if texts:
            save_kwargs["comment"] = json.dumps(texts)
    elif texts:
        save_kwargs["description"] = json.dumps(texts)
    return lambda fh: Image.fromarray(pixels).save(fh, format=fmt, **save_kwargs)


def save_image(
    path,
    image_HW3,
    *,
    metadata: Mapping[str, object] | None = None,
    overwrite: bool = True,
    inputs: Iterable = (),
    bits: int = 8,
) -> pathlib.Path:
    """Save ``image_HW3`` (``[H, W, 3]``, float in [0, 1]) as PNG, JPEG (quality 95) or TIFF by suffix, with 8 or
    (``bits=16``; PNG and TIFF) 16 bits per channel.

    Values are clipped to [0, 1] and rounded (``round(x * 255)``, or ``round(x * 65535)``), so saving then loading
    an 8-bit PNG is exact to 1/255. ``metadata`` is stored as PNG text chunks (``tEXt``, or ``iTXt`` for non-Latin-1
    text, always ``iTXt`` at 16 bits); string values as-is, other values JSON-encoded. For JPEG it is stored as one
    JSON ``COM`` comment, for TIFF as a JSON ImageDescription.

    The write is atomic: the file is written to a hidden temp file in the same folder, flushed, then moved
    over ``path`` with ``os.replace``; on any failure the temp file is removed and an existing ``path`` is
    untouched. Refuses with a one-line ``ValueError`` if ``path`` is the same file as any of ``inputs``
    (also via another relative path, a symlink or a hard link), if its folder does not exist, if the suffix
    is not one of :data:`SAVE_SUFFIXES`, or if ``path`` exists and ``overwrite=False`` (also if it appears while this
    writes). Returns ``path``.

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
    for inp in inputs:
        if same_file(path, pathlib.Path(inp)):
            raise ValueError(f"refusing to write {path}: it is the input file {inp}; choose another output path")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"cannot save {path}: folder {folder} does not exist; create it first")
    if path.is_dir():
        raise ValueError(f"cannot save {path}: it is a directory; give a file name")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; pass overwrite=True or choose another output path")
    write = image_writer(path, image_HW3, metadata=metadata, bits=bits)
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    atomic_write(path, write, mode, exclusive=not overwrite)
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
