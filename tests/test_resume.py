"""Checkpoints and resuming: a run killed (SIGKILL) or interrupted (SIGINT) after a checkpoint finishes, once resumed,
with exactly the image and loss trace of an uninterrupted run; a checkpoint of other settings is refused.

The two subprocess tests slow each checkpoint save down by 1 s (a wrapper around ``checkpoint.save_checkpoint``) so
that the signal lands mid-run; everything else is the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from nst_jax import checkpoint as CK
from nst_jax import cli, image, lbfgs
from nst_jax.image import sample_path

ITERS = 12
RUN = ["--weights", "tiny19", "--size", "32", "--iters", str(ITERS), "--no-progress"]


def _args(d: pathlib.Path, out: str, *extra):
    return ["stylize", str(d / "content.jpg"), str(d / "style.jpg"), "-o", str(d / out)] + RUN + list(extra)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    shutil.copy(sample_path("blue_marble"), d / "content.jpg")
    shutil.copy(sample_path("great_wave"), d / "style.jpg")
    return d


@pytest.fixture(scope="module")
def reference(inputs):
    """The uninterrupted run (no checkpoints, default chunks): (image [32, 32, 3], loss trace)."""
    assert cli.main(_args(inputs, "ref.png")) == 0
    trace = json.loads((inputs / "ref.json").read_text())["trace"]
    assert len(trace) == ITERS + 1
    return image.load_image(inputs / "ref.png"), trace


def _untimed(trace):
    """A trace without its solve seconds (timings differ between runs; everything else must not)."""
    return [{k: v for k, v in e.items() if k != "seconds"} for e in trace]


def _assert_same_as_reference(d: pathlib.Path, name: str, reference):
    ref_img, ref_trace = reference
    np.testing.assert_array_equal(image.load_image(d / f"{name}.png"), ref_img)
    got = json.loads((d / f"{name}.json").read_text())["trace"]
    assert _untimed(got) == _untimed(ref_trace)  # every loss, term and f+g count, exactly
    seconds = [e["seconds"] for e in got]
    assert seconds[0] >= 0 and all(b >= a for a, b in zip(seconds, seconds[1:])), seconds  # the clock never runs back


_SLOW_SAVE = """
import sys, time
import nst_jax.checkpoint as CK
real = CK.save_checkpoint
def slow(*a, **k):
    out = real(*a, **k)
    time.sleep(1.0)
    return out
