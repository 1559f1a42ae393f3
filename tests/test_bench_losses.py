"""benchmarks/bench_losses.py: one measured row (tiny network) and the table it prints."""

from __future__ import annotations

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_losses as B  # noqa: E402


@pytest.mark.slow
def test_a_measured_row_and_the_table(tiny_params):
    r = B.measure(tiny_params, "blue_marble", "great_wave", "w2", size=32, iters=2)
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert r["kind"] == "w2" and r["fg"] == 3 and r["fg_per_s"] > 0 and list(r["w2"]) == layers
    assert all(r["w2"][n] >= 0 and r["start"][n] > 0 for n in layers)
    assert sum(r["w2"].values()) < sum(r["start"].values())  # 2 steps already move towards the style
    fake = dict(r, kind="gram", w2={n: 0.5 * r["start"][n] for n in layers})
    lines = B.table([("a + b", r), ("a + b", fake)])
    assert len(lines) == 2 + 1 + 2  # header, rule, the pair's start row, one row per kind
    assert lines[2].startswith("| a + b | start |") and lines[2].endswith("| 1 |")
    assert lines[4].startswith("| a + b | gram | 3 |") and lines[4].endswith("| 0.500 |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
