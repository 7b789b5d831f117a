"""gpunet's process-wide configuration, in one object: what the user chose and what gpunet found.

``CONFIG.settings`` holds the choices, each settable from Python or, before its first use, from an
environment variable (read once, on first use):

==============  ==========================  ==============================================
setting         environment variable        choices (set through)
==============  ==========================  ==============================================
``backend``     ``GPUNET_BACKEND``          auto, numpy, cupy (``gpunet.set_backend``)
``kernels``     ``GPUNET_KERNELS``          auto, cupy, numba (``gpunet.set_kernels``)
``cpu_kernels`` ``GPUNET_CPU_KERNELS``      auto, numpy, numba, numba-serial, numba-parallel
                                            (``gpunet.set_cpu_kernels``; also the CPU
                                            thread mode of kernels/shared/cpu_threads.py)
``cpu_blas``    ``GPUNET_CPU_BLAS``         auto, numpy, mkl (``gpunet.set_cpu_blas``)
==============  ==========================  ==============================================

``CONFIG.found`` holds what this process learned about the machine and must not ask again: the
CuPy and Numba CUDA probes, the resolved backend, the random generators, the measured kernel
table, the MKL library handle, the time of the last CPU matrix product, which one-time warnings
were given. Nothing else in gpunet keeps state at module level.

``with gpunet.config.using(cpu_kernels="numpy", cpu_blas="numpy"): ...`` sets choices for a block;
``snapshot()`` / ``restore(snap)`` save and put back everything (the test suite does that around
every test: one thing to set and restore).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy

__all__ = ["CHOICES", "ENVIRONMENT", "Settings", "Found", "Config", "CONFIG", "using"]

#: setting -> its allowed values (the first is the default)
CHOICES = {
    "backend": ("auto", "numpy", "cupy"),
    "kernels": ("auto", "cupy", "numba"),
    "cpu_kernels": ("auto", "numpy", "numba", "numba-serial", "numba-parallel"),
    "cpu_blas": ("auto", "numpy", "mkl"),
}
#: setting -> the environment variable that gives it before Python does
ENVIRONMENT = {
    "backend": "GPUNET_BACKEND",
    "kernels": "GPUNET_KERNELS",
    "cpu_kernels": "GPUNET_CPU_KERNELS",
    "cpu_blas": "GPUNET_CPU_BLAS",
}


@dataclasses.dataclass
class Settings:
    """The user's choices; None: not chosen yet (the environment variable, or the default, is
    taken on first use)."""

    backend: str | None = None
    kernels: str | None = None
    cpu_kernels: str | None = None
    cpu_blas: str | None = None


@dataclasses.dataclass
class Found:
    """What gpunet learned in this process (probes and caches), so that it is asked once."""

    #: the backend that ``backend`` resolved to ("numpy" or "cupy"), None before first use
    backend: str | None = None
    #: CuPy's probe: {"module": cupy or None, "reason": why not}, empty before first use
    cupy: dict = dataclasses.field(default_factory=dict)
    #: Numba CUDA's probe: {"problem": None or why it cannot run}, empty before first use
    numba_cuda: dict = dataclasses.field(default_factory=dict)
    #: the host generator (``gpunet.seed``) and the device one drawn from it
    rng: numpy.random.Generator = dataclasses.field(default_factory=numpy.random.default_rng)
    device_rng: Any = None
    #: the GPU kernel choice's measured table [(max_elements, path)], None before it is read
    kernel_table: list | None = None
    #: Intel MKL: the loaded library, why it cannot load, whether it runs on GNU OpenMP, and
    #: whether Numba's threading layer is OpenMP (None: not known yet)
    mkl: Any = None
    mkl_problem: str | None = None
    mkl_gnu: bool = False
    numba_openmp: bool | None = None
    #: cpu_blas's measured choice for ``auto`` ({"choice", "mkl_ms", "numpy_ms", ...}), None
    #: before it is needed
    blas_measured: dict | None = None
    #: time.perf_counter() of gpunet's last CPU matrix product (kernels/shared/cpu_threads.py)
    last_matmul: float = float("-inf")
    #: inside a training or evaluation loop (cpu_threads.product_loop): "free" (one BLAS thread)
    #: or "products" (the BLAS's threads own the cores); "" outside
    product_loop: str = ""
    #: the CPU kernels' stall watch (kernels/shared/cpu_threads.Watch), None before first use
    thread_watch: Any = None
    #: threadpoolctl's controller of the loaded BLAS libraries, with whether MKL was loaded when
    #: it was made ((mkl_loaded, controller); kernels/shared/cpu_blas.one_thread_per_product)
    blas_controller: tuple | None = None
    #: the cblas gemm functions Numba kernels call, per (library, "s" or "d"): (address, ilp64)
    #: or None (kernels/shared/blas_call.py)
    gemm_functions: dict = dataclasses.field(default_factory=dict)
    #: the worker threads that split a convolution's samples ((pid, ThreadPoolExecutor);
    #: kernels/numba_cpu/conv.py)
    sample_workers: tuple | None = None
    #: the helper process compiling a convnet's parallel kernel builds (subprocess.Popen;
    #: kernels/numba_cpu/warm.py), None when there is none
    parallel_helper: Any = None
    #: the one-time warnings already given (their names)
    warned: set = dataclasses.field(default_factory=set)
    #: Numba CUDA's stream objects for CuPy's streams, per (device, stream)
    numba_streams: dict = dataclasses.field(default_factory=dict)


class Config:
    """The choices (``settings``) and the findings (``found``) of this process."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.found = Found()

    def get(self, name: str) -> str:
        """The value of setting ``name``: as set, else its environment variable (read now, once),
        else the default. A bad environment value is a ValueError naming the variable."""
        value = getattr(self.settings, name)
        if value is None:
            value = os.environ.get(ENVIRONMENT[name], CHOICES[name][0])
            value = checked(name, value, source=f" (from {ENVIRONMENT[name]})")
            setattr(self.settings, name, value)
        return value

    def set(self, name: str, value: str) -> str:
        """Set setting ``name`` (checked against CHOICES; case-insensitive); returns it."""
        value = checked(name, value)
        setattr(self.settings, name, value)
        return value

    def snapshot(self) -> Config:
        """A copy of everything, for ``restore``."""
        snap = Config()
        snap.settings = dataclasses.replace(self.settings)
        snap.found = copy.copy(self.found)
        snap.found.cupy, snap.found.numba_cuda = dict(self.found.cupy), dict(self.found.numba_cuda)
        snap.found.warned = set(self.found.warned)
        snap.found.numba_streams = dict(self.found.numba_streams)
        return snap

    def restore(self, snap: Config) -> None:
        """Put back what ``snapshot`` saved."""
        self.settings = dataclasses.replace(snap.settings)
        self.found = snap.snapshot().found


