"""Stylising one image: :func:`stylize` (prepare and solve) and :func:`solve_problem` (solve a prepared problem).

Both return a :class:`Result` carrying the image, the loss trace (every term), the f+g count and compile/run
seconds. Everything numeric that varies between calls (images of the same size, α, β, layer and blend weights) is
a traced argument of one compiled program, so a second call of the same shapes compiles nothing.

:func:`solve_levels` solves a chain of problems at growing sizes, each level starting from the previous level's
result (a :class:`LevelsResult`, with checkpoints and resume across levels): the machinery of the multi-resolution
warm start of :func:`stylize` (``SolveOptions.warm_start``, :mod:`nst_jax.warmstart`) and of coarse-to-fine runs
(:func:`nst_jax.pyramid.stylize_pyramid`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from nst_jax import image as I
from nst_jax import progress, runner, warmstart
from nst_jax.config import ProblemSpec, SolveOptions, split_kwargs
from nst_jax.problem import ImageLike, Problem, finish, initial_image, prepare

__all__ = ["Result", "LevelsResult", "stylize", "solve_problem", "solve_output", "solve_levels", "result_of",
           "run_settings", "progress_bar"]


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


@dataclasses.dataclass
class LevelsResult(Result):
    """A run of several levels (warm start, coarse-to-fine): the last level's image with the whole run's trace.

    ``loss_trace`` concatenates the levels, each entry marked with its ``level`` (0-based): ``iter`` and ``fg``
    cumulative, ``seconds`` cumulative (each level's solve seconds after the previous levels' and after preparing
    it, compile excluded). Loss values of different levels are not comparable (the
    targets change with the size). ``n_fg``, ``compile_seconds`` and ``run_seconds`` are totals (``run_seconds``
    includes preparing the later levels); ``terms`` are the last level's; ``iters_done`` counts every level's.
    ``levels`` holds each level's own :class:`Result` (its trace per level, from 0 s); ``inits`` the [H, W, C]
    images each level started from (the solver's variable: one channel for ``color="luminance"``);
    ``settings["levels"]`` a JSON summary per level.
    """

    levels: List[Result] = dataclasses.field(default_factory=list)
    inits: List[np.ndarray] = dataclasses.field(default_factory=list)


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
            options: Optional[SolveOptions] = None, *, checkpoint=None,
            checkpoint_settings: Optional[Mapping[str, Any]] = None, resume=None,
            stop: Optional[Callable[[], bool]] = None, on_chunk: Optional[Callable] = None, **kwargs) -> Result:
    """Stylise ``content`` with ``style`` (Gatys et al. 2016, and the 2017 controls).

    With ``options.warm_start`` "auto" (:func:`nst_jax.warmstart.schedule`) the image is first solved at coarser
    sizes, each level starting from the previous one's result; the last level is this size with ``options.iters``
    iterations, and the result is a :class:`LevelsResult`. Otherwise (``"off"``, or no coarse level fits) it is one
    compiled solve of :func:`prepare`'s problem.

    Args:
      content, style: paths or [H, W, 3] arrays in [0, 1]; ``style`` may be a list (blended Gram targets).
      spec: a :class:`nst_jax.config.ProblemSpec` (weights, size, loss weights, layers, controls).
      options: a :class:`nst_jax.config.SolveOptions` (iterations, init, seed, solver, warm start, progress, saves).
      checkpoint, checkpoint_settings, resume, stop, on_chunk: as :func:`solve_problem`, across the levels of a
        warm start.
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
    final = prepare(content, style, spec)
    plan = warmstart.schedule(final.content_in.shape[:2], options.iters, options.warm_start)
    saved = getattr(resume, "settings", {}).get("warm_levels") if resume is not None else None
    if saved is not None:  # the coarse levels the checkpointed run was started with
        plan = [warmstart.Level(side, iters) for side, iters in saved] + [plan[-1]]
    solve = dict(checkpoint=checkpoint, resume=resume, stop=stop, on_chunk=on_chunk)
    if len(plan) == 1:
        return solve_problem(final, options, checkpoint_settings=checkpoint_settings, **solve)

    def problem_at(k: int) -> Problem:
        if k == len(plan) - 1:
            return final
        return prepare(content, style, dataclasses.replace(spec, size=plan[k].side, size_rule="longest"))

    levels = [[lv.side, lv.iters] for lv in plan[:-1]]
    r = solve_levels(problem_at, [lv.iters for lv in plan], options, handoff=warmstart.handoff(options),
                     saves="last", checkpoint_settings=dict(checkpoint_settings or {}, warm_levels=levels), **solve)
    r.settings.update(iters=options.iters, warm_start={"mode": options.warm_start, "levels": levels})
    return r


def _checkpoint_hook(problem: Problem, options: SolveOptions, path, settings, resume, stop, levels=(0, ())):
    """``on_chunk`` that writes a checkpoint when a multiple of ``checkpoint_every`` was crossed, or on ``stop``
    (``levels``: the level being solved and the finished levels' records, in a run of several levels)."""
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
                               settings=dict(settings or {}), seed=options.seed, level=levels[0],
                               finished=levels[1])

    return on_chunk


