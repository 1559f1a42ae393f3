"""benchmarks/bench_grid.py: its ``--tiny`` run end to end (a table row per K with numbers), and the function
``benchmarks/device_check.py`` imports."""

from __future__ import annotations

import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_grid as B  # noqa: E402

KEYS = {"k", "size", "iters", "grid_compile_s", "grid_run_s", "grid_wall_s", "seq_compile_s", "seq_run_s",
        "seq_wall_s", "solve_ratio", "wall_ratio", "waves", "final_loss_max_rel_diff"}


@pytest.mark.slow
def test_tiny_run_prints_a_row_per_k(capsys):
    assert B.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("# Grid vs sequential: tiny19") and any(ln.startswith("- device: cpu") for ln in lines)
    rows = [ln for ln in lines if re.match(r"^\| \d+ \|", ln)]
    assert [r.split("|")[1].strip() for r in rows] == ["2", "4"]
    for r in rows:
        cells = [c.strip().strip("*").rstrip("x") for c in r.strip("|").split("|")]
        assert all(float(c) >= 0 for c in cells), r
        assert float(cells[-1]) < 1e-4  # the grid's members end where the single runs do


def test_grid_vs_sequential_returns_every_number(tiny_params):
    from nst_jax import image as I

    r = B.grid_vs_sequential(tiny_params, I.sample_path("blue_marble"), I.sample_path("great_wave"), 2, 32, 2,
                             history=3)
    assert set(r) == KEYS and r["k"] == 2 and r["waves"] == 1
    assert r["grid_run_s"] > 0 and r["seq_run_s"] > 0 and r["solve_ratio"] == pytest.approx(
        r["seq_run_s"] / r["grid_run_s"])
    assert r["final_loss_max_rel_diff"] < 1e-4
