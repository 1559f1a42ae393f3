"""Write the example notebooks (``python notebooks/make_notebooks.py``): one source of truth, outputs stripped.

Every notebook opens with an "Open in Colab" badge, then a setup cell (installs nst-jax when run in Colab, imports the
library), then a parameter cell that switches to a seconds-long smoke setting when the ``NST_SMALL`` environment
variable is set (``tests/test_notebooks.py`` runs them that way). Cell ids are fixed so regenerating is byte-stable;
``tests/test_notebooks.py`` checks the committed files equal what this script writes.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Dict, List, Tuple

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent
REPO = "nst-jax/nst-jax"
INSTALL = 'nst-jax @ git+https://github.com/nst-jax/nst-jax'

Cell = Tuple[str, str]  # ("md" | "code", source)


def colab_url(name: str) -> str:
    return f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb"


def badge(name: str, title: str, intro: str) -> Cell:
    return ("md", f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(name)})\n"
                  f"\n# {title}\n\n{intro}")


def setup(imports: str) -> Cell:
    return ("code", f'''import os
import sys

if "google.colab" in sys.modules:  # Colab: install nst-jax from GitHub (Colab's own JAX is kept)
    %pip install -q "{INSTALL}"

%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import jax

{imports.strip()}

print("JAX", jax.__version__, "on", jax.devices()[0].device_kind)''')


PARAMS_MD = ("md", "## Parameters\n\nSet the environment variable `NST_SMALL=1` for a seconds-long smoke run "
                   "(32 px, 3 iterations, a tiny random network: the pictures are then noise, the code path is the "
                   "same). On a Colab GPU the real settings take about a minute per image.")


def params(real_size: int, real_iters: int, extra: str = "") -> Cell:
    return ("code", f'''SMALL = os.environ.get("NST_SMALL", "") not in ("", "0")  # smoke-test mode (set by the tests)
SIZE = 32 if SMALL else {real_size}              # longest side of the output, pixels
ITERS = 3 if SMALL else {real_iters}             # L-BFGS iterations (one loss+gradient evaluation each)
WEIGHTS = "tiny19" if SMALL else "auto"  # VGG weights: "auto" = real pretrained VGG (downloaded once, cached)
PROGRESS = not SMALL                     # show a progress bar while optimising
{extra.strip()}
params, info = load_weights(WEIGHTS)     # load once, pass the tree to every call
print(info.description)''')


SHOW = ("code", '''def show(images, titles, size=3.5):
    """Show images side by side with matplotlib."""
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size), squeeze=False)
    for ax, im, title in zip(axes[0], images, titles):
        ax.imshow(np.clip(im, 0, 1), cmap="gray" if np.ndim(im) == 2 else None)
        ax.set_title(title)
        ax.axis("off")
    plt.show()


def plot_traces(traces, labels, title="loss"):
    """Total loss (log scale) against loss+gradient evaluations, one curve per run."""
    plt.figure(figsize=(6, 3.5))
    for trace, label in zip(traces, labels):
        plt.semilogy([t["fg"] for t in trace], [t["loss"] for t in trace], label=label)
    plt.xlabel("f+g evaluations")
    plt.ylabel("loss")
    plt.title(title)
    plt.grid(alpha=0.3)
    plt.legend()
    plt.show()''')


# --------------------------------------------------------------------------------------------------- quickstart

QUICKSTART: List[Cell] = [
    badge("quickstart", "nst-jax quickstart",
          "Optimisation-based neural style transfer (Gatys et al. 2016, *Image Style Transfer Using Convolutional "
          "Neural Networks*): start from the content photo and run L-BFGS on the pixels so that the VGG features "
          "match the content photo (deep layer relu4_2) and the Gram matrices match the painting (relu1_1 ... "
          "relu5_1). nst-jax compiles the whole solve once with JAX."),
    setup('''from nst_jax.figures import labelled_grid
from nst_jax.image import load_image, sample_path, save_image
from nst_jax.transfer import stylize
from nst_jax.weights import load_weights'''),
    PARAMS_MD,
    params(384, 300, '''CONTENT = sample_path("blue_marble")   # any image path or [H, W, 3] array in [0, 1]
STYLE = sample_path("great_wave")       # the painting whose texture is transferred
STYLE_WEIGHT = 1e3                      # beta (content weight alpha = 1): larger = more style'''),
    SHOW,
    ("md", "## The inputs"),
    ("code", '''content = load_image(CONTENT, size=SIZE)
style = load_image(STYLE, size=SIZE)
show([content, style], ["content", "style"])'''),
    ("md", "## Stylise\n\n`stylize` returns a `Result`: the image, the loss trace, the number of loss+gradient "
           "evaluations and the compile / run seconds (a second call at the same size compiles nothing)."),
    ("code", '''r = stylize(CONTENT, STYLE, size=SIZE, iters=ITERS, weights=params, style_weight=STYLE_WEIGHT, progress=PROGRESS)
print(f"{r.n_fg} f+g, compile {r.compile_seconds:.1f} s, run {r.run_seconds:.1f} s")
print({k: round(v, 4) for k, v in r.terms.items()})
show([content, style, r.image], ["content", "style", "result"])'''),
    ("md", "## Loss curve"),
    ("code", '''plot_traces([r.loss_trace], ["gatys preset"])'''),
    ("md", "## Other initialisations\n\n`init` picks the starting image: the content photo (default, fastest), "
           "white noise (the 2016 paper's choice) or the style image."),
    ("code", '''runs = {init: stylize(CONTENT, STYLE, size=SIZE, iters=ITERS, init=init, weights=params, style_weight=STYLE_WEIGHT,
                      progress=PROGRESS) for init in ("content", "noise", "style")}
grid = labelled_grid([r_.image for r_ in runs.values()], [f"init={k}" for k in runs])
plt.figure(figsize=(10, 4)); plt.imshow(grid); plt.axis("off"); plt.show()
plot_traces([r_.loss_trace for r_ in runs.values()], list(runs))'''),
    ("md", "## Save\n\nThe PNG carries the settings as text metadata (`nst_jax.image.read_png_metadata`)."),
    ("code", '''path = save_image("quickstart_result.png", r.image, metadata={"nst-jax": r.settings})
print("wrote", path)'''),
]


# --------------------------------------------------------------------------------------------------- sweep

SWEEP: List[Cell] = [
    badge("alpha_beta_sweep", "The content/style trade-off: an α/β sweep in one solve, and any grid",
          "Figure 4 of Gatys et al. 2016 shows the same content and style for several ratios α/β of content weight to "
          "style weight. `nst_jax.sweep` runs all K ratios as **one** vmapped, compiled L-BFGS solve (member "
          "k: content weight α, style weight α / ratio_k); here it is compared with K separate `stylize` runs. "
          "Then a two-axis grid (paintings × α/β) and the paper's Figure 3 (style layers × α/β), each one "
          "compiled solve too."),
    setup('''from nst_jax.figures import LAYER_SETS, format_ratio, labelled_grid, sweep_pages
from nst_jax.image import load_image, sample_path
from nst_jax.sweeps import sweep
from nst_jax.transfer import stylize
from nst_jax.weights import load_weights'''),
    PARAMS_MD,
    params(384, 300, '''RATIOS = [1e-3, 1.0] if SMALL else [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # alpha/beta per member: small = more style
ALPHA = 1.0                                 # content weight alpha shared by every member
CONTENT = sample_path("blue_marble")
STYLE = sample_path("starry_night")
PAINTINGS = [sample_path("starry_night"), sample_path("great_wave")]  # the two-axis grid's rows ...
GRID_RATIOS = [1e-4, 1e-2]                                            # ... and columns (alpha/beta)
LAYER_ROWS = LAYER_SETS[:2] if SMALL else LAYER_SETS  # Fig. 3 rows: style on relu1_1, up to relu2_1, ..., relu5_1
LAYER_RATIOS = [1e-4, 1e-2] if SMALL else [1e-5, 1e-4, 1e-3, 1e-2]  # Fig. 3 columns (alpha/beta)'''),
    SHOW,
    ("code", '''content = load_image(CONTENT, size=SIZE)
style = load_image(STYLE, size=SIZE)
show([content, style], ["content", "style"])'''),
    ("md", "## One vmapped solve for all ratios"),
    ("code", '''sw = sweep(CONTENT, STYLE, {"ratio": RATIOS}, size=SIZE, iters=ITERS, weights=params, content_weight=ALPHA, progress=PROGRESS)
K = len(RATIOS)
print(f"K={K} members: compile {sw.compile_seconds:.1f} s, run {sw.run_seconds:.2f} s "
      f"({sw.run_seconds / K:.3f} s per member)")'''),
    ("md", "## The labelled grid (the paper's Figure 4 layout)"),
    ("code", '''grid = labelled_grid(list(sw.images), [format_ratio(r) for r in RATIOS], columns=3)
plt.figure(figsize=(12, 8.5)); plt.imshow(grid); plt.axis("off"); plt.show()'''),
    ("md", "## Loss curves per member\n\nThe totals are not comparable across members (β differs); the style term "
           "falls further as α/β decreases."),
    ("code", '''plot_traces([m.loss_trace for m in sw.results], [format_ratio(r) for r in RATIOS], "sweep members")
for r, m in zip(RATIOS, sw.results):
    print(f"{format_ratio(r)}: content {m.terms['content']:.4g}, style {m.terms['style']:.4g}")'''),
    ("md", "## The same ratios as K sequential `stylize` runs\n\nSame iterations and weights; the first run "
           "compiles, the others reuse the program. The final losses agree with the sweep's members."),
    ("code", '''seq = [stylize(CONTENT, STYLE, size=SIZE, iters=ITERS, weights=params, content_weight=ALPHA, style_weight=ALPHA / r,
               progress=PROGRESS) for r in RATIOS]
seq_run = sum(s.run_seconds for s in seq)
print(f"sequential: compile {seq[0].compile_seconds:.1f} s, run {seq_run:.2f} s ({seq_run / K:.3f} s per member)")
print(f"sweep:      compile {sw.compile_seconds:.1f} s, run {sw.run_seconds:.2f} s ({sw.run_seconds / K:.3f} s per member)")
print(f"sweep / sequential run time: {sw.run_seconds / seq_run:.2f}x")
rel = max(abs(a.terms["total"] - b.terms["total"]) / abs(b.terms["total"]) for a, b in zip(sw.results, seq))
print(f"largest relative difference of the final losses: {rel:.2g}")
plt.figure(figsize=(5, 3))
plt.bar(["sweep (vmapped)", "sequential"], [sw.run_seconds / K, seq_run / K])
plt.ylabel("run seconds per member"); plt.show()'''),
    ("md", "## Any grid as one program: paintings × α/β\n\n`sweep`'s `grid` takes any traced setting as an axis "
           "(`nst_jax.grid.AXES`: weights, layer sets, blends, seeds, style and content images). Here two paintings "
           "(an image axis: each member gets its own Gram targets) against two ratios: the Cartesian product, 4 "
           "members, one compiled solve. `sweep_pages` lays them out as a table, rows by the first axis, columns by "
           "the second (further axes would give further pages)."),
    ("code", '''sw2 = sweep(CONTENT, None, {"style": PAINTINGS, "ratio": GRID_RATIOS}, size=SIZE, iters=ITERS, weights=params,
            progress=PROGRESS)
print(f"grid {sw2.shape}: {len(sw2.results)} members, compile {sw2.compile_seconds:.1f} s, run {sw2.run_seconds:.2f} s")
print("member 1:", sw2.members[1])
(_, table), = sweep_pages(sw2)
plt.figure(figsize=(8, 8)); plt.imshow(table); plt.axis("off"); plt.show()'''),
    ("md", "## Figure 3 of the paper: which layers carry the style\n\nRows: the style matched on relu1_1, then on "
           "relu1_1 and relu2_1, ..., up to relu5_1; columns: α/β. A `style_layers` axis is one program over the "
           "union of the layers in which each member weighs the layers outside its set by zero, so the whole figure "
           "is one compiled solve (`nst-jax figure layers` writes it from the command line)."),
    ("code", '''fig3 = sweep(CONTENT, STYLE, {"style_layers": LAYER_ROWS, "ratio": LAYER_RATIOS}, size=SIZE, iters=ITERS,
             weights=params, progress=PROGRESS)
print(f"grid {fig3.shape}: {len(fig3.results)} members, compile {fig3.compile_seconds:.1f} s, run {fig3.run_seconds:.2f} s")
(_, table), = sweep_pages(fig3)
plt.figure(figsize=(12, 3 * len(LAYER_ROWS))); plt.imshow(table); plt.axis("off"); plt.show()
plot_traces([m.loss_trace for m in fig3.results[::len(LAYER_RATIOS)]],
            [f"style up to {m['style_layers'][-1]}" for m in fig3.members[::len(LAYER_RATIOS)]],
            f"Fig. 3 rows at {format_ratio(LAYER_RATIOS[0])}")'''),
]


# --------------------------------------------------------------------------------------------------- spatial

SPATIAL: List[Cell] = [
    badge("spatial_control", "Spatial control: different styles for different regions",
          "Gatys et al. 2017, *Controlling Perceptual Factors in Neural Style Transfer*, Section 4: region masks "
          "(guidance channels) split content and style images; region r of the content is stylised with the "
          "statistics of region r of a style image. Here: the sky and the land of a greyscale photo of the Tetons."),
    setup('''from nst_jax.figures import labelled_grid
from nst_jax.image import load_image, load_mask, sample_path
from nst_jax.transfer import stylize
from nst_jax.weights import load_weights'''),
    PARAMS_MD,
    params(384, 300, '''MODE = "gram"           # guided loss: "gram" (guided Gram matrices), "sums", "sums+gram", "stacked"
PROPAGATION = "simple"  # masks to layer resolution: "simple" (average pooling), "inside", "all" (receptive fields)
ERODE = 0               # extra erosion (>0) / dilation (<0) of the propagated masks, feature-map pixels
GLOBAL = False          # add an all-ones guide channel (helps units straddling a region boundary)
CONTENT = sample_path("tetons_snake_river")
CONTENT_MASKS = {r: sample_path(f"tetons_snake_river_{r}") for r in ("sky", "nosky")}
STYLE = sample_path("wheat_field_with_cypresses")
STYLE_MASKS = {r: sample_path(f"wheat_field_with_cypresses_{r}") for r in ("sky", "nosky")}'''),
    SHOW,
    ("md", "## Inputs and masks (white = inside the region)"),
    ("code", '''content = load_image(CONTENT, size=SIZE)
style = load_image(STYLE, size=SIZE)
show([content, load_mask(CONTENT_MASKS["sky"]), style, load_mask(STYLE_MASKS["sky"])],
     ["content", "content: sky", "style", "style: sky"])'''),
    ("md", "## Without and with spatial control\n\nWithout control the painting's sky texture leaks onto the "
           "mountains and vice versa; with guided Gram matrices each region takes its own statistics. Masks are "
           "given at the images' original sizes (paths), the library resizes them with the images."),
    ("code", '''spatial = dict(mode=MODE, content_masks=CONTENT_MASKS, style_masks=[STYLE_MASKS],
               propagation=PROPAGATION, erode=ERODE, global_channel=GLOBAL)
plain = stylize(CONTENT, STYLE, size=SIZE, iters=ITERS, weights=params, progress=PROGRESS)
guided = stylize(CONTENT, STYLE, size=SIZE, iters=ITERS, weights=params, spatial=spatial, progress=PROGRESS)
show([content, plain.image, guided.image], ["content", "no spatial control", f"guided ({MODE})"])'''),
    ("md", "## Two paintings, one per region\n\nA style image without masks lends its whole picture to the regions "
           "assigned to it by `region_to_style`: the sky from *The Starry Night*, the land from *The Great Wave*."),
    ("code", '''two = dict(mode=MODE, content_masks=CONTENT_MASKS, style_masks=[None, None],
           region_to_style={"sky": 0, "nosky": 1}, propagation=PROPAGATION, erode=ERODE, global_channel=GLOBAL)
mixed = stylize(CONTENT, [sample_path("starry_night"), sample_path("great_wave")], size=SIZE, iters=ITERS,
                weights=params, spatial=two, progress=PROGRESS)
grid = labelled_grid([content, plain.image, guided.image, mixed.image],
                     ["content", "no control", "guided, one style", "sky: Starry Night, land: Great Wave"])
plt.figure(figsize=(14, 4.5)); plt.imshow(grid); plt.axis("off"); plt.show()'''),
    ("md", "## Loss curves"),
    ("code", '''plot_traces([plain.loss_trace, guided.loss_trace, mixed.loss_trace], ["no control", "guided", "two styles"])'''),
]


# --------------------------------------------------------------------------------------------------- colour

COLOR: List[Cell] = [
    badge("color_control", "Colour control: keep the photo's colours",
          "Gatys et al. 2017, Section 5: style transfer also copies the painting's colours. Two fixes: transfer "
          "**luminance only** (stylise the Y channel in YIQ, keep the photo's I and Q) or **match the colour "
          "histogram** of the style to the content before the transfer (mean and covariance of RGB)."),
    setup('''from nst_jax.color import COLOR_MODES, match_color
from nst_jax.figures import labelled_grid
from nst_jax.image import load_image, sample_path
from nst_jax.transfer import stylize
from nst_jax.weights import load_weights'''),
    PARAMS_MD,
    params(384, 300, '''MATCH_MODE = "pca"       # colour-histogram matching transform: "pca", "chol" or "sym" (matrix square root)
CONTENT = sample_path("blue_marble")
STYLE = sample_path("starry_night")'''),
    SHOW,
    ("md", "## Colour histogram matching, by itself\n\n`match_color(source, target)` gives the source an affine "
           "colour transform so its RGB mean and covariance equal the target's."),
    ("code", '''content = load_image(CONTENT, size=SIZE)
style = load_image(STYLE, size=SIZE)
recoloured = np.asarray(match_color(style, content, MATCH_MODE)[0])
show([content, style, recoloured], ["content", "style", "style, colours of the content"])'''),
    ("md", "## Every colour mode\n\n`none`: plain transfer; `luminance`: luminance-only transfer; `match-style`: "
           "recolour the style to the content first; `match-content`: the other way round; `original`: plain "
           "transfer, then put the content's colours back (YIQ)."),
    ("code", '''runs = {mode: stylize(CONTENT, STYLE, size=SIZE, iters=ITERS, weights=params, color=mode, match_mode=MATCH_MODE,
                      progress=PROGRESS) for mode in COLOR_MODES}
grid = labelled_grid([content] + [r.image for r in runs.values()], ["content"] + [f"color={m}" for m in runs],
                     columns=3)
plt.figure(figsize=(12, 8.5)); plt.imshow(grid); plt.axis("off"); plt.show()'''),
    ("md", "## Loss curves\n\nThe luminance run optimises one channel against one-channel targets, so its loss is on "
           "another scale."),
    ("code", '''plot_traces([r.loss_trace for r in runs.values()], list(runs), "colour modes")'''),
]


# --------------------------------------------------------------------------------------------------- scale

SCALE: List[Cell] = [
    badge("scale_control", "Scale control: coarse-to-fine and mixing styles across scales",
          "Gatys et al. 2017, Section 6. (1) **Coarse-to-fine**: stylise at a low resolution first, then upsample and "
          "refine at the high resolution, so the large-scale structure comes from a network whose receptive fields "
          "cover a large part of the image. (2) **Style mixing**: a new style image with the coarse structure of one "
          "painting and the fine texture of another (paper Figure 5)."),
    setup('''from nst_jax.figures import labelled_grid
from nst_jax.image import load_image, sample_path
from nst_jax.pyramid import mix_styles, scale_schedule, stylize_pyramid
from nst_jax.transfer import stylize
from nst_jax.weights import load_weights'''),
    PARAMS_MD,
    params(256, 300, '''SCALES = [SIZE, 2 * SIZE]  # longest side of each level, coarse to fine (the output is 2 * SIZE)
LEVEL_ITERS = [3, 3] if SMALL else [300, 150]  # iterations at the coarse and the fine level
FINE_LAYERS = None     # style mixing: layers matched to the fine style (None: relu1_1..relu2_1 below ~724^2 px)
CONTENT = sample_path("blue_marble")
STYLE = sample_path("starry_night")
COARSE_STYLE = sample_path("starry_night")  # style mixing: large-scale structure from this painting ...
FINE_STYLE = sample_path("great_wave")      # ... fine texture from this one'''),
    SHOW,
    ("md", "## The levels\n\n`scale_schedule` gives each level's (H, W) (explicit `scales`, or `size` alone for "
           "`size / 2` then `size`, or `auto_scales=True` for steps of `factor` down to `min_size`)."),
    ("code", '''content = load_image(CONTENT)
levels = scale_schedule(content.shape[:2], scales=SCALES)
print("levels (H, W):", levels)'''),
    ("md", "## Coarse-to-fine against a direct solve at the full size\n\nSame total iteration budget for both."),
    ("code", '''pyr = stylize_pyramid(CONTENT, STYLE, scales=SCALES, iters_per_scale=LEVEL_ITERS, weights=params,
                      progress=PROGRESS)
direct = stylize(CONTENT, STYLE, size=SCALES[-1], iters=sum(LEVEL_ITERS), weights=params, progress=PROGRESS)
for lv in pyr.settings["levels"]:
    print(f"level {lv['level']} {lv['shape']}: {lv['iters']} iterations, loss {lv['loss_start']:.4g} -> {lv['loss_end']:.4g}")
show([pyr.levels[0].image, pyr.image, direct.image], ["coarse level", "coarse-to-fine", "direct, full size"])'''),
    ("md", "## Loss curves\n\nThe pyramid's trace concatenates its levels (the loss jumps where the targets change "
           "with the size)."),
    ("code", '''plot_traces([pyr.loss_trace, direct.loss_trace], ["coarse-to-fine", "direct"])'''),
    ("md", "## A new style from two paintings (Figure 5)\n\nStart from the coarse-scale style image and match only "
           "the Gram matrices of the lower layers of the fine-scale style (no content loss): the large structure "
           "survives, the brush texture is replaced. Then use the mixed image as a style."),
    ("code", '''mixed = mix_styles(COARSE_STYLE, FINE_STYLE, size=SCALES[-1], fine_layers=FINE_LAYERS, iters=ITERS,
                   weights=params, progress=PROGRESS)
print("fine layers:", mixed.settings["mix"]["fine_layers"])
result = stylize(CONTENT, mixed.image, size=SCALES[-1], iters=ITERS, weights=params, progress=PROGRESS)
grid = labelled_grid([load_image(COARSE_STYLE, size=SCALES[-1]), load_image(FINE_STYLE, size=SCALES[-1]), mixed.image, result.image],
                     ["coarse style", "fine style", "mixed style", "content in the mixed style"])
plt.figure(figsize=(14, 4.5)); plt.imshow(grid); plt.axis("off"); plt.show()'''),
]


NOTEBOOKS: Dict[str, List[Cell]] = {
    "quickstart": QUICKSTART,
    "alpha_beta_sweep": SWEEP,
    "spatial_control": SPATIAL,
    "color_control": COLOR,
    "scale_control": SCALE,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as an nbformat v4 node with no outputs and fixed cell ids."""
    cells = []
    for j, (kind, source) in enumerate(NOTEBOOKS[name]):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell["id"] = f"{name.replace('_', '-')}-{j:02d}"
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"name": f"{name}.ipynb", "provenance": [], "gpuType": "T4"},
    }
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name), version=4) + "\n"


def main(argv=None) -> int:
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        path.write_text(render(name), encoding="utf-8")
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