def solve_problem(problem: Problem, options: Optional[SolveOptions] = None, *, desc: str = "stylize",
                  checkpoint=None, checkpoint_settings: Optional[Mapping[str, Any]] = None, resume=None,
                  stop: Optional[Callable[[], bool]] = None, on_chunk: Optional[Callable] = None, **kwargs) -> Result:
    """Run the compiled solve on a prepared :class:`~nst_jax.problem.Problem`.

    Args:
      options: :class:`nst_jax.config.SolveOptions`; ``**kwargs``: its fields (and the solver's) as overrides.
      checkpoint: path of the ``.ckpt.npz`` to write every ``options.checkpoint_every`` iterations (chunks are cut
        so that these fall on chunk ends) and when ``stop()`` turns True, with ``checkpoint_settings`` inside.
      resume: a :class:`nst_jax.checkpoint.Checkpoint` to continue (the caller checks its settings match); the
        finished run equals an uninterrupted one.
      stop: polled after each chunk; True ends the run early (``Result.interrupted``).
      on_chunk: after each chunk, ``on_chunk(done, x, state, trace)`` (see :class:`nst_jax.runner.Solve`; e.g. to
        watch the loss and end the run through ``stop``).

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
                       resume=resume, stop=stop, on_chunk=on_chunk)
    return result_of(problem, out, run_settings(problem, options))


def solve_output(problem: Problem, options: SolveOptions, *, desc: str = "stylize", checkpoint=None,
                 checkpoint_settings: Optional[Mapping[str, Any]] = None, resume=None,
                 stop: Optional[Callable[[], bool]] = None, levels=(0, ()),
                 on_chunk: Optional[Callable] = None) -> runner.SolveOutput:
    """:func:`solve_problem` before the result is assembled: the runner's output, whose ``image`` is the raw
    optimised variable ([H, W, C], colour finishing not applied; what a coarse-to-fine level hands on).
    ``levels``: (the level being solved, the finished levels' records) written into checkpoints."""
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
                                                            resume, stop, levels)

    def hooks(done, x, state, trace):
        bar.on_chunk(done, x, state, trace)
        if on_chunk is not None:  # the caller's hook first: a stop() it triggers is saved at the same chunk end
            on_chunk(done, x, state, trace)
        if save is not None:
            save(done, x, state, trace)

    try:
        return run(problem.params, problem.targets, problem.weights, x0, options.iters, callback=cb,
                   progress=bar.update, resume=None if resume is None else resume.resume_args(), on_chunk=hooks,
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


def resize_result(problem: Problem, raw_HWC: np.ndarray, previous: Optional[Problem] = None) -> np.ndarray:
    """The default hand-off between levels: the previous level's raw result resized (Lanczos) to ``problem``'s size,
    with ``problem``'s channels (one for luminance transfer)."""
    return I.resize(raw_HWC, problem.content_in.shape[:2])[..., :problem.cfg.channels]


def _record(r: Result, raw: np.ndarray, init: np.ndarray, prep_seconds: float) -> Dict[str, Any]:
    """A finished level as a checkpoint record (JSON-able values and arrays)."""
    return {"trace": r.loss_trace, "n_fg": r.n_fg, "n_fg_computed": r.n_fg_computed,
            "compile_seconds": r.compile_seconds,
            "run_seconds": r.run_seconds, "terms": r.terms, "settings": r.settings, "iters_done": r.iters_done,
            "prep_seconds": prep_seconds, "image": np.asarray(r.image), "raw": np.asarray(raw),
            "init": np.asarray(init)}


def _restored(rec: Mapping[str, Any]) -> Result:
    return Result(image=np.asarray(rec["image"], np.float32), loss_trace=list(rec["trace"]), n_fg=int(rec["n_fg"]),
                  compile_seconds=float(rec["compile_seconds"]), run_seconds=float(rec["run_seconds"]),
                  terms=dict(rec["terms"]), settings=dict(rec["settings"]), iters_done=int(rec["iters_done"]),
                  n_fg_computed=None if rec.get("n_fg_computed") is None else int(rec["n_fg_computed"]))


def solve_levels(problem_at: Callable[[int], Problem], iters: Sequence[int], options: SolveOptions, *,
                 handoff: Callable[[Problem, np.ndarray, Problem], np.ndarray] = resize_result, saves: str = "all",
                 desc: str = "level", checkpoint=None, checkpoint_settings: Optional[Mapping[str, Any]] = None,
                 resume=None, stop: Optional[Callable[[], bool]] = None,
                 on_chunk: Optional[Callable] = None) -> LevelsResult:
    """Solve the levels ``k = 0 .. len(iters) - 1`` in turn, each starting where the previous one ended.

    Args:
      problem_at: ``k -> Problem``, level k's prepared problem (called once per level, just before it is solved).
      iters: iterations per level.
      options: the solve options of every level (``iters`` replaced per level; ``init`` starts level 0).
      handoff: ``(problem_k, raw_{k-1}, problem_{k-1}) -> x0_k``, level k's initial [H, W, C] variable from the
        previous level's raw result (default :func:`resize_result`).
      saves: ``options.callback`` at every level, numbered across levels (``"all"``), or at the last level only,
        numbered by its own iterations (``"last"``: a warm start's saves are those of the single-size run).
      checkpoint, checkpoint_settings, stop, on_chunk: as :func:`solve_problem` (``on_chunk`` sees each level's
        own trace); a checkpoint holds the level being solved and
        the finished levels' results, and ``resume`` (its :class:`~nst_jax.checkpoint.Checkpoint`) continues from
        there: the finished run equals an uninterrupted one.

    A level stopped by a non-finite loss or by ``stop()`` ends the run there.
    """
    n = len(iters)
    start = 0 if resume is None else int(getattr(resume, "level", 0))
    records = [] if resume is None else list(getattr(resume, "finished", []))[:start]
    if len(records) != start:
        raise ValueError(f"the checkpoint is at level {start + 1} but holds {len(records)} finished levels; it is "
                         "damaged: delete it and start again")
    if start >= n:
        raise ValueError(f"the checkpoint is at level {start + 1} of a run of {n} levels; resume with the same "
                         "settings")
    done = [_restored(rec) for rec in records]
    inits = [np.asarray(rec["init"], np.float32) for rec in records]
    preps = [float(rec["prep_seconds"]) for rec in records]
    raw, prev, offset = (np.asarray(records[-1]["raw"], np.float32) if records else None), None, 0
    for k in range(start, n):
        with runner.CompileClock() as clock:
            t = time.perf_counter()
            problem = problem_at(k)
            if k == 0:
                x0 = initial_image(problem, options.init, options.seed)
            else:
                x0 = np.asarray(handoff(problem, raw, prev if prev is not None else problem_at(k - 1)), np.float32)
            prep = time.perf_counter() - t - clock.seconds
        preps.append(prep)
        inits.append(x0)
        level_opts = dataclasses.replace(options, iters=int(iters[k]), init=x0,
                                         callback=_level_callback(options.callback, saves, k, n, sum(iters[:k])))
        h, w = x0.shape[:2]
        out = solve_output(problem, level_opts, desc=f"{desc} {k + 1}/{n} {w}x{h}", checkpoint=checkpoint,
                           checkpoint_settings=checkpoint_settings, resume=resume if k == start else None,
                           stop=stop, levels=(k, records), on_chunk=on_chunk)
        r = result_of(problem, out, run_settings(problem, level_opts))
        r.settings.update(level=k + 1, levels_total=n, shape=[int(h), int(w)],
                          init=(options.init if isinstance(options.init, str) else "array") if k == 0 else
                          "previous level")
        done.append(r)
        raw, prev = np.asarray(out.image, np.float32), problem
        records = records + [_record(r, raw, x0, preps[-1])]
        if r.interrupted or r.stopped_nonfinite:
            break
    return _combined(done, inits, preps, [int(i) for i in iters])


def _level_callback(callback, saves: str, k: int, n: int, offset: int):
    """``options.callback`` as level k of n sees it (see :func:`solve_levels`' ``saves``)."""
    if callback is None:
        return None
    if saves == "last":
        return callback if k == n - 1 else None
    return lambda it, img: callback(offset + it, img)


def _combined(levels: List[Result], inits, preps, iters) -> LevelsResult:
    """The :class:`LevelsResult` of the levels solved: cumulative trace, totals, the last level's image."""
    trace, it0, fg0, t0 = [], 0, 0, 0.0
    for k, r in enumerate(levels):
        t0 += preps[k]
        for e in r.loss_trace:
            trace.append(dict(e, iter=it0 + e["iter"], fg=fg0 + e["fg"], seconds=round(t0 + e["seconds"], 4),
                              level=k))
        it0 += r.loss_trace[-1]["iter"] + 1
        fg0 += r.n_fg
        t0 += r.run_seconds
    last = levels[-1]
    settings = dict(last.settings)
    settings["levels"] = [
        {"level": k + 1, "shape": list(r.settings["shape"]), "iters": iters[k], "n_fg": r.n_fg,
         "loss_start": r.loss_trace[0]["loss"], "loss_end": r.loss_trace[-1]["loss"],
         "compile_seconds": r.compile_seconds, "run_seconds": r.run_seconds, "prepare_seconds": round(preps[k], 4)}
        for k, r in enumerate(levels)]
    for key in ("level", "levels_total", "shape"):
        settings.pop(key, None)
    return LevelsResult(
        image=last.image, loss_trace=trace, n_fg=sum(r.n_fg for r in levels),
        n_fg_computed=sum(r.n_fg if r.n_fg_computed is None else r.n_fg_computed for r in levels),
        compile_seconds=sum(r.compile_seconds for r in levels), run_seconds=t0, terms=dict(last.terms),
        settings=settings, stopped_nonfinite=any(r.stopped_nonfinite for r in levels),
        nonfinite_term=next((r.nonfinite_term for r in levels if r.nonfinite_term), None),
        interrupted=last.interrupted, iters_done=sum(r.iters_done for r in levels), levels=levels, inits=inits)


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)
