"""Which GPU kernel path runs an operation: CuPy kernels or Numba CUDA kernels.

``set_kernels("auto" | "cupy" | "numba")`` (or the environment variable ``GPUNET_KERNELS``, or the
context manager ``use_kernels``) chooses. NumPy arrays always take the NumPy reference; the choice
only matters for CuPy arrays.

``auto`` takes the fastest path measured for the size. ``python -m gpunet.bench activations
--save-table`` measures both paths on this GPU and writes a table (size -> faster path) to
``~/.cache/gpunet/kernel_paths.json`` (or ``GPUNET_KERNEL_TABLE``); ``auto`` follows it on the GPU
it was measured on. Without a table, ``auto`` means CuPy: on the H200 (shared/GPU_NOTES.md) the
CuPy kernels win at every size -- a Numba launch costs 21-59 us against ~6 us, and at 256 MiB the
float4 RawKernel runs at the copy rate.

If Numba CUDA cannot be used (not installed, no CUDA target, a compile failure), asking for it
falls back to CuPy with one ``KernelFallbackWarning`` naming the reason.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings

__all__ = ["KERNEL_PATHS", "KernelFallbackWarning", "set_kernels", "get_kernels", "use_kernels",
           "resolve_path", "numba_cuda_problem", "save_table", "table_path"]

KERNEL_PATHS = ("auto", "cupy", "numba")


class KernelFallbackWarning(RuntimeWarning):
    """The requested kernel path is unusable here; another one ran."""


_state = {"kernels": None, "warned": False}
_numba_probe: dict = {}


def set_kernels(name: str = "auto") -> None:
    """Choose the GPU kernel path: ``"auto"``, ``"cupy"`` or ``"numba"``."""
    if not isinstance(name, str) or name.lower() not in KERNEL_PATHS:
        raise ValueError(f"kernels must be one of {KERNEL_PATHS}, got {name!r}")
    _state["kernels"] = name.lower()


def get_kernels() -> str:
    """The chosen kernel path (``"auto"``, ``"cupy"`` or ``"numba"``)."""
    if _state["kernels"] is None:
        set_kernels(os.environ.get("GPUNET_KERNELS", "auto"))
    return _state["kernels"]


@contextlib.contextmanager
def use_kernels(name: str):
    """``with use_kernels("numba"): ...`` runs the block on that path, then restores the old one."""
    old = get_kernels()
    set_kernels(name)
    try:
        yield
    finally:
        set_kernels(old)


def numba_cuda_problem() -> str | None:
    """None if Numba CUDA kernels compile and run on CuPy arrays here, else the reason."""
    if "problem" not in _numba_probe:
        _numba_probe["problem"] = _probe_numba()
    return _numba_probe["problem"]


def _probe_numba() -> str | None:
    try:
        import cupy
        from gpunet.kernels import numba_activations, numba_support
        if numba_support.SIMULATOR:
            return "NUMBA_ENABLE_CUDASIM=1 is set (the simulator cannot take CuPy arrays)"
        x = cupy.asarray([-1.0, 2.0], dtype=cupy.float32)
        y = cupy.empty_like(x)
        numba_activations.forward("relu", x, y)
        if y.get().tolist() != [0.0, 2.0]:
            return "a Numba CUDA test kernel gave a wrong result"
    except Exception as exc:  # any failure means: use CuPy
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def resolve_path(n_elements: int) -> str:
    """The path (``"cupy"`` or ``"numba"``) that runs an operation on ``n_elements`` CuPy values."""
    chosen = get_kernels()
    if chosen == "numba":
        problem = numba_cuda_problem()
        if problem is None:
            return "numba"
        if not _state["warned"]:
            _state["warned"] = True
            warnings.warn(f"Numba CUDA kernels are unusable here ({problem}); using CuPy kernels",
                          KernelFallbackWarning, stacklevel=3)
        return "cupy"
    if chosen == "auto" and _auto_choice(n_elements) == "numba" and numba_cuda_problem() is None:
        return "numba"
    return "cupy"


# ----------------------------------------------------------------------------- measured table
def table_path() -> str:
    """Where ``auto``'s measured table lives."""
    return os.environ.get("GPUNET_KERNEL_TABLE",
                          os.path.join(os.path.expanduser("~"), ".cache", "gpunet", "kernel_paths.json"))


def _current_device() -> str:
    from .backend import cupy_or_none
    cupy = cupy_or_none()
    if cupy is None:
        return ""
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _auto_table():
    """[(max_elements, path), ...] measured on this device, or [] (then CuPy everywhere)."""
    if "table" not in _state or _state["table"] is None:
        _state["table"] = []
        try:
            with open(table_path()) as f:
                data = json.load(f)
            if data.get("device") == _current_device():
                _state["table"] = sorted((int(n), str(p)) for n, p in data["rows"] if p in ("cupy", "numba"))
        except (OSError, ValueError, KeyError, TypeError):
            pass    # no table, or not ours: the default rule
    return _state["table"]


def _auto_choice(n_elements: int) -> str:
    for max_elements, path in _auto_table():
        if n_elements <= max_elements:
            return path
    return "cupy"


def save_table(rows, device=None) -> str:
    """Write ``auto``'s table: rows of (max_elements, path), measured on ``device``."""
    path = table_path()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"device": device if device is not None else _current_device(),
                   "rows": [[int(n), p] for n, p in rows]}, f, indent=1)
    os.replace(tmp, path)
    _state["table"] = None          # reloaded on next use
    return path
