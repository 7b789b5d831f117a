"""Which kernel path runs an operation: the one place where that is decided.

Every operation of gpunet.functional makes one call, ``kernels_for(op, x)``, and calls the function
of the same name on the module it gets. There are four such modules, the kernel paths, with the
same signatures (kernels/interface.py: ``KernelPath``; one subpackage each):

=================  =====================================================  ======================
path               what runs                                              arrays
=================  =====================================================  ======================
``numpy``          NumPy expressions, CPU BLAS (kernels/numpy/path.py)     NumPy
``numba-cpu``      Numba CPU kernels (kernels/numba_cpu/path.py)          NumPy
``cupy``           CUDA C, cuBLAS through CuPy (kernels/cupy/path.py)     CuPy
``numba``          Numba CUDA kernels (kernels/numba_cuda/path.py)        CuPy
=================  =====================================================  ======================

The Numba paths run a subset of the operations (their ``OPS``); any other operation goes to the
complete path of the same device (``numpy`` or ``cupy``). The rules (read them top to bottom):

* CuPy arrays -> the GPU choice, ``set_kernels("auto" | "cupy" | "numba")`` (``GPUNET_KERNELS``).
  ``auto`` follows a table of the faster path per size that ``python -m gpunet.bench activations
  --save-table`` measured on this GPU; without one it takes ``cupy``: a Numba launch costs
  21-59 us against ~6 us for CuPy (docs/gpu-notes.md). If Numba CUDA cannot run, asking for it
  falls back to ``cupy`` with one ``KernelFallbackWarning``.
* NumPy arrays -> the CPU choice, ``set_cpu_kernels("auto" | "numpy" | "numba" | "numba-serial" |
  "numba-parallel")`` (``GPUNET_CPU_KERNELS``). ``numba*`` run the Numba CPU kernels for every
  operation they have (the activations, BatchNorm, the optimizer updates); ``-serial`` /
  ``-parallel`` force their thread use, which ``auto`` and plain ``numba`` leave to the CPU
  thread policy (kernels/shared/cpu_threads.py: every core for a kernel on its own, one within
  0.15 s of a matrix product, where OpenBLAS's threads still spin). ``auto`` takes the
  Numba kernels only where they measured faster (AUTO_NUMBA_CPU, from kernels/activation_table.py:
  relu, leaky_relu, sigmoid, elu, selu, gelu, gelu_tanh, silu, and in float32 only softplus and
  tanh, from 4096 contiguous values; BatchNorm alone or with ReLU at any size; the SGD and Adam
  updates; softmax cross-entropy) and NumPy elsewhere (float64 tanh and softplus: there Numba
  calls the C library per value and NumPy's SIMD code wins).

So ``gelu`` on a CuPy array of 10 values runs the vectorized CUDA C kernel ``gelu_fwd_float``
(``cupy``; ``auto`` without a measured table); on a NumPy array of 10 million it runs the Numba CPU
kernel (``numba-cpu``); on a NumPy array of 10 values, NumPy.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

import numpy

from gpunet.types import Array

from . import kernels
from .backend import is_cupy_array, to_numpy
from .config import CHOICES, CONFIG
from .kernels import cupy as _cupy_pkg
from .kernels import numba_cpu as _numba_cpu_pkg
from .kernels import numba_cuda as _numba_cuda_pkg
from .kernels import numpy as _numpy_pkg
from .kernels.activation_table import ACTIVATIONS, BY_NAME

__all__ = [
    "GPU_CHOICES",
    "CPU_CHOICES",
    "KernelFallbackWarning",
    "kernels_for",
    "path_module",
    "op_family",
    "path_name",
    "gpu_path",
    "set_kernels",
    "get_kernels",
    "use_kernels",
    "set_cpu_kernels",
    "get_cpu_kernels",
    "use_cpu_kernels",
    "set_cpu_blas",
    "get_cpu_blas",
    "use_cpu_blas",
    "numba_cuda_problem",
    "save_table",
    "table_path",
]

GPU_CHOICES = CHOICES["kernels"]
CPU_CHOICES = CHOICES["cpu_kernels"]

#: path name -> its subpackage of gpunet.kernels (the entry module is ``<subpackage>.path``)
PACKAGES = {"numpy": "numpy", "numba-cpu": "numba_cpu", "cupy": "cupy", "numba": "numba_cuda"}
#: path name -> its entry module's full name (path_module)
_PATH_NAMES = {name: f"{kernels.__name__}.{pkg}.path" for name, pkg in PACKAGES.items()}
#: path name -> the operation keys it runs (kernels/interface.py), read without importing it
PATH_OPS = {
    "numpy": _numpy_pkg.OPS,
    "numba-cpu": _numba_cpu_pkg.OPS,
    "cupy": _cupy_pkg.OPS,
    "numba": _numba_cuda_pkg.OPS,
}
#: what ``auto`` sends to the Numba CPU kernels, and from how many contiguous values: the
#: activations' ``cpu_min`` of kernels/activation_table.py (measurements there); BatchNorm alone
#: or with ReLU 5-9x faster than NumPy at every size (BENCHMARKS.md); optimizer updates, SGD
#: momentum on 3M float32: NumPy 5.4 ms, fused 1.5 ms; softmax cross-entropy, float32, NumPy ->
#: Numba: (1024, 10) 112 -> 36 us, (1024, 1000) 2.09 -> 1.93 ms; conv2d and max_pool2d: the
#: training step of issue #23 (3x3 taps, batch 64) 105 -> see BENCHMARKS.md.
AUTO_NUMBA_CPU = {a.name: a.cpu_min for a in ACTIVATIONS if a.cpu_min is not None} | {
    "batchnorm": 0,
    "batchnorm+relu": 0,
    "sgd": 0,
    "adam": 0,
    "softmax_xent": 0,
    "conv2d": 0,
    "max_pool2d": 0,
}
#: ops that ``auto`` sends to Numba in float32 only (their float64 kernels call the C library per
#: value and lose to NumPy)
AUTO_NUMBA_CPU_FLOAT32_ONLY = frozenset(a.name for a in ACTIVATIONS if a.cpu_float32_only)


def op_family(op: str) -> str:
    """The interface's operation key of ``op``: ``"activation"`` for an activation name,
    ``"batchnorm"`` for ``"batchnorm+ACT"``, else ``op`` itself."""
    if op in BY_NAME:
        return "activation"
    return "batchnorm" if op.startswith("batchnorm") else op


class KernelFallbackWarning(RuntimeWarning):
    """The requested kernel path is unusable here; another one ran."""


# ----------------------------------------------------------------------------- the choice
def kernels_for(op: str, *arrays: Array) -> ModuleType:
    """The kernel path module that runs ``op`` on ``arrays`` (the first one decides the device;
    gpunet.functional has already refused mixed devices)."""
    return path_module(path_name(op, *arrays))


def path_name(op: str, *arrays: Array) -> str:
    """``"numpy"``, ``"numba-cpu"``, ``"cupy"`` or ``"numba"``: the rules of the module
    docstring."""
    x = arrays[0]
    family = op_family(op)
    if type(x) is not numpy.ndarray and is_cupy_array(x):
        path = gpu_path(x.size)
        return path if family in PATH_OPS[path] else "cupy"
    choice = get_cpu_kernels()
    if choice == "numpy" or family not in PATH_OPS["numba-cpu"]:
        return "numpy"
    if choice != "auto":
        return "numba-cpu"
    if (
        op in AUTO_NUMBA_CPU
        and x.size >= AUTO_NUMBA_CPU[op]
        and (op not in AUTO_NUMBA_CPU_FLOAT32_ONLY or x.dtype == "float32")
        and (x.flags.c_contiguous if len(arrays) == 1 else all_c_contiguous(arrays))
    ):
        return "numba-cpu"
    return "numpy"


def all_c_contiguous(arrays: tuple) -> bool:
    return all(a.flags.c_contiguous for a in arrays)


def path_module(name: str) -> ModuleType:
    """The entry module of kernel path ``name`` (``gpunet.kernels.<subpackage>.path``): looked up
    in ``sys.modules`` first (this runs on every kernel call; importlib's own lookup costs more,
    and a module swapped there -- the emulator's -- is the one to use)."""
    full = _PATH_NAMES[name]
    module = sys.modules.get(full)
    if module is None:
        import importlib

        module = importlib.import_module(full)
    return module


def gpu_path(n_elements: int) -> str:
    """The GPU path (``"cupy"`` or ``"numba"``) for an operation on ``n_elements`` CuPy values."""
    chosen = get_kernels()
    if chosen == "numba":
        problem = numba_cuda_problem()
        if problem is None:
            return "numba"
        if "numba-fallback" not in CONFIG.found.warned:
            CONFIG.found.warned.add("numba-fallback")
            warnings.warn(
                f"Numba CUDA kernels are unusable here ({problem}); using CuPy kernels",
                KernelFallbackWarning,
                stacklevel=4,
            )
        return "cupy"
    if chosen == "auto" and _auto_choice(n_elements) == "numba" and numba_cuda_problem() is None:
        return "numba"
    return "cupy"


# ----------------------------------------------------------------------------- the switches
def set_kernels(name: str = "auto") -> None:
    """Choose the GPU kernel path: ``"auto"``, ``"cupy"`` or ``"numba"``."""
    CONFIG.set("kernels", name)


def get_kernels() -> str:
    """The chosen GPU kernel path (``GPUNET_KERNELS`` on first use)."""
    return CONFIG.get("kernels")


def set_cpu_kernels(name: str = "auto") -> None:
    """Choose the CPU kernel path: ``"auto"``, ``"numpy"``, ``"numba"``, ``"numba-serial"`` or
    ``"numba-parallel"``."""
    CONFIG.set("cpu_kernels", name)


def get_cpu_kernels() -> str:
    """The chosen CPU kernel path (``GPUNET_CPU_KERNELS`` on first use)."""
    return CONFIG.get("cpu_kernels")


@contextlib.contextmanager
def _switched(get: Callable, set_: Callable, name: str) -> Iterator:
    """Within the block, the choice ``set_(name)``; the old one (``get()``) restored after."""
    old = get()
    set_(name)
    try:
        yield
    finally:
        set_(old)


def use_kernels(name: str) -> contextlib.AbstractContextManager:
    """``with use_kernels("numba"): ...`` runs the block on that GPU path, then restores the old
    one."""
    return _switched(get_kernels, set_kernels, name)


def use_cpu_kernels(name: str) -> contextlib.AbstractContextManager:
    """``with use_cpu_kernels("numpy"): ...`` runs the block on that CPU path, then restores."""
    return _switched(get_cpu_kernels, set_cpu_kernels, name)


def set_cpu_blas(name: str = "auto") -> None:
    """Choose the library of the CPU matrix products: ``"auto"`` (Intel MKL when the ``mkl``
    package is installed, else NumPy's BLAS), ``"numpy"`` or ``"mkl"``
    (kernels/shared/cpu_blas.py)."""
    from gpunet.kernels.shared import cpu_blas

    cpu_blas.set_cpu_blas(name)


def get_cpu_blas() -> str:
    """The chosen CPU matrix-product library (``GPUNET_CPU_BLAS`` on first use)."""
    from gpunet.kernels.shared import cpu_blas

    return cpu_blas.get_cpu_blas()


def use_cpu_blas(name: str) -> contextlib.AbstractContextManager:
    """``with use_cpu_blas("numpy"): ...`` runs the block's CPU products on that library."""
    return _switched(get_cpu_blas, set_cpu_blas, name)


# ----------------------------------------------------------------------------- Numba CUDA usable?
def numba_cuda_problem() -> str | None:
    """None if Numba CUDA kernels compile and run on CuPy arrays here, else the reason."""
    probe = CONFIG.found.numba_cuda
    if "problem" not in probe:
        probe["problem"] = _probe_numba()
    return probe["problem"]


def _probe_numba() -> str | None:
    try:
        import cupy

        from gpunet.kernels.numba_cuda import path as numba_cuda_path
        from gpunet.kernels.numba_cuda import support

        if support.SIMULATOR:
            return "NUMBA_ENABLE_CUDASIM=1 is set (the simulator cannot take CuPy arrays)"
        y = numba_cuda_path.activation_forward(
            "relu", cupy.asarray([-1.0, 2.0], dtype=cupy.float32)
        )
        if to_numpy(y).tolist() != [0.0, 2.0]:
            return "a Numba CUDA test kernel gave a wrong result"
    except Exception as exc:  # any failure means: use CuPy
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


# ----------------------------------------------------------------------------- measured table
def table_path() -> str:
    """Where ``auto``'s measured table lives (``GPUNET_KERNEL_TABLE`` moves it)."""
    return os.environ.get(
        "GPUNET_KERNEL_TABLE",
        os.path.join(os.path.expanduser("~"), ".cache", "gpunet", "kernel_paths.json"),
    )


def current_device() -> str:
    from .backend import cupy_or_none, device_name_of

    cupy = cupy_or_none()
    return "" if cupy is None else device_name_of(cupy)


def _auto_table() -> list:
    """[(max_elements, path), ...] measured on this device, or [] (then CuPy everywhere)."""
    if CONFIG.found.kernel_table is None:
        CONFIG.found.kernel_table = []
        try:
            with open(table_path()) as f:
                data = json.load(f)
            if data.get("device") == current_device():
                CONFIG.found.kernel_table = sorted(
                    (int(n), str(p)) for n, p in data["rows"] if p in ("cupy", "numba")
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no table, or not ours: the default rule
    return CONFIG.found.kernel_table


def _auto_choice(n_elements: int) -> str:
    for max_elements, path in _auto_table():
        if n_elements <= max_elements:
            return path
    return "cupy"


def save_table(rows: list, device: str | None = None) -> str:
    """Write ``auto``'s table: rows of (max_elements, path), measured on ``device``."""
    path = table_path()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(
            {
                "device": device if device is not None else current_device(),
                "rows": [[int(n), p] for n, p in rows],
            },
            f,
            indent=1,
        )
    os.replace(tmp, path)
    CONFIG.found.kernel_table = None  # reloaded on next use
    return path
