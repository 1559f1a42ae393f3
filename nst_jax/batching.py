"""How a sweep's K members evaluate their losses: one batched network pass, or K single-image passes side by side.

``SolverConfig.members`` chooses (its ``"auto"`` per backend, :mod:`nst_jax.backend`). ``"vmap"`` is plain
``jax.vmap``: convolutions with batch K. ``"unroll"`` wraps the value-and-gradient function in
:func:`unrolled_over_members`: the solver is still vmapped, but the loss and gradient of each member are separate
single-image computations in the same compiled program, which is faster where a backend's batched convolutions are
slower than single ones (measured on CPU, ``benchmarks/RESULTS.md``). Both compute the same numbers.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["UNROLL_GROUPS", "unrolled_over_members", "members_per_program"]

#: At most this many single-image groups; members beyond that are vmapped within their group.
UNROLL_GROUPS = 8


def members_per_program(mode: str):
    """The most members one program should hold per device with the (resolved) ``mode``: ``UNROLL_GROUPS`` for
    "unroll" (beyond it members are vmapped in groups, the batched evaluation "unroll" exists to avoid), None
    (no bound) for "vmap". Sweeps run larger grids in waves of this size (:func:`nst_jax.sweeps.plan_waves`).

    Example:
      >>> members_per_program("unroll"), members_per_program("vmap")
      (8, None)
    """
    return UNROLL_GROUPS if mode == "unroll" else None


def unrolled_over_members(vg: Callable) -> Callable:
    """``vg(x, params, targets, weights) -> outputs`` (any pytree, e.g. ``(f, g, aux)``) whose batching rule
    evaluates members as separate calls.

    Only the vmap rule changes: unbatched calls are ``vg`` itself. Its outputs must not be differentiated
    (``custom_vmap`` has no reverse-mode rule); the solvers only read them.
    """

    @jax.custom_batching.custom_vmap
    def fn(x, params, targets, weights):
        return vg(x, params, targets, weights)

    @fn.def_vmap
    def rule(axis_size, in_batched, x, params, targets, weights):
        args, in_batched = (x, params, targets, weights), tuple(in_batched)
        groups = np.array_split(np.arange(axis_size), min(axis_size, UNROLL_GROUPS))

        def take(lo, hi, single):
            def pick(a, batched):
                if not batched:
                    return a
                return a[lo] if single else a[lo:hi]
            return jax.tree_util.tree_map(pick, args, in_batched)

        outs = []
        for g in groups:
            lo, hi = int(g[0]), int(g[-1]) + 1
            if hi - lo == 1:
                outs.append(jax.tree_util.tree_map(lambda a: a[None], vg(*take(lo, hi, True))))
            else:
                axes = jax.tree_util.tree_map(lambda b: 0 if b else None, in_batched)
                outs.append(jax.vmap(vg, in_axes=tuple(axes))(*take(lo, hi, False)))
        out = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *outs)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return fn
