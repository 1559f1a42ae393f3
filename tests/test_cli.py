"""The nst-jax command end to end: stylize, sweep, match-color, figure; tiny network and real weights."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nst_jax import image as I
from nst_jax.cli import main

S = I.sample_path
TINY = ["--weights", "tiny19", "--no-progress"]


def test_stylize_tiny_64px(tmp_path, capsys):
    out = tmp_path / "out.png"
    rc = main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(out), "--size", "64",
               "--iters", "6", *TINY])
    assert rc == 0
    img = I.load_image(out)
    assert img.shape == (64, 64, 3)
    meta = I.read_png_metadata(out)
    assert meta["solver"] == "lbfgs" and meta["iters"] == "6" and json.loads(meta["weights_random"]) is True
    trace = json.loads(out.with_suffix(".json").read_text())
    assert trace["n_fg"] == 7 and len(trace["trace"]) == 7
    assert trace["trace"][-1]["loss"] < trace["trace"][0]["loss"]
    assert "RANDOM weights" in capsys.readouterr().err
    # refuses to replace the output without --overwrite, and says so in one line
    rc = main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(out), "--size", "64",
               "--iters", "1", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0]


def test_remat_is_dropped_on_cpu_with_a_note(tmp_path, capsys, monkeypatch):
    """XLA:CPU removes the barriers remat needs and then keeps more memory; the CLI says so and runs without it.
    (The problem is not built: the options are captured where they leave the CLI.)"""
    import nst_jax.cli as C
    from nst_jax.cli import args as A

    seen = {}

    def capture(args, spatial=None):
        seen["remat"] = args.remat
        raise ValueError("captured")

    monkeypatch.setattr(A, "problem_spec", capture)
    argv = ["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(tmp_path / "r.png"), "--size", "32",
            "--iters", "1", "--remat", "--no-progress", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--remat ignored on CPU" in err and "captured" in err and seen["remat"] is False
    monkeypatch.setattr(C, "_backend", lambda: "gpu")  # elsewhere it reaches the problem
    assert main(argv) == 2
    assert seen["remat"] is True and "ignored" not in capsys.readouterr().err


def test_stylize_flags_reach_the_run(tmp_path):
    out = tmp_path / "flags.png"
    rc = main(["stylize", str(S("blue_marble")), str(S("great_wave")), str(S("starry_night")), "-o", str(out),
               "--size", "32", "--iters", "3", "--style-blend", "2,1", "--pooling", "avg", "--init", "noise",
               "--seed", "3", "--content-weight", "2", "--style-weight", "5", "--tv-weight", "0.1",
               "--style-layers", "relu1_1,relu2_1", "--layer-weights", "1,0.5", "--content-layers", "relu3_1",
               "--solver", "adam", "--color", "luminance", "--save-every", "2", *TINY])
    assert rc == 0
    meta = I.read_png_metadata(out)
    assert json.loads(meta["style_blend"]) == [2.0, 1.0]
    assert meta["pooling"] == "avg" and meta["init"] == "noise" and meta["solver"] == "adam"
    assert json.loads(meta["layer_weights"]) == [1.0, 0.5] and json.loads(meta["content_layers"]) == ["relu3_1"]
    assert float(meta["content_weight"]) == 2.0 and float(meta["tv_weight"]) == pytest.approx(0.1)
    assert (tmp_path / "flags_00002.png").exists()
    # luminance-only: the output keeps the content's chrominance
    from nst_jax import color as C

    content = I.load_image(S("blue_marble"), size=32)
    res = I.load_image(out)
    np.testing.assert_allclose(np.asarray(C.rgb_to_yiq(res))[..., 1:], np.asarray(C.rgb_to_yiq(content))[..., 1:],
                               atol=0.02)


def test_sweep_writes_images_grid_and_report(tmp_path, capsys):
    d = tmp_path / "sw"
    rc = main(["sweep", str(S("blue_marble")), str(S("great_wave")), "--ratios", "1e-3,1e-1", "-o", str(d),
               "--size", "32", "--iters", "3", *TINY])
    assert rc == 0
    assert sorted(p.name for p in d.iterdir()) == ["0000_ratio-0.001.json", "0000_ratio-0.001.png",
                                                   "0001_ratio-0.1.json", "0001_ratio-0.1.png", "grid.png",
                                                   "sweep.json"]  # each member: its image and its record
    rep = json.loads((d / "sweep.json").read_text())
    assert [m["n_fg"] for m in rep["members"]] == [4, 4]
    grid = Image.open(d / "grid.png")
    assert grid.size[0] > 2 * 32
    assert "4 f+g each" in capsys.readouterr().out


def test_spatial_cli_two_regions(tmp_path):
    out = tmp_path / "sp.png"
    rc = main(["stylize", str(S("tetons_snake_river")), "--style", f"sky={S('starry_night')}",
               "--style", f"ground={S('great_wave')}", "--content-mask", f"sky={S('tetons_snake_river_sky')}",
               "--content-mask", f"ground={S('tetons_snake_river_nosky')}", "--propagation", "all",
               "-o", str(out), "--size", "40", "--iters", "2", *TINY])
    assert rc == 0 and out.exists()
    rc = main(["stylize", str(S("tetons_snake_river")), "--style", f"sky={S('starry_night')}",
               "--content-mask", f"sky={S('tetons_snake_river_sky')}",
               "--content-mask", f"ground={S('tetons_snake_river_nosky')}",
               "-o", str(tmp_path / "x.png"), "--size", "40", "--iters", "2", *TINY])
    assert rc == 2  # the ground region has no style


def test_match_color_command(tmp_path):
    out = tmp_path / "m.png"
    assert main(["match-color", str(S("great_wave")), str(S("blue_marble")), "-o", str(out), "--mode", "chol",
                 "--size", "48"]) == 0
    res = I.load_image(out).reshape(-1, 3)
    src = I.load_image(S("great_wave"), size=48).reshape(-1, 3)
    tgt = I.load_image(S("blue_marble"), size=48).reshape(-1, 3)
    # exact before clipping (tests/test_color.py); after clipping to [0, 1] the mean still lands near the target's
    assert np.all(np.abs(res.mean(0) - tgt.mean(0)) < 0.25 * np.abs(src.mean(0) - tgt.mean(0)))
    assert main(["match-color", str(S("great_wave")), str(S("blue_marble")), "-o", str(out), "--mode", "nope",
                 "--overwrite"]) == 2


@pytest.mark.parametrize("name", ["color", "spatial"])
def test_figure_commands_tiny(tmp_path, name):
    out = tmp_path / f"{name}.png"
    assert main(["figure", name, "-o", str(out), "--size", "32", "--iters", "2", "--weights", "tiny19",
                 "--no-progress"]) == 0
    w, h = Image.open(out).size
    assert w > 5 * 32 and h > 32  # five labelled panels side by side


@pytest.mark.realweights
def test_stylize_real_weights_128px(tmp_path, hed_params):
    out = tmp_path / "real.png"
    proc = subprocess.run([sys.executable, "-m", "nst_jax.cli", "stylize", str(S("blue_marble")),
                           str(S("great_wave")), "-o", str(out), "--size", "128", "--iters", "25",
                           "--weights", "vgg16-hed", "--no-progress"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    img = I.load_image(out)
    content = I.load_image(S("blue_marble"), size=128)
    assert img.shape == content.shape and np.isfinite(img).all()
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert np.abs(img - content).mean() > 0.02  # really changed
    trace = json.loads(out.with_suffix(".json").read_text())["trace"]
    assert trace[-1]["loss"] < 0.5 * trace[0]["loss"]


def test_mix_styles_and_scale_figure(tmp_path):
    out = tmp_path / "mix.png"
    assert main(["mix-styles", str(S("great_wave")), str(S("starry_night")), "-o", str(out), "--size", "32",
                 "--iters", "3", "--fine-layers", "relu2_1", *TINY]) == 0
    meta = I.read_png_metadata(out)
    assert "relu2_1" in meta["mix"] and I.load_image(out).shape[1] == 32
    fig = tmp_path / "scale.png"
    assert main(["figure", "scale", "-o", str(fig), "--size", "32", "--iters", "2", "--weights", "tiny19",
                 "--no-progress"]) == 0
    assert Image.open(fig).size[0] > 5 * 32


def test_stylize_coarse_to_fine_and_mix_with(tmp_path):
    out = tmp_path / "pyr.png"
    assert main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(out), "--scales", "32,48",
                 "--iters-per-scale", "3,2", *TINY]) == 0
    assert Image.open(out).size == (48, 48)
    trace = json.loads(out.with_suffix(".json").read_text())
    assert trace["n_fg"] == 4 + 3 and [t["level"] for t in trace["trace"]].count(1) == 3
    out2 = tmp_path / "mixw.png"
    assert main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(out2), "--mix-with",
                 str(S("starry_night")), "--size", "32", "--iters", "2", *TINY]) == 0
    # checkpoints work across the levels of --scales (solve_levels); a finished run removes its checkpoint
    x = tmp_path / "x.png"
    assert main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(x), "--scales", "32,48",
                 "--iters-per-scale", "3,2", "--checkpoint-every", "2", *TINY]) == 0
    assert json.loads(x.with_suffix(".json").read_text())["n_fg"] == 4 + 3
    assert not x.with_suffix(".ckpt.npz").exists() and not list(tmp_path.glob("*.ckpt.npz"))


def test_spatial_cli_label_image(tmp_path, capsys):
    sky = I.load_mask(S("tetons_snake_river_sky")) > 0.5
    lab = np.zeros(sky.shape + (3,), np.uint8)
    lab[sky] = (135, 206, 235)
    lab[~sky] = (34, 139, 34)
    Image.fromarray(lab).save(tmp_path / "labels.png")
    out = tmp_path / "lab.png"
    args = ["stylize", str(S("tetons_snake_river")), str(S("starry_night")), "--content-labels",
            str(tmp_path / "labels.png"), "-o", str(out), "--size", "32", "--iters", "2", *TINY]
    assert main(args + ["--legend", "sky=#87ceeb;ground=#228b22"]) == 0 and out.exists()
    capsys.readouterr()
    assert main(args + ["--overwrite"]) == 2
    assert "--legend" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- daily use

def test_print_every_logs_every_term_and_layer(tmp_path, capsys):
    """--print-every N: one line per N iterations on stdout (not a terminal here) with the loss and its terms; with
    --verbose each layer's share, which add up to the term."""
    out = tmp_path / "p.png"
    assert main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(out), "--size", "32", "--iters", "4",
                 "--print-every", "2", "--verbose", *TINY]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("iter ")]
    assert [ln.split()[1] for ln in lines] == ["2/4", "4/4"]
    trace = json.loads(out.with_suffix(".json").read_text())["trace"]
    for ln, it in zip(lines, (2, 4)):
        words = ln.split()
        vals = {k: float(v) for k, v in zip(words[2::2], words[3::2])}
        for term in ("loss", "content", "style", "tv"):
            assert np.isclose(vals[term], trace[it][term], rtol=1e-3), (term, ln)
        layers = {k: v for k, v in vals.items() if k.startswith("style[")}
        assert len(layers) == 5 and np.isclose(sum(layers.values()), vals["style"], rtol=1e-3)
        assert np.isclose(vals["content[relu4_2]"], vals["content"], rtol=1e-3)