def checked(name: str, value: object, source: str = "") -> str:
    """``value`` lower-cased if it is one of setting ``name``'s choices, else a ValueError that
    names the setting, the choices and ``source`` (e.g. the environment variable)."""
    choices = CHOICES[name]
    if not isinstance(value, str) or value.lower() not in choices:
        label = name.replace("_", " ")
        raise ValueError(f"{label} must be one of {list(choices)}, got {value!r}{source}")
    return value.lower()


#: the one configuration of this process
CONFIG = Config()


@contextlib.contextmanager
def using(**choices: str) -> Iterator[Config]:
    """Within the block, the given settings (``backend``, ``kernels``, ``cpu_kernels``,
    ``cpu_blas``); the earlier ones afterwards. Goes through the public setters, so a choice that
    cannot be had here (``backend="cupy"`` without a GPU, ``cpu_blas="mkl"`` without MKL) raises
    as they do."""
    unknown = set(choices) - set(CHOICES)
    if unknown:
        raise TypeError(f"using() got unknown settings {sorted(unknown)}; known: {list(CHOICES)}")
    from . import backend, dispatch

    setters = {
        "backend": backend.set_backend,
        "kernels": dispatch.set_kernels,
        "cpu_kernels": dispatch.set_cpu_kernels,
        "cpu_blas": dispatch.set_cpu_blas,
    }
    old = dataclasses.replace(CONFIG.settings)
    old_backend = CONFIG.found.backend
    try:
        for name, value in choices.items():
            setters[name](value)
        yield CONFIG
    finally:
        CONFIG.settings = old
        CONFIG.found.backend = old_backend
