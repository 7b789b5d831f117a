"""What the commands write, kept safe: one writer per folder or journal (an advisory lock), output
paths checked before any work, files written whole or not at all, and a folder that holds
another run never replaced without a word.

* ``hold(path, label)``: a context manager holding an exclusive advisory lock (``fcntl.flock``;
  ``msvcrt.locking`` on Windows) on ``path`` (a folder: ``path/.gpunet.lock``; a file:
  ``path.lock``). A second process gets ``Busy`` naming the holder's pid. Re-entrant within a
  process (``babysit`` holds its folder, and the run it makes holds it again).
* ``writable_folder`` / ``writable_file``: the checks every command makes before it works.
* ``atomic_write(path, write)``: a temp file in the same folder, fsynced, ``os.replace``d over
  ``path``; on any error (a full disk, a read-only folder) the temp file is removed, the old file
  is intact, and the ``OSError`` says which file.
* ``set_aside(folder)``: moves what a folder holds into a new sibling folder (the default
  ``--out`` of a fresh run that holds an earlier one: nothing is lost, and a line says where).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO

__all__ = [
    "ConfigError",
    "Busy",
    "hold",
    "writable_folder",
    "writable_file",
    "atomic_write",
    "set_aside",
]

LOCK_NAME = ".gpunet.lock"

#: path -> (file object, depth) of the locks this process holds
_held: dict[str, list] = {}


class ConfigError(ValueError):
    """An option of a run is invalid, or conflicts with the run it resumes. ``option`` names it."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


class Busy(ConfigError):
    """Another process holds the lock of a run folder or journal."""


def _unwritable(label: str, path: str, exc: OSError) -> str:
    return f"{label} {path!r} cannot be written to ({exc.strerror})"


def _lock_file(path: str) -> str:
    return os.path.join(path, LOCK_NAME) if os.path.isdir(path) else f"{path}.lock"


def _try_lock(f: IO) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


@contextlib.contextmanager
def hold(path: str, label: str, option: str = "out") -> Iterator[None]:
    """Hold the lock of ``path`` (a folder or a file) for the block; ``Busy`` if another process
    holds it. ``label``: how the message names the option (``--out``, ``--journal``)."""
    key = os.path.realpath(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    lock_path = _lock_file(path)
    try:
        f = open(lock_path, "a+")
    except OSError as exc:
        raise ConfigError(
            option, f"{label} {path!r} cannot be written to ({exc.strerror})"
        ) from None
    if not _try_lock(f):
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise Busy(
            option,
            f"{label} {path!r} is in use by another gpunet process (pid {pid}); wait for it to "
            f"end, or use another {label}",
        )
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _held[key] = [f, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            f.close()  # closing releases the lock; the file stays (removing it would race)


def writable_folder(path: str | None, label: str, option: str = "out") -> str:
    """``path`` made if missing; ``ConfigError`` naming ``label`` if it is not a folder this
    process can write to."""
    if not path:
        raise ConfigError(option, f"{label} must name a folder, got {path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(option, f"{label} {path!r} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            option, f"{label} {path!r} cannot be written to ({exc.strerror})"
        ) from None
    return path


def writable_file(path: str | None, label: str, suffixes: tuple = (), option: str = "out") -> str:
    """``path`` must name a file (not a folder, a name with one of ``suffixes`` if given) in a
    folder this process can write to (made if missing)."""
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise ConfigError(option, f"{label} must name a file, got {path!r} (a folder)")
    name = os.path.basename(path)
    if suffixes and (not name.lower().endswith(suffixes) or name.startswith(".")):
        raise ConfigError(
            option, f"{label} must be a file name ending in {' or '.join(suffixes)}, got {path!r}"
        )
    writable_folder(os.path.dirname(path) or ".", f"the folder of {label}", option)
    return path


def atomic_write(path: str, write: Callable[[IO], object], mode: str = "w") -> None:
    """Write ``path`` whole or not at all: ``write(f)`` into a temp file beside it, fsync,
    replace. On an error the temp file is gone, ``path`` is as it was, and the ``OSError`` names
    ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def contents(folder: str) -> list:
    """What a folder holds, the lock file left out."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n != LOCK_NAME)


def _free_name(base: str, ext: str = "") -> str:
    """``base + ext``, or ``base-2 + ext``, ``base-3 + ext``, ... whichever does not exist yet."""
    target, k = base + ext, 2
    while os.path.exists(target):
        target, k = f"{base}-{k}{ext}", k + 1
    return target


def _stamp(mtime: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(mtime))


def set_aside(folder: str) -> str:
    """Move everything ``folder`` holds (but its lock) into a new sibling folder named after the
    time of its newest file (``runs/latest-20261204-173012``); return that folder."""
    names = contents(folder)
    newest = max(os.path.getmtime(os.path.join(folder, n)) for n in names)
    target = _free_name(f"{os.path.normpath(folder)}-{_stamp(newest)}")
    os.makedirs(target)
    for n in names:
        os.replace(os.path.join(folder, n), os.path.join(target, n))
    return target


def set_aside_file(path: str) -> str:
    """An earlier output file moved to ``name-YYYYmmdd-HHMMSS.ext`` beside it; returns that."""
    stem, ext = os.path.splitext(path)
    target = _free_name(f"{stem}-{_stamp(os.path.getmtime(path))}", ext)
    os.replace(path, target)
    return target


def save_figure(fig: object, path: str | os.PathLike, dpi: int = 100) -> None:
    """``fig.savefig`` through ``atomic_write`` (the format from the file name, PNG by default)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    atomic_write(os.fspath(path), lambda f: fig.savefig(f, dpi=dpi, format=fmt), mode="wb")  # type: ignore[attr-defined]
