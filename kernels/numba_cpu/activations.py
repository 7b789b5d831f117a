"""Activation functions on the CPU with Numba: the shared scalar math of activation_math.py
compiled with ``njit``, one fused loop per call (the NumPy reference makes a temporary per
operation). Each loop has a serial and a parallel build; cpu_threads.py picks (serial within a
training step, where BLAS's threads hold the cores; parallel for a large activation on its own).
Kernels are compiled per function, dtype and build on first use.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy
from numba import prange

from gpunet.types import Array, DTypeLike

from ..shared import activation_math, cpu_threads, numba_cache
from . import vector_math

#: NumPy's error model (a float division by zero gives inf, no exception check) and fused
#: multiply-adds: what lets LLVM vectorize the loops. No other fast-math: NaN and inf stay exact.
OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}
#: the scalar math compiled per dtype: float32 stays float32 (constants included) and calls the
#: vectorizable exp/tanh/erf of vector_math.py; float64 calls the C library. Cached on disk.
#: Inlined into the loops by Numba (LLVM would not inline the larger ones, and a call in the loop
#: stops vectorization).
DEVICE_BY_DTYPE = {
    numpy.float32: activation_math.compile_all(
        numba_cache.njit(inline="always", **OPTIONS), numpy.float32, math_module=vector_math
    ),
    numpy.float64: activation_math.compile_all(
        numba_cache.njit(inline="always", **OPTIONS), numpy.float64
    ),
}
_KERNELS: dict = {}


# The loops, written once; each (activation, dtype, build) gets a named copy whose global ``dev``
# is that activation's compiled scalar function -- a module-level function, so Numba can cache it.
# ``prange`` is ``range`` in the serial build; in the parallel one Numba splits the loop over its
# threads (each thread's share still vectorized). Which build runs is the CPU thread policy's
# choice (cpu_threads.py).
#: the activation's compiled scalar function, set in each copy's namespace (declared only)
dev: Callable[..., float]


def _fwd_loop(x: Array, y: Array, a: float, b: float) -> None:
    for i in prange(x.size):
        y[i] = dev(x[i], a, b)  # noqa: F821 (``dev`` is set in each copy's namespace)


def _bwd_loop(dy: Array, x: Array, dx: Array, a: float, b: float) -> None:
    for i in prange(x.size):
        dx[i] = dev(dy[i], x[i], a, b)  # noqa: F821


def loops(name: str, dtype: DTypeLike, parallel: bool = False) -> tuple:
    """(forward, backward) loops of one activation and dtype, serial or parallel; compiled (or
    loaded from the disk cache) on first use."""
    key = (name, numpy.dtype(dtype).type, parallel)
    if key not in _KERNELS:
        device = DEVICE_BY_DTYPE[key[1]]
        sources = numba_cache.source_hash(activation_math, vector_math)
        build = "__parallel" if parallel else ""
        tag = f"{name}__{numpy.dtype(dtype).name}{build}__{sources}"
        _KERNELS[key] = tuple(
            numba_cache.njit(
                numba_cache.renamed(
                    loop,
                    f"{loop.__name__}__{tag}",
                    {"dev": device[f"{name}_{d}"], "prange": prange},
                ),
                nogil=True,
                parallel=parallel,
                **OPTIONS,
            )
            for loop, d in ((_fwd_loop, "fwd"), (_bwd_loop, "bwd"))
        )
    return _KERNELS[key]


def _loop(name: str, dtype: numpy.dtype, parallel: bool, which: int) -> Callable:
    """loops(...)[which] looked up by the array's own dtype (no numpy.dtype() per call)."""
    fn = _BY_ARRAY_DTYPE.get((name, dtype, parallel, which))
    if fn is None:
        fn = _BY_ARRAY_DTYPE[(name, dtype, parallel, which)] = loops(name, dtype, parallel)[which]
    return fn


_BY_ARRAY_DTYPE: dict = {}


def _flat(a: Array) -> Array:
    return a if a.ndim == 1 else a.reshape(-1)


def forward(name: str, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    """f(x) for a C-contiguous float32/float64 array. Every call pays this function's Python
    (about 2 us): what a 256K-value ReLU (40 us) can spare."""
    y = numpy.empty_like(x)
    st = x.dtype.type
    with cpu_threads.choose(cpu_threads.key(name, x.dtype), x.size) as par:
        _loop(name, x.dtype, par, 0)(_flat(x), _flat(y), st(a), st(b))
    return y


def backward(name: str, dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    """dy * f'(x) for C-contiguous arrays of one shape and dtype."""
    dx = numpy.empty_like(x)
    st = x.dtype.type
    with cpu_threads.choose(cpu_threads.key(name + "'", x.dtype), x.size) as par:
        _loop(name, x.dtype, par, 1)(_flat(dy), _flat(x), _flat(dx), st(a), st(b))
    return dx
