"""Small file helpers shared by every writer in the package: atomic writes and one-line error texts."""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import BinaryIO, Callable, Optional

__all__ = ["atomic_write", "one_line"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[BinaryIO], None], mode: Optional[int] = None) -> pathlib.Path:
    """Write ``path`` through a hidden temp file in its folder (``write(binary_file)``), fsync, then ``os.replace``.

    Readers never see a partial file and a failure leaves an existing ``path`` untouched (the temp file is removed).
    ``mode``: the file's permissions (default: what the umask gives a new file; ``mkstemp`` alone would give 0600).
    Returns ``path``.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     p = atomic_write(f"{tmp}/a.txt", lambda f: f.write(b"hello"))
      ...     p.read_bytes(), sorted(q.name for q in p.parent.iterdir())
      (b'hello', ['a.txt'])
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def one_line(exc: BaseException) -> str:
    """``"TypeName: message"`` with the message's white space folded onto one line (for ``nst-jax: error:`` lines).

    Example:
      >>> one_line(ValueError("bad\\n  value"))
      'ValueError: bad value'
    """
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