def test_progress_line_compiles_then_estimates():
    """On a terminal: 'compiling ...' first, then the status with rate, time left and memory; once, after the first
    timed chunk, the estimate of the whole run (also printed when not on a terminal)."""
    import io
    import time

    from nst_jax.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream in (Tty(), io.StringIO()):
        p = Progress(100, "stylize", True, memory="1.0 GiB", stream=stream)
        p.update(1, 10.0, 2)
        time.sleep(0.05)
        p.update(11, 5.0, 12)
        p.close()
        text = stream.getvalue()
        assert ("compiling ..." in text) == isinstance(stream, Tty)
        assert text.count("s per iteration: about") == 1 and "for the 89 iterations left" in text
        assert ("memory ~1.0 GiB" in text and "it/s" in text) == isinstance(stream, Tty)


def test_version_and_size_original(tmp_path, capsys):
    import nst_jax

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"nst-jax {nst_jax.__version__} (jax ")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    out = tmp_path / "o.png"
    assert main(["stylize", str(tmp_path / "c.png"), str(S("great_wave")), "-o", str(out), "--size", "original",
                 "--iters", "1", *TINY]) == 0
    assert Image.open(out).size == (56, 40)


def _png16_pixels(path):
    """The pixels of a 16-bit RGB PNG, decoded independently (zlib, filter type 0 rows, as nst-jax writes them)."""
    import struct
    import zlib

    data, pos, idat = path.read_bytes(), 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", data[pos + 8:pos + 18])
        idat += data[pos + 8:pos + 8 + n] if kind == b"IDAT" else b""
        pos += 12 + n
    assert (depth, ctype) == (16, 2)
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    assert not rows[:, 0].any()
    return rows[:, 1:].copy().view(">u2").reshape(h, w, 3).astype(np.uint16)


