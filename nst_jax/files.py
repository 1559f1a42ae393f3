"""Small file helpers shared by every writer in the package: atomic and all-or-nothing writes, output locks, checks
that a folder can take the outputs, and one-line error texts.

* :func:`atomic_write` -- one file through a hidden temp file in its folder, then ``os.replace`` (or, with
  ``exclusive=True``, a hard link that fails if the file appeared meanwhile: no silent replacement).
* :class:`OutputSet` -- several files published as one unit: all are written to temp files first, then moved into
  place; a failure (a full disk, a read-only folder) leaves none of them.
* :class:`OutputLock` -- an advisory lock (``flock``) on an output path for the length of a run, so two runs started
  at once with the same output cannot both write it.
* :func:`check_folder_writable` -- a folder takes a new file and has room for ``need`` bytes, checked before hours of
  work.

Every ``OSError`` these raise names the file the user asked for, never a temp file.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import tempfile
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

__all__ = ["atomic_write", "one_line", "same_file", "temp_files", "OutputSet", "OutputLock", "check_folder_writable",
           "os_error_hint"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _renamed(e: OSError, path) -> OSError:
    """``e`` (same type and errno) naming ``path`` instead of a temp file; an error that is not the operating
    system's (no errno, e.g. a failed download raised by ``write``) stays as it is."""
    if e.errno is None:
        return e
    try:
        return type(e)(e.errno, e.strerror or str(e), str(path))
    except TypeError:  # a subclass with its own constructor
        return OSError(e.errno, e.strerror or str(e), str(path))


def _write_temp(path: pathlib.Path, write: Callable[[BinaryIO], None], mode: Optional[int]) -> str:
    """``write`` into a new hidden temp file beside ``path`` (fsync'ed, permissions set); returns its name. On any
    failure the temp file is removed and an ``OSError`` names ``path``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _renamed(e, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask() if mode is None else mode)
    except BaseException as e:
        _unlink(tmp)
        if isinstance(e, OSError):
            raise _renamed(e, path) from None
        raise
    return tmp


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _publish(tmp: str, path: pathlib.Path, exclusive: bool) -> None:
    """Move ``tmp`` to ``path``: ``os.replace``, or with ``exclusive`` a hard link that fails if ``path`` exists
    (falling back to an exclusive create + replace where the file system has no hard links)."""
    try:
        if not exclusive:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network file systems): reserve the name, then replace
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            os.replace(tmp, path)
            return
        _unlink(tmp)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists (written by another run meanwhile?); pass --overwrite to replace "
                                            "it or choose another path", str(path)) from None
    except OSError as e:
        raise _renamed(e, path) from None


def atomic_write(path, write: Callable[[BinaryIO], None], mode: Optional[int] = None, *,
                 exclusive: bool = False) -> pathlib.Path:
    """Write ``path`` through a hidden temp file in its folder (``write(binary_file)``), fsync, then move it into place.

    Readers never see a partial file and a failure leaves an existing ``path`` untouched (the temp file is removed;
    the ``OSError`` names ``path``). ``exclusive``: never replace an existing file (``FileExistsError``), even one
    created while this was writing. ``mode``: the file's permissions (default: what the umask gives a new file;
    ``mkstemp`` alone would give 0600). Returns ``path``.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     p = atomic_write(f"{tmp}/a.txt", lambda f: f.write(b"hello"))
      ...     p.read_bytes(), sorted(q.name for q in p.parent.iterdir())
      (b'hello', ['a.txt'])
    """
    path = pathlib.Path(path)
    tmp = _write_temp(path, write, mode)
    try:
        _publish(tmp, path, exclusive)
    finally:
        _unlink(tmp)
    return path


def same_file(a, b) -> bool:
    """True if paths ``a`` and ``b`` name the same file: the same resolved path (symlinks followed; the file need
    not exist) or, when both exist, the same inode (hard links).

    Example:
      >>> same_file("x/../a.png", "a.png"), same_file("a.png", "b.png")
      (True, False)
    """
    a, b = pathlib.Path(a), pathlib.Path(b)
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def temp_files(path) -> List[pathlib.Path]:
    """The temp files :func:`atomic_write` / :class:`OutputSet` leave beside ``path`` only if the process dies while
    writing it (``.NAME.*.tmp``)."""
    path = pathlib.Path(path)
    return sorted(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (``[``, ``*``, ``?``)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in name)


class OutputSet:
    """Files published together: :meth:`stage` writes each to a temp file beside its path, :meth:`commit` moves them
    all into place. If writing any of them fails, or a move fails, none is left: staged temp files are removed, files
    already moved are removed again and replaced files are restored. Use as a context manager: leaving it by an
    exception discards whatever is staged.

    ``overwrite=False``: an existing file is never replaced (``FileExistsError``, also for one that appeared while
    the run was working).

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     with OutputSet() as outs:
      ...         _ = outs.stage(f"{tmp}/a.png", lambda f: f.write(b"image"))
      ...         _ = outs.stage(f"{tmp}/a.json", lambda f: f.write(b"{}"))
      ...         _ = outs.commit()
      ...     sorted(p.name for p in pathlib.Path(tmp).iterdir())
      ['a.json', 'a.png']
    """

    def __init__(self, overwrite: bool = False):
        self.overwrite = overwrite
        self._staged: List[Tuple[pathlib.Path, str]] = []

    def stage(self, path, write: Callable[[BinaryIO], None], mode: Optional[int] = None) -> pathlib.Path:
        """Write ``path``'s future content now (into a temp file beside it); it appears at :meth:`commit`."""
        path = pathlib.Path(path)
        if any(same_file(p, path) for p, _ in self._staged):
            raise ValueError(f"two outputs of one run are both named {path}; give them different names")
        if mode is None and path.exists():
            mode = path.stat().st_mode & 0o777
        self._staged.append((path, _write_temp(path, write, mode)))
        return path

    def commit(self) -> List[pathlib.Path]:
        """Move every staged file into place, all or none; returns their paths."""
        done: List[Tuple[pathlib.Path, Optional[str]]] = []  # (path, backup of the file it replaced)
        try:
            for path, tmp in self._staged:
                backup = self._backup(path) if self.overwrite else None
                _publish(tmp, path, exclusive=not self.overwrite)
                done.append((path, backup))
        except BaseException:
            for path, backup in reversed(done):
                if backup is not None:
                    os.replace(backup, path)
                else:
                    _unlink(path)
            self.discard()
            raise
        for _, backup in done:
            if backup is not None:
                _unlink(backup)
        paths = [p for p, _ in self._staged]
        self._staged = []
        return paths

    @staticmethod
    def _backup(path: pathlib.Path) -> Optional[str]:
        """A hard link to the file ``path`` holds now (restored if the commit fails), or None."""
        if not path.is_file():
            return None
        backup = str(path.parent / f".{path.name}.{os.getpid()}.bak.tmp")
        try:
            _unlink(backup)
            os.link(path, backup)
        except OSError:
            return None
        return backup

    def discard(self) -> None:
        """Remove every staged temp file."""
        for _, tmp in self._staged:
            _unlink(tmp)
        self._staged = []

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


