"""Backend dispatch: one switch between NumPy (CPU) and CuPy (NVIDIA GPU).

The library is written once against an array module ``xp``; this module decides which one.

* ``set_backend("auto" | "numpy" | "cupy")`` (or the environment variable ``GPUNET_BACKEND``)
  picks where new arrays live. ``auto`` takes CuPy when it imports *and* a CUDA device answers,
  else NumPy, and logs which once.
* ``get_array_module(*arrays)`` answers for existing arrays (like ``cupy.get_array_module``) and
  refuses a mix of host and device arrays with a clear error instead of a CuPy traceback.
* ``seed(n)``: one seed for every random draw of the library. Initial values are drawn on the host
  and then moved, so the same seed gives the same weights on NumPy and on CuPy.

CuPy is optional: nothing here imports it until it is needed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy

from gpunet.types import Array, DTypeLike

from .config import CHOICES, CONFIG, checked

__all__ = [
    "BackendError",
    "set_backend",
    "get_backend",
    "get_xp",
    "get_array_module",
    "asarray",
    "to_numpy",
    "is_cupy_array",
    "cupy_or_none",
    "probe_cupy",
    "seed",
    "host_rng",
    "local_rng",
    "device_name",
    "device_name_of",
    "uniform_like",
    "cpu_threads",
    "DEVICE_DATA_FRACTION",
    "fits_on_device",
]

logger = logging.getLogger("gpunet")

BACKENDS = CHOICES["backend"]
_CUPY_INSTALL_HINT = (
    "install it with `pip install 'gpunet[cuda12]'` (CUDA 12 driver) or "
    "`pip install 'gpunet[cuda13]'` (CUDA 13 driver)"
)


class BackendError(RuntimeError):
    """The requested backend cannot be used here (CuPy missing, no driver, no device)."""


def probe_cupy() -> tuple:
    """Import CuPy and ask for a device once; return (module or None, reason it is unusable)."""
    probe = CONFIG.found.cupy
    if not probe:
        try:
            import cupy
        except Exception as exc:  # ImportError, or a broken CUDA library underneath
            probe.update(module=None, reason=f"CuPy does not import ({exc}); {_CUPY_INSTALL_HINT}")
        else:
            try:
                count = cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:
                probe.update(
                    module=None,
                    reason=(
                        f"CuPy imports but the CUDA driver does not answer ({exc}); "
                        "check the NVIDIA driver with `nvidia-smi`"
                    ),
                )
            else:
                if count < 1:
                    probe.update(
                        module=None,
                        reason="CuPy imports but no CUDA device is visible "
                        "(check CUDA_VISIBLE_DEVICES and `nvidia-smi`)",
                    )
                else:
                    probe.update(module=cupy, reason=None)
    return probe["module"], probe["reason"]


def cupy_or_none() -> ModuleType | None:
    """The CuPy module if CuPy imports and a device answers, else None."""
    return probe_cupy()[0]


def set_backend(name: str = "auto") -> str:
    """Choose where gpunet puts new arrays: ``"auto"``, ``"numpy"`` or ``"cupy"``.

    Returns the resolved name (``"numpy"`` or ``"cupy"``). Raises ``BackendError`` naming what is
    missing when ``"cupy"`` is asked for and cannot be had.
    """
    name = checked("backend", name)
    if name == "numpy":
        resolved = "numpy"
    else:
        cupy, reason = probe_cupy()
        if name == "cupy" and cupy is None:
            raise BackendError(f"backend 'cupy' was requested but {reason}")
        resolved = "cupy" if cupy is not None else "numpy"
    CONFIG.settings.backend, CONFIG.found.backend = name, resolved
    if name == "auto":
        logger.info(
            "gpunet backend: %s (%s)",
            resolved,
            device_name() if resolved == "cupy" else f"GPU unavailable: {reason}",
        )
    return resolved


def get_backend() -> str:
    """The active backend's name, ``"numpy"`` or ``"cupy"`` (resolving ``GPUNET_BACKEND`` on first
    use)."""
    resolved = CONFIG.found.backend
    return set_backend(CONFIG.get("backend")) if resolved is None else resolved


def get_xp() -> ModuleType:
    """The array module of the active backend."""
    return _cupy() if get_backend() == "cupy" else numpy


def _cupy() -> ModuleType:
    """CuPy, where the backend or an array already showed that it works."""
    cupy = cupy_or_none()
    if cupy is None:
        raise BackendError(f"CuPy is needed here but {probe_cupy()[1]}")
    return cupy


def is_cupy_array(a: Array) -> bool:
    # Checked by type name so that no CuPy import is needed to answer "no".
    return type(a).__module__.startswith("cupy") and hasattr(a, "__cuda_array_interface__")


def get_array_module(*arrays) -> ModuleType:
    """``cupy`` if the given arrays live on the GPU, ``numpy`` if on the host.

    ``None`` and Python scalars are ignored. A mix of host and device arrays raises ``TypeError``
    naming the positions, instead of failing later inside a kernel.
    """
    if all(type(a) is numpy.ndarray for a in arrays):  # the common case, answered first
        return numpy
    on_device: list[int] = []
    on_host: list[int] = []
    for i, a in enumerate(arrays):
        if a is None or isinstance(a, (int, float, bool, numpy.generic)):
            continue
        (on_device if is_cupy_array(a) else on_host).append(i)
    if on_device and on_host:
        raise TypeError(
            f"arrays on different devices: arguments {on_device} are CuPy (GPU) arrays and "
            f"{on_host} are NumPy (host) arrays; move them with gpunet.asarray() or "
            f"gpunet.to_numpy()"
        )
    return _cupy() if on_device else numpy


def asarray(a: Array, dtype: DTypeLike | None = None) -> Array:
    """Move ``a`` to the active backend (no copy if it is already there with that dtype)."""
    xp = get_xp()
    if xp is numpy and is_cupy_array(a):
        a = _device_to_host(a)
    return xp.asarray(a, dtype=dtype)


def to_numpy(a: Array) -> numpy.ndarray:
    """Return ``a`` as a NumPy array on the host."""
    if is_cupy_array(a):
        return _device_to_host(a)
    return numpy.asarray(a)


def _device_to_host(a: Any) -> numpy.ndarray:
    """A CuPy array's values on the host (``Any``: CuPy is not installed where the types are
    checked)."""
    return a.get()


def seed(n: int) -> None:
    """Make every random draw of gpunet reproducible from ``n``.

    Initial weights and data shuffles are drawn from one host generator (PCG64) and moved to the
    device, so the same seed gives the same values on NumPy and on CuPy. Per-step device noise
    (dropout masks) comes from a device generator seeded from the host one.
    """
    if not isinstance(n, (int, numpy.integer)) or n < 0:
        raise ValueError(f"seed must be a non-negative integer, got {n!r}")
    CONFIG.found.rng, CONFIG.found.device_rng = numpy.random.default_rng(int(n)), None


def host_rng() -> numpy.random.Generator:
    """The library's host random generator (reseeded by ``seed``)."""
    return CONFIG.found.rng