def test_sixteen_bit_png_and_tiff(tmp_path):
    img = np.random.default_rng(1).uniform(size=(5, 7, 3)).astype(np.float32)
    want = np.round(img.astype(np.float64) * 65535).astype(np.uint16)
    png = I.save_image(tmp_path / "a.png", img, bits=16, metadata={"k": "v"})
    np.testing.assert_array_equal(_png16_pixels(png), want)
    assert I.read_png_metadata(png) == {"k": "v"}
    tif = I.save_image(tmp_path / "a.tif", img, bits=16)
    with Image.open(tif) as im:
        assert im.size == (7, 5) and im.tag_v2[258] == (16, 16, 16)
    raw = tif.read_bytes()
    np.testing.assert_array_equal(np.frombuffer(raw[-5 * 7 * 6:], "<u2").reshape(5, 7, 3), want)
    with pytest.raises(ValueError, match="JPEG holds 8"):
        I.save_image(tmp_path / "a.jpg", img, bits=16)
    out = tmp_path / "o.png"
    assert main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(out), "--size", "32", "--iters",
                 "1", "--bit-depth", "16", *TINY]) == 0
    assert _png16_pixels(out).shape == (32, 32, 3)


def test_settings_record_the_weights_file_and_scales_follow_iters(tmp_path):
    """A weights file is recorded by absolute path and sha256 in every command's settings; coarse-to-fine levels
    follow --iters when --iters-per-scale is not given."""
    import hashlib

    import jax

    from nst_jax import vgg, weights

    w = tmp_path / "w.npz"
    weights.params_to_npz(weights.cache.to_numpy(vgg.init_params(jax.random.PRNGKey(0), "tiny19")), w)
    sha = hashlib.sha256(w.read_bytes()).hexdigest()
    for name, extra in (("one.png", ["--size", "32", "--iters", "2"]), ("pyr.png", ["--scales", "32,48", "--iters",
                                                                                     "2"])):
        out = tmp_path / name
        assert main(["stylize", str(S("blue_marble")), str(S("great_wave")), "-o", str(out), "--weights", str(w),
                     "--no-progress", *extra]) == 0
        meta = I.read_png_metadata(out)
        assert meta["weights_path"] == str(w) and meta["weights_sha256"] == sha, name
    trace = json.loads((tmp_path / "pyr.json").read_text())
    assert trace["settings"]["iters_per_scale"] == [2, 2] and trace["n_fg"] == 3 + 3
    out = tmp_path / "mix.png"
    assert main(["mix-styles", str(S("great_wave")), str(S("starry_night")), "-o", str(out), "--size", "32",
                 "--iters", "1", "--weights", str(w), "--no-progress"]) == 0
    assert I.read_png_metadata(out)["weights_sha256"] == sha


