"""Bad inputs at the edges: every one gets a one-line error naming the problem and the fix, exit status 2, no
traceback, and no file in the working folder is created, changed or removed. Plus a seeded fuzz of image and weight
files, the NaN stop, and exotic-but-valid images through the CLI. (the README's Errors section lists the same table.)"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nst_jax import cli, image, lbfgs, vgg, weights
from nst_jax.cli.outputs import write_json
from nst_jax.image import sample_path

BASE = ["--weights", "tiny19", "--size", "32", "--iters", "2", "--no-progress"]


def _save_png(path, arr_u8, mode=None):
    Image.fromarray(arr_u8, mode).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder of good and bad inputs (built once; every test asserts it is left unchanged)."""
    d = tmp_path_factory.mktemp("hardening")
    rng = np.random.default_rng(0)
    shutil.copy(sample_path("blue_marble"), d / "content.jpg")
    shutil.copy(sample_path("great_wave"), d / "style.jpg")
    _save_png(d / "mask.png", np.full((64, 64), 255, np.uint8))
    _save_png(d / "mask_wide.png", np.full((16, 64), 255, np.uint8))
    good = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(good, "PNG")
    (d / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (d / "corrupt.jpg").write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    (d / "empty.png").write_bytes(b"")
    (d / "folder.png").mkdir()
    _save_png(d / "onepx.png", np.zeros((1, 1, 3), np.uint8))
    _save_png(d / "thin.png", np.zeros((200, 4, 3), np.uint8))
    _save_png(d / "strip.png", np.zeros((16, 400, 3), np.uint8))  # 16 px tall: 32 x 1 px at --size 32
    (d / "existing.png").write_bytes(good.getvalue())
    (d / "existing.json").write_bytes(b"{}")
    tiny = weights.cache.to_numpy(vgg.init_params(jax.random.PRNGKey(0), "tiny19"))
    weights.params_to_npz(tiny, d / "tiny.npz")
    raw = (d / "tiny.npz").read_bytes()
    (d / "trunc.npz").write_bytes(raw[: len(raw) // 3])
    (d / "text.h5").write_text("these are not weights\n")
    np.savez(d / "notvgg.npz", **{"dense/kernel": np.zeros((3, 3), np.float32)})
    bad_shape = {k: dict(v) for k, v in tiny.items()}
    bad_shape["conv1_1"]["kernel"] = np.zeros((5, 5, 3, 4), np.float32)
    weights.params_to_npz(bad_shape, d / "badshape.npz")
    nan = {k: dict(v) for k, v in tiny.items()}
    nan["conv2_1"]["bias"] = np.full_like(nan["conv2_1"]["bias"], np.nan)
    weights.params_to_npz(nan, d / "nan.npz")
    huge = {k: {"kernel": v["kernel"] * 1e12, "bias": v["bias"]} for k, v in tiny.items()}
    weights.params_to_npz(huge, d / "huge.npz")  # finite, but activations overflow float32 by conv5
    return d


def _snapshot(d: pathlib.Path):
    return {str(p.relative_to(d)): (p.is_dir(), p.stat().st_mtime_ns,
                                    None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(d.rglob("*"))}


# (id, argv after "stylize" with {d} = the folder, key words of the message)
C, S, O = "{d}/content.jpg", "{d}/style.jpg", "{d}/out.png"
ROWS = [
    ("missing content", [f"{{d}}/nope.jpg", S, "-o", O], ["nope.jpg", "not found"]),
    ("missing style", [C, "{d}/nope.png", "-o", O], ["style image", "not found"]),
    ("directory as image", ["{d}/folder.png", S, "-o", O], ["directory", "image file"]),
    ("corrupt image", ["{d}/corrupt.jpg", S, "-o", O], ["corrupt.jpg", "not a readable image"]),
    ("truncated image", ["{d}/truncated.png", S, "-o", O], ["truncated.png", "truncated", "complete"]),
    ("zero-byte file", [C, "{d}/empty.png", "-o", O], ["empty.png", "not a readable image"]),
    ("1-pixel image", ["{d}/onepx.png", S, "-o", O], ["1x1 px", "at least 16 px"]),
    ("4-pixel-wide style", [C, "{d}/thin.png", "-o", O], ["4x200 px", "at least 16 px"]),
    ("too thin after resizing", ["{d}/strip.png", S, "-o", O], ["32x1 px", "--size 400"]),
    ("--size below 16", [C, S, "-o", O, "--size", "8"], ["--size", "at least 16"]),
    ("too big for memory", [C, S, "-o", O, "--memory-limit", "1MB"], ["GiB", "--history 20", "--size", "--memory-limit"]),
    ("bad --memory-limit", [C, S, "-o", O, "--memory-limit", "lots"], ["--memory-limit", "8GB"]),
    ("unknown content layer", [C, S, "-o", O, "--content-layers", "relu9_9"], ["unknown layer", "relu9_9"]),
    ("layer not in vgg16", [C, S, "-o", O, "--weights", "tiny16", "--style-layers", "relu5_4"],
     ["unknown layer", "relu5_4"]),
    ("unknown weights name", [C, S, "-o", O, "--weights", "vgg99"], ["unknown weights", "vgg99"]),
    ("weights file missing", [C, S, "-o", O, "--weights", "{d}/none.npz"], ["none.npz", "no such weights file"]),
    ("weights not a VGG", [C, S, "-o", O, "--weights", "{d}/notvgg.npz"], ["notvgg.npz", "missing weight"]),
    ("weights truncated", [C, S, "-o", O, "--weights", "{d}/trunc.npz"], ["trunc.npz", "not a readable .npz"]),
    ("weights not HDF5", [C, S, "-o", O, "--weights", "{d}/text.h5"], ["text.h5", "not a readable HDF5"]),
    ("weights wrong shape", [C, S, "-o", O, "--weights", "{d}/badshape.npz"], ["conv1_1/kernel", "has shape"]),
    ("weights hold NaN", [C, S, "-o", O, "--weights", "{d}/nan.npz"], ["conv2_1/bias", "NaN"]),
    ("weights overflow", [C, S, "-o", O, "--weights", "{d}/huge.npz", "--iters", "1"],
     ["NaN/inf", "overflow", "--weights"]),
    ("negative content weight", [C, S, "-o", O, "--content-weight", "-1"], ["--content-weight", ">= 0"]),
    ("NaN style weight", [C, S, "-o", O, "--style-weight", "nan"], ["--style-weight", "finite"]),
    ("negative layer weight", [C, S, "-o", O, "--layer-weights", "1,1,-1,1,1"], ["layer weights", ">= 0"]),
    ("layer weight count", [C, S, "-o", O, "--layer-weights", "1,2"], ["2 layer weights", "one per layer"]),
    ("negative blend", [C, S, S, "-o", O, "--style-blend", "1,-2"], ["blend", ">= 0"]),
    ("blend count", [C, S, "-o", O, "--style-blend", "1,1"], ["2 blend weights", "one per style"]),
    ("not a number", [C, S, "-o", O, "--layer-weights", "a,b"], ["--layer-weights", "numbers"]),
    ("zero --style-scale", [C, S, "-o", O, "--style-scale", "0"], ["--style-scale", "> 0"]),
    ("negative --iters", [C, S, "-o", O, "--iters", "-1"], ["--iters", ">= 0"]),
    ("zero --lr", [C, S, "-o", O, "--lr", "0"], ["--lr", "> 0"]),
    ("zero --history", [C, S, "-o", O, "--history", "0"], ["--history", ">= 1"]),
    ("zero --checkpoint-every", [C, S, "-o", O, "--checkpoint-every", "0"], ["--checkpoint-every", ">= 1"]),
    ("unknown solver", [C, S, "-o", O, "--solver", "sgd"], ["unknown --solver", "lbfgs"]),
    ("unknown preset", [C, S, "-o", O, "--preset", "picasso"], ["unknown --preset", "gatys"]),
    ("unknown colour mode", [C, S, "-o", O, "--color", "sepia"], ["colour mode", "sepia", "--color"]),
    ("missing --init file", [C, S, "-o", O, "--init", "{d}/start.png"], ["--init image", "not found"]),
    ("output folder missing", [C, S, "-o", "{d}/no/such/out.png"], ["does not exist", "-o"]),
    ("output is an input", [C, S, "-o", C], ["one of the inputs", "another -o"]),
    ("output exists", [C, S, "-o", "{d}/existing.png"], ["exists", "--overwrite"]),
    ("output suffix", [C, S, "-o", "{d}/out.gif"], ["out.gif", ".png"]),
    ("output is a folder", [C, S, "-o", "{d}/folder.png"], ["directory", "file name"]),
    ("mask file missing", [C, S, "-o", O, "--content-mask", "sky={d}/nomask.png"], ["nomask.png", "not found"]),
    ("mask region names", [C, S, "-o", O, "--content-mask", "sky={d}/mask.png", "--style-mask", "sea={d}/mask.png"],
     ["'sea'", "no --content-mask"]),
    ("one style for two regions", [C, "-o", O, "--content-mask", "a={d}/mask.png", "--content-mask",
                                   "b={d}/mask.png", "--style", f"a={S}"], ["['b']", "one per region"]),
    ("mask aspect ratio", [C, S, "-o", O, "--content-mask", "sky={d}/mask_wide.png"], ["64x16", "aspect"]),
    ("--resume without checkpoint", [C, S, "-o", O, "--resume"], ["no checkpoint", "--checkpoint-every"]),
]


@pytest.mark.parametrize("argv, words", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_cleanly(folder, capsys, argv, words):
    before = _snapshot(folder)
    rc = cli.main(["stylize"] + [a.replace("{d}", str(folder)) for a in argv] + _base_for(argv))
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("nst-jax: error: "), err
    assert "Traceback" not in err and out == ""
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert _snapshot(folder) == before


def _base_for(argv):
    """BASE, minus the flags the row sets itself."""
    out = []
    for flag, value in (("--weights", "tiny19"), ("--size", "32"), ("--iters", "2")):
        if flag not in argv:
            out += [flag, value]
    return out + ["--no-progress"]


def test_stale_checkpoint_is_not_silently_replaced(folder, capsys, tmp_path):
    (tmp_path / "out.ckpt.npz").write_bytes(b"from a crashed run")
    before = _snapshot(tmp_path)
    rc = cli.main(["stylize", str(folder / "content.jpg"), str(folder / "style.jpg"), "-o", str(tmp_path / "out.png")]
                  + BASE)
    err = capsys.readouterr().err
    assert rc == 2 and "--resume" in err and "--overwrite" in err and err.count("\n") == 1
    assert _snapshot(tmp_path) == before


def test_debug_shows_the_traceback(folder):
    with pytest.raises(FileNotFoundError, match="not found"):
        cli.main(["stylize", str(folder / "nope.jpg"), str(folder / "style.jpg"), "-o", str(folder / "o.png"),
                  "--debug"] + BASE)


# ---------------------------------------------------------------------------------------------- exotic valid images

def _exotic_files(d: pathlib.Path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65536, (40, 40))).astype(np.uint16)).save(d / "grey16.png")
    Image.fromarray(rgb).convert("P").save(d / "palette.png")
    rgba = np.concatenate([rgb, rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba).save(d / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(d / "grey.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: stored 40 x 56 (H x W), shown 56 x 40
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(d / "rotated.jpg", exif=exif)
    Image.fromarray(rgb).save(d / "progressive.jpg", progressive=True)
    frames = [Image.fromarray(np.roll(rgb, k, 0)).convert("P") for k in range(3)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:])
    return ["cmyk.jpg", "grey16.png", "palette.png", "rgba.png", "grey.png", "progressive.jpg", "animated.gif",
            "rotated.jpg"]


def test_exotic_images_just_work(tmp_path, capsys):
    """Each exotic file as the content (all 40 x 40: one compile) and the next one as the style; the EXIF-rotated
    JPEG (a style only, so the content shape stays the same) comes out portrait."""
    names = _exotic_files(tmp_path)
    for j, name in enumerate(names[:-1]):
        out = tmp_path / f"out_{j}.png"
        rc = cli.main(["stylize", str(tmp_path / name), str(tmp_path / names[j + 1]), "-o", str(out)] + BASE)
        assert rc == 0, (name, capsys.readouterr().err)
        assert image.load_image(out).shape == (32, 32, 3), name
    assert image.load_image(tmp_path / "rotated.jpg").shape == (56, 40, 3)


# ---------------------------------------------------------------------------------------------- fuzz

def _mutants(data: bytes, rng: np.random.Generator, n: int):
    """n mutated copies: half with 1-8 flipped bytes (biased to the header and the tail), half truncated."""
    out = []
    for k in range(n):
        b = bytearray(data)
        if k % 2 == 0:
            for _ in range(int(rng.integers(1, 9))):
                region = rng.integers(3)
                pos = (int(rng.integers(0, min(256, len(b)))) if region == 0 else
                       int(rng.integers(max(0, len(b) - 256), len(b))) if region == 1 else int(rng.integers(len(b))))
                b[pos] ^= int(rng.integers(1, 256))
        else:
            del b[int(rng.integers(0, len(b))):]
        out.append(bytes(b))
    return out


def _one_line_or_success(fn, path):
    try:
        fn(path)
        return "ok"
    except (ValueError, OSError) as e:
        msg = str(e)
        assert msg and "\n" not in msg, (path.name, msg)
        return type(e).__name__


def test_fuzzed_images_and_weights_fail_cleanly(tmp_path):
    rng = np.random.default_rng(1234)
    png, jpg = io.BytesIO(), io.BytesIO()
    src = Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    src.save(png, "PNG")
    src.save(jpg, "JPEG")
    weights.params_to_npz(weights.cache.to_numpy(vgg.init_params(jax.random.PRNGKey(0), "tiny16")), tmp_path / "w.npz")
    raw_w = (tmp_path / "w.npz").read_bytes()
    outcomes = []
    for suffix, data, fn in ((".png", png.getvalue(), image.load_image), (".jpg", jpg.getvalue(), image.load_image),
                             (".npz", raw_w, lambda p: weights.load_weights(p, verbose=False))):
        for j, mutant in enumerate(_mutants(data, rng, 14)):
            p = tmp_path / f"m{j}{suffix}"
            p.write_bytes(mutant)
            outcomes.append(_one_line_or_success(fn, p))
    # the fuzz exercised both outcomes (a fuzz that never fails, or never passes, tests nothing)
    assert "ok" in outcomes and "ValueError" in outcomes and len(outcomes) == 42


# ---------------------------------------------------------------------------------------------- NaN stop

def test_json_traces_are_strict_json(tmp_path):
    """NaN and inf (nested, numpy scalars included) are written as null; the file parses without constants."""
    path = tmp_path / "t.json"
    write_json(path, {"a": float("nan"), "b": [1.5, float("inf"), np.float32("-inf")], "c": {"d": np.nan}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None, None], "c": {"d": None}}


def test_nonfinite_loss_stops_keeps_last_finite_image_and_names_the_term(folder, tmp_path, capsys, monkeypatch):
    """Make iteration 4 try a NaN image (patched L-BFGS trial point); the CLI must write the iteration-3 image, say which
    term blew up and at which iteration, and exit 3. ``--history 3`` keeps the patched program out of the caches the
    other tests use (it only differs from the real one from iteration 4 on, so the reference run below may share it).
    """
    real = lbfgs.guarded_lbfgs

    def poisoned_lbfgs(*a, **kw):
        opt = real(*a, **kw)
        # st.it = iterations done before this one
        return opt._replace(propose=lambda st: jnp.where(st.it >= 3, jnp.nan, opt.propose(st)))

    jax.clear_caches()  # compiled programs are traced anew with the patched optimiser (and forgotten after)
    monkeypatch.setattr(lbfgs, "guarded_lbfgs", poisoned_lbfgs)
    argv = ["stylize", str(folder / "content.jpg"), str(folder / "style.jpg"), "--history", "3"] + BASE[:4]
    rc = cli.main(argv + ["-o", str(tmp_path / "nan.png"), "--iters", "8", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 3, captured.err
    warn = [ln for ln in captured.err.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "NaN/inf at iteration 4" in warn[0] and "iteration 3" in warn[0] and "--lr" in warn[0]
    assert any(f"the {t} loss" in warn[0] for t in ("content", "style", "tv", "total"))

    def no_constants(name):
        raise AssertionError(f"{name} in the JSON trace: not strict JSON")

    trace = json.loads((tmp_path / "nan.json").read_text(), parse_constant=no_constants)
    losses = [t["loss"] for t in trace["trace"]]
    assert all(v is None or np.isfinite(v) for v in losses), losses
    monkeypatch.undo()
    jax.clear_caches()
    rc = cli.main(argv + ["-o", str(tmp_path / "ref.png"), "--iters", "3", "--no-progress"])
    assert rc == 0
    np.testing.assert_array_equal(image.load_image(tmp_path / "nan.png"), image.load_image(tmp_path / "ref.png"))