CK.save_checkpoint = slow
from nst_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _start_and_signal(argv, ckpt: pathlib.Path, sig) -> subprocess.CompletedProcess:
    """Start the CLI in a subprocess, send ``sig`` once the first checkpoint exists, return the finished process."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 240, "no checkpoint within 240 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigkill_after_a_checkpoint_then_resume_equals_uninterrupted(inputs, reference, capsys):
    ckpt = inputs / "killed.ckpt.npz"
    done = _start_and_signal(_args(inputs, "killed.png", "--checkpoint-every", "2"), ckpt, signal.SIGKILL)
    assert done.returncode == -signal.SIGKILL
    assert not (inputs / "killed.png").exists()
    saved = CK.load_checkpoint(ckpt)
    assert saved.iteration in (2, 4, 6, 8, 10) and saved.trace_values.shape == (saved.iteration + 1,)
    assert saved.settings["args"]["checkpoint_every"] == 2 and saved.seed == 0
    assert saved.state_names[0] == ".x" and saved.image.shape == (32, 32, 3)
    assert not list(inputs.glob(".killed*.tmp"))  # the atomic writer left no temp file
    # settings come from the checkpoint; the chunks (2 iterations) differ from the reference's (25): must not matter
    assert cli.main(["resume", str(ckpt), "--no-progress"]) == 0, capsys.readouterr().err
    _assert_same_as_reference(inputs, "killed", reference)
    assert not ckpt.exists()  # finished: nothing left to resume


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_image_and_checkpoint_and_resumes(inputs, reference, capsys, sig, status):
    """Ctrl-C and SIGTERM (batch schedulers, ``timeout``) alike: the current image and a checkpoint are saved, no temp
    file is left, the exit status is 128 + the signal, and the resumed run equals the uninterrupted one."""
    name = f"int{status}"
    ckpt = inputs / f"{name}.ckpt.npz"
    argv = _args(inputs, f"{name}.png", "--checkpoint-every", "2")
    done = _start_and_signal(argv, ckpt, sig)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "at iteration" in last and f"{name}.partial.png" in last and "nst-jax resume" in last
    saved = CK.load_checkpoint(ckpt)
    assert 2 <= saved.iteration < ITERS
    # the partial image is the checkpoint's image (8-bit)
    np.testing.assert_allclose(image.load_image(inputs / f"{name}.partial.png"), saved.image, atol=0.5 / 255 + 1e-6)
    assert not (inputs / f"{name}.png").exists() and not list(inputs.glob(f".{name}*"))  # no temp or lock file
    assert cli.main(argv + ["--resume"]) == 0, capsys.readouterr().err
    _assert_same_as_reference(inputs, name, reference)
    assert not ckpt.exists() and not (inputs / f"{name}.partial.png").exists()


_STUCK_SAVE = _SLOW_SAVE.replace("time.sleep(1.0)", "time.sleep(60.0)")


def test_a_second_signal_quits_at_once(inputs, tmp_path):
    """The second Ctrl-C ends the process within seconds even while the main thread is busy (here: 60 s inside the
    checkpoint writer), without a traceback and without leaving temp files."""
    for name in ("content.jpg", "style.jpg"):
        shutil.copy(inputs / name, tmp_path / name)
    ckpt = tmp_path / "q.ckpt.npz"
    proc = subprocess.Popen([sys.executable, "-c", _STUCK_SAVE] + _args(tmp_path, "q.png", "--checkpoint-every", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ckpt.exists():
        assert proc.poll() is None and time.time() - t0 < 240, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    t1 = time.time()
    err = proc.communicate(timeout=30)[1]
    assert time.time() - t1 < 5 and proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and "quit without saving" in err
    assert not list(tmp_path.glob(".q*")) and not (tmp_path / "q.png").exists()


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_during_start_up_prints_no_traceback(inputs, tmp_path, delay):
    """While Python imports JAX, loads weights or compiles, Ctrl-C ends the command with status 130 and one line."""
    proc = subprocess.Popen([sys.executable, "-m", "nst_jax.cli"] + _args(tmp_path, "s.png")[:1] + [
        str(inputs / "content.jpg"), str(inputs / "style.jpg"), "-o", str(tmp_path / "s.png")] + RUN,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode in (0, 130), err  # 0: it had finished already
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    if proc.returncode == 130:
        assert err.strip().splitlines()[-1].startswith("nst-jax: interrupted")
    assert not list(tmp_path.glob(".*"))


_SIGNAL_IN_JAX_IMPORT = """
import os, pathlib, signal, sys
sys.path.insert(0, sys.argv[1])  # a stand-in package named jax whose import receives the signal
from nst_jax.interrupts import InterruptFlag
marker = pathlib.Path(sys.argv[2])
with InterruptFlag(raise_first=True, cleanup=lambda: marker.write_text("cleaned")):
    import jax  # noqa: F401
