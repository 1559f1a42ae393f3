"""What a sweep leaves on disk: each member (PNG + JSON) written as one unit, never over an input, never beside
another run writing the same folder, refused before the solve when the folder has no room; ``--resume`` replaces
only what a stopped run left and keeps every finished member as it is (tiny network, 32 px, 2 iterations)."""

from __future__ import annotations

import collections
import errno
import json
import os
import shutil

import pytest

from nst_jax import image as I
from nst_jax.cli import main
from nst_jax.cli import sweep as SW
from nst_jax.files import OutputLock

C, ST = str(I.sample_path("blue_marble")), str(I.sample_path("great_wave"))
TINY = ["--weights", "tiny19", "--no-progress", "--size", "32", "--iters", "2"]
M0, M1 = "0000_ratio-0.001", "0001_ratio-0.1"


def _sweep(out, *extra):
    return main(["sweep", C, ST, "--grid", "ratio=1e-3,0.1", "-o", str(out), *TINY, *extra])


def _state(d):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.iterdir())}


def test_a_resumed_sweep_replaces_only_what_the_stopped_run_left(tmp_path, capsys):
    d = tmp_path / "sw"
    assert _sweep(d) == 0, capsys.readouterr().err
    for name in ("sweep.json", "grid.png", M1 + ".json"):  # stopped between member 1's PNG and its JSON
        (d / name).unlink()
    kept = _state(d)[M0 + ".png"], _state(d)[M0 + ".json"]
    capsys.readouterr()
    assert _sweep(d) == 2  # without --resume the leftover is an existing output
    assert "exists" in capsys.readouterr().err
    assert _sweep(d, "--resume") == 0, capsys.readouterr().err
    assert "1 members from the stopped run" in capsys.readouterr().out
    assert (_state(d)[M0 + ".png"], _state(d)[M0 + ".json"]) == kept  # a finished member is never rewritten
    report = json.loads((d / "sweep.json").read_text())
    assert [m["file"] for m in report["members"]] == [M0 + ".png", M1 + ".png"]
    assert json.loads((d / (M1 + ".json")).read_text())["index"] == 1
    assert sorted(p.name for p in d.iterdir()) == sorted([M0 + ".png", M0 + ".json", M1 + ".png", M1 + ".json",
                                                          "grid.png", "sweep.json"])  # no lock or temp file
    assert _sweep(d, "--resume") == 0 and "nothing to run" in capsys.readouterr().out
    (d / "sweep.json").unlink()  # stopped after the last member, before the summary: written without a solve
    assert _sweep(d, "--resume") == 0
    assert "already written" in capsys.readouterr().out and (d / "sweep.json").is_file()


def test_a_sweep_never_writes_over_its_inputs(tmp_path, capsys):
    """An input of any flag (a style image, a mask, a hard link to the content) named like a member's PNG or JSON is
    refused with --overwrite and with --resume, before anything runs."""
    d = tmp_path / "sw"
    d.mkdir()
    shutil.copy(ST, d / (M0 + ".png"))
    shutil.copy(I.sample_path("tetons_snake_river_sky"), d / (M1 + ".json"))  # an image named .json: still an input
    os.link(shutil.copy(C, tmp_path / "c.jpg"), d / (M1 + ".png"))
    before = _state(d)
    cases = [(["sweep", str(tmp_path / "c.jpg"), str(d / (M0 + ".png"))], M0 + ".png"),
             (["sweep", C, "--content-mask", f"all={d / (M1 + '.json')}", "--style", f"all={ST}"], M1 + ".json"),
             (["sweep", str(tmp_path / "c.jpg"), ST], M1 + ".png")]
    for argv, name in cases:
        for flag in ("--overwrite", "--resume"):
            assert main(argv + ["--grid", "ratio=1e-3,0.1", "-o", str(d), flag, *TINY]) == 2
            err = capsys.readouterr().err.strip()
            assert "\n" not in err and "one of the inputs" in err and name in err, (argv, flag, err)
    assert _state(d) == before


def test_a_folder_another_run_is_writing_is_refused(tmp_path, capsys):
    d = tmp_path / "sw"
    with OutputLock(d, "output folder"):
        assert _sweep(d) == 2
        assert "another nst-jax run is writing output folder" in capsys.readouterr().err
        assert _sweep(d, "--resume") == 2  # a resume too: it may replace files only while it alone holds the folder
    assert not d.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_member_write_leaves_neither_file(tmp_path, capsys, monkeypatch):
    """The member's JSON cannot be written (ENOSPC): its PNG is not left either, no temp file stays, the error names
    the member's file; the resume then runs the member."""
    real = SW.json_writer

    def full(obj):
        def write(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write if "index" in obj else real(obj)

    monkeypatch.setattr(SW, "json_writer", full)
    d = tmp_path / "sw"
    assert main(["sweep", C, ST, "--grid", "ratio=1e-3", "-o", str(d), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{M0}.json: No space left on device; free some space" in err, err
    assert list(d.iterdir()) == []


def test_a_folder_without_room_is_refused_before_the_solve(tmp_path, capsys, monkeypatch):
    import nst_jax.files as F

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(F.shutil, "disk_usage", lambda p: usage(10 ** 9, 10 ** 9 - 1000, 1000))
    monkeypatch.setattr("nst_jax.sweeps.sweep", lambda *a, **k: pytest.fail("the solve ran"))
    assert _sweep(tmp_path / "sw") == 2
    err = capsys.readouterr().err.strip()
    assert "MiB free" in err and "choose another folder" in err and not (tmp_path / "sw").exists()
