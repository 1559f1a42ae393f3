"""Checkpoints of a running solve: one ``.npz`` file that lets an interrupted run finish exactly as it would have.

A checkpoint ``OUT.ckpt.npz`` (next to the output ``OUT.png``, see :func:`checkpoint_path`) holds, without pickles
(``np.load(..., allow_pickle=False)`` reads it)::

    format          str            FORMAT ("nst-jax-checkpoint/2"; version 1 files, without ``slots/``, load too)
    settings        str            JSON: everything that defines the run (file sha256s, sizes, weights, solver, seed)
    image           float32 [H, W, C]   the current iterate as the solver sees it (C = 1 for luminance transfer)
    iteration       int64          solver iterations done
    n_fg            int64          function+gradient evaluations spent
    seed            int64          the PRNG seed of the run (``--init noise``)
    trace_values    float32 [T]    loss after each iteration so far (T = iteration + 1: entry 0 is the initial image)
    trace_nfevs     int32   [T]    cumulative f+g after each iteration
    trace_terms     float32 [3, T] the unweighted content, style and TV terms after each iteration
    trace_seconds   float64 [T]    solve seconds (compile excluded) at each iteration
    state_names     str [N]        ``jax.tree_util.keystr`` path of each solver-state leaf, in ``tree_leaves`` order
    state/00000 ..  [...]          the N leaves of the solver state pytree (L-BFGS history, Adam moments, ...)
    slots/00000 ..  int64 [k]      (only for a compacted leaf) which of its ``shape/00000[0]`` slots along axis 0 are
    shape/00000 ..  int64 [ndim]   stored in ``state/00000``; the others are all-zero bits (e.g. the L-BFGS history
                                   pairs not yet in use), restored exactly on load

Compacting leaves by their all-zero slots is exact and needs no knowledge of the solver: an L-BFGS history with
``count`` of ``m`` pairs in use is stored at ``count / m`` of its size (its size then is ``2 m H W C`` float32, so
``--history`` is what bounds a long run's checkpoint; :func:`nst_jax.memory.checkpoint_bytes` estimates it).
    level           int64          a run of several levels (warm start, coarse-to-fine): the level being solved
                                   (0-based; ``image``, ``iteration``, the trace and the state are that level's)
    levels          str            JSON list, one record per finished level (its trace, f+g, terms, timings)
    levels/001/raw  [...]          the finished levels' arrays (``levels/{level:03d}/{name}``: e.g. its raw result)

The write is atomic (hidden temp file in the same folder, fsync, ``os.replace``), so a crash while saving leaves the
previous checkpoint intact. :func:`compare_settings` refuses to resume under different settings, naming the first
differing one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nst_jax.files import atomic_write
from nst_jax.interrupts import InterruptFlag  # noqa: F401  (re-exported: the solve's Ctrl-C / SIGTERM flag)
from nst_jax.objective import TERMS

__all__ = [
    "FORMAT",
    "Checkpoint",
    "checkpoint_path",
    "file_sha256",
    "flatten_state",
    "save_checkpoint",
    "load_checkpoint",
    "compare_settings",
    "RESUME_FIX",
    "InterruptFlag",
]

FORMAT = "nst-jax-checkpoint/2"
FORMATS = ("nst-jax-checkpoint/1", FORMAT)  # what load_checkpoint reads
SUFFIX = ".ckpt.npz"


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint (field meanings in the module docstring)."""

    path: pathlib.Path
    settings: Dict[str, Any]
    image: np.ndarray  # [H, W, C] float32
    iteration: int
    n_fg: int
    seed: int
    trace_values: np.ndarray  # [T] float32
    trace_nfevs: np.ndarray  # [T] int32
    state_names: List[str]
    state_leaves: List[np.ndarray]
    trace_terms: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # {term: [T]}
    trace_seconds: Optional[np.ndarray] = None  # [T]
    level: int = 0  # the level being solved in a run of several levels
    finished: List[Dict[str, Any]] = dataclasses.field(default_factory=list)  # one record per finished level

    def resume_args(self) -> Dict[str, Any]:
        """The ``resume`` argument of :meth:`nst_jax.runner.Solve.__call__`."""
        out = {"leaves": self.state_leaves, "iteration": self.iteration, "values": self.trace_values,
               "nfevs": self.trace_nfevs, "terms": self.trace_terms}
        if self.trace_seconds is not None:
            out["seconds"] = self.trace_seconds
        return out


