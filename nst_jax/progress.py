"""Progress of a solve, for a terminal and for logs.

:class:`Progress` gets the runner's hooks (``update(done, loss, nfev)`` after every chunk, ``on_chunk(done, x,
state, trace)`` with the trace so far) and shows:

* on a terminal (stderr), one status line redrawn in place: ``compiling ...`` until the first iteration is done, then
  ``stylize 37/500 it, loss 1.234e+05, 38 f+g, 1.1 it/s, 7m02s left, memory ~1.2 GiB``;
* once, after the first timed chunk (compile excluded), an estimate of the whole run on stderr, also when stderr is
  not a terminal: ``nst-jax: ~0.85 s per iteration: about 7m05s for the 499 iterations left`` (after the level's or
  wave's label, ``nst-jax: level 2/3 512x512: ~0.85 s ...``, where the run has several);
* with ``print_every`` N, one log-friendly line on stdout per N iterations, whatever stdout is::

      iter 50/500  loss 1.234e+05  content 12.3  style 345.6  tv 5678  fg 51  seconds 12.3

  and with ``verbose`` the term of every layer (``style[relu1_1] 2.1e+02 ...``, each layer's share of the
  unweighted term), evaluated on the image at that iteration (chunks end there).
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import objective

__all__ = ["Progress", "progress_bar", "format_seconds", "layer_terms"]


def format_seconds(s: float) -> str:
    """``42.0 -> '42s'``, ``425 -> '7m05s'``, ``7300 -> '2h01m'``.

    Example:
      >>> format_seconds(42.0), format_seconds(425), format_seconds(7300)
      ('42s', '7m05s', '2h01m')
    """
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


@functools.partial(jax.jit, static_argnames=("cfg",))
def _per_layer(params, x, targets, weights, cfg):
    """Each content and style layer's share of its unweighted term: the loss with one layer's weight kept."""
    def with_layers(cw, sw):
        return objective.loss_terms(params, x, targets, weights.replace(content_layers=cw, style_layers=sw), cfg)

    nc, ns = weights.content_layers.shape[0], weights.style_layers.shape[0]
    content = jax.vmap(lambda e: with_layers(e * weights.content_layers, jnp.zeros_like(weights.style_layers))[
        "content"])(jnp.eye(nc, dtype=jnp.float32)) if nc else jnp.zeros((0,))
    style = jax.vmap(lambda e: with_layers(jnp.zeros_like(weights.content_layers), e * weights.style_layers)[
        "style"])(jnp.eye(ns, dtype=jnp.float32)) if ns else jnp.zeros((0,))
    return content, style


def layer_terms(params, x, targets, weights, cfg) -> dict:
    """``{"content[relu4_2]": v, "style[relu1_1]": v, ...}``: each layer's share of the unweighted content and style
    terms of image ``x`` (they sum to the terms)."""
    content, style = (np.asarray(v) for v in _per_layer(params, x, targets, weights, cfg))
    out = {f"content[{n}]": float(v) for n, v in zip(cfg.content_layers, content)}
    out.update({f"style[{n}]": float(v) for n, v in zip(cfg.style_layers, style)})
    return out


class Progress:
    """The status line, the up-front estimate and the ``print_every`` lines of one solve (see the module docstring).

    Args:
      total: iterations asked for. desc: the status line's label. enabled: status line and estimate at all.
      print_every: iterations between log lines (None: none). layers: ``layers(x) -> {name: value}`` for verbose
        lines. memory: the estimated peak, shown in the status line. start: iterations already done (a resume).
    """

    def __init__(self, total: int, desc: str = "stylize", enabled: bool = True, *, print_every: Optional[int] = None,
                 layers: Optional[Callable] = None, memory: Optional[str] = None, start: int = 0,
                 stream=None, out=None):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.print_every, self.layers, self.memory = print_every, layers, memory
        self.stream = sys.stderr if stream is None else stream
        self.out = sys.stdout if out is None else out
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.first: Optional[tuple] = None  # (time, done) when the first chunk (with the compile) ended
        self.estimated = False
        self.printed = start
        self.width = 0
        if self.tty and total > start:
            self._draw(f"{desc}: compiling ...")

    def _draw(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def update(self, done: int, loss, nfev) -> None:
        """After every chunk: redraw the status line, and once give the estimate of the whole run."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, done)
            rate = None
        else:
            t0, d0 = self.first
            rate = (done - d0) / max(now - t0, 1e-9) if done > d0 else None
        if rate and not self.estimated:
            self.estimated = True
            left = self.total - done
            label = "" if self.desc == "stylize" else f"{self.desc}: "  # a level or a wave says which
            print(("\n" if self.tty else "") + f"nst-jax: {label}~{1 / rate:.3g} s per iteration: about "
                  f"{format_seconds(left / rate)} for the {left} iterations left", file=self.stream, flush=True)
            self.width = 0
        if self.tty:
            parts = [f"{self.desc} {done}/{self.total} it", f"loss {float(np.nanmin(np.asarray(loss))):.4g}",
                     f"{int(np.max(nfev))} f+g"]
            if rate:
                parts += [f"{rate:.3g} it/s", f"{format_seconds((self.total - done) / rate)} left"]
            if self.memory:
                parts.append(f"memory ~{self.memory}")
            self._draw(", ".join(parts))

    def on_chunk(self, done: int, x, state, trace) -> None:
        """After every chunk: the ``print_every`` lines of the iterations it ran (from the trace)."""
        if not self.print_every:
            return
        values, nfevs, terms, seconds = (np.asarray(trace[k]) if k != "terms" else trace[k]
                                         for k in ("values", "nfevs", "terms", "seconds"))
        for it in range(self.printed + 1, done + 1):
            if it % self.print_every and it != self.total:
                continue
            if values.ndim != 1:  # a sweep: the first member
                values, nfevs, seconds = values[0], nfevs[0], seconds
                terms = {k: np.asarray(v)[0] for k, v in terms.items()}
            line = (f"iter {it}/{self.total}  loss {values[it]:.4g}  " + "  ".join(
                f"{k} {float(np.asarray(v)[it]):.4g}" for k, v in terms.items()) +
                    f"  fg {int(nfevs[it])}  seconds {float(np.ravel(seconds)[it]):.1f}")
            if self.layers is not None and it == done:
                line += "  " + "  ".join(f"{k} {v:.4g}" for k, v in self.layers(x).items())
            if self.tty:
                self._draw("")
                self.stream.write("\r")
            print(line, file=self.out, flush=True)
        self.printed = done

    def set_description(self, desc: str) -> None:
        """A new label for the status line (e.g. a sweep's current wave)."""
        self.desc = desc

    def close(self) -> None:
        if self.tty and self.width:
            self._draw("")
            self.stream.write("\r")
            self.stream.flush()


def progress_bar(total: int, desc: str, enabled: bool):
    """``(bar, update)``: a :class:`Progress` (or None when disabled) and its ``update(done, loss, nfev)`` hook."""
    if not enabled:
        return None, lambda *a: None
    bar = Progress(total, desc, enabled)
    return bar, bar.update