print("not reached")
"""


def test_a_signal_during_the_import_of_jax_ends_the_process_without_unwinding_it(tmp_path):
    """The class behind rare SIGSEGV / SIGABRT exits of a Ctrl-C at start-up: an exception unwinding through JAX's
    half-run import leaves its C++ runtime half-initialised. A signal that arrives inside an import of a package named
    jax ends the process at once: status 130, one line, the cleanup called, no traceback, nothing after it run."""
    fake = tmp_path / "pkgs" / "jax"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    marker = tmp_path / "cleanup.txt"
    r = subprocess.run([sys.executable, "-c", _SIGNAL_IN_JAX_IMPORT, str(tmp_path / "pkgs"), str(marker)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip() == "nst-jax: interrupted" and "not reached" not in r.stdout
    assert marker.read_text() == "cleaned"


def test_a_signal_elsewhere_at_start_up_still_unwinds(tmp_path):
    """Outside JAX's import (here: inside a package of another name) the first signal raises as before, so
    ``finally`` blocks run; the check looks at package directories, so ``nst_jax`` is not taken for ``jax``."""
    other = tmp_path / "pkgs" / "nst_jaxish"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    code = _SIGNAL_IN_JAX_IMPORT.replace("import jax  # noqa: F401", "import nst_jaxish  # noqa: F401")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "pkgs"), str(tmp_path / "m.txt")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Interrupted: SIGINT" in r.stderr and not (tmp_path / "m.txt").exists()


def test_a_signal_while_the_handlers_are_installed_ends_with_one_line(monkeypatch, capsys):
    """Ctrl-C in the window where ``InterruptFlag.__enter__`` is still setting up (seen as a traceback under load):
    ``main`` returns 130 with one line, and the handlers, wakeup fd and unraisable hook are restored."""
    import threading

    real_start = threading.Thread.start

    def start_then_signal(self):
        real_start(self)
        if self.name == "nst-jax-signals":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs at the next bytecode boundary

    before = signal.getsignal(signal.SIGINT), sys.unraisablehook
    monkeypatch.setattr(threading.Thread, "start", start_then_signal)
    assert cli.main(["stylize", "a.jpg", "b.jpg", "-o", "c.png"]) == 130
    assert capsys.readouterr().err.strip() == "nst-jax: interrupted"
    assert (signal.getsignal(signal.SIGINT), sys.unraisablehook) == before
    assert signal.set_wakeup_fd(-1) == -1


def test_checkpoints_identify_inputs_by_content_and_absolute_path(inputs, reference, tmp_path, monkeypatch, capsys):
    """A run started with relative paths (--init FILE here; every file flag alike) resumes from another folder that
    holds a different file of the same name: the recorded absolute path is used, the content is checked by sha256."""
    run_dir, other = tmp_path / "run", tmp_path / "other"
    run_dir.mkdir()
    other.mkdir()
    for name in ("content.jpg", "style.jpg"):
        shutil.copy(inputs / name, run_dir / name)
    shutil.copy(inputs / "content.jpg", run_dir / "start.jpg")  # --init start.jpg = the content: the reference run
    shutil.copy(inputs / "style.jpg", other / "start.jpg")  # same name, other content
    monkeypatch.chdir(run_dir)
    argv = ["stylize", "content.jpg", "style.jpg", "-o", "o.png", "--init", "start.jpg", "--checkpoint-every", "2"] + RUN
    _interrupted_at(argv, monkeypatch, 4)
    saved = CK.load_checkpoint(run_dir / "o.ckpt.npz")
    assert saved.settings["args"]["init"] == str(run_dir / "start.jpg")
    assert saved.settings["compare"]["init"] == CK.file_sha256(run_dir / "start.jpg")
    monkeypatch.chdir(other)
    capsys.readouterr()
    assert cli.main(["resume", str(run_dir / "o.ckpt.npz"), "--no-progress"]) == 0, capsys.readouterr().err
    _assert_same_as_reference(run_dir, "o", reference)
    assert not (run_dir / "o.ckpt.npz").exists()


def test_every_file_flag_is_recorded_by_content_and_absolute_path(tmp_path, monkeypatch):
    """run_settings finds the files of every flag by value (label images, --mix-with, masks, REGION=FILE, weights
    files, flags added later): sha256 in ``compare``, absolute path in ``args``."""
    import argparse

    from nst_jax.cli.stylize import run_settings

    monkeypatch.chdir(tmp_path)
    for name in ("c.png", "s.png", "lab.png", "mix.png", "m.png", "w.npz", "new.png"):
        (tmp_path / name).write_bytes(name.encode())
    args = argparse.Namespace(content="c.png", style=["s.png"], output="o.png", content_labels="lab.png",
                              style_labels=["lab.png"], mix_with="mix.png", content_mask=["sky=m.png"], style_mask=[],
                              region_style=[], init="content", weights="w.npz", some_future_file_flag="new.png",
                              size=32, func=None, debug=False)
    rec = run_settings(args)
    sha = CK.file_sha256
    for key, value in (("content", "c.png"), ("content_labels", "lab.png"), ("mix_with", "mix.png"),
                       ("weights", "w.npz"), ("some_future_file_flag", "new.png")):
        assert rec["compare"][key] == sha(tmp_path / value) and rec["args"][key] == str(tmp_path / value), key
    assert rec["compare"]["content_mask"] == [f"sky={sha(tmp_path / 'm.png')}"]
    assert rec["args"]["style_labels"] == [str(tmp_path / "lab.png")] and rec["args"]["init"] == "content"
    assert rec["args"]["output"] == str(tmp_path / "o.png") and "output" not in rec["compare"]


def _interrupted_at(argv, monkeypatch, after_iters: int):
    """Run the CLI in-process (relative paths allowed) and stop it once a chunk ends at or after ``after_iters``."""
    from nst_jax import runner

    seen = {"done": 0}
    real_report = runner.Solve._report

    def report(self, done, *args):
        seen["done"] = done
        return real_report(self, done, *args)

    monkeypatch.setattr(runner.Solve, "_report", report)
    monkeypatch.setattr(CK.InterruptFlag, "__call__", lambda self: seen["done"] >= after_iters)
    assert cli.main(argv) == 130
    monkeypatch.setattr(runner.Solve, "_report", real_report)
    monkeypatch.setattr(CK.InterruptFlag, "__call__", lambda self: self.set)


def _interrupted_in_process(d: pathlib.Path, argv, monkeypatch, after_iters: int = 4) -> pathlib.Path:
    """:func:`_interrupted_at`, returning the checkpoint of ``argv``'s output in ``d``."""
    _interrupted_at(argv, monkeypatch, after_iters)
    return d / (pathlib.Path(argv[4]).stem + ".ckpt.npz")