def device_name() -> str:
    """Human-readable name of the active device (``"CPU"`` for NumPy)."""
    cupy = cupy_or_none()
    if get_backend() != "cupy" or cupy is None:
        return "CPU"
    return device_name_of(cupy)


def device_name_of(cupy: ModuleType) -> str:
    """The name of CuPy's current device."""
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def cpu_threads(largest_product: int) -> contextlib.AbstractContextManager:
    """A training loop's CPU thread policy: the BLAS threads for its largest matrix product of
    ``largest_product`` multiply-adds, and serial Numba kernels (the rules live with the rest of
    the CPU thread policy, in kernels/shared/cpu_threads.py)."""
    from gpunet.kernels.shared import cpu_threads

    stack = contextlib.ExitStack()
    stack.enter_context(cpu_threads.blas_threads(largest_product))
    single = largest_product < cpu_threads.SINGLE_THREAD_BELOW
    stack.enter_context(cpu_threads.product_loop(single_blas_thread=single))
    return stack


#: data larger than this fraction of the free GPU memory stays on the host (moved batch by batch)
DEVICE_DATA_FRACTION = 0.5


def fits_on_device(xp: ModuleType, nbytes: int) -> bool:
    """The device memory policy: may ``nbytes`` of data live on ``xp``'s device? Always on the
    host; on a GPU, up to DEVICE_DATA_FRACTION of the free memory."""
    if xp is numpy:
        return True
    free, _ = xp.cuda.runtime.memGetInfo()
    return nbytes <= DEVICE_DATA_FRACTION * free


@contextlib.contextmanager
def local_rng(seed_value: int) -> Iterator:
    """Within the block, the library's random draws (shuffles, dropout, device noise) come from a
    generator seeded with ``seed_value``; the caller's generator is restored afterwards, untouched.
    The training loop draws each epoch from its own, so that a resumed run repeats it exactly."""
    found = CONFIG.found
    saved = found.rng, found.device_rng
    found.rng, found.device_rng = numpy.random.default_rng(int(seed_value)), None
    try:
        yield found.rng
    finally:
        CONFIG.found.rng, CONFIG.found.device_rng = saved


def uniform_like(shape: tuple, xp: ModuleType) -> Array:
    """U(0, 1) values of ``shape`` on ``xp``'s device, for per-step noise such as dropout masks.

    NumPy draws from the host generator; CuPy from a device generator seeded from it, so runs are
    reproducible per backend without a host-to-device copy per step.
    """
    if xp is numpy:
        return host_rng().random(shape)
    found = CONFIG.found
    if found.device_rng is None:
        found.device_rng = xp.random.default_rng(int(host_rng().integers(2**63)))
    return found.device_rng.random(shape)
