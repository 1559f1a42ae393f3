"""Colour and spatial control through stylize and sweep (the wiring; the maths is tested in test_color/test_guidance)."""

import numpy as np
import pytest

from nst_jax import color as C
from nst_jax import image as I
from nst_jax.config import SPATIAL_MODES
from nst_jax.sweeps import sweep
from nst_jax.transfer import stylize

S = I.sample_path
SIZE = 32


def _spatial(mode):
    return dict(mode=mode, content_masks={"sky": S("tetons_snake_river_sky"), "ground": S("tetons_snake_river_nosky")},
                style_masks=[None, None], region_to_style={"sky": 0, "ground": 1}, propagation="simple")


@pytest.mark.parametrize("mode", SPATIAL_MODES)
def test_spatial_modes_run_in_sweeps(tiny_params, mode):
    sw = sweep(S("tetons_snake_river"), [S("starry_night"), S("great_wave")], [1e-2, 1.0], weights=tiny_params,
               size=SIZE, iters=4, progress=False, history=4, spatial=_spatial(mode))
    assert sw.images.shape[0] == 2 and np.isfinite(sw.images).all()
    for r in sw.results:
        assert r.loss_trace[-1]["loss"] < r.loss_trace[0]["loss"]
        assert r.settings["spatial"]["mode"] == mode


def test_spatial_single_run_equals_sweep_member(tiny_params):
    kw = dict(weights=tiny_params, size=SIZE, iters=4, progress=False, history=4, spatial=_spatial("gram"),
              content_weight=1.0)
    single = stylize(S("tetons_snake_river"), [S("starry_night"), S("great_wave")], style_weight=1.0, **kw)
    sw = sweep(S("tetons_snake_river"), [S("starry_night"), S("great_wave")], [1e-2, 1.0], **kw)
    np.testing.assert_allclose(sw.results[1].image, single.image, atol=2e-4)


def test_spatial_region_without_style_is_an_error(tiny_params):
    sp = _spatial("gram")
    sp["region_to_style"] = {"sky": 0}
    sp["style_masks"] = [None]
    with pytest.raises(ValueError):
        stylize(S("tetons_snake_river"), [S("starry_night")], weights=tiny_params, size=SIZE, iters=1,
                progress=False, spatial=sp)


@pytest.mark.parametrize("color", ["luminance", "original"])
def test_colour_modes_keep_content_chrominance_in_sweeps(tiny_params, color):
    content = I.load_image(S("blue_marble"), size=SIZE)
    sw = sweep(content, S("starry_night"), [1e-3, 1e-1], weights=tiny_params, size=SIZE, iters=3, progress=False,
               history=4, color=color)
    iq_c = np.asarray(C.rgb_to_yiq(content))[..., 1:]
    for img in sw.images:
        yiq = np.asarray(C.rgb_to_yiq(img))
        inside = (yiq[..., 0] > 0.05) & (yiq[..., 0] < 0.95)  # where clipping to [0, 1] did not bite
        np.testing.assert_allclose(yiq[..., 1:][inside], iq_c[inside], atol=2e-3)


def test_match_style_colours_change_what_the_network_sees(tiny_params):
    r = stylize(S("blue_marble"), S("starry_night"), weights=tiny_params, size=SIZE, iters=2, progress=False,
                history=4, color="match-style", match_mode="sym")
    plain = stylize(S("blue_marble"), S("starry_night"), weights=tiny_params, size=SIZE, iters=2, progress=False,
                    history=4)
    assert r.loss_trace[0]["loss"] != pytest.approx(plain.loss_trace[0]["loss"])
    assert r.settings["color"] == "match-style" and r.settings["match_mode"] == "sym"
    with pytest.raises(ValueError, match="colour mode"):
        stylize(S("blue_marble"), S("starry_night"), weights=tiny_params, size=SIZE, iters=1, progress=False,
                color="sepia")


def test_label_image_equals_masks(tiny_params, tmp_path):
    """A colour-coded label image with a legend gives the same transfer as one mask per region."""
    from PIL import Image

    sky = I.load_mask(S("tetons_snake_river_sky")) > 0.5
    lab = np.zeros(sky.shape + (3,), np.uint8)
    lab[sky] = (135, 206, 235)
    lab[~sky] = (34, 139, 34)
    Image.fromarray(lab).save(tmp_path / "labels.png")
    kw = dict(weights=tiny_params, size=SIZE, iters=2, progress=False, history=4)
    by_masks = stylize(S("tetons_snake_river"), [S("starry_night"), S("great_wave")], spatial=dict(
        _spatial("gram"), content_masks={"sky": S("tetons_snake_river_sky"), "ground": S("tetons_snake_river_nosky")}),
        **kw)
    by_labels = stylize(S("tetons_snake_river"), [S("starry_night"), S("great_wave")], spatial=dict(
        mode="gram", content_labels=str(tmp_path / "labels.png"), legend="sky=#87ceeb;ground=#228b22",
        style_masks=[None, None], region_to_style={"sky": 0, "ground": 1}), **kw)
    np.testing.assert_allclose(by_labels.loss_trace[0]["loss"], by_masks.loss_trace[0]["loss"], rtol=0.05)
    assert np.isfinite(by_labels.image).all()
