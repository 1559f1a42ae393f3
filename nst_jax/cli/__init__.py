"""The ``nst-jax`` command line.

Each command group lives in one ``add_<group>_parser(subparsers, add_command)`` function that registers its
sub-commands with a ``func(args) -> int`` handler; :data:`PARSER_BUILDERS` lists them and :func:`build_parser` calls
each. Expected failures (``ValueError``, ``OSError`` incl. ``FileNotFoundError``) print one line
``nst-jax: error: ...`` (a refused setting names its flag) and exit with status 2; ``--debug`` (anywhere on the line)
shows the traceback instead.

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
import sys
from typing import Callable, List, Optional, Sequence

from nst_jax.cli.commands import add_figure_parser, add_match_color_parser, add_mix_styles_parser, add_weights_parser
from nst_jax.cli.stylize import add_resume_parser, add_stylize_parser
from nst_jax.cli.sweep import add_batch_parser, add_sweep_parser
from nst_jax.config import SettingError

__all__ = ["main", "build_parser", "PARSER_BUILDERS", "add_command"]

_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                     help="show the full traceback on errors")


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """Add a (sub-)command that also accepts ``--debug``; use this instead of ``subparsers.add_parser``."""
    return subparsers.add_parser(name, parents=[_COMMON], **kwargs)


#: The command groups, in help order. Add yours here.
PARSER_BUILDERS: List[Callable] = [add_stylize_parser, add_resume_parser, add_sweep_parser, add_batch_parser,
                                   add_match_color_parser, add_mix_styles_parser, add_figure_parser, add_weights_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-jax", parents=[_COMMON],
                                     description="Optimisation-based neural style transfer in JAX.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in PARSER_BUILDERS:
        add(subparsers, add_command)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 usage or input error, 3 NaN stop, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        _start_devices(args)
        if getattr(args, "remat", False) and _backend() == "cpu":
            print("nst-jax: note: --remat ignored on CPU (XLA:CPU drops the barriers it needs and then keeps more "
                  "memory, see benchmarks/RESULTS.md)", file=sys.stderr)
            args.remat = False
        return int(args.func(args) or 0)
    except (ValueError, OSError) as e:
        if debug:
            raise
        text = e.for_flag() if isinstance(e, SettingError) else str(e)
        msg = text.splitlines()[0] if text else type(e).__name__
        print(f"nst-jax: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nst-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