# ---------------------------------------------------------------------------------------------- the README is true

README = __import__("pathlib").Path(__file__).resolve().parent.parent / "README.md"
_INPUT_KEYS = ("content", "style", "region_style", "content_mask", "style_mask", "content_labels", "style_labels",
               "mix_with", "init", "source", "target", "coarse", "fine", "match_colors_to", "file", "checkpoint")


def _readme_commands():
    """Every ``nst-jax ...`` command of the README's bash blocks as argv lists, ``$S`` and ``$(nst-jax weights fetch
    NAME)`` expanded, continuation lines joined, comments dropped."""
    import re
    import shlex

    from nst_jax import weights

    env, out = {}, []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            m = re.fullmatch(r"\s*(\w+)=(\S+)\s*", line)
            if m:
                env[m.group(1)] = m.group(2)
                continue
            line = re.sub(r'"\$\(nst-jax weights fetch ([\w-]+)\)"', lambda k: str(weights.cache.cache_paths(
                k.group(1), weights.cache.cache_dir())[0]), line)
            for name, value in env.items():
                line = line.replace(f"${name}", value)
            lex = shlex.shlex(line, posix=True, punctuation_chars=";&")  # commands joined by &&, ; or & (background)
            lex.whitespace_split = True
            words = []
            for word in list(lex) + [";"]:
                if word not in (";", "&", "&&"):
                    words.append(word)
                    continue
                if words and words[0] == "nst-jax":
                    out.append(words[1:])
                words = []
    return out


