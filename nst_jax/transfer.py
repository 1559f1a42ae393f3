"""Stylising one image: :func:`stylize` (prepare and solve) and :func:`solve_problem` (solve a prepared problem).

Both return a :class:`Result` carrying the image, the loss trace (every term), the f+g count and compile/run
seconds. Everything numeric that varies between calls (images of the same size, α, β, layer and blend weights) is
a traced argument of one compiled program, so a second call of the same shapes compiles nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from nst_jax import progress, runner
from nst_jax.config import ProblemSpec, SolveOptions, split_kwargs
from nst_jax.problem import ImageLike, Problem, finish, initial_image, prepare

__all__ = ["Result", "stylize", "solve_problem", "solve_output", "result_of", "run_settings", "progress_bar"]


@dataclasses.dataclass
class Result:
    """One stylised image and how it was made.

    Attributes:
      image: [H, W, 3] float32 in [0, 1].
      loss_trace: one dict per iteration, ``{"iter", "fg", "loss", "content", "style", "tv", "seconds"}``
        (iteration 0 is the initial image; ``content``/``style``/``tv`` unweighted; ``seconds`` of solving, compile
        excluded, measured at chunk ends and interpolated linearly within a chunk).
      n_fg: function+gradient evaluations spent.
      compile_seconds / run_seconds: time spent compiling (0 when cached) and running.
      terms: final ``content``, ``style``, ``tv`` and ``total`` loss values.
      settings: everything needed to reproduce the run (written into the PNG and the JSON trace).
      stopped_nonfinite / nonfinite_term: a non-finite loss stopped the run; the first non-finite term's name.
      interrupted: stopped by ``stop()`` (Ctrl-C) before ``iters``. iters_done: iterations run in total.
      n_fg_computed: f+g the compiled program computed for this image: ``n_fg`` except for a line-search solver in a
        sweep, where ``vmap`` runs both branches of each ``lax.cond`` and every member's line-search trips
        (``n_fg`` is what the member alone would have cost).

    Example:
      >>> import nst_jax
      >>> r = nst_jax.stylize(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                     weights="tiny19", size=32, iters=3, progress=False)
      >>> [e["iter"] for e in r.loss_trace], sorted(r.terms)       # iteration 0 is the initial image
      ([0, 1, 2, 3], ['content', 'style', 'total', 'tv'])
      >>> r.image.dtype, r.settings["weights"], r.settings["weights_random"], r.iters_done
      (dtype('float32'), 'tiny19', True, 3)
    """

    image: np.ndarray
    loss_trace: List[Dict[str, float]]
    n_fg: int
    compile_seconds: float
    run_seconds: float
    terms: Dict[str, float]
    settings: Dict[str, Any]
    stopped_nonfinite: bool = False
    nonfinite_term: Optional[str] = None
    interrupted: bool = False
    iters_done: int = 0
    n_fg_computed: Optional[int] = None


def progress_bar(total: int, desc: str, enabled: bool):
    """``(bar, update)``: :func:`nst_jax.progress.progress_bar` (kept here for the sweep)."""
    return progress.progress_bar(total, desc, enabled)


def result_of(problem: Problem, out: runner.SolveOutput, settings: Mapping[str, Any], member: Optional[int] = None
              ) -> Result:
    """The :class:`Result` of a solve's output (of one ``member`` of a sweep), with every field carried over."""
    pick = (lambda a: a) if member is None else (lambda a: a[member])
    done = int(pick(np.asarray(out.iters_done)))
    # a member's trace ends where it ran to (a sweep member stopped by a non-finite loss ends early)
    cut = lambda a: np.asarray(pick(a))[:done + 1]  # noqa: E731
    values, nfevs, terms = cut(out.values), cut(out.nfevs), {k: cut(v) for k, v in out.terms_trace.items()}
    trace = [dict({"iter": i, "fg": int(nfevs[i]), "loss": float(values[i])},
                  **{k: float(v[i]) for k, v in terms.items()}, seconds=round(float(out.seconds[i]), 4))
             for i in range(len(values))]
    term = out.nonfinite_term if member is None or out.nonfinite_term is None else out.nonfinite_term[member]
    return Result(image=finish(problem, np.asarray(pick(out.image))), loss_trace=trace, n_fg=int(nfevs[-1]),
                  compile_seconds=out.compile_seconds, run_seconds=out.run_seconds,
                  terms={k: float(pick(v)) for k, v in out.terms.items()}, settings=dict(settings),
                  stopped_nonfinite=bool(pick(np.asarray(out.stopped_nonfinite))), nonfinite_term=term,
                  interrupted=out.interrupted, iters_done=done,
                  n_fg_computed=int(nfevs[-1]) if out.nfev_run is None else int(pick(np.asarray(out.nfev_run))))


