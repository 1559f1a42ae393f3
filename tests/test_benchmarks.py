"""benchmarks/run_all.py: its FLOP model against XLA's own count, its peak table, its markdown, and a ``--quick`` run
end to end in a subprocess (slow: it compiles several programs; a persistent XLA cache under pytest's cache folder
makes reruns fast)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from nst_jax import losses, vgg

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import run_all as R  # noqa: E402

STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT = ("relu4_2",)
NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def _xla_flops(fn, *args) -> float:
    ca = jax.jit(fn).lower(*args).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca["flops"])


def test_forward_flops_small_case_by_hand():
    c1 = vgg.layer_channels("tiny19")["conv1_1"]
    # one 3x3 conv 3 -> C1 on 16x16 (2 FLOPs per multiply-add, zero padding counted) + the relu1_1 Gram
    want = 2 * 9 * 3 * c1 * 16 * 16 + 2 * 16 * 16 * c1 ** 2
    assert R.forward_flops("tiny19", (16, 16), ("relu1_1",), ()) == want


@pytest.mark.parametrize("arch,size", [("tiny19", 64), ("tiny16", 40)])
def test_flop_model_matches_xla_cost_analysis(arch, size):
    """XLA counts only in-image taps of the padded convs, so its count is a little below ours; the gradient w.r.t. the
    image costs ~2x the forward pass (FG_FACTOR), not 3x."""
    params = vgg.init_params(jax.random.PRNGKey(0), arch)

    def fwd(x):
        f = vgg.features(params, x, STYLE + CONTENT)
        return sum(jnp.sum(losses.gram(f[n])) for n in STYLE) + jnp.sum(f["relu4_2"])

    x = jnp.zeros((size, size, 3), jnp.float32)
    ours = R.forward_flops(arch, (size, size), STYLE, CONTENT)
    xla_fwd = _xla_flops(fwd, x)
    xla_fg = _xla_flops(jax.value_and_grad(fwd), x)
    assert 0.85 * ours <= xla_fwd <= 1.01 * ours
    # (+ elementwise work XLA also counts: the max pools' argmax and select-based gradients weigh most on the
    # tiny networks, up to ~0.2 of the ratio)
    assert abs(xla_fg / xla_fwd - R.FG_FACTOR) < 0.25


def test_flops_scale_with_area_and_stop_at_the_deepest_layer():
    a = R.forward_flops("vgg19", (64, 64), STYLE, CONTENT)
    b = R.forward_flops("vgg19", (128, 128), STYLE, CONTENT)
    assert b == pytest.approx(4 * a, rel=1e-12)  # all sizes stay even through the 4 pools
    shallow = R.forward_flops("vgg19", (64, 64), ("relu1_1",), ())
    assert shallow < a / 10


def test_peak_lookup(monkeypatch):
    assert R.peak_tflops(123.0, bf16=False) == (123.0, "--peak-tflops")

    class Dev:
        platform = "gpu"
        device_kind = "NVIDIA H100 80GB HBM3"

    monkeypatch.setattr(R.jax, "devices", lambda: [Dev()])
    peak, label = R.peak_tflops(None, bf16=False)
    assert (peak, label) == (494.7, "NVIDIA H100 SXM TF32 dense peak")
    assert R.peak_tflops(None, bf16=True)[0] == 989.4
    Dev.device_kind = "NVIDIA H100 PCIe"
    assert R.peak_tflops(None, bf16=False)[0] == 378.0
    Dev.device_kind = "NVIDIA A100-SXM4-40GB"
    with jax.default_matmul_precision("float32"):
        assert R.peak_tflops(None, bf16=False) == (19.5, "NVIDIA A100 FP32 dense peak")
    Dev.platform, Dev.device_kind = "cpu", "cpu"
    peak, label = R.peak_tflops(None, bf16=False)
    assert peak is None and "--peak-tflops" in label


def test_md_table_round_trip():
    rows = [("f+g time", "tiny19, 32x32", "1.5", "ms", "a | b")]
    text = "\n".join(["# x", "## Summary", ""] + R.md_table(R.RESULT_HEADER, rows))
    parsed = R._parse_table(text, "## Summary")
    assert parsed == [list(rows[0])]
    assert R._parse_table(text, "## Missing") == []


def test_bad_skip_is_a_usage_error():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--skip", "speed,gpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown --skip entries ['gpu']" in r.stderr


def _table(lines, heading):
    """(header cells, data rows) of the first table after ``heading``; asserts the separator line."""
    i = lines.index(heading)
    block = []
    for line in lines[i + 1:]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            break
    assert len(block) >= 3, f"table under {heading!r} has no data rows"
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
    header, sep, data = cells[0], cells[1], cells[2:]
    assert all(re.fullmatch(r":?-{3,}:?", c) for c in sep) and len(sep) == len(header)
    assert all(len(r) == len(header) for r in data)
    return header, data


@pytest.mark.slow
def test_quick_run_writes_a_well_formed_report(tmp_path, request):
    out = tmp_path / "report.md"
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(request.config.cache.mkdir("nst-jax-bench-xla-cache")))
    argv = ["--quick", "--remat-sizes", "32", "--out", str(out)]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), *argv], capture_output=True, text=True,
                       timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert r.stdout == text
    lines = text.splitlines()
    assert lines[0] == "# nst-jax benchmarks"

    header, env_rows = _table(lines, "# nst-jax benchmarks")
    assert header == ["item", "value"]
    env_map = dict(env_rows)
    assert env_map["device"].startswith(f"{jax.devices()[0].platform}: ")
    assert env_map["jax / jaxlib"].startswith(jax.__version__)
    assert re.match(r"\d{4}-\d{2}-\d{2}T", env_map["date"])
    assert env_map["CPU"] and "cores" in env_map["CPU"]

    header, rows = _table(lines, "## Results")
    assert header == list(R.RESULT_HEADER)
    for row in rows:
        assert NUMBER.match(row[2]), f"value is not a number: {row}"
        assert float(row[2]) >= 0 and row[3]
    kinds = {row[0] for row in rows}
    assert {"f+g time", "f+g throughput"} <= kinds
    fg = next(row for row in rows if row[0] == "f+g time")
    assert fg[1] == "tiny19, 32x32" and 0 < float(fg[2]) < 10_000
    assert any(row[0] == "f+g time" and row[1] == "tiny19, 32x32, remat" for row in rows)
    assert {"peak memory (estimate)", "peak memory (measured)"} <= kinds
    assert sum(row[0] == "peak memory (measured)" for row in rows) == 2  # remat off and on
    assert any(k.startswith("(c) sweep") for k in kinds)  # bench_torch's sweep row (needs no PyTorch)
    try:
        import torch  # noqa: F401

        assert any(k.startswith("(b) time to loss") for k in kinds)
        # (a) interleaved: Solve's own chunks timed between the peer's f+g, --rounds of them (3 in --quick)
        assert "(a) f+g/s, interleaved" in kinds
        assert re.search(r"one Solve run; at each of \d+ chunk ends 5 PyTorch f\+g", text)
    except ImportError:
        pass
    assert "## Notes" in lines


def test_device_check_tiny_runs_every_section(tmp_path):
    """``device_check.py --tiny``: the accelerator check's code path on CPU; every section runs (torch and the real
    weights may be absent: then their rows say "not run" / "skipped"), no section fails, the JSON is written."""
    out = tmp_path / "dc.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--tiny", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    sections = {row[0].split(":")[0] for row in data["rows"]}
    assert {"device", "features vs CPU", "f+g", "PyTorch f+g", "default", "time to quality", "sweep",
            "memory"} <= sections, sections
    assert not [n for n in data["notes"] if "FAILED" in n or "not run (budget" in n], data["notes"]
    defaults = [row for row in data["rows"] if row[0].startswith("default:")]
    assert len(defaults) == 5 and all(float(row[2]) > 0 for row in defaults)
    # CPU: same numbers (the tiny network's layers are too narrow for the Winograd form, so conv changes nothing)
    assert all("rel. diff 0.00e+00" in row[4] for row in defaults if "precision" not in row[0])


def test_many_pair_list_and_time_to_target_read_from_the_last_level():
    """``bench_torch --pairs``: 'all' is every photo x painting at --size plus two pairs at 512 px; the time to the
    target is read from the first trace entry at or below it *in the last level* (a coarse level's loss is of a
    smaller problem and may be lower), with the f+g each level spent up to there."""
    import bench_torch as B
    import level_costs as LC

    pairs = B.pair_list("all", 256)
    at256 = [p for p in pairs if p[2] == 256]
    assert len(at256) >= 6 and len(set(at256)) == len(at256)
    assert [p for p in pairs if p[2] == 512] == [(c, s, 512) for c, s in B.PAIRS_512] and len(B.PAIRS_512) == 2
    assert B.pair_list("blue_marble+great_wave, a+b", 128) == [("blue_marble", "great_wave", 128), ("a", "b", 128)]

    trace = [dict(fg=1, seconds=0.1, loss=50.0, level=0), dict(fg=6, seconds=0.3, loss=5.0, level=0),
             dict(fg=7, seconds=0.5, loss=90.0, level=1), dict(fg=12, seconds=1.5, loss=20.0, level=1),
             dict(fg=17, seconds=2.5, loss=9.0, level=1)]
    assert B.time_to_target_from_trace(trace, 10.0) == (17, 2.5, 4)  # not the coarse level's 5.0 at fg 6
    assert B.time_to_target_from_trace(trace, 20.0) == (12, 1.5, 3)
    fg, s, j = B.time_to_target_from_trace(trace, 1.0)
    assert j is None and fg != fg and s != s  # NaN: never reached
    assert LC.fg_per_level(trace, 3) == [6, 6] and LC.fg_per_level(trace[:2], 1) == [6]
    flat = [dict(fg=1, seconds=0.1, loss=3.0), dict(fg=9, seconds=0.9, loss=1.0)]
    assert B.time_to_target_from_trace(flat, 2.0) == (9, 0.9, 1) and LC.fg_per_level(flat, 1) == [9]
    costs = {(16, 16): {"cost": 0.1}, (32, 32): {"cost": 0.8}}
    assert LC.priced([6, 11], [(16, 16), (32, 32)], costs) == pytest.approx(6 * 0.1 + 11 * 0.8)


def test_conv_forms_tiny_times_three_forms_of_one_loss(tmp_path):
    """benchmarks/conv_forms.py --tiny: one row, the three forms timed with their temporaries, the prepared
    Winograd loss equal to XLA's to rounding (and not bit-equal: the Winograd form really ran)."""
    import conv_forms

    out = tmp_path / "forms.md"
    assert conv_forms.main(["--tiny", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| blue_marble")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "48x48" and len(cells) == 2 + len(conv_forms.FORMS) + 1
    for cell in cells[2:-1]:
        assert float(re.fullmatch(r"\d+ ms, ([\d.]+) MiB", cell).group(1)) > 0
    assert 0 < float(cells[-1]) < 1e-5


def test_same_iters_parses_settings_and_compares_final_losses(tmp_path):
    """benchmarks/same_iters.py: key=value settings; on tiny19 (no layer takes the Winograd form) conv=lax and the
    default compute the same iterates, so both final losses are equal."""
    import same_iters

    import bench_torch

    assert same_iters.parse_setting("conv=lax:style_weight=1e4:history=20") == {
        "conv": "lax", "style_weight": 1e4, "history": 20}
    assert same_iters.parse_setting("") == {}
    with pytest.raises(ValueError, match="key=value"):
        same_iters.parse_setting("conv")
    # bench_torch's solver variants parse their fields the same way
    assert bench_torch.variant_settings("jaxopt-lbfgs:first_step=0.05:max_linesearch=10:bounds=clamp:precondition=no"
                                        ) == {"name": "jaxopt-lbfgs", "first_step": 0.05, "max_linesearch": 10,
                                              "bounds": "clamp", "precondition": False}
    assert bench_torch.variant_settings("lbfgs:precondition=1") == {"name": "lbfgs", "precondition": True}
    assert bench_torch.variant_settings("default") == {}
    with pytest.raises(ValueError, match="unknown variant"):
        bench_torch.variant_settings("bfgs:lr=1")
    out = tmp_path / "same.md"
    assert same_iters.main(["--tiny", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| blue_marble")]
    assert len(rows) == 2
    for line in rows:
        _, a, b, rel = [c.strip() for c in line.strip("|").split("|")]
        assert a == b and rel == "+0.0%", line
