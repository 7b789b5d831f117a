"""How gpunet compiles its Numba CPU kernels: once per machine, not once per process.

* Every kernel is compiled with ``cache=True``: the machine code goes to disk and the next process
  loads it (milliseconds instead of seconds). Numba keys a cache entry by the function's file,
  qualified name, signature and its own version, and recompiles when the file changes.
* Functions compiled from a shared source with different settings (float32 / float64 copies of
  the activation math, serial / parallel BatchNorm) get distinct qualified names, so their
  entries never collide; names carry a hash of the math they inline (activation_math.py), so a
  change there recompiles the kernels built on it too.
* Where: ``GPUNET_CACHE_DIR`` (or Numba's own ``NUMBA_CACHE_DIR``) if set; else Numba's choice,
  ``__pycache__`` beside the source when writable, else a per-user cache folder.
* A cache that cannot be written (read-only home, a shared cluster) is not an error: the kernels
  compile in memory, as before, with one ``CacheWarning``.

Nothing compiles at import: a kernel compiles (or loads) on its first call.
"""

from __future__ import annotations

import functools
import hashlib
import os
import types
import warnings
from collections.abc import Callable
from typing import Any

import numba

from gpunet.config import CONFIG

__all__ = [
    "CacheWarning",
    "njit",
    "serial_and_parallel",
    "cache_dir",
    "cache_usage",
    "source_hash",
    "renamed",
]


class CacheWarning(UserWarning):
    """The kernel cache cannot be written here: kernels compile in memory (every process)."""


if os.environ.get("GPUNET_CACHE_DIR") and not os.environ.get("NUMBA_CACHE_DIR"):
    numba.config.CACHE_DIR = os.environ["GPUNET_CACHE_DIR"]


def cache_dir() -> str | None:
    """The folder kernels are cached in when one is configured (else Numba's per-source
    ``__pycache__`` or per-user folder)."""
    return numba.config.CACHE_DIR or None


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".gpunet-probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
        return True
    except OSError:
        return False


def _warn_once(reason: str) -> None:
    if "kernel-cache" not in CONFIG.found.warned:
        CONFIG.found.warned.add("kernel-cache")
        warnings.warn(
            f"gpunet's kernel cache cannot be written ({reason}); kernels compile in "
            "memory in every process. Set GPUNET_CACHE_DIR to a writable folder.",
            CacheWarning,
            stacklevel=4,
        )


def njit(fn: Callable | None = None, /, **options: Any) -> Callable:
    """``numba.njit(cache=True, **options)``, or in memory (one CacheWarning) where no cache can
    be written."""
    if fn is None:
        return functools.partial(njit, **options)
    configured = cache_dir()
    if configured and not _writable(configured):
        _warn_once(f"{configured} is not writable")
        return numba.njit(**options)(fn)
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        _warn_once(str(exc).splitlines()[0])
        return numba.njit(**options)(fn)


def source_hash(*modules: types.ModuleType) -> str:
    """8 hex digits of the sources of ``modules``: part of the names of kernels built from them."""
    h = hashlib.sha256()
    for m in modules:
        with open(str(m.__file__), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:8]


def renamed(fn: Callable, name: str, namespace: dict | None = None) -> Callable:
    """A copy of ``fn`` named ``name`` (its own cache entry), with ``namespace`` as globals."""
    copy = types.FunctionType(
        fn.__code__,
        namespace if namespace is not None else fn.__globals__,
        name,
        fn.__defaults__,
        fn.__closure__,
    )
    copy.__qualname__ = name
    copy.__module__ = fn.__module__
    return copy


def cache_usage() -> list:
    """(folder, files, bytes) of every folder holding gpunet's cached kernels."""
    folders: set[str] = set()
    here = os.path.dirname(os.path.abspath(__file__))
    configured = cache_dir()
    if configured:
        folders.add(configured)
    folders.add(os.path.join(here, "__pycache__"))
    try:
        from numba.misc.appdirs import AppDirs

        folders.add(AppDirs(appname="numba", appauthor=False).user_cache_dir)
    except Exception:  # an older or newer Numba: its user folder is not listed then
        pass
    out = []
    for folder in sorted(folders):
        files = size = 0
        for root, _, names in os.walk(folder):
            for n in names:
                if n.endswith((".nbi", ".nbc")):
                    files += 1
                    size += os.path.getsize(os.path.join(root, n))
        out.append((folder, files, size))
    return out


def serial_and_parallel(fn: Callable, **options: object) -> tuple:
    """(serial, parallel) njit builds of one function (``prange`` is ``range`` in the serial
    one), both cached on disk: the parallel one is a copy named ``<name>__parallel``, so that the
    two builds of one source have their own cache entries. cpu_threads.py picks one per
    call (``with cpu_threads.choose(key, n) as par: builds[par](...)``)."""
    parallel = renamed(fn, f"{fn.__name__}__parallel")
    return njit(fn, **options), njit(parallel, parallel=True, **options)
