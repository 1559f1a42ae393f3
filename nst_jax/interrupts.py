"""Ctrl-C (SIGINT) and SIGTERM: a run ends cleanly on the first, at once on the second.

:class:`InterruptFlag` is a context manager for the main thread with two behaviours for the *first* signal:

* ``raise_first=True`` (start-up, nothing to save yet): raise :class:`Interrupted`, a ``KeyboardInterrupt`` that
  carries the signal number, so the command unwinds (``finally`` blocks run, temp files are removed) and exits with
  status ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM) without a traceback. Inside an import of JAX, where an
  exception unwinding through its half-initialised C++ runtime crashed the interpreter on exit (SIGSEGV or SIGABRT
  under load), it prints the line, calls ``cleanup`` and ends the process at once instead;
* otherwise (a solve): only set the flag (``flag()`` is then True); the solver polls it, saves a checkpoint and the
  current image, and stops.

The *second* signal ends the process at once, even while the main thread is inside a long compiled call (where
Python-level handlers cannot run): the C-level handler writes every signal number to a pipe
(``signal.set_wakeup_fd``), and a watcher thread reading that pipe calls ``cleanup()`` and ``os._exit``. Batch
schedulers and ``timeout`` send SIGTERM, people press Ctrl-C: both are treated alike.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, Optional

__all__ = ["SIGNALS", "Interrupted", "InterruptFlag", "exit_status"]

#: The signals handled (those that ask a process to stop).
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The shell's status of a process ended by ``signum``: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).

    Example:
      >>> exit_status(signal.SIGINT), exit_status(signal.SIGTERM)
      (130, 143)
    """
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` raised for ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def _importing_jax(frame) -> bool:
    """True while ``frame`` (where a signal handler was called) runs inside an import of JAX's own modules: the
    import machinery and code of a module named ``jax``, ``jaxlib`` or below them on its stack."""
    importing = in_jax = False
    while frame is not None:
        importing = importing or frame.f_code.co_filename.startswith("<frozen importlib")
        module = str(frame.f_globals.get("__name__", ""))
        in_jax = in_jax or module.split(".")[0] in ("jax", "jaxlib")
        frame = frame.f_back
    return importing and in_jax


class InterruptFlag:
    """Context manager handling SIGINT and SIGTERM while active (see the module docstring); outside the main thread
    it does nothing (signal handlers can only be installed there). Call the instance to read the flag; ``signum`` is
    the first signal received (None before).

    Args:
      message: printed on stderr when the first signal only sets the flag.
      raise_first: raise :class:`Interrupted` on the first signal instead of setting the flag.
      cleanup: called (from the watcher thread) before the process ends on a second signal, e.g. to remove
        temporary files.
    """

    def __init__(self, message: Optional[str] = None, *, raise_first: bool = False,
                 cleanup: Optional[Callable[[], None]] = None):
        self.set = False
        self.signum: Optional[int] = None
        self.message = message
        self.raise_first = raise_first
        self.cleanup = cleanup
        self._previous = {}
        self._old_fd = None
        self._pipe = None
        self._thread = None
        self._old_hook = None

    def __call__(self) -> bool:
        return self.set

    def _handler(self, signum, frame):
        if self.set:  # the watcher ends the process; without one (no wakeup fd), end it here
            if self._thread is None:
                raise Interrupted(signum)
            return
        self.set, self.signum = True, int(signum)
        if self.raise_first:
            if _importing_jax(frame):
                # an exception unwinding through JAX's half-run import leaves its C++ runtime half-initialised,
                # and the interpreter then crashes on its way out (SIGSEGV / SIGABRT): end here instead
                print("nst-jax: interrupted", file=sys.stderr, flush=True)
                self._quit(signum, quiet=True)
            raise Interrupted(signum)
        if self.message:
            print(self.message, file=sys.stderr, flush=True)

    def _watch(self, read_fd: int) -> None:
        count = 0
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:  # the write end was closed: the context ended
                return
            for signum in data:
                if signum in SIGNALS:
                    count += 1
                    if count >= 2:
                        self._quit(signum)

    def _unraisable(self, unraisable) -> None:
        """An :class:`Interrupted` raised where Python cannot propagate it (a garbage-collection callback, a
        ``__del__``) would be printed as "Exception ignored ..." and lost: end the process instead."""
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and self.raise_first:
            print("nst-jax: interrupted", file=sys.stderr, flush=True)
            self._quit(self.signum or signal.SIGINT, quiet=True)
        elif self._old_hook is not None:
            self._old_hook(unraisable)

    def _quit(self, signum: int, quiet: bool = False) -> None:
        try:
            if self.cleanup is not None:
                self.cleanup()
            if not quiet:
                print(f"nst-jax: {signal.Signals(signum).name} again: quit without saving", file=sys.stderr,
                      flush=True)
        finally:
            os._exit(exit_status(signum))

    def __enter__(self) -> "InterruptFlag":
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            return self._install()
        except BaseException:  # a signal raised while installing (raise_first): leave nothing installed
            self.__exit__(None, None, None)
            raise

    def _install(self) -> "InterruptFlag":
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handler)
        self._old_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        self._pipe = os.pipe()
        read_fd, write_fd = self._pipe
        os.set_blocking(write_fd, False)
        try:
            self._old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):  # e.g. an embedding that forbids it: the Python-level handler still works
            self._pipe = None
            os.close(read_fd)
            os.close(write_fd)
            return self
        self._thread = threading.Thread(target=self._watch, args=(read_fd,), daemon=True, name="nst-jax-signals")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
            read_fd, write_fd = self._pipe
            os.close(write_fd)
            if self._thread is not None:
                self._thread.join(timeout=1.0)
            os.close(read_fd)
            self._pipe, self._thread = None, None
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
        if self._old_hook is not None:
            sys.unraisablehook, self._old_hook = self._old_hook, None
