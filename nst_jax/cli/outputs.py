"""What commands write and check before writing: output paths, strict JSON, sizes such as ``8GB``, notes."""

from __future__ import annotations

import json
import math
import pathlib
import re
import sys

import numpy as np

from nst_jax.files import atomic_write

__all__ = ["check_output", "strict_json", "write_json", "say_random", "parse_bytes"]


def check_output(path, inputs, overwrite: bool, what: str = "output") -> pathlib.Path:
    """Refuse before any work: missing folder, an input as output, or an existing file without --overwrite."""
    out = pathlib.Path(path)
    if not out.parent.exists():
        raise ValueError(f"{what} folder {out.parent} does not exist; create it or choose another -o path")
    for i in inputs:
        ip = pathlib.Path(i)
        if ip.exists() and out.exists() and out.resolve() == ip.resolve():
            raise ValueError(f"{what} {out} is one of the inputs; choose another -o path")
    if out.exists() and not overwrite:
        raise ValueError(f"{what} {out} exists; pass --overwrite to replace it or choose another -o path")
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


def write_json(path, obj) -> None:
    """Write ``obj`` atomically as strict JSON (NaN/inf become null)."""
    text = json.dumps(strict_json(obj), indent=1, allow_nan=False)
    atomic_write(path, lambda f: f.write(text.encode()))


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
