"""Per-backend defaults: the one table that says what ``"auto"`` means on CPU, GPU and TPU.

Every entry is one overridable setting whose ``"auto"`` value is resolved here:

=========  ==========  ========  ========  =======================================================================
setting    cpu         gpu       tpu       what it chooses
=========  ==========  ========  ========  =======================================================================
ops        lean        lax       lax       network op path (``LossConfig.ops``): memory-lean custom derivatives
                                           (:mod:`nst_jax.lean_ops`) or the plain ``lax`` ops
conv       winograd    lax       lax       3x3 convolution form (``LossConfig.conv``): Winograd F(4x4, 3x3) where
                                           :func:`nst_jax.winograd.worthwhile` measured it cheaper, or XLA's own
loop       host        while     while     how a chunk of iterations runs (``SolverConfig.loop``)
members    unroll      vmap      vmap      how a sweep evaluates its K losses (``SolverConfig.members``)
precision  highest     highest   highest   float32 matmul/convolution precision of the network
                                           (``LossConfig.precision``; a ``jax.default_matmul_precision`` name:
                                           "tensorfloat32" trades accuracy for speed on GPUs that have it)
=========  ==========  ========  ========  =======================================================================

One setting is not a table entry because it must hold before any LAPACK routine loads: CPU linear algebra inside
compiled programs (the QR, SVD and ``eigh`` of the Gaussian W2 style loss; XLA calls scipy's OpenBLAS for them) runs
with one OpenBLAS thread (:data:`BLAS_THREADS_ENV` is set to 1 at import unless the environment already sets it).
XLA's own thread pool already occupies the cores; a second, spinning pool competing with it made QR decompositions
two orders of magnitude slower on a shared 2-core machine (``benchmarks/RESULTS.md``, "style losses").

bfloat16 activations are a setting of their own (``LossConfig.compute_dtype``, ``--bf16``), off everywhere by
default. The CPU column was chosen by measurement on a 2-core CPU (``benchmarks/RESULTS.md``); the accelerator
columns are the plain forms, unmeasured until an accelerator is lent: ``benchmarks/device_check.py`` measures each
of them (lean vs lax ops, Winograd vs lax convolutions, host vs while loop, vmap vs unroll, TF32 vs highest: speed
and loss difference).
"""

from __future__ import annotations

import os
from typing import Dict, Optional

__all__ = ["DEFAULTS", "BLAS_THREADS_ENV", "resolve", "current_backend"]

#: The environment variable that sets OpenBLAS's thread count (read once, when the library loads).
BLAS_THREADS_ENV = "OPENBLAS_NUM_THREADS"
os.environ.setdefault(BLAS_THREADS_ENV, "1")

DEFAULTS: Dict[str, Dict[str, str]] = {
    "cpu": {"ops": "lean", "conv": "winograd", "loop": "host", "members": "unroll", "precision": "highest"},
    "gpu": {"ops": "lax", "conv": "lax", "loop": "while", "members": "vmap", "precision": "highest"},
    "tpu": {"ops": "lax", "conv": "lax", "loop": "while", "members": "vmap", "precision": "highest"},
}


def current_backend() -> str:
    """``jax.default_backend()`` ("cpu", "gpu", "tpu"; other platforms count as "gpu")."""
    import jax

    name = jax.default_backend()
    return name if name in DEFAULTS else "gpu"


def resolve(setting: str, value: str, backend: Optional[str] = None) -> str:
    """``value`` itself, or for ``"auto"`` the table's entry for ``setting`` on ``backend`` (default: this one).

    Example:
      >>> resolve("loop", "while"), resolve("ops", "auto", "cpu"), resolve("members", "auto", "tpu")
      ('while', 'lean', 'vmap')
    """
    if value != "auto":
        return value
    table = DEFAULTS[backend or current_backend()]
    if setting not in table:
        raise ValueError(f"no per-backend default for {setting!r}; known: {', '.join(table)}")
    return table[setting]