def _snapshot(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_checkpoint_with_other_settings_is_refused(inputs, reference, tmp_path, monkeypatch, capsys):
    for name in ("content.jpg", "style.jpg"):
        shutil.copy(inputs / name, tmp_path / name)
    argv = _args(tmp_path, "o.png", "--checkpoint-every", "2")
    ckpt = _interrupted_in_process(tmp_path, argv, monkeypatch)
    assert CK.load_checkpoint(ckpt).iteration == 4
    capsys.readouterr()
    before = _snapshot(tmp_path)
    for extra, word in ((["--style-weight", "10"], "style_weight"), (["--seed", "3"], "seed"),
                        (["--history", "7"], "history"), (["--weights", "tiny16"], "weights")):
        assert cli.main(argv + ["--resume"] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"settings: {word} was" in err and "--overwrite" in err, err
    # an input that changed on disk (same path) is caught by its sha256
    (tmp_path / "style.jpg").write_bytes((inputs / "content.jpg").read_bytes())
    assert cli.main(argv + ["--resume"]) == 2
    assert "settings: style was" in capsys.readouterr().err
    (tmp_path / "style.jpg").write_bytes((inputs / "style.jpg").read_bytes())
    assert _snapshot(tmp_path) == before
    # a damaged checkpoint: one line, no traceback
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    assert cli.main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unreadable" in err and "--overwrite" in err
    # --overwrite starts again (and the result is the uninterrupted one)
    assert cli.main(argv + ["--overwrite"]) == 0
    np.testing.assert_array_equal(image.load_image(tmp_path / "o.png"), reference[0])


def test_more_iterations_on_resume_and_not_fewer(inputs, reference, tmp_path, monkeypatch, capsys):
    """Resume with --iters changed: more continues (first 12 iterations as the reference), fewer than done is
    refused."""
    for name in ("content.jpg", "style.jpg"):
        shutil.copy(inputs / name, tmp_path / name)
    argv = _args(tmp_path, "m.png", "--checkpoint-every", "2")
    ckpt = _interrupted_in_process(tmp_path, argv, monkeypatch, after_iters=6)
    assert CK.load_checkpoint(ckpt).iteration == 6
    assert cli.main(["resume", str(ckpt), "--iters", "4"]) == 2
    assert "--iters 6 or more" in capsys.readouterr().err
    assert cli.main(["resume", str(ckpt), "--iters", "14", "--no-progress"]) == 0
    trace = json.loads((tmp_path / "m.json").read_text())["trace"]
    assert len(trace) == 15 and _untimed(trace[:ITERS + 1]) == _untimed(reference[1])


def test_checkpoint_file_round_trip(tmp_path):
    """save/load keep every solver-state leaf (values, dtypes, order, names) and the metadata; no pickles."""
    state = lbfgs.LBFGSState(*(np.arange(6, dtype=np.float32).reshape(2, 3) + k for k in range(3)),
                             np.ones((4, 2, 3), np.float32), np.zeros((4, 2, 3), np.float32),
                             np.array([1.0, 2.0, 0, 0], np.float32), np.array(2, np.int32), np.array(2, np.int32),
                             np.array(5, np.int32), np.array(6, np.int32), np.array(0.5, np.float32),
                             np.array(3.0, np.float32))
    p = CK.save_checkpoint(tmp_path / "a.ckpt.npz", image=np.full((2, 3, 1), 0.5), state=state, iteration=5,
                           n_fg=6, values=np.arange(6.0), nfevs=np.arange(1, 7), settings={"a": [1, "b"]}, seed=7)
    ck = CK.load_checkpoint(p)
    assert ck.state_names == [f".{f}" for f in lbfgs.LBFGSState._fields if f != "aux"]  # aux None: no leaves
    leaves = jax.tree_util.tree_leaves(state)
    assert len(ck.state_leaves) == len(leaves)
    for a, b in zip(ck.state_leaves, leaves):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert (ck.iteration, ck.n_fg, ck.seed, ck.settings) == (5, 6, 7, {"a": [1, "b"]})
    with np.load(p, allow_pickle=False) as z:
        assert str(z["format"]) == CK.FORMAT
    assert CK.checkpoint_path("x/out.png") == pathlib.Path("x/out.ckpt.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an nst-jax checkpoint"):
        CK.load_checkpoint(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="not found"):
        CK.load_checkpoint(tmp_path / "none.ckpt.npz")
    with pytest.raises(ValueError, match=r"seed was 1, now 2 \(and 1 more: size\)"):
        CK.compare_settings({"seed": 1, "size": 32, "x": 0}, {"seed": 2, "size": 64, "x": 0})
    CK.compare_settings({"seed": 1, "iters": 3}, {"seed": 1, "iters": 9}, ignore=["iters"])
