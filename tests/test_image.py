"""Tests for nst_jax.image: decoding of exotic formats, resizing, atomic saving, refusals and samples.

Every exotic file is generated here with Pillow; expected values come from NumPy (palette lookups, alpha
compositing formulas, 16-bit scaling, np.rot90, block means), not from the code under test.
"""
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from nst_jax import image as nimg
from nst_jax.image import (
    SAMPLES,
    available_samples,
    fit_shape,
    load_image,
    load_mask,
    read_png_metadata,
    resize,
    resize_area,
    resize_longest,
    sample_path,
    save_image,
)

RNG = np.random.default_rng(0)


def _blocks_rgb(H=20, W=40):
    """uint8 [H, W, 3] with four big flat colour blocks (survives JPEG; asymmetric so rotations differ)."""
    arr = np.zeros((H, W, 3), np.uint8)
    arr[: H // 2, : W // 2] = (255, 0, 0)
    arr[: H // 2, W // 2 :] = (0, 255, 0)
    arr[H // 2 :, : W // 2] = (0, 0, 255)
    arr[H // 2 :, W // 2 :] = (255, 255, 255)
    return arr


def _pil_info(path):
    """(mode, format, info) of an image file, closing it (no ResourceWarning)."""
    with Image.open(path) as im:
        return im.mode, im.format, dict(im.info)


def _check_image(x, shape):
    assert x.dtype == np.float32
    assert x.shape == shape
    assert x.min() >= 0.0 and x.max() <= 1.0


# ------------------------------------------------------------------------------------------- exotic formats


def test_rgb_png_exact(tmp_path):
    arr = RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    _check_image(x, (7, 5, 3))
    np.testing.assert_allclose(x, arr / 255.0, atol=1e-7)


def test_palette_image_uses_palette_colours(tmp_path):
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    idx = RNG.integers(0, 256, (6, 9), dtype=np.uint8)
    im = Image.frombytes("P", (9, 6), idx.tobytes())
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / "p.png")
    assert _pil_info(tmp_path / "p.png")[0] == "P"
    x = load_image(tmp_path / "p.png")
    _check_image(x, (6, 9, 3))
    np.testing.assert_allclose(x, palette[idx] / 255.0, atol=1e-7)


def test_palette_transparent_index_composited_on_white(tmp_path):
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    im = Image.frombytes("P", (2, 2), idx.tobytes())
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    im.save(tmp_path / "pt.png", transparency=0)
    x = load_image(tmp_path / "pt.png")
    expected = np.where(idx[..., None] == 0, 1.0, np.array([200, 100, 50]) / 255.0)
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_greyscale_L_repeated_over_channels(tmp_path):
    grey = RNG.integers(0, 256, (8, 6), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    x = load_image(tmp_path / "l.png")
    _check_image(x, (8, 6, 3))
    for c in range(3):
        np.testing.assert_allclose(x[..., c], grey / 255.0, atol=1e-7)


def test_LA_composited_on_white(tmp_path):
    grey = np.array([[0, 0, 100, 255]], np.uint8)
    alpha = np.array([[0, 255, 128, 64]], np.uint8)
    Image.fromarray(np.stack([grey, alpha], -1)).save(tmp_path / "la.png")
    assert _pil_info(tmp_path / "la.png")[0] == "LA"
    x = load_image(tmp_path / "la.png")
    a = alpha / 255.0
    expected = grey / 255.0 * a + (1 - a)
    assert expected[0, 0] == 1.0 and expected[0, 1] == 0.0  # transparent -> white, opaque black stays black
    for c in range(3):
        np.testing.assert_allclose(x[..., c], expected, atol=1e-6)


def test_RGBA_composited_on_white(tmp_path):
    rgba = RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0
    rgba[0, 1, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "rgba.png")
    a = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] / 255.0 * a + (1 - a)
    _check_image(x, (5, 7, 3))
    np.testing.assert_allclose(x, expected, atol=1e-6)
    np.testing.assert_allclose(x[0, 0], 1.0)
    np.testing.assert_allclose(x[0, 1], rgba[0, 1, :3] / 255.0, atol=1e-7)


def test_cmyk_jpeg(tmp_path):
    cmyk = np.zeros((16, 48, 4), np.uint8)
    cmyk[:, 16:32, 0] = 255  # pure cyan
    cmyk[:, 32:, 3] = 255  # pure black
    Image.frombytes("CMYK", (48, 16), cmyk.tobytes()).save(tmp_path / "cmyk.jpg", quality=95)
    assert _pil_info(tmp_path / "cmyk.jpg")[0] == "CMYK"
    x = load_image(tmp_path / "cmyk.jpg")
    _check_image(x, (16, 48, 3))
    np.testing.assert_allclose(x[4:12, 4:12], 1.0, atol=0.03)  # no ink -> white
    np.testing.assert_allclose(x[4:12, 20:28], np.broadcast_to([0, 1, 1], (8, 8, 3)), atol=0.03)  # cyan
    np.testing.assert_allclose(x[4:12, 36:44], 0.0, atol=0.03)  # black


def test_16bit_png_scaled_not_clipped(tmp_path):
    vals = np.array([[0, 1000, 32768, 65535]], np.uint16)
    Image.fromarray(vals).save(tmp_path / "g16.png")
    assert _pil_info(tmp_path / "g16.png")[0].startswith("I;16")
    x = load_image(tmp_path / "g16.png")
    _check_image(x, (1, 4, 3))
    expected = vals / 65535.0
    for c in range(3):
        np.testing.assert_allclose(x[..., c], expected, atol=1e-7)
    assert x[0, 3, 0] == 1.0 and abs(x[0, 2, 0] - 0.5) < 1e-4
    # 1000/65535 = 0.01526 is not representable in 8 bits (4/255 = 0.01569): precision beyond 8 bits kept
    assert abs(x[0, 1, 0] - 1000 / 65535) < 1e-7


def test_32bit_int_and_float_tiff(tmp_path):
    Image.fromarray(np.array([[0, 65535, 70000, -5, 13107]], np.int32)).save(tmp_path / "i.tif")
    assert _pil_info(tmp_path / "i.tif")[0] == "I"
    x = load_image(tmp_path / "i.tif")
    np.testing.assert_allclose(x[0, :, 1], [0, 1, 1, 0, 0.2], atol=1e-7)
    Image.fromarray(np.array([[0.25, 1.5, -0.5]], np.float32)).save(tmp_path / "f.tif")
    assert _pil_info(tmp_path / "f.tif")[0] == "F"
    np.testing.assert_allclose(load_image(tmp_path / "f.tif")[0, :, 2], [0.25, 1.0, 0.0])


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    arr = _blocks_rgb(H=24, W=40)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    x = load_image(tmp_path / "rot.jpg")
    _check_image(x, (40, 24, 3))  # H and W swapped
    with Image.open(tmp_path / "rot.jpg") as im:
        stored = np.asarray(im.convert("RGB")) / 255.0  # pixels as stored, orientation not applied
    assert stored.shape == (24, 40, 3)
    np.testing.assert_allclose(x, np.rot90(stored, k=-1), atol=1e-6)  # exact on the decoded pixels
    ref = np.rot90(arr / 255.0, k=-1)  # direction against the original blocks
    assert np.abs(x - ref)[2:-2, 2:-2].mean() < 0.03
    assert np.abs(x - np.rot90(arr / 255.0, k=1))[2:-2, 2:-2].mean() > 0.3  # the other way is wrong


def test_progressive_jpeg(tmp_path):
    arr = _blocks_rgb(32, 48)
    Image.fromarray(arr).save(tmp_path / "prog.jpg", quality=95, progressive=True)
    assert _pil_info(tmp_path / "prog.jpg")[2].get("progressive")
    x = load_image(tmp_path / "prog.jpg")
    _check_image(x, (32, 48, 3))
    assert np.abs(x - arr / 255.0).mean() < 0.03


def test_animated_gif_returns_first_frame(tmp_path):
    red = Image.new("RGB", (8, 6), (255, 0, 0))
    blue = Image.new("RGB", (8, 6), (0, 0, 255))
    red.save(tmp_path / "anim.gif", save_all=True, append_images=[blue], duration=100, loop=0)
    with Image.open(tmp_path / "anim.gif") as im:
        assert im.n_frames == 2
    x = load_image(tmp_path / "anim.gif")
    _check_image(x, (6, 8, 3))
    np.testing.assert_allclose(x, np.broadcast_to([1.0, 0.0, 0.0], x.shape), atol=1e-6)


def test_mode_L_is_rec601_luma(tmp_path):
    arr = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "c.png")
    y = load_image(tmp_path / "c.png", mode="L")
    assert y.shape == (4, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y, (arr / 255.0) @ [0.299, 0.587, 0.114], atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        load_image(tmp_path / "c.png", mode="CMYK")


# ------------------------------------------------------------------------------------------- masks


def test_load_mask_first_channel_and_resize(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[:, :6, 0] = 255  # red channel: left half inside
    rgb[..., 1] = 255 - rgb[..., 0]  # other channels differ, must be ignored
    Image.fromarray(rgb).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert m.shape == (10, 12) and m.dtype == np.float32
    np.testing.assert_array_equal(m, rgb[..., 0] / 255.0)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "mg.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "mg.png"), m)
    small = load_mask(tmp_path / "m.png", shape_HW=(5, 6))
    assert small.shape == (5, 6)
    # bilinear halving of a step edge at a block boundary: exact 1 / 0 away from the edge, in [0, 1]
    np.testing.assert_allclose(small[:, :2], 1.0, atol=1e-6)
    np.testing.assert_allclose(small[:, 4:], 0.0, atol=1e-6)
    assert small.min() >= 0 and small.max() <= 1


# ------------------------------------------------------------------------------------------- shapes / resize


def test_fit_shape_rules():
    assert fit_shape((48, 64)) == (48, 64)
    assert fit_shape((48, 64), size=32) == (24, 32)
    assert fit_shape((64, 48), size=32) == (32, 24)
    assert fit_shape((10, 10), size=300) == (300, 300)  # upscales too
    assert fit_shape((3, 10), size=4) == (1, 4)  # 1.2 -> 1
    assert fit_shape((5, 10), size=5) == (3, 5)  # 2.5 -> 3 (half-up, not banker's 2)
    assert fit_shape((1, 100), size=10) == (1, 10)  # 0.1 -> 0 -> at least 1
    assert fit_shape((48, 64), area=768) == (24, 32)
    assert fit_shape((10, 10), area=50) == (7, 7)
    H, W = fit_shape((751, 944), area=512 * 512)
    assert abs(H * W - 512 * 512) / (512 * 512) < 0.01 and abs(W / H - 944 / 751) < 0.01
    for bad in [dict(size=0), dict(area=-1), dict(size=2.5), dict(size=True), dict(size=4, area=16)]:
        with pytest.raises(ValueError):
            fit_shape((10, 10), **bad)
    with pytest.raises(ValueError):
        fit_shape((0, 10), size=4)


def test_load_with_size_and_area(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    _check_image(load_image(tmp_path / "b.png", size=32), (24, 32, 3))
    _check_image(load_image(tmp_path / "b.png", area=768), (24, 32, 3))
    _check_image(load_image(tmp_path / "b.png", size=80), (60, 80, 3))
    assert load_image(tmp_path / "b.png").shape == (48, 64, 3)


def test_resize_box_matches_block_mean_and_keeps_float_precision():
    x = RNG.random((8, 12, 3)).astype(np.float32)
    y = resize(x, (4, 6), resample="box")
    ref = x.reshape(4, 2, 6, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(y, ref, atol=1e-6)
    # values off the 1/255 grid survive (no 8-bit round trip) and constants stay constant under Lanczos
    c = np.full((9, 13, 3), 0.5 + 1e-4, np.float32)
    for shape in [(4, 6), (20, 30), (9, 13)]:
        np.testing.assert_allclose(resize(c, shape), 0.5 + 1e-4, atol=1e-6)
    assert resize(x, (8, 12)) is not x and np.array_equal(resize(x, (8, 12)), x)
    g = resize(x[..., 0], (4, 6), resample="box")
    assert g.shape == (4, 6)
    np.testing.assert_allclose(g, ref[..., 0], atol=1e-6)


def test_resize_clips_lanczos_ringing_and_helpers():
    step = np.zeros((16, 16, 3), np.float32)
    step[:, 8:] = 1.0
    up_raw = resize(step, (16, 40), clip=False)
    assert up_raw.min() < 0 or up_raw.max() > 1  # Lanczos rings at a hard edge
    up = resize(step, (16, 40))
    assert up.min() >= 0 and up.max() <= 1
    assert resize_longest(np.zeros((30, 20, 3)), 12).shape == (12, 8, 3)
    assert resize_area(np.zeros((30, 20, 3)), 150).shape == (15, 10, 3)


def test_resize_bad_inputs():
    with pytest.raises(ValueError, match="zero-size"):
        resize(np.zeros((0, 4, 3)), (2, 2))
    with pytest.raises(ValueError):
        resize(np.zeros((4, 4, 3)), (0, 2))
    with pytest.raises(ValueError, match="resample"):
        resize(np.zeros((4, 4, 3)), (2, 2), resample="cubic-ish")
    with pytest.raises(ValueError):
        resize(np.zeros((4,)), (2, 2))


# ------------------------------------------------------------------------------------------- saving


def test_png_round_trip_exact_to_1_over_255(tmp_path):
    x = RNG.random((9, 11, 3)).astype(np.float32)
    x[0, 0] = [-0.3, 1.7, 0.5]  # clipped on save
    out = save_image(tmp_path / "o.png", x)
    assert out == tmp_path / "o.png"
    y = load_image(out)
    clipped = np.clip(x, 0, 1)
    assert np.abs(y - clipped).max() <= 0.5 / 255 + 1e-6
    with Image.open(out) as im:
        np.testing.assert_array_equal(np.asarray(im), np.round(clipped * 255).astype(np.uint8))
    save_image(tmp_path / "o2.png", y)  # already on the 1/255 grid: bit exact
    np.testing.assert_array_equal(load_image(tmp_path / "o2.png"), y)


def test_jpeg_save_quality_and_suffixes(tmp_path):
    x = (_blocks_rgb(32, 32) / 255.0).astype(np.float32)
    for name in ["o.jpg", "o.JPEG"]:
        save_image(tmp_path / name, x, metadata={"alpha": 1.0})
        with Image.open(tmp_path / name) as im:
            assert im.format == "JPEG"
            assert b'"alpha": "1.0"' in im.info.get("comment", b"")
        assert np.abs(load_image(tmp_path / name) - x).mean() < 0.02


def test_png_metadata_round_trip(tmp_path):
    meta = {"content": "blue_marble.jpg", "alpha_beta": 1e-3, "layers": ["conv1_1", "conv2_1"], "note": "Gatys ü"}
    save_image(tmp_path / "m.png", np.zeros((4, 4, 3)), metadata=meta)
    got = read_png_metadata(tmp_path / "m.png")
    assert got == {"content": "blue_marble.jpg", "alpha_beta": "0.001", "layers": '["conv1_1", "conv2_1"]',
                   "note": "Gatys ü"}
    save_image(tmp_path / "plain.png", np.zeros((4, 4, 3)))
    assert read_png_metadata(tmp_path / "plain.png") == {}
    save_image(tmp_path / "j.jpg", np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="not a PNG"):
        read_png_metadata(tmp_path / "j.jpg")
    with pytest.raises(FileNotFoundError):
        read_png_metadata(tmp_path / "none.png")


def test_atomic_write_failure_leaves_existing_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    save_image(target, np.full((4, 4, 3), 0.25))
    before = target.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial data")
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_image(target, np.full((4, 4, 3), 0.75))
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    with pytest.raises(RuntimeError):
        save_image(tmp_path / "new.png", np.zeros((4, 4, 3)))
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_successful_write_leaves_no_temp_and_normal_permissions(tmp_path):
    save_image(tmp_path / "a.png", np.zeros((3, 3, 3)))
    save_image(tmp_path / "a.png", np.ones((3, 3, 3)))
    assert sorted(os.listdir(tmp_path)) == ["a.png"]
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), 1.0)
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~mask


def test_refuses_to_overwrite_an_input(tmp_path, monkeypatch):
    src = tmp_path / "in.png"
    Image.fromarray(_blocks_rgb(8, 8)).save(src)
    before = src.read_bytes()
    x = np.zeros((8, 8, 3))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    os.symlink(src, tmp_path / "link.png")
    os.link(src, tmp_path / "hard.png")
    cases = [
        (src, [src]),
        ("../in.png", [src]),  # other relative spelling
        (tmp_path / "sub" / ".." / "in.png", ["../in.png"]),
        (tmp_path / "link.png", [src]),  # output is a symlink to the input
        (src, [tmp_path / "link.png"]),  # input given through a symlink
        (tmp_path / "hard.png", [src]),  # hard link: same inode
        (src, ["other.png", str(src)]),
    ]
    for out, inputs in cases:
        with pytest.raises(ValueError, match="refusing") as info:
            save_image(out, x, inputs=inputs)
        assert "\n" not in str(info.value)
    assert src.read_bytes() == before
    save_image(tmp_path / "fine.png", x, inputs=[src])  # a different file is fine


def test_save_refusals(tmp_path):
    x = np.zeros((4, 4, 3))
    with pytest.raises(ValueError, match="does not exist"):
        save_image(tmp_path / "missing_dir" / "o.png", x)
    for bad in ["o.bmp", "o.txt", "o"]:
        with pytest.raises(ValueError, match="suffix"):
            save_image(tmp_path / bad, x)
    save_image(tmp_path / "e.png", x)
    with pytest.raises(ValueError, match="already exists"):
        save_image(tmp_path / "e.png", np.ones((4, 4, 3)), overwrite=False)
    np.testing.assert_array_equal(load_image(tmp_path / "e.png"), 0.0)
    save_image(tmp_path / "new.png", x, overwrite=False)
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match="directory"):
        save_image(tmp_path / "d.png", x)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        save_image(tmp_path / "g.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="zero-size"):
        save_image(tmp_path / "z.png", np.zeros((0, 4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        save_image(tmp_path / "n.png", np.full((4, 4, 3), np.nan))
    assert not (tmp_path / "z.png").exists() and not (tmp_path / "n.png").exists()


# ------------------------------------------------------------------------------------------- load errors


def _noisy_file(tmp_path, name, **kw):
    arr = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / name, **kw)
    return (tmp_path / name).read_bytes()


def _assert_cannot_read(path):
    with pytest.raises(ValueError, match="cannot read image") as info:
        load_image(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "is it an image file?" in msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError):
        load_mask(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_files_fail_cleanly(tmp_path, fmt):
    data = _noisy_file(tmp_path, "full." + fmt)
    assert load_image(tmp_path / ("full." + fmt)).shape == (64, 64, 3)  # the full file is fine
    for frac in (0.3, 0.7, 0.95):
        cut = tmp_path / f"cut{frac}.{fmt}"
        cut.write_bytes(data[: int(len(data) * frac)])
        _assert_cannot_read(cut)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # the loader must not have switched it on


def test_random_bytes_and_empty_file(tmp_path):
    (tmp_path / "r.png").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    _assert_cannot_read(tmp_path / "r.png")
    (tmp_path / "e.jpg").write_bytes(b"")
    _assert_cannot_read(tmp_path / "e.jpg")
    (tmp_path / "t.txt").write_text("hello")
    _assert_cannot_read(tmp_path / "t.txt")
    with pytest.raises(ValueError, match="cannot read image"):
        load_mask(tmp_path / "t.txt")


def _png_with_size(width, height):
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_zero_size_image_is_refused(tmp_path, monkeypatch):
    (tmp_path / "z.png").write_bytes(_png_with_size(0, 5))
    with pytest.raises(ValueError) as info:
        load_image(tmp_path / "z.png")
    assert "\n" not in str(info.value)
    # if a decoder ever hands back a 0-px image, the size check itself must refuse it
    monkeypatch.setattr(nimg.ImageOps, "exif_transpose", lambda im: Image.new("RGB", (0, 3)))
    Image.new("RGB", (2, 2)).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="zero size"):
        load_image(tmp_path / "ok.png")


# ------------------------------------------------------------------------------------------- samples


EXPECTED_SAMPLE_SHAPES = {
    "blue_marble.jpg": (512, 512),
    "great_wave.jpg": (514, 928),
    "starry_night.jpg": (507, 640),
    "tetons_snake_river.jpg": (600, 749),
    "wheat_field_with_cypresses.jpg": (751, 944),
    "wheat_field_with_cypresses_sky.jpg": (751, 944),
    "wheat_field_with_cypresses_nosky.jpg": (751, 944),
}


def test_all_bundled_samples_load():
    names = available_samples()
    assert set(EXPECTED_SAMPLE_SHAPES) <= set(names)
    assert "PROVENANCE.md" not in names
    for name in names:
        p = sample_path(name)
        assert p.is_file() and p.name == name
        x = load_image(p)
        assert x.dtype == np.float32 and x.ndim == 3 and x.shape[2] == 3
        assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.01
        if name in EXPECTED_SAMPLE_SHAPES:
            assert x.shape[:2] == EXPECTED_SAMPLE_SHAPES[name]
        assert sample_path(p.stem) == p
    provenance = (sample_path(SAMPLES["content"]).parent / "PROVENANCE.md").read_text()
    for name in names:
        assert f"`{name}`" in provenance, f"{name} has no provenance row"
    grey = load_image(sample_path(SAMPLES["content_grey"]))
    assert np.array_equal(grey[..., 0], grey[..., 2])
    for name in [SAMPLES["content"], *SAMPLES["styles"]]:
        assert sample_path(name).is_file()


def test_samples_masks_match_their_images():
    for image_name, regions in SAMPLES["masks"].items():
        H, W = load_image(sample_path(image_name)).shape[:2]
        masks = [load_mask(sample_path(m)) for m in regions.values()]
        assert all(m.shape == (H, W) for m in masks)
        assert np.mean(np.abs(sum(masks) - 1.0) < 0.1) > 0.99  # regions partition the image


def test_bundled_masks_are_complementary():
    style = SAMPLES["styles"][2]
    masks = SAMPLES["masks"][style]
    sky = load_mask(sample_path(masks["sky"]))
    nosky = load_mask(sample_path(masks["nosky"]))
    assert sky.shape == nosky.shape == (751, 944)
    assert np.mean(np.abs(sky + nosky - 1.0) < 0.1) > 0.99
    assert abs((sky > 0.5).mean() - 0.535) < 0.01  # sky coverage stated in the data provenance
    small = load_mask(sample_path(masks["sky"]), shape_HW=(47, 59))
    assert small.shape == (47, 59) and small.min() >= 0 and small.max() <= 1
    assert abs((small > 0.5).mean() - 0.535) < 0.03


def test_unknown_sample_lists_available():
    with pytest.raises(ValueError, match="great_wave.jpg") as info:
        sample_path("mona_lisa.jpg")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        sample_path("../image.py")
