"""Which kernel path runs an operation: the one place where that is decided.

Every operation of gpunet.functional makes one call, ``kernels_for(op, x)``, and calls the function
of the same name on the module it gets. There are four such modules, the kernel paths, with the
same functions and signatures (kernels/path_*.py):

=================  =====================================================  ======================
path               what runs                                              arrays
=================  =====================================================  ======================
``numpy``          vectorized NumPy expressions (kernels/path_numpy.py)   NumPy
``numba-cpu``      Numba CPU kernels (kernels/path_numba_cpu.py)          NumPy
``cupy``           CUDA C through CuPy (kernels/path_cupy.py)             CuPy
``numba``          Numba CUDA kernels (kernels/path_numba_cuda.py)        CuPy
=================  =====================================================  ======================

The rules (read them top to bottom):

* CuPy arrays -> the GPU choice, ``set_kernels("auto" | "cupy" | "numba")`` (``GPUNET_KERNELS``).
  ``auto`` follows a table of the faster path per size that ``python -m gpunet.bench activations
  --save-table`` measured on this GPU; without one it takes ``cupy``: a Numba launch costs
  21-59 us against ~6 us for CuPy (docs/gpu-notes.md). If Numba CUDA cannot run, asking for it
  falls back to ``cupy`` with one ``KernelFallbackWarning``.
* NumPy arrays -> the CPU choice, ``set_cpu_kernels("auto" | "numpy" | "numba" | "numba-serial" |
  "numba-parallel")`` (``GPUNET_CPU_KERNELS``). ``numba*`` run the Numba CPU kernels for every
  operation they have (the activations, BatchNorm, the optimizer updates); ``-serial`` /
  ``-parallel`` force their thread use, which ``auto`` and plain ``numba`` leave to the CPU
  thread policy (kernels/cpu_threads.py: every core for a kernel on its own, one within 0.15 s of
  a matrix product, where OpenBLAS's threads still spin). ``auto`` takes the
  Numba kernels only where they measured faster (AUTO_NUMBA_CPU: relu, leaky_relu, sigmoid, elu,
  selu, gelu, gelu_tanh, silu, and in float32 only softplus and tanh, from 4096 contiguous values;
  BatchNorm alone or with ReLU at any size; the SGD and Adam updates; softmax cross-entropy) and
  NumPy elsewhere (float64
  tanh and softplus: there Numba calls the C library per value and NumPy's SIMD code wins).

So ``gelu`` on a CuPy array of 10 values runs the vectorized CUDA C kernel ``gelu_fwd_float``
(``cupy``; ``auto`` without a measured table); on a NumPy array of 10 million it runs the Numba CPU
kernel (``numba-cpu``); on a NumPy array of 10 values, NumPy.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

from .backend import is_cupy_array
from .kernels import FUSED_ACTIVATIONS
from .kernels.activation_math import NAMES as ACTIVATION_NAMES

__all__ = [
    "GPU_CHOICES",
    "CPU_CHOICES",
    "KernelFallbackWarning",
    "kernels_for",
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

GPU_CHOICES = ("auto", "cupy", "numba")
CPU_CHOICES = ("auto", "numpy", "numba", "numba-serial", "numba-parallel")

#: operations the Numba CPU kernels implement (a BatchNorm op is "batchnorm" or "batchnorm+ACT")
NUMBA_CPU_OPS = frozenset(
    ACTIVATION_NAMES
    + tuple("batchnorm" if act is None else f"batchnorm+{act}" for act in FUSED_ACTIVATIONS)
    + ("sgd", "adam", "softmax_xent")
)
#: what ``auto`` sends to the Numba CPU kernels, and from how many values. Measured (1M float32,
#: 2-core EPYC, ms forward/backward, NumPy -> Numba): relu 4.5/8.9 -> 0.7/0.8, leaky_relu
#: 4.9/9.0 -> 0.7/0.9, gelu 12.0/17.5 -> 7.8/11.4, silu 11.7/18.0 -> 8.0/8.4; tanh 0.75/1.3 ->
#: 15/15 (NumPy wins). With kernels/vector_math.py (vectorized float32 exp/tanh/erf), 1M values,
#: ms fwd/bwd, NumPy -> Numba: float32 sigmoid 5.6/6.9 -> 0.64/0.72, elu 5.0/9.6 -> 0.68/0.54,
#: selu 5.4/10.1 -> 0.84/0.55, gelu_tanh 58/66 -> 1.1/1.2, tanh 0.38/1.17 -> 0.87/0.80 (NumPy
#: kept); float64 (C library math) sigmoid 4.5/5.6 -> 2.3/2.3, elu 3.3/5.5 -> 4.2/3.4, gelu_tanh
#: 33/36 -> 9.8/9.5. BatchNorm (+ReLU): 5-9x faster than NumPy at every size (BENCHMARKS.md).
#: Optimizer updates (kernels/cpu_optim.py), SGD momentum on 3M float32: NumPy 5.4 ms, fused
#: 1.5 ms; the MLP step at batch 256, 3072-1024-1024-10: 27 -> 20-21 ms. Softmax cross-entropy
#: (kernels/cpu_loss.py), float32, NumPy -> Numba: (1024, 10) 112 -> 36 us, (1024, 1000) 2.09
#: -> 1.93 ms.
AUTO_NUMBA_CPU = {
    "relu": 4096,
    "leaky_relu": 4096,
    "sigmoid": 4096,
    "elu": 4096,
    "selu": 4096,
    "gelu": 4096,
    "gelu_tanh": 4096,
    "silu": 4096,
    "softplus": 4096,
    "tanh": 4096,
    "batchnorm": 0,
    "batchnorm+relu": 0,
    "sgd": 0,
    "adam": 0,
    "softmax_xent": 0,
}


#: ops that ``auto`` sends to Numba in float32 only: their float64 kernels call the C library
#: per value and lose to NumPy (1M float64, ms fwd+bwd, NumPy -> Numba: softplus 10.9 -> 12.8,
#: tanh 2.4 -> 17.2; float32 with vector_math and 512-bit vectors: softplus 9.5 -> 1.6, tanh 1.49
#: -> 1.29)
AUTO_NUMBA_CPU_FLOAT32_ONLY = frozenset({"softplus", "tanh"})


class KernelFallbackWarning(RuntimeWarning):
    """The requested kernel path is unusable here; another one ran."""


_state: dict = {"gpu": None, "cpu": None, "warned": False, "table": None}
_numba_probe: dict = {}


# ----------------------------------------------------------------------------- the choice
def kernels_for(op: str, *arrays) -> ModuleType:
    """The kernel path module that runs ``op`` on ``arrays`` (the first one decides the device;
    gpunet.functional has already refused mixed devices)."""
    return _path_module(path_name(op, *arrays))


def path_name(op: str, *arrays) -> str:
    """``"numpy"``, ``"numba-cpu"``, ``"cupy"`` or ``"numba"``: the rules of the module
    docstring."""
    x = arrays[0]
    if is_cupy_array(x):
        return gpu_path(x.size)
    choice = get_cpu_kernels()
    if choice == "numpy" or op not in NUMBA_CPU_OPS:
        return "numpy"
    if choice != "auto":
        return "numba-cpu"
    if (
        op in AUTO_NUMBA_CPU
        and x.size >= AUTO_NUMBA_CPU[op]
        and (op not in AUTO_NUMBA_CPU_FLOAT32_ONLY or x.dtype == "float32")
        and all(a.flags.c_contiguous for a in arrays)
    ):
        return "numba-cpu"
    return "numpy"


_MODULES = {
    "numpy": "path_numpy",
    "numba-cpu": "path_numba_cpu",
    "cupy": "path_cupy",
    "numba": "path_numba_cuda",
}


def _path_module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"gpunet.kernels.{_MODULES[name]}")


def gpu_path(n_elements: int) -> str:
    """The GPU path (``"cupy"`` or ``"numba"``) for an operation on ``n_elements`` CuPy values."""
    chosen = get_kernels()
    if chosen == "numba":
        problem = numba_cuda_problem()
        if problem is None:
            return "numba"
        if not _state["warned"]:
            _state["warned"] = True
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
def _checked(name: str, choices: tuple, what: str):
    if not isinstance(name, str) or name.lower() not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {name!r}")
    return name.lower()


def set_kernels(name: str = "auto") -> None:
    """Choose the GPU kernel path: ``"auto"``, ``"cupy"`` or ``"numba"``."""
    _state["gpu"] = _checked(name, GPU_CHOICES, "kernels")


def get_kernels() -> str:
    """The chosen GPU kernel path (``GPUNET_KERNELS`` on first use)."""
    if _state["gpu"] is None:
        set_kernels(os.environ.get("GPUNET_KERNELS", "auto"))
    return _state["gpu"]


def set_cpu_kernels(name: str = "auto") -> None:
    """Choose the CPU kernel path: ``"auto"``, ``"numpy"``, ``"numba"``, ``"numba-serial"`` or
    ``"numba-parallel"``."""
    name = _checked(name, CPU_CHOICES, "cpu kernels")
    from gpunet.kernels import cpu_threads

    cpu_threads.set_mode({"numba-serial": "serial", "numba-parallel": "parallel"}.get(name, "auto"))
    _state["cpu"] = name


def get_cpu_kernels() -> str:
    """The chosen CPU kernel path (``GPUNET_CPU_KERNELS`` on first use)."""
    if _state["cpu"] is None:
        set_cpu_kernels(os.environ.get("GPUNET_CPU_KERNELS", "auto"))
    return _state["cpu"]


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
    package is installed, else NumPy's BLAS), ``"numpy"`` or ``"mkl"`` (kernels/cpu_blas.py)."""
    from gpunet.kernels import cpu_blas

    cpu_blas.set_cpu_blas(name)


