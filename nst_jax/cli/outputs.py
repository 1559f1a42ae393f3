"""What commands write and check before writing: output paths, strict JSON, sizes such as ``8GB``, notes."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from nst_jax.files import atomic_write, same_file

__all__ = ["OUTPUT_ARGS", "file_of", "input_files", "weights_files", "check_outputs", "check_output", "strict_json",
           "json_writer", "write_json", "say_random", "parse_bytes"]


#: Argument names that are outputs, never inputs.
OUTPUT_ARGS = frozenset({"output", "checkpoint_file"})
#: How a positional argument or an oddly named flag is called in messages (default: ``--name-with-dashes``).
_LABELS = {"content": "content image", "style": "style image", "region_style": "--style", "source": "source image",
           "target": "target image", "coarse": "coarse style", "fine": "fine style", "file": "input file",
           "checkpoint": "checkpoint"}


def _label(key: str) -> str:
    return _LABELS.get(key, "--" + key.replace("_", "-"))


def _names_a_file(text: str) -> bool:
    """An existing file (or pipe / device), not a folder."""
    try:
        return os.path.exists(text) and not os.path.isdir(text)
    except (OSError, ValueError):  # a name too long for the OS, an embedded NUL ...
        return False


def file_of(item: str) -> Optional[Tuple[str, str]]:
    """``(region, path)`` if ``item`` names an existing file, itself or as ``REGION=FILE``; else None."""
    if _names_a_file(item):
        return "", item
    name, sep, path = item.partition("=")
    if sep and name and _names_a_file(path):
        return name, path
    return None


def input_files(args, extra: Sequence[Tuple[str, str]] = ()) -> List[Tuple[str, str]]:
    """Every input file of a command, whichever flag names it: ``[(label, path), ...]`` for each argument value (or
    list item, or ``REGION=FILE`` item) that names an existing file, outputs (:data:`OUTPUT_ARGS`) excepted, plus
    ``extra``. Found by value, so a flag added later is protected without being listed here.

    Example:
      >>> import argparse
      >>> input_files(argparse.Namespace(content=__file__, style=["sky=" + __file__], size=32, output=__file__))
      [('content image', '...outputs.py'), ('style image sky', '...outputs.py')]
    """
    out = []
    for key, value in sorted(vars(args).items()):
        if key in OUTPUT_ARGS:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            found = file_of(item) if isinstance(item, str) and item else None
            if found:
                region, path = found
                out.append((f"{_label(key)} {region}".strip(), path))
    return out + list(extra)


def weights_files(name) -> List[Tuple[str, str]]:
    """The cache files a named weight source reads (``--weights vgg16-hed``: its ``.npz`` and ``.npz.json``), as
    inputs to protect; ``auto`` may read any pretrained source's. Empty for random weights or a file path."""
    from nst_jax.weights import SOURCES, cache

    if not isinstance(name, str) or _names_a_file(name):
        return []
    names = [n for n in SOURCES if n != "auto"] if name == "auto" else [name] if name in SOURCES else []
    try:
        folder = cache.cache_dir()
    except ValueError:
        return []
    return [("--weights", str(p)) for n in names for p in cache.cache_paths(n, folder) if p.exists()]


def check_outputs(outputs: Sequence[Tuple[str, pathlib.Path]], inputs: Sequence[Tuple[str, str]], overwrite: bool,
                  must_not_exist: Sequence[pathlib.Path] = ()) -> None:
    """Refuse before any work (one-line ``ValueError``):

    * an output folder that does not exist;
    * an output that is one of the inputs (same path, symlink or hard link; with or without ``--overwrite``);
    * two outputs with the same name;
    * an existing output among ``must_not_exist`` (default: all of them) without ``overwrite``.

    ``outputs``: ``[(what, path)]`` such as ``("output", out.png)``, ``("loss trace", out.json)``.
    """
    for what, out in outputs:
        if not out.parent.exists():
            raise ValueError(f"{what} folder {out.parent} does not exist; create it or choose another -o path")
        for label, path in inputs:
            if same_file(out, path):
                raise ValueError(f"{what} {out} is one of the inputs ({label} {path}); choose another -o path")
    for j, (what, out) in enumerate(outputs):
        for other, path in outputs[:j]:
            if same_file(out, path):
                raise ValueError(f"the {other} and the {what} of this run would both be {out}; choose another -o "
                                 "path")
    if not overwrite:
        for what, out in outputs:
            if (not must_not_exist or out in must_not_exist) and out.exists():
                raise ValueError(f"{what} {out} exists; pass --overwrite to replace it or choose another -o path")


def check_output(path, inputs, overwrite: bool, what: str = "output") -> pathlib.Path:
    """:func:`check_outputs` for one output; ``inputs``: paths or ``(label, path)`` pairs."""
    out = pathlib.Path(path)
    pairs = [i if isinstance(i, tuple) else ("input", str(i)) for i in inputs]
    check_outputs([(what, out)], pairs, overwrite)
    return out


def strict_json(obj):
    """``obj`` with non-finite floats (a trace after a NaN stop) replaced by None, so the file is strict JSON; NumPy
    scalars and arrays become Python numbers and lists.

    Example:
      >>> strict_json({"a": [1.0, float("nan")], "b": np.float32(2.5), "c": np.arange(2)})
      {'a': [1.0, None], 'b': 2.5, 'c': [0, 1]}
    """
    if isinstance(obj, (np.generic, np.ndarray)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def json_writer(obj):
    """``write(binary_file)`` of ``obj`` as strict JSON (NaN/inf become null), for :class:`nst_jax.files.OutputSet`."""
    text = json.dumps(strict_json(obj), indent=1, allow_nan=False).encode()
    return lambda f: f.write(text)


def write_json(path, obj) -> None:
    """Write ``obj`` atomically as strict JSON (NaN/inf become null)."""
    atomic_write(path, json_writer(obj))


def say_random(result_settings) -> None:
    """Note on stderr when the result was made with random (untrained) weights."""
    if result_settings.get("weights_random"):
        print("nst-jax: note: made with RANDOM weights (not a pretrained network): this is not style transfer",
              file=sys.stderr)


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def parse_bytes(text: str) -> int:
    """``"8GB" -> 8e9``, ``"512MiB" -> 512 * 2**20``, ``"1e9" -> 1e9`` (decimal and binary units).

    Example:
      >>> parse_bytes("8GB"), parse_bytes("512MiB"), parse_bytes("1e9")
      (8000000000, 536870912, 1000000000)
    """
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(text))
    try:
        value = float(m.group(1)) * _UNITS[m.group(2).lower()] if m else float("nan")
    except (KeyError, ValueError):
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"--memory-limit takes a size such as 8GB or 512MiB (or 'none'), got {text!r}")
    return int(value)
