"""Many devices and many processes: device choice, JAX's multi-controller runtime, and reading sharded results.

A sweep's K members are one array axis; :mod:`nst_jax.runner` places it over a mesh of every device JAX sees
(``jax.devices()``: all processes' devices once :func:`initialize` has run) and runs each device's members in a
``shard_map``. The host then reads results with :func:`fetch` (local arrays as they are, arrays spanning other
processes gathered, every process calling in step) and writes the members this process holds
(:func:`owned_members`).

Order matters: :func:`select_devices` and :func:`initialize` must run before anything touches a JAX device.

* :class:`ClusterConfig` -- ``--coordinator HOST:PORT --num-processes N --process-id I`` (or the environment a
  cluster launcher sets: ``JAX_COORDINATOR_ADDRESS`` with ``NST_JAX_NUM_PROCESSES``/``NST_JAX_PROCESS_ID``, or
  SLURM / Open MPI, which ``jax.distributed.initialize()`` detects itself), with timeouts.
* :func:`select_devices` -- ``"cpu"``, ``"cpu:4"`` (4 CPU devices), ``"gpu"``, ``"gpu:0,1"`` (those GPUs only).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Iterator, Optional, Tuple

import numpy as np

from nst_jax.config import SettingError

__all__ = ["ClusterConfig", "select_devices", "initialize", "place", "fetch", "owned_members", "agree", "barrier",
           "is_coordinator"]


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """A multi-process run. ``coordinator`` ``"HOST:PORT"`` (process 0 listens there), ``num_processes``,
    ``process_id`` in 0..N-1; ``auto=True``: let JAX detect a cluster (SLURM, Open MPI) from its environment.
    Timeouts (seconds): reaching the coordinator at start-up, a silent peer during the run, peers finishing apart."""

    coordinator: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    auto: bool = False
    init_timeout_s: int = 60
    heartbeat_timeout_s: int = 60
    shutdown_timeout_s: int = 300

    def __post_init__(self):
        if self.auto:
            return
        given = [v is not None for v in (self.coordinator, self.num_processes, self.process_id)]
        if any(given) and not all(given):
            raise SettingError("coordinator", "--coordinator, --num-processes and --process-id go together; give "
                                              "all three (or none)")
        if not all(given):
            return
        host, sep, port = str(self.coordinator).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingError("coordinator", f"{{setting}} must be HOST:PORT, got {self.coordinator!r}")
        if not (isinstance(self.num_processes, int) and self.num_processes >= 1):
            raise SettingError("num_processes", f"{{setting}} must be an integer >= 1, got {self.num_processes!r}")
        if not (isinstance(self.process_id, int) and 0 <= self.process_id < self.num_processes):
            raise SettingError("process_id", f"{{setting}} must be an integer from 0 to {self.num_processes - 1} "
                                             f"(--num-processes {self.num_processes}), got {self.process_id!r}")
        for name in ("init_timeout_s", "heartbeat_timeout_s", "shutdown_timeout_s"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise SettingError(name, f"{{setting}} must be an integer >= 1, got {getattr(self, name)!r}")

    @property
    def multi(self) -> bool:
        return self.auto or self.coordinator is not None

    @classmethod
    def from_env(cls, environ=None) -> "ClusterConfig":
        """From ``JAX_COORDINATOR_ADDRESS`` with ``NST_JAX_NUM_PROCESSES`` and ``NST_JAX_PROCESS_ID`` (JAX itself
        reads no process count or id from the environment); ``auto`` under SLURM or Open MPI; else single-process."""
        env = os.environ if environ is None else environ
        if env.get("JAX_COORDINATOR_ADDRESS") and env.get("NST_JAX_NUM_PROCESSES"):
            try:
                n, i = int(env["NST_JAX_NUM_PROCESSES"]), int(env.get("NST_JAX_PROCESS_ID", "-1"))
            except ValueError:
                raise SettingError("num_processes", "NST_JAX_NUM_PROCESSES and NST_JAX_PROCESS_ID must be "
                                                    "integers") from None
            return cls(env["JAX_COORDINATOR_ADDRESS"], n, i)
        if "SLURM_JOB_ID" in env and "SLURM_NTASKS" in env or "OMPI_MCA_orte_hnp_uri" in env:
            return cls(auto=True)
        return cls()


def select_devices(spec: Optional[str]) -> None:
    """Choose this process's devices before JAX starts: ``"cpu"``, ``"cpu:N"`` (N CPU devices), ``"gpu"`` or
    ``"gpu:0,1"`` (only those GPUs are made visible; they are numbered 0.. in this process). None: JAX's default."""
    if not spec:
        return
    import jax

    kind, _, rest = spec.partition(":")
    if kind == "cpu":
        jax.config.update("jax_platforms", "cpu")
        if rest:
            if not rest.isdigit() or int(rest) < 1:
                raise SettingError("devices", f"{{setting}} cpu:N needs a count N >= 1, got {spec!r}")
            jax.config.update("jax_num_cpu_devices", int(rest))
    elif kind in ("gpu", "cuda"):
        jax.config.update("jax_platforms", "cuda")
        if rest:
            ids = rest.split(",")
            if not all(i.strip().isdigit() for i in ids):
                raise SettingError("devices", f"{{setting}} gpu:IDS takes comma-separated GPU numbers, got {spec!r}")
            jax.config.update("jax_cuda_visible_devices", ",".join(i.strip() for i in ids))
    else:
        raise SettingError("devices", f"{{setting}} must be cpu, cpu:N, gpu or gpu:0,1,..., got {spec!r}")


