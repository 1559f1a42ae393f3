"""Multi-resolution warm start (nst_jax.warmstart, transfer.solve_levels): schedules, the hand-off between levels,
``warm_start="off"`` equal to the plain solve, checkpoints and resume across levels equal to an uninterrupted run,
colour, spatial and freeze-mask control at every level (tiny19, 64 px runs with coarse levels down to 16 px)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import checkpoint as CK
from nst_jax import cli, objective, pyramid, warmstart
from nst_jax import image as I
from nst_jax.config import SettingError, SolveOptions
from nst_jax.problem import initial_image, prepare
from nst_jax.image import sample_path as S
from nst_jax.transfer import LevelsResult, Result, solve_problem, stylize
from synthetic import blobs, stripes

SOLVE = dict(history=5, chunk=4, progress=False)
ITERS = 8  # the 64 px schedule below: 16 px x 4, 32 px x 2, 64 px x 8


@pytest.fixture
def small_levels(monkeypatch):
    """Coarse levels down to 16 px (the library's minimum is 64), so warm starts run at test sizes."""
    monkeypatch.setattr(warmstart, "MIN_COARSE_SIDE", 16)
    monkeypatch.setattr(warmstart, "MIN_COARSE_SHORT", 16)






@pytest.fixture(scope="module")
def images():
    return {"content": blobs(64, 64, 1), "style": stripes(64, 64, 2)}


def _untimed(trace):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in trace]


# --------------------------------------------------------------------------------------------------- schedule

def test_schedule_levels_sizes_and_iterations():
    L = warmstart.Level
    assert warmstart.schedule((192, 256), 500) == [L(64, 100), L(128, 50), L(None, 500)]  # capped
    assert warmstart.schedule((256, 192), 40) == [L(64, 20), L(128, 10), L(None, 40)]  # 1/2 and 1/4 of iters
    # a coarse level whose longest side is below 64 px, or whose shortest is below 32 px, is dropped
    assert warmstart.schedule((96, 128), 100) == [L(64, 25), L(None, 100)]
    assert warmstart.schedule((100, 256), 100) == [L(128, 25), L(None, 100)]  # 1/4: 25x64 px, too thin
    assert warmstart.schedule((64, 100), 100) == [L(None, 100)]
    assert warmstart.schedule((192, 256), 1) == [L(None, 1)]  # too few iterations for a coarse level
    assert warmstart.schedule((192, 256), 300, "off") == [L(None, 300)]
    with pytest.raises(ValueError, match="warm_start"):
        warmstart.schedule((192, 256), 300, "on")
    with pytest.raises(SettingError, match="warm_start must be one of auto, off"):
        SolveOptions(warm_start="yes")


# --------------------------------------------------------------------------------------------------- hand-off

def test_detail_handoff_adds_the_coarse_change_to_the_fine_initial_image(tiny_params, images):
    coarse = prepare(images["content"], images["style"], weights=tiny_params, size=32)
    fine = prepare(images["content"], images["style"], weights=tiny_params, size=64)
    c0, f0 = initial_image(coarse, "content"), initial_image(fine, "content")
    # an unchanged coarse level hands on the fine initial image exactly (its detail kept)
    np.testing.assert_array_equal(warmstart.detail_handoff(fine, c0, coarse, "content", 0), f0)
    # a uniform change of 0.1 moves every fine pixel by 0.1, within [0, 1]
    got = warmstart.detail_handoff(fine, c0 + 0.1, coarse, "content", 0)
    np.testing.assert_allclose(got, np.clip(f0 + 0.1, 0, 1), atol=1e-5)
    # any change: the fine initial image plus the change resized (a NumPy transcription of the rule)
    raw = np.clip(c0 + 0.3 * np.sin(np.arange(32 * 32 * 3).reshape(32, 32, 3)), 0, 1).astype(np.float32)
    want = np.clip(f0 + I.resize(raw - c0, (64, 64), clip=False), 0, 1)
    np.testing.assert_allclose(warmstart.detail_handoff(fine, raw, coarse, "content", 0), want, atol=1e-6)
    # frozen pixels keep the fine initial values
    mask = np.zeros((64, 64), np.float32)
    mask[:, :20] = 1
    ffine = prepare(images["content"], images["style"], weights=tiny_params, size=64, freeze_mask=mask)
    out = warmstart.detail_handoff(ffine, raw, coarse, "content", 0)
    np.testing.assert_array_equal(out[:, :20], f0[:, :20])
    assert not np.allclose(out[:, 20:], f0[:, 20:])


# --------------------------------------------------------------------------------------------------- runs