class OutputLock:
    """An exclusive advisory lock on an output path for the length of a run: a hidden ``.NAME.lock`` file beside it,
    locked with ``flock`` (released by the kernel even if the process is killed). A second run asking for the same
    output while the first holds it gets a one-line ``ValueError``. Where ``fcntl`` is missing (Windows) the lock is
    a no-op and outputs still never replace each other silently (they are created exclusively).

    ``tag`` goes into the lock file's name: the processes of one multi-process run each lock their own
    (``".p1"``), so they share the output while a second run's process of the same index is refused.
    """

    def __init__(self, path, what: str = "output", tag: str = ""):
        self.path = pathlib.Path(path)
        self.lock_path = self.path.parent / f".{self.path.name}{tag}.lock"
        self.what = what
        self._fd: Optional[int] = None

    def __enter__(self) -> "OutputLock":
        try:
            import fcntl
        except ImportError:
            return self
        for _ in range(10):  # retry if the lock file was replaced between open and flock (a finishing run unlinks it)
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise _renamed(e, self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ValueError(f"another nst-jax run is writing {self.what} {self.path} right now; wait for it to "
                                 "finish or choose another -o path") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except OSError:
                same = False
            if same:
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)
        raise ValueError(f"could not lock {self.lock_path}; try again")

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _unlink(self.lock_path)
            os.close(self._fd)
            self._fd = None


def check_folder_writable(folder, need: int = 0, what: str = "output") -> None:
    """Refuse (one-line ``ValueError``) a folder that cannot take a new file, or has less than ``need`` bytes free;
    a probe file is created and removed again."""
    folder = pathlib.Path(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".nst-jax-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what} folder {folder} is not writable ({e.strerror or one_line(e)}); choose another "
                         "folder for -o") from None
    if need > 0:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return
        if free < need:
            raise ValueError(f"{what} folder {folder} has {free / 2 ** 20:.1f} MiB free but the outputs need about "
                             f"{need / 2 ** 20:.1f} MiB; free some space or choose another folder for -o")


_HINTS: Dict[int, str] = {errno.ENOSPC: "free some space or choose another folder",
                          errno.EDQUOT: "free some space or choose another folder",
                          errno.EROFS: "choose a writable folder", errno.EACCES: "check the permissions",
                          errno.EPERM: "check the permissions", errno.ENOENT: "check the path",
                          errno.EISDIR: "give a file, not a folder", errno.ENOTDIR: "check the path"}


def os_error_hint(e: OSError) -> str:
    """``"FILE: reason; what to do"`` for an ``OSError`` (one line).

    Example:
      >>> os_error_hint(OSError(errno.ENOSPC, "No space left on device", "out/a.png"))
      'out/a.png: No space left on device; free some space or choose another folder'
    """
    reason = e.strerror or one_line(e)
    where = f"{e.filename}: " if e.filename and str(e.filename) not in reason else ""
    hint = _HINTS.get(e.errno)
    return f"{where}{reason}" + (f"; {hint}" if hint and hint not in reason else "")


def one_line(exc: BaseException) -> str:
    """``"TypeName: message"`` with the message's white space folded onto one line (for ``nst-jax: error:`` lines).

    Example:
      >>> one_line(ValueError("bad\\n  value"))
      'ValueError: bad value'
    """
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