def _wait_for(host: str, port: int, timeout_s: float) -> None:
    """Until the coordinator accepts a connection; a one-line error after ``timeout_s`` (instead of the runtime's
    abort)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise SettingError("coordinator", f"the coordinator {host}:{port} ({{setting}}) could not be reached "
                                                  f"within {timeout_s:.0f} s ({type(e).__name__}); start process 0 "
                                                  "first, check the address and the firewall") from None
            time.sleep(0.5)


def initialize(cfg: ClusterConfig) -> Tuple[int, int]:
    """Join the multi-process runtime (a no-op for a single-process config); returns ``(process_id, count)``.

    Processes other than 0 first wait for the coordinator's port (so an unreachable coordinator is a one-line error
    after ``init_timeout_s``); afterwards the process count and id are checked against the config."""
    import jax

    if not cfg.multi:
        return 0, 1
    kw = dict(initialization_timeout=cfg.init_timeout_s, heartbeat_timeout_seconds=cfg.heartbeat_timeout_s,
              shutdown_timeout_seconds=cfg.shutdown_timeout_s)
    if cfg.auto:
        jax.distributed.initialize(**kw)
    else:
        host, _, port = cfg.coordinator.rpartition(":")
        if cfg.process_id != 0:
            _wait_for(host, int(port), cfg.init_timeout_s)
        jax.distributed.initialize(cfg.coordinator, cfg.num_processes, cfg.process_id, **kw)
        if jax.process_count() != cfg.num_processes:
            raise SettingError("num_processes", f"the coordinator runs {jax.process_count()} processes but this one "
                                                f"was started with {{setting}} {cfg.num_processes}; start every "
                                                "process with the same count")
    return jax.process_index(), jax.process_count()


def is_coordinator() -> bool:
    """True in process 0 (and in a single-process run)."""
    import jax

    return jax.process_index() == 0


def place(tree, sharded: bool = True):
    """Host arrays as global arrays over the mesh of every device: the leading (member) axis split across the
    devices (``sharded``) or replicated. Every process passes the same full values (each keeps its own part)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("k",)), P("k") if sharded else P())

    def one(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree_util.tree_map(one, tree)


def fetch(x) -> np.ndarray:
    """A jax array on the host: as it is when this process holds all of it, else gathered from every process (a
    collective: every process must call it at the same point)."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def owned_members(x) -> Iterator[Tuple[int, np.ndarray]]:
    """``(k, member)`` for the members along the leading axis of ``x`` that this process's devices hold (each once:
    replicas on several local devices are yielded by the first)."""
    seen = set()
    for shard in x.addressable_shards:
        ks = range(*shard.index[0].indices(x.shape[0]))
        for k, member in zip(ks, np.asarray(shard.data)):
            if k not in seen:
                seen.add(k)
                yield k, member


def agree(value: int) -> int:
    """Process 0's ``value`` in every process (a collective; alone: ``value``): decisions that change how many
    collectives follow (chunk lengths, stopping) must be the same everywhere."""
    import jax

    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def barrier(name: str) -> None:
    """Every process waits here until all arrive (``multihost_utils.sync_global_devices``; a no-op alone)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