def test_warm_start_off_is_the_plain_solve(tiny_params, images):
    plain = solve_problem(prepare(images["content"], images["style"], weights=tiny_params, size=64), iters=ITERS,
                          **SOLVE)
    for mode in ("off", "auto"):  # "auto" at 64 px: no coarse level fits (64 px is the smallest), the plain solve
        r = stylize(images["content"], images["style"], weights=tiny_params, size=64, iters=ITERS, warm_start=mode,
                    **SOLVE)
        assert type(r) is Result and type(plain) is Result
        np.testing.assert_array_equal(r.image, plain.image)
        assert _untimed(r.loss_trace) == _untimed(plain.loss_trace) and r.settings == plain.settings


def test_warm_start_levels_trace_and_handoff(tiny_params, images, small_levels):
    r = stylize(images["content"], images["style"], weights=tiny_params, size=64, iters=ITERS, warm_start="auto",
                **SOLVE)
    assert isinstance(r, LevelsResult)
    assert [lv["shape"] for lv in r.settings["levels"]] == [[16, 16], [32, 32], [64, 64]]
    assert [lv["iters"] for lv in r.settings["levels"]] == [4, 2, ITERS]
    assert r.settings["warm_start"] == {"mode": "auto", "levels": [[16, 4], [32, 2]]} and r.settings["iters"] == ITERS
    assert r.image.shape == (64, 64, 3) and np.array_equal(r.image, r.levels[-1].image)
    # the trace: every level, each entry marked, iterations / f+g / seconds cumulative
    assert [e["level"] for e in r.loss_trace] == [0] * 5 + [1] * 3 + [2] * (ITERS + 1)
    assert [e["iter"] for e in r.loss_trace] == list(range(len(r.loss_trace)))
    assert [e["fg"] for e in r.loss_trace] == list(range(1, len(r.loss_trace) + 1))
    assert r.n_fg == sum(lv.n_fg for lv in r.levels) == 5 + 3 + ITERS + 1
    seconds = [e["seconds"] for e in r.loss_trace]
    assert all(b >= a for a, b in zip(seconds, seconds[1:])) and seconds[-1] <= r.run_seconds + 1e-3
    assert r.loss_trace[-1]["seconds"] > r.levels[-1].loss_trace[-1]["seconds"]  # the coarse levels' time counts
    # level k starts from the content at its size plus level k-1's change, resized
    probs = [prepare(images["content"], images["style"], weights=tiny_params, size=s) for s in (16, 32, 64)]
    np.testing.assert_array_equal(r.inits[0], probs[0].content_in)
    for k in (1, 2):
        change = r.levels[k - 1].image - probs[k - 1].content_in
        want = np.clip(probs[k].content_in + I.resize(change, probs[k].content_in.shape[:2], clip=False), 0, 1)
        np.testing.assert_allclose(r.inits[k], want, atol=1e-6)
    # each level's first loss is its own problem's loss at its initial image
    for k, p in enumerate(probs):
        direct = float(objective.total_loss(jnp.asarray(r.inits[k]), p.params, p.targets, p.weights, p.cfg))
        assert r.levels[k].loss_trace[0]["loss"] == pytest.approx(direct, rel=1e-5)
        assert r.levels[k].loss_trace[-1]["loss"] < r.levels[k].loss_trace[0]["loss"]


def _interrupt_at(shape, chunks: int):
    """A ``stop`` / ``on_chunk`` pair that stops a run after ``chunks`` chunk ends of its level of ``shape``."""
    seen = {"n": 0}

    def on_chunk(done, x, state, trace):
        seen["n"] += tuple(np.shape(x)[:2]) == shape

    return (lambda: seen["n"] >= chunks), on_chunk


def _assert_same_run(r, ref):
    assert not r.interrupted
    np.testing.assert_array_equal(r.image, ref.image)
    assert _untimed(r.loss_trace) == _untimed(ref.loss_trace)  # every loss, term, f+g and level mark
    for a, b in zip(r.levels, ref.levels):
        np.testing.assert_array_equal(a.image, b.image)
    for a, b in zip(r.inits, ref.inits):
        np.testing.assert_array_equal(a, b)
    seconds = [e["seconds"] for e in r.loss_trace]
    assert all(b >= a for a, b in zip(seconds, seconds[1:])), seconds  # the clock never runs back


@pytest.mark.parametrize("level, chunks", [(0, 1), (1, 1), (2, 2)])
def test_checkpoint_and_resume_across_levels_equal_an_uninterrupted_run(tiny_params, images, small_levels, tmp_path,
                                                                        level, chunks):
    kw = dict(weights=tiny_params, size=64, iters=ITERS, warm_start="auto", **SOLVE)
    ref = stylize(images["content"], images["style"], **kw)
    path = tmp_path / "run.ckpt.npz"
    stop, watch = _interrupt_at([(16, 16), (32, 32), (64, 64)][level], chunks)
    cut = stylize(images["content"], images["style"], checkpoint=path, checkpoint_every=2, stop=stop, on_chunk=watch,
                  checkpoint_settings={"run": "test"}, **kw)
    assert cut.interrupted and path.exists() and len(cut.levels) == level + 1
    ck = CK.load_checkpoint(path)
    assert ck.level == level and len(ck.finished) == level and ck.settings["run"] == "test"
    assert ck.settings["warm_levels"] == [[16, 4], [32, 2]] and 0 < ck.iteration < [4, 2, ITERS][level]
    assert [f["raw"].shape for f in ck.finished] == [(16, 16, 3), (32, 32, 3)][:level]
    r = stylize(images["content"], images["style"], checkpoint=path, checkpoint_every=2, resume=ck, **kw)
    _assert_same_run(r, ref)