def test_readme_commands_parse_and_name_existing_files(tmp_path, monkeypatch):
    """Every command line of the README parses with the real parser, and every input it names exists in a fresh
    clone (the bundled samples) or is written by a command before it."""
    import os

    from nst_jax.cli import build_parser
    from nst_jax.config import INITS

    commands = _readme_commands()
    assert len(commands) >= 20
    monkeypatch.chdir(README.parent)
    made = set()
    for argv in commands:
        args = build_parser().parse_args(argv)
        for key in _INPUT_KEYS:
            values = getattr(args, key, None)
            for v in values if isinstance(values, list) else [values]:
                if not isinstance(v, str) or (key == "init" and v in INITS) or (key == "weights"):
                    continue
                path = v.partition("=")[2] if "=" in v and key in ("region_style", "content_mask", "style_mask") \
                    else v
                if "cache" in path and "nst-jax" in path:
                    continue  # the cached weights: written by 'weights fetch' on the same line
                assert os.path.exists(path) or os.path.normpath(path) in made, (argv, path)
        for item in getattr(args, "grid", None) or []:  # image axes of a sweep: --grid style=A,B
            name, _, values = item.partition("=")
            if name in ("style", "content"):
                assert all(os.path.exists(v) for v in values.split(",")), (argv, item)
        out = getattr(args, "output", None)
        if out:
            made.update(os.path.normpath(p) for p in (out, out[:-4] + ".ckpt.npz", out[:-4] + ".json"))


_CHEAP = ["out.png", "lum.png", "regions.png", "labelled.png", "mixed_style.png", "mixed.png", "wave_recoloured.png",
          "full.png", "long.png"]


def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    """A cheap subset of the README's commands runs as written (tiny network, 32 px, 1 iteration appended)."""
    samples = str(README.parent / "nst_jax" / "samples")
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv in _readme_commands():
        argv = [a.replace("nst_jax/samples", samples) for a in argv]
        if "-o" in argv and argv[argv.index("-o") + 1] in _CHEAP:
            extra = ["--weights", "tiny19", "--size", "32", "--iters", "1", "--no-progress"]
            if argv[0] == "match-color":
                extra = ["--size", "32"]
            assert main(argv + extra) == 0, (argv, capsys.readouterr().err)
            ran.append(argv[argv.index("-o") + 1])
    assert main(["weights", "list"]) == 0
    assert sorted(ran) == sorted(_CHEAP)


def test_readme_python_blocks_run(monkeypatch):
    """The README's Python blocks run as written, with the tiny network for the default weights and small sizes and
    iteration counts substituted."""
    import re

    from nst_jax import problem

    real = problem.resolve_params

    def tiny_for_auto(weights):
        return real("tiny19" if isinstance(weights, str) and weights == "auto" else weights)

    monkeypatch.setattr(problem, "resolve_params", tiny_for_auto)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    for code in blocks:
        code = re.sub(r"\bsize=\d+", "size=32", code)
        code = re.sub(r"\biters=\d+", "iters=1", code)
        code = re.sub(r"scales=\[[\d, ]+\]", "scales=[32, 48]", code)
        code = re.sub(r"iters_per_scale=\[[\d, ]+\]", "iters_per_scale=[1, 1]", code)
        exec(compile(code, "README.md", "exec"), {})