def get_cpu_blas() -> str:
    """The chosen CPU matrix-product library (``GPUNET_CPU_BLAS`` on first use)."""
    from gpunet.kernels import cpu_blas

    return cpu_blas.get_cpu_blas()


def use_cpu_blas(name: str) -> contextlib.AbstractContextManager:
    """``with use_cpu_blas("numpy"): ...`` runs the block's CPU products on that library."""
    return _switched(get_cpu_blas, set_cpu_blas, name)


# ----------------------------------------------------------------------------- Numba CUDA usable?
def numba_cuda_problem() -> str | None:
    """None if Numba CUDA kernels compile and run on CuPy arrays here, else the reason."""
    if "problem" not in _numba_probe:
        _numba_probe["problem"] = _probe_numba()
    return _numba_probe["problem"]


def _probe_numba() -> str | None:
    try:
        import cupy

        from gpunet.kernels import numba_support, path_numba_cuda

        if numba_support.SIMULATOR:
            return "NUMBA_ENABLE_CUDASIM=1 is set (the simulator cannot take CuPy arrays)"
        y = path_numba_cuda.activation_forward(
            "relu", cupy.asarray([-1.0, 2.0], dtype=cupy.float32)
        )
        if y.get().tolist() != [0.0, 2.0]:
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


def _current_device() -> str:
    from .backend import cupy_or_none, device_name_of

    cupy = cupy_or_none()
    return "" if cupy is None else device_name_of(cupy)


def _auto_table() -> list:
    """[(max_elements, path), ...] measured on this device, or [] (then CuPy everywhere)."""
    if _state["table"] is None:
        _state["table"] = []
        try:
            with open(table_path()) as f:
                data = json.load(f)
            if data.get("device") == _current_device():
                _state["table"] = sorted(
                    (int(n), str(p)) for n, p in data["rows"] if p in ("cupy", "numba")
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no table, or not ours: the default rule
    return _state["table"]


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
                "device": device if device is not None else _current_device(),
                "rows": [[int(n), p] for n, p in rows],
            },
            f,
            indent=1,
        )
    os.replace(tmp, path)
    _state["table"] = None  # reloaded on next use
    return path
