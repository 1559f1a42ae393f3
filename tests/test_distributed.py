"""Many devices, many processes: two processes on 127.0.0.1 with two CPU devices each run one sweep and write the
same members as one process with four devices; bad cluster settings are one-line errors; a process that dies
mid-sweep loses no finished member and the sweep resumes."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from nst_jax import distributed
from nst_jax.config import SettingError
from nst_jax.image import load_image, sample_path

ROOT = pathlib.Path(__file__).resolve().parents[1]
SWEEP = ["sweep", str(sample_path("blue_marble")), str(sample_path("great_wave")), "--grid", "ratio=1e-3,1e-1",
         "--grid", "tv-weight=0,1", "--weights", "tiny19", "--size", "32", "--iters", "3", "--history", "3",
         "--no-progress"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return env


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "nst_jax.cli", *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait(procs, timeout=300):
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
        out.append((p.returncode, o, e))
    return out


def _members(d: pathlib.Path):
    report = json.loads((d / "sweep.json").read_text())
    images = np.stack([load_image(d / m["file"]) for m in report["members"]])
    return report, images


def _two_processes(outdir, extra=(), timeout=300):
    port = _port()
    cluster = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--devices", "cpu:2",
               "--init-timeout", "60"]
    procs = [_cli(SWEEP + ["-o", str(outdir), *cluster, "--process-id", str(i), *extra]) for i in range(2)]
    return _wait(procs, timeout)


def test_two_processes_write_the_members_of_one_four_device_sweep(tmp_path):
    one = tmp_path / "one"
    [(rc, _, err)] = _wait([_cli(SWEEP + ["-o", str(one), "--devices", "cpu:4"])])
    assert rc == 0, err[-2000:]
    two = tmp_path / "two"
    results = _two_processes(two)
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    ref_report, ref = _members(one)
    report, got = _members(two)
    np.testing.assert_array_equal(got, ref)  # the same computation, member for member (8-bit PNGs)
    assert [m["trace"][-1]["loss"] for m in report["members"]] == [m["trace"][-1]["loss"]
                                                                     for m in ref_report["members"]]
    assert len(list(two.glob("*.png"))) == 4 + 1  # each member written once (by its owner) and the grid


def test_bad_cluster_settings_are_one_line_errors(tmp_path):
    base = SWEEP + ["-o", str(tmp_path / "x"), "--devices", "cpu:2"]
    cases = [(["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "0 to 1"),
             (["--coordinator", "127.0.0.1:1234", "--num-processes", "2"], "go together"),
             (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT")]
    for extra, words in cases:
        [(rc, out, err)] = _wait([_cli(base + extra)], timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and lines[-1].startswith("nst-jax: error: ") and words in lines[-1], (extra, err[-1500:])
        assert "Traceback" not in err
    t = time.perf_counter()  # process 1 alone: its coordinator never comes
    [(rc, _, err)] = _wait([_cli(base + ["--coordinator", f"127.0.0.1:{_port()}", "--num-processes", "2",
                                         "--process-id", "1", "--init-timeout", "3"])], timeout=120)
    assert rc == 2 and "could not be reached within 3 s" in err.splitlines()[-1], err[-1500:]
    assert time.perf_counter() - t < 60  # a bounded wait, never a hang
    assert not (tmp_path / "x").exists()


DIE_AFTER_FIRST_WAVE = textwrap.dedent("""
    import os, sys
    from nst_jax.cli import sweep as S
    real = S._writer
    def writer(*a):
        on_wave = real(*a)
        def wrapped(idx, results, per):
            on_wave(idx, results, per)
            if "--process-id" in sys.argv and sys.argv[sys.argv.index("--process-id") + 1] == "1":
                os._exit(9)  # dies once its first wave's members are written
        return wrapped
    S._writer = writer
    from nst_jax.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_process_dying_mid_sweep_loses_no_finished_member_and_the_sweep_resumes(tmp_path):
    out = tmp_path / "die"
    port = _port()
    cluster = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--devices", "cpu:2",
               "--init-timeout", "10", "--members-per-device", "1"]
    grid = SWEEP + ["--grid", "seed=0,1", "--init", "noise"]  # 8 members, 1 per device: 2 waves on 4 devices
    procs = [subprocess.Popen([sys.executable, "-c", DIE_AFTER_FIRST_WAVE, *grid, "-o", str(out), *cluster,
                               "--process-id", str(i)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    results = _wait(procs, timeout=240)
    assert results[1][0] == 9, results[1][2][-2000:]
    assert results[0][0] != 0  # the survivor cannot finish without its peer
    written = sorted(p.name for p in out.glob("0*.png"))
    assert written and len(written) < 8, written  # the first wave's members survive
    port = _port()
    cluster[1] = f"127.0.0.1:{port}"
    procs = [_cli(grid + ["-o", str(out), *cluster, "--process-id", str(i), "--resume"]) for i in range(2)]
    results = _wait(procs, timeout=300)
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    report, images = _members(out)
    assert len(report["members"]) == 8 and images.shape[0] == 8


def test_cluster_config_from_the_environment_and_devices_spec():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:4321", "NST_JAX_NUM_PROCESSES": "4", "NST_JAX_PROCESS_ID": "3"}
    cfg = distributed.ClusterConfig.from_env(env)
    assert (cfg.coordinator, cfg.num_processes, cfg.process_id, cfg.multi) == ("10.0.0.1:4321", 4, 3, True)
    assert distributed.ClusterConfig.from_env({}).multi is False
    assert distributed.ClusterConfig.from_env({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "2"}).auto
    with pytest.raises(SettingError, match="process_id"):
        distributed.ClusterConfig.from_env(dict(env, NST_JAX_PROCESS_ID="4"))
    for bad in ("tpu", "cpu:0", "gpu:a"):
        with pytest.raises(SettingError, match="devices"):
            distributed.select_devices(bad)