def test_pyramid_checkpoint_and_resume_across_levels(tiny_params, images, tmp_path):
    kw = dict(scales=[32, 64], iters_per_scale=[4, 6], weights=tiny_params, **SOLVE)
    ref = pyramid.stylize_pyramid(images["content"], images["style"], **kw)
    path = tmp_path / "pyr.ckpt.npz"
    stop, watch = _interrupt_at((64, 64), 1)
    cut = pyramid.stylize_pyramid(images["content"], images["style"], checkpoint=path, checkpoint_every=2, stop=stop,
                                  on_chunk=watch, **kw)
    ck = CK.load_checkpoint(path)
    assert cut.interrupted and ck.level == 1 and ck.finished[0]["n_fg"] == 5
    r = pyramid.stylize_pyramid(images["content"], images["style"], checkpoint=path, checkpoint_every=2, resume=ck,
                                **kw)
    _assert_same_run(r, ref)
    assert r.settings["iters_per_scale"] == [4, 6]


def test_warm_start_keeps_colour_freeze_and_spatial_control(tiny_params, images, small_levels):
    from nst_jax import color as C

    kw = dict(weights=tiny_params, size=64, iters=ITERS, warm_start="auto", **SOLVE)
    lum = stylize(images["content"], images["style"], color="luminance", **kw)
    assert [x.shape for x in lum.inits] == [(16, 16, 1), (32, 32, 1), (64, 64, 1)]
    iq_out = np.asarray(C.rgb_to_yiq(lum.image))[..., 1:]
    iq_content = np.asarray(C.rgb_to_yiq(images["content"]))[..., 1:]
    assert np.abs(iq_out - iq_content).mean() < 0.02
    # a freeze mask: the frozen pixels come out exactly as the content at full size
    mask = np.zeros((64, 64), np.float32)
    mask[:, :24] = 1
    frozen = stylize(images["content"], images["style"], freeze_mask=mask, **kw)
    np.testing.assert_array_equal(frozen.image[:, :24], images["content"][:, :24])
    assert np.abs(frozen.image[:, 24:] - images["content"][:, 24:]).max() > 0.01
    # spatial control: every level solves the guided problem at its size
    top = np.zeros((64, 64), np.float32)
    top[:32] = 1
    spatial = dict(mode="gram", content_masks={"top": top, "bottom": 1 - top}, style_masks=[None, None],
                   region_to_style={"top": 0, "bottom": 1})
    styles = [images["style"], blobs(64, 64, 5)]
    r = stylize(images["content"], styles, spatial=spatial, **kw)
    for k, side in enumerate((16, 32, 64)):
        p = prepare(images["content"], styles, weights=tiny_params, size=side, spatial=spatial)
        assert p.region_names == ("top", "bottom")
        direct = float(objective.total_loss(jnp.asarray(r.inits[k]), p.params, p.targets, p.weights, p.cfg))
        assert r.levels[k].loss_trace[0]["loss"] == pytest.approx(direct, rel=1e-5)


def test_cli_warm_start_writes_the_levels_trace(tmp_path, capsys, small_levels):
    """``--warm-start auto``: the JSON trace holds every level's entries (level marks, cumulative f+g and seconds)
    and the schedule; ``off`` (the default) one level; a bad value is a one-line usage error."""
    base = ["stylize", str(S("blue_marble")), str(S("great_wave")), "--size", "128", "--iters", "6", "--history", "5",
            "--weights", "tiny19", "--no-progress"]
    out = tmp_path / "warm.png"
    assert cli.main(base + ["-o", str(out), "--warm-start", "auto"]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["settings"]["warm_start"] == {"mode": "auto", "levels": [[32, 3], [64, 2]]}
    assert sorted({e["level"] for e in data["trace"]}) == [0, 1, 2] and data["n_fg"] == len(data["trace"])
    assert [e["fg"] for e in data["trace"]] == list(range(1, data["n_fg"] + 1))
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(data["trace"], data["trace"][1:]))
    assert I.load_image(out).shape[:2] == (128, 128)
    plain = tmp_path / "plain.png"
    assert cli.main(base + ["-o", str(plain)]) == 0
    data = json.loads(plain.with_suffix(".json").read_text())
    assert "level" not in data["trace"][0] and data["n_fg"] == 7
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(base + ["-o", str(tmp_path / "bad.png"), "--warm-start", "on"])
    assert exc.value.code == 2 and "--warm-start" in capsys.readouterr().err