def checkpoint_path(output) -> pathlib.Path:
    """``out/pic.png -> out/pic.ckpt.npz`` (the output's suffix replaced).

    Example:
      >>> checkpoint_path("out/pic.png").as_posix()
      'out/pic.ckpt.npz'
    """
    out = pathlib.Path(output)
    return out.with_name(out.stem + SUFFIX)


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def flatten_state(state) -> Tuple[List[str], List[np.ndarray]]:
    """A solver-state pytree -> (leaf path names, leaves as host NumPy arrays) in ``tree_leaves`` order."""
    import jax

    pairs = jax.tree_util.tree_flatten_with_path(state)[0]
    return [jax.tree_util.keystr(p) for p, _ in pairs], [np.asarray(a) for _, a in pairs]


def save_checkpoint(path, *, image, state, iteration: int, n_fg: int, values, nfevs, settings: Mapping[str, Any],
                    seed: int, terms: Optional[Mapping[str, Any]] = None, seconds=None, level: int = 0,
                    finished: Sequence[Mapping[str, Any]] = ()) -> pathlib.Path:
    """Write one checkpoint atomically (layout in the module docstring). ``state``: the solver-state pytree;
    ``terms`` ({content, style, tv: [T]}) and ``seconds`` ([T]) complete the trace (NaN / 0 when not given).
    ``level`` and ``finished``: a run of several levels, the level being solved and one record per finished level
    (JSON-able values, and NumPy arrays stored beside them), given back as :attr:`Checkpoint.finished`.

    Example (a round trip through :func:`load_checkpoint`):
      >>> import tempfile
      >>> state = {"s": np.zeros((2, 4, 4, 3), np.float32), "k": np.int32(2)}   # any pytree of arrays
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = save_checkpoint(checkpoint_path(f"{tmp}/out.png"), image=np.full((4, 4, 3), 0.5), state=state,
      ...                            iteration=2, n_fg=3, values=[3.0, 2.0, 1.0], nfevs=[1, 2, 3],
      ...                            settings={"size": 4}, seed=0)
      ...     ck = load_checkpoint(path)
      >>> path.name, ck.iteration, ck.n_fg, ck.settings, ck.image.shape
      ('out.ckpt.npz', 2, 3, {'size': 4}, (4, 4, 3))
      >>> ck.state_names, [leaf.shape for leaf in ck.state_leaves]   # leaves in tree_leaves order
      (["['k']", "['s']"], [(), (2, 4, 4, 3)])
      >>> ck.resume_args()["values"].tolist()
      [3.0, 2.0, 1.0]
    """
    path = pathlib.Path(path)
    names, leaves = flatten_state(state)
    arrays = {
        "format": np.array(FORMAT),
        "settings": np.array(json.dumps(settings, sort_keys=True)),
        "image": np.asarray(image, np.float32),
        "iteration": np.array(int(iteration), np.int64),
        "n_fg": np.array(int(n_fg), np.int64),
        "seed": np.array(int(seed), np.int64),
        "trace_values": np.asarray(values, np.float32).reshape(-1),
        "trace_nfevs": np.asarray(nfevs, np.int32).reshape(-1),
        "trace_terms": np.stack([np.asarray((terms or {}).get(k, np.full(len(np.ravel(values)), np.nan)),
                                            np.float32).reshape(-1) for k in TERMS]),
        "trace_seconds": np.asarray(np.zeros(len(np.ravel(values))) if seconds is None else seconds,
                                    np.float64).reshape(-1),
        "state_names": np.array(names, dtype=str) if names else np.zeros((0,), "<U1"),
    }
    for j, leaf in enumerate(leaves):
        arrays.update(_compacted(j, leaf))
    if level or finished:
        arrays["level"] = np.array(int(level), np.int64)
        arrays["levels"] = np.array(json.dumps([{k: v for k, v in rec.items() if not isinstance(v, np.ndarray)}
                                                for rec in finished]))
        for j, rec in enumerate(finished):
            arrays.update({f"levels/{j:03d}/{k}": v for k, v in rec.items() if isinstance(v, np.ndarray)})
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def _compacted(j: int, leaf: np.ndarray) -> Dict[str, np.ndarray]:
    """``{state/j: leaf}``, or, when some slots along axis 0 are all-zero bits, only the others with their indices
    (``slots/j``) and the full shape (``shape/j``)."""
    arr = np.asarray(leaf)
    if arr.ndim >= 2 and arr.shape[0] > 1 and arr.size:
        bits = np.ascontiguousarray(arr).reshape(arr.shape[0], -1).view(np.uint8)
        used = np.flatnonzero(np.any(bits, axis=1))
        if len(used) < arr.shape[0]:
            return {f"state/{j:05d}": arr[used], f"slots/{j:05d}": used.astype(np.int64),
                    f"shape/{j:05d}": np.array(arr.shape, np.int64)}
    return {f"state/{j:05d}": arr}


