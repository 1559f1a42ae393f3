"""The ``nst-jax`` command line.

Each command group lives in one ``add_<group>_parser(subparsers, add_command)`` function that registers its
sub-commands with a ``func(args) -> int`` handler; :data:`PARSER_BUILDERS` names them (``"module:function"``,
imported when the parser is built, so that ``import nst_jax.cli`` stays light and Ctrl-C during start-up is answered)
and :func:`build_parser` calls each.

:func:`main` turns every expected failure into one line ``nst-jax: error: ...`` and exit status 2: bad values
(``ValueError``, incl. a refused setting, which names its flag), files (``OSError``), numbers out of range
(``ArithmeticError``), memory (``MemoryError``, an accelerator's RESOURCE_EXHAUSTED). Anything else is a bug: one line
``nst-jax: internal error: ...`` and status 1. ``--debug`` (anywhere on the line) shows the traceback instead. Python
warnings print as ``nst-jax: warning: ...``. Ctrl-C or SIGTERM ends the command with status 130 / 143 and no
traceback, also during start-up; a second one quits at once (:mod:`nst_jax.interrupts`).

Commands::

    nst-jax stylize CONTENT STYLE [STYLE ...] -o OUT.png [...]      (Gatys 2016 + the 2017 controls)
    nst-jax resume OUT.ckpt.npz
    nst-jax sweep CONTENT STYLE --grid ratio=1e-4,1e-3 --grid style-layers='relu1_1|relu1_1,relu2_1' -o DIR
    nst-jax batch PHOTO [PHOTO ...] --style STYLE -o DIR
    nst-jax match-color SOURCE TARGET -o OUT --mode pca
    nst-jax mix-styles COARSE FINE -o NEW_STYLE.png
    nst-jax figure sweep|layers|styles|color|spatial|scale -o FIG.png
    nst-jax weights list | fetch NAME | info NAME | convert FILE [-o OUT] | normalize NAME [--images DIR]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import List, Optional, Sequence

from nst_jax.interrupts import InterruptFlag, exit_status

__all__ = ["main", "build_parser", "PARSER_BUILDERS", "add_command", "version_text", "EXPECTED_ERRORS"]

_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                     help="show the full traceback on errors")

#: Failures a user can cause (bad values, files, sizes): one line and exit status 2.
EXPECTED_ERRORS = (ValueError, OSError, ArithmeticError, MemoryError)


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """Add a (sub-)command that also accepts ``--debug``; use this instead of ``subparsers.add_parser``."""
    return subparsers.add_parser(name, parents=[_COMMON], **kwargs)


#: The command groups, in help order, as ``"module:function"``. Add yours here.
PARSER_BUILDERS: List[str] = [
    "nst_jax.cli.stylize:add_stylize_parser", "nst_jax.cli.stylize:add_resume_parser",
    "nst_jax.cli.sweep:add_sweep_parser", "nst_jax.cli.sweep:add_batch_parser",
    "nst_jax.cli.commands:add_match_color_parser", "nst_jax.cli.commands:add_mix_styles_parser",
    "nst_jax.cli.commands:add_figure_parser", "nst_jax.cli.commands:add_weights_parser"]


def version_text() -> str:
    """``nst-jax 0.1.0 (jax 0.4.x, jaxlib 0.4.x, Python 3.x)``, without importing JAX."""
    from importlib import metadata

    import nst_jax

    def ver(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    py = ".".join(str(v) for v in sys.version_info[:3])
    return f"nst-jax {nst_jax.__version__} (jax {ver('jax')}, jaxlib {ver('jaxlib')}, Python {py})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-jax", parents=[_COMMON],
                                     description="Optimisation-based neural style transfer in JAX.")
    parser.add_argument("--version", action="version", version=version_text())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in PARSER_BUILDERS:
        module, _, name = entry.partition(":")
        getattr(importlib.import_module(module), name)(subparsers, add_command)
    return parser


def _start_devices(args) -> None:
    """``--devices`` and the multi-process runtime, before anything touches a device."""
    from nst_jax import distributed
    from nst_jax.cli.args import cluster_config

    distributed.select_devices(getattr(args, "devices", None))
    if hasattr(args, "coordinator"):
        distributed.initialize(cluster_config(args))


def _backend() -> str:
    import jax

    return jax.default_backend()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"nst-jax: warning: {text}", file=sys.stderr)


def _error_line(e: BaseException) -> str:
    """The one line printed for an expected failure (a refused setting names its flag; an ``OSError`` its file)."""
    from nst_jax.config import SettingError
    from nst_jax.files import os_error_hint

    if isinstance(e, SettingError):
        text = e.for_flag()
    elif isinstance(e, OSError) and e.strerror:
        text = os_error_hint(e)
    elif isinstance(e, MemoryError):
        text = f"out of memory ({str(e) or 'MemoryError'}); try a smaller --size, --history 20, or --memory-limit"
    else:
        text = str(e)
    line = " ".join(text.split()) if text.strip() else type(e).__name__
    return line


def _resource_exhausted(e: BaseException) -> bool:
    """An accelerator (or XLA) out-of-memory error, whatever its Python type."""
    return "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e)


def _run(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _start_devices(args)
    if getattr(args, "remat", False) and _backend() == "cpu":
        print("nst-jax: note: --remat ignored on CPU (XLA:CPU drops the barriers it needs and then keeps more memory, "
              "see benchmarks/RESULTS.md)", file=sys.stderr)
        args.remat = False
    return int(args.func(args) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 internal error, 2 usage or input error, 3 NaN stop, 130 / 143
    interrupted by SIGINT / SIGTERM)."""
    try:
        return _main(argv)
    except KeyboardInterrupt as e:  # a signal while the handlers were being installed or removed
        print("nst-jax: interrupted", file=sys.stderr)
        return exit_status(getattr(e, "signum", 2))


def _main(argv: Optional[Sequence[str]]) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words
    with InterruptFlag(raise_first=True) as interrupted, warnings.catch_warnings():
        warnings.showwarning = _show_warning
        # Pillow warns above 89 Mpx; the memory guard (nst_jax.cli.checks) decides whether a large image fits
        warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
        try:
            return _run(argv)
        except KeyboardInterrupt as e:
            print("nst-jax: interrupted", file=sys.stderr)
            return exit_status(getattr(e, "signum", 2))
        except EXPECTED_ERRORS as e:
            if debug:
                raise
            print(f"nst-jax: error: {_error_line(e)}", file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001 - a bug, or an accelerator out of memory: never a bare traceback
            if interrupted():  # the interruption surfaced wrapped (e.g. raised inside a callback of compiled code)
                print("nst-jax: interrupted", file=sys.stderr)
                return exit_status(interrupted.signum)
            if debug:
                raise
            if _resource_exhausted(e):
                print("nst-jax: error: the device ran out of memory; try a smaller --size, --history 20, or --bf16 "
                      "on a GPU/TPU", file=sys.stderr)
                return 2
            print(f"nst-jax: internal error: {type(e).__name__}: {_error_line(e)[:300]}; rerun with --debug and "
                  "report the traceback", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
