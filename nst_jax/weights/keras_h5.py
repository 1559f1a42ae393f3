"""Keras VGG weight files (HDF5) read into a numpy params tree, from a path, a file object or a wheel member.

Two layouts are read:

* Keras 1/2 ("legacy h5"): one group per layer, ``block{B}_conv{I}/block{B}_conv{I}/kernel:0`` and ``.../bias:0``
  (or ``block1_conv1_W_1:0`` / ``block1_conv1_b_1:0`` in files saved by Keras 1, or without the doubled group);
  mapped to ``conv{B}_{I}``. Weightless groups (pools, input) and ``fc1``/``fc2``/``predictions`` are skipped.
* Keras 3 (``.weights.h5``): ``block{B}/layers/conv2d{,_1,_2,_3}/vars/{0,1}`` (kernel HWIO, bias), with
  ``conv2d`` -> ``conv{B}_1``, ``conv2d_1`` -> ``conv{B}_2`` ...; other top-level groups (HED's ``dsn*``, ``fuse``)
  are ignored.

Both store kernels as [3, 3, C_in, C_out] (HWIO, cross-correlation), which is the params layout of
:mod:`nst_jax.vgg`, so conversion only renames. The trees are not validated here (``cache.validate_params`` does).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from nst_jax.files import one_line

__all__ = ["read_keras_h5", "read_wheel_member"]

Params = Dict[str, Dict[str, np.ndarray]]

_K2_LAYER = re.compile(r"^block(\d+)_conv(\d+)$")
_K3_BLOCK = re.compile(r"^block(\d+)$")
_K3_CONV = re.compile(r"^conv2d(?:_(\d+))?$")
_K2_SKIP = {"fc1", "fc2", "predictions", "flatten"}


def _kernel_and_bias(group, where: str, origin: str) -> Tuple[np.ndarray, np.ndarray]:
    """The one 4-D (kernel) and one 1-D (bias) dataset under an h5 group (searched recursively)."""
    import h5py

    found: Dict[int, List[Tuple[str, object]]] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.setdefault(obj.ndim, []).append((name, obj))

    group.visititems(visit)
    if len(found.get(4, [])) != 1 or len(found.get(1, [])) != 1:
        desc = ", ".join(f"{n} {tuple(d.shape)}" for lst in found.values() for n, d in lst) or "nothing"
        raise ValueError(f"{origin}: '{where}' should hold one 4-D kernel and one 1-D bias, found {desc}")
    return np.asarray(found[4][0][1][()], np.float32), np.asarray(found[1][0][1][()], np.float32)


def _has_datasets(group) -> bool:
    import h5py

    hit = []
    group.visititems(lambda n, o: hit.append(n) if isinstance(o, h5py.Dataset) else None)
    return bool(hit)


def _read_keras2(f, origin: str) -> Params:
    params: Params = {}
    for name in f:
        m = _K2_LAYER.match(name)
        if m:
            k, b = _kernel_and_bias(f[name], name, origin)
            params[f"conv{int(m.group(1))}_{int(m.group(2))}"] = {"kernel": k, "bias": b}
        elif name not in _K2_SKIP and _has_datasets(f[name]):
            raise ValueError(f"{origin}: unexpected layer '{name}' with weights (expected block{{B}}_conv{{I}} layers)")
    return params


def _read_keras3_block(layers, b: int, where_block: str, origin: str) -> Params:
    """The convs of one Keras 3 block group's ``layers`` (``conv2d`` -> ``conv{b}_1`` ...)."""
    params: Params = {}
    for lname in layers:
        lm = _K3_CONV.match(lname)
        where = f"{where_block}/layers/{lname}"
        if lm:
            vars_ = layers[lname].get("vars")
            if vars_ is None or "0" not in vars_ or "1" not in vars_:
                raise ValueError(f"{origin}: '{where}/vars' should hold datasets '0' (kernel) and '1' (bias)")
            params[f"conv{b}_{int(lm.group(1) or 0) + 1}"] = {
                "kernel": np.asarray(vars_["0"][()], np.float32),
                "bias": np.asarray(vars_["1"][()], np.float32),
            }
        elif _has_datasets(layers[lname]):
            raise ValueError(f"{origin}: unexpected layer '{where}' with weights (expected conv2d, conv2d_1 ...)")
    return params


def _read_keras3(f, origin: str) -> Params:
    params: Params = {}
    for name in f:
        m = _K3_BLOCK.match(name)
        if not m:
            continue  # HED's dsn1..5 / fuse side outputs, the model's own "vars"
        layers = f[name].get("layers")
        if layers is not None:
            params.update(_read_keras3_block(layers, int(m.group(1)), name, origin))
    return params


def read_keras_h5(file, origin: str | None = None) -> Params:
    """Convert a Keras VGG weights h5 (path or binary file object; either layout, see module doc) to a numpy tree.

    The tree is not validated here. A file that is not HDF5, is truncated or has neither layout raises
    ``ValueError`` naming ``origin`` (default: the path).

    Example:
      >>> import h5py
      >>> buf = io.BytesIO()
      >>> with h5py.File(buf, "w") as f:                            # the Keras 3 layout of a one-conv network
      ...     _ = f.create_dataset("block1/layers/conv2d/vars/0", data=np.ones((3, 3, 3, 4), np.float32))
      ...     _ = f.create_dataset("block1/layers/conv2d/vars/1", data=np.zeros(4, np.float32))
      >>> {k: {n: a.shape for n, a in v.items()} for k, v in read_keras_h5(buf, origin="mem.h5").items()}
      {'conv1_1': {'kernel': (3, 3, 3, 4), 'bias': (4,)}}
      >>> read_keras_h5(io.BytesIO(b"not hdf5"), origin="mem.h5")
      Traceback (most recent call last):
      ...
      ValueError: mem.h5: not a readable HDF5 file (truncated or another format?): ...
    """
    import h5py

    origin = origin or str(file)
    if isinstance(file, (str, os.PathLike)) and not Path(file).is_file():
        raise FileNotFoundError(f"{origin}: no such weights file")
    try:
        with h5py.File(file, "r") as f:
            top = list(f)
            if any(_K2_LAYER.match(n) for n in top):
                return _read_keras2(f, origin)
            if any(_K3_BLOCK.match(n) and "layers" in f[n] for n in top):
                return _read_keras3(f, origin)
            raise ValueError(
                f"{origin}: not a Keras VGG weights file (no 'block1_conv1' nor 'block1/layers' group; "
                f"top-level groups: {top[:8]})"
            )
    except (OSError, KeyError, RuntimeError) as e:
        raise ValueError(f"{origin}: not a readable HDF5 file (truncated or another format?): {one_line(e)}") from None


def read_wheel_member(wheel: Path, member: str) -> Params:
    """:func:`read_keras_h5` of the h5 file ``member`` inside the zip (wheel) ``wheel``, read into memory."""
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ValueError(f"{wheel}: cannot read {member} ({one_line(e)})") from None
    return read_keras_h5(io.BytesIO(data), origin=f"{wheel}!{member}")