def _expanded(data: Mapping[str, np.ndarray], j: int) -> np.ndarray:
    """Leaf ``j`` as saved, compacted slots put back among zeros (see :func:`_compacted`)."""
    stored = data[f"state/{j:05d}"]
    if f"slots/{j:05d}" not in data:
        return stored
    shape = tuple(int(v) for v in data[f"shape/{j:05d}"])
    slots = np.asarray(data[f"slots/{j:05d}"], np.int64)
    if len(shape) != stored.ndim or shape[1:] != stored.shape[1:] or slots.shape != stored.shape[:1] or (
            slots.size and (slots.min() < 0 or slots.max() >= shape[0])):
        raise ValueError(f"state leaf {j} has {stored.shape} stored for slots {slots.tolist()[:5]} of {shape}")
    full = np.zeros(shape, stored.dtype)
    full[slots] = stored
    return full


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint; ``FileNotFoundError`` if missing, a one-line ``ValueError`` if unreadable or not ours.

    Example (see :func:`save_checkpoint` for a round trip):
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     np.savez(f"{tmp}/other.npz", x=np.zeros(3))
      ...     load_checkpoint(f"{tmp}/other.npz")
      Traceback (most recent call last):
      ...
      ValueError: .../other.npz is not an nst-jax checkpoint (nst-jax-checkpoint/2); pass the OUT.ckpt.npz file of a run
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found (it is written as OUT{SUFFIX} by --checkpoint-every)")
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; pass the .ckpt.npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, ValueError, OSError, EOFError, zlib.error ...
        msg = " ".join(str(e).split())
        raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}: {msg}); it is damaged: "
                         f"{_DAMAGED}") from None
    if "format" not in data or str(data["format"]) not in FORMATS:
        raise ValueError(f"{path} is not an nst-jax checkpoint ({FORMAT}); pass the OUT{SUFFIX} file of a run")
    missing = [k for k in ("settings", "image", "iteration", "n_fg", "seed", "trace_values", "trace_nfevs",
                           "state_names") if k not in data]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; {_DAMAGED}")
    try:
        return _checked(path, data)
    except (KeyError, ValueError, TypeError, OverflowError, IndexError) as e:
        raise ValueError(f"checkpoint {path} is damaged or was edited ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}); {_DAMAGED}") from None


_DAMAGED = "delete it and start again (nst-jax stylize ... --overwrite)"


def _scalar_int(data, key: str, lo: int = 0) -> int:
    a = np.asarray(data[key])
    if a.shape != () or a.dtype.kind not in "iu" or int(a) < lo:
        raise ValueError(f"{key} must be an integer >= {lo}, got {a.dtype}{list(a.shape)}")
    return int(a)