def run_settings(problem: Problem, options: SolveOptions) -> Dict[str, Any]:
    """The settings of a run: the problem's plus the solve options' (what the PNG and JSON record)."""
    sc = options.solver
    return dict(problem.settings, iters=options.iters, init=options.init if isinstance(options.init, str)
                else "array", seed=options.seed, solver=sc.name, history=sc.history, lr=sc.step,
                precondition=sc.precondition, ema=sc.ema)


def stylize(content: ImageLike, style: Union[ImageLike, Sequence[ImageLike]], spec: Optional[ProblemSpec] = None,
            options: Optional[SolveOptions] = None, **kwargs) -> Result:
    """Stylise ``content`` with ``style`` (Gatys et al. 2016, and the 2017 controls) in one compiled solve.

    Args:
      content, style: paths or [H, W, 3] arrays in [0, 1]; ``style`` may be a list (blended Gram targets).
      spec: a :class:`nst_jax.config.ProblemSpec` (weights, size, loss weights, layers, controls).
      options: a :class:`nst_jax.config.SolveOptions` (iterations, init, seed, solver, progress, saves).
      **kwargs: any field of those (``size=256, iters=150, style_weight=1e4, solver="adam", color="luminance"``),
        applied on top of ``spec`` and ``options`` (see :func:`nst_jax.config.split_kwargs`).

    Example:
      >>> import nst_jax
      >>> r = nst_jax.stylize(nst_jax.sample_path("blue_marble"), nst_jax.sample_path("great_wave"),
      ...                     weights="tiny19", size=32, iters=5, progress=False)
      >>> r.image.shape, r.n_fg
      ((32, 32, 3), 6)
    """
    spec, options = split_kwargs(spec, options, **kwargs)
    return solve_problem(prepare(content, style, spec), options)


def _checkpoint_hook(problem: Problem, options: SolveOptions, path, settings, resume, stop):
    """``on_chunk`` that writes a checkpoint when a multiple of ``checkpoint_every`` was crossed, or on ``stop``."""
    from nst_jax import checkpoint as CK

    every = options.checkpoint_every
    last = {"done": 0 if resume is None else resume.iteration}

    def on_chunk(done, x, state, trace):
        due = bool(every) and done // every > last["done"] // every and done < options.iters
        last["done"] = done
        if due or (stop is not None and stop() and done < options.iters):
            CK.save_checkpoint(path, image=np.asarray(x), state=state, iteration=done,
                               n_fg=int(np.asarray(trace["nfevs"])[-1]), values=trace["values"],
                               nfevs=trace["nfevs"], terms=trace["terms"], seconds=trace["seconds"],
                               settings=dict(settings or {}), seed=options.seed)

    return on_chunk


def solve_problem(problem: Problem, options: Optional[SolveOptions] = None, *, desc: str = "stylize",
                  checkpoint=None, checkpoint_settings: Optional[Mapping[str, Any]] = None, resume=None,
                  stop: Optional[Callable[[], bool]] = None, **kwargs) -> Result:
    """Run the compiled solve on a prepared :class:`~nst_jax.problem.Problem`.

    Args:
      options: :class:`nst_jax.config.SolveOptions`; ``**kwargs``: its fields (and the solver's) as overrides.
      checkpoint: path of the ``.ckpt.npz`` to write every ``options.checkpoint_every`` iterations (chunks are cut
        so that these fall on chunk ends) and when ``stop()`` turns True, with ``checkpoint_settings`` inside.
      resume: a :class:`nst_jax.checkpoint.Checkpoint` to continue (the caller checks its settings match); the
        finished run equals an uninterrupted one.
      stop: polled after each chunk; True ends the run early (``Result.interrupted``).

    Example:
      >>> from nst_jax.image import sample_path
      >>> p = prepare(sample_path("blue_marble"), sample_path("great_wave"), weights="tiny19", size=32)
      >>> a = solve_problem(p, iters=3, progress=False)
      >>> b = solve_problem(p, iters=3, progress=False)    # same shapes: the compiled program is reused
      >>> b.compile_seconds, bool(np.array_equal(a.image, b.image)), a.loss_trace[-1]["loss"] < a.loss_trace[0]["loss"]
      (0.0, True, True)
    """
    _, options = split_kwargs(None, options, **kwargs)
    out = solve_output(problem, options, desc=desc, checkpoint=checkpoint, checkpoint_settings=checkpoint_settings,
                       resume=resume, stop=stop)
    return result_of(problem, out, run_settings(problem, options))