def _numeric(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} has dtype {a.dtype}; expected numbers")
    return a


def _checked(path: pathlib.Path, data: Mapping[str, np.ndarray]) -> Checkpoint:
    """The checkpoint's fields, every type, shape and range checked (a hand-edited file must not get further)."""
    names = [str(n) for n in np.asarray(data["state_names"]).reshape(-1)]
    leaves = [_numeric(_expanded(data, j), f"state leaf {j}") for j in range(len(names))]
    settings = json.loads(str(data["settings"]))
    if not isinstance(settings, dict):
        raise ValueError(f"settings must be a JSON object, got {type(settings).__name__}")
    it, n_fg, seed = _scalar_int(data, "iteration"), _scalar_int(data, "n_fg"), _scalar_int(data, "seed")
    values = np.asarray(_numeric(data["trace_values"], "trace_values"), np.float32)
    nfevs = np.asarray(_numeric(data["trace_nfevs"], "trace_nfevs"), np.int32)
    image = _numeric(data["image"], "image")
    if values.shape != (it + 1,) or nfevs.shape != (it + 1,) or image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"inconsistent: iteration {it}, a trace of {values.shape}, an image of {image.shape}")
    image = np.asarray(image, np.float32)
    if not np.all(np.isfinite(image)):
        raise ValueError("the image holds NaN or inf")
    terms = {k: np.asarray(data["trace_terms"][j], np.float32) for j, k in enumerate(TERMS)} \
        if "trace_terms" in data and data["trace_terms"].shape == (len(TERMS), it + 1) else {}
    seconds = np.asarray(data["trace_seconds"], np.float64) if "trace_seconds" in data and \
        data["trace_seconds"].shape == (it + 1,) else None
    level, finished = _levels(data, path)
    return Checkpoint(path, settings, image, it, n_fg, seed, values, nfevs, names, leaves, terms, seconds, level,
                      finished)


def _levels(data: Mapping[str, np.ndarray], path) -> Tuple[int, List[Dict[str, Any]]]:
    """(level, finished-level records with their arrays) of a loaded checkpoint; (0, []) for a single-level one.
    Raises ``ValueError`` (made one line by :func:`load_checkpoint`) for records that are not a JSON list of
    objects, or a level below the number of finished ones."""
    if "level" not in data:
        return 0, []
    level = _scalar_int(data, "level")
    records = json.loads(str(data["levels"]))
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records) or level < len(records):
        raise ValueError(f"levels must be a JSON list of one object per finished level (at most level {level})")
    for j, rec in enumerate(records):
        prefix = f"levels/{j:03d}/"
        rec.update({k[len(prefix):]: _numeric(data[k], k) for k in data if k.startswith(prefix)})
    return level, records


def _show(v) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 40 else s[:37] + "..."


#: What to do when the settings differ, for a run given its arguments again (``nst-jax stylize ... --resume``).
RESUME_FIX = "resume with the same arguments (or use 'nst-jax resume CHECKPOINT'), or pass --overwrite to start again"


def compare_settings(saved: Mapping[str, Any], current: Mapping[str, Any], *, ignore: Sequence[str] = (),
                     fix: str = RESUME_FIX) -> None:
    """Raise a one-line ``ValueError`` naming the first setting (sorted by key) that differs between a checkpoint's
    ``saved`` settings and the ``current`` run's, then ``fix``; keys in ``ignore`` are not compared."""
    keys = sorted((set(saved) | set(current)) - set(ignore))
    diff = [k for k in keys if json.dumps(saved.get(k), sort_keys=True) != json.dumps(current.get(k), sort_keys=True)]
    if diff:
        k = diff[0]
        more = f" (and {len(diff) - 1} more: {', '.join(diff[1:])})" if len(diff) > 1 else ""
        raise ValueError(f"the checkpoint was made with different settings: {k} was {_show(saved.get(k))}, now "
                         f"{_show(current.get(k))}{more}; {fix}")