def solve_output(problem: Problem, options: SolveOptions, *, desc: str = "stylize", checkpoint=None,
                 checkpoint_settings: Optional[Mapping[str, Any]] = None, resume=None,
                 stop: Optional[Callable[[], bool]] = None) -> runner.SolveOutput:
    """:func:`solve_problem` before the result is assembled: the runner's output, whose ``image`` is the raw
    optimised variable ([H, W, C], colour finishing not applied; what a coarse-to-fine level hands on)."""
    if options.checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every needs a checkpoint path to write to")
    if not all(bool(np.all(np.isfinite(np.asarray(t)))) for t in _leaves(problem.targets)):
        for what, img in [("content", problem.content_in)] + [(f"style {j + 1}", s)
                                                              for j, s in enumerate(problem.styles_in)]:
            if not np.all(np.isfinite(np.asarray(img))):
                raise ValueError(f"the {what} image holds NaN or inf pixels; pass finite values in [0, 1]")
        raise ValueError("the network's features of the content/style images are NaN/inf (its activations overflow "
                         "float32); check the weights (nst-jax weights info NAME) or use another --weights")
    x0 = initial_image(problem, options.init, options.seed)
    if resume is not None and tuple(resume.image.shape) != tuple(x0.shape):
        raise ValueError(f"the checkpoint holds a {list(resume.image.shape)} image but this run makes "
                         f"{list(x0.shape)}; resume with the same size and colour settings")
    run = runner.Solve(problem.cfg, options.solver)
    bar = _progress(problem, options, desc, x0, 0 if resume is None else resume.iteration)
    cb = None
    if options.callback is not None and options.save_every:
        def cb(it, x, _values):
            if it % options.save_every == 0 or it == options.iters:
                options.callback(it, finish(problem, np.asarray(x)))

    save = None if checkpoint is None else _checkpoint_hook(problem, options, checkpoint, checkpoint_settings,
                                                            resume, stop)

    def on_chunk(done, x, state, trace):
        bar.on_chunk(done, x, state, trace)
        if save is not None:
            save(done, x, state, trace)

    try:
        return run(problem.params, problem.targets, problem.weights, x0, options.iters, callback=cb,
                   progress=bar.update, resume=None if resume is None else resume.resume_args(), on_chunk=on_chunk,
                   stop=stop, every=options.chunk_ends, report_seconds=options.report_seconds)
    finally:
        bar.close()


def _progress(problem: Problem, options: SolveOptions, desc: str, x0, start: int) -> progress.Progress:
    """The run's :class:`nst_jax.progress.Progress`, with its memory estimate and (verbose) per-layer terms."""
    memory = None
    if options.progress:
        from nst_jax import memory as M
        from nst_jax import vgg

        try:
            memory = M.format_bytes(M.estimate_for_config(np.shape(x0)[:2], problem.cfg, arch=vgg.spec_from_params(
                problem.params), n_styles=len(problem.styles_in), history=options.solver.history,
                solver=options.solver.name))
        except ValueError:
            memory = None
    layers = None
    if options.print_every and options.verbose:
        def layers(x):
            return progress.layer_terms(problem.params, x, problem.targets, problem.weights, problem.cfg)
    return progress.Progress(options.iters, desc, options.progress, print_every=options.print_every, layers=layers,
                             memory=memory, start=start)


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)
