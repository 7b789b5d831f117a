"""CuPy kernels for the activation functions.

Two paths, both built from the device functions of ``activations.cuh``:

* ``elementwise_forward`` / ``elementwise_backward``: ``cupy.ElementwiseKernel`` -- any layout,
  broadcasting, non-contiguous views (the generic path).
* ``vector_forward`` / ``vector_backward``: the vectorized ``RawKernel`` of ``activations_vec.cuh``
  -- contiguous, 16-byte-aligned float32/float64 only, one float4/double2 per thread (the fast
  path: see docs/gpu-notes.md for why ElementwiseKernel is not enough).

Kernels are compiled on first use and memoized per device (CuPy also caches them on disk).
"""

from __future__ import annotations

import cupy

from gpunet.types import Array, DTypeLike

from . import elementwise_ops
from .sources import unit_source

BLOCK = 256


@cupy.memoize(for_each_device=True)
def _elementwise_kernels(name: str) -> tuple:
    fwd, bwd = elementwise_ops.activation_ops(name)
    return elementwise_ops.make_kernel(cupy, fwd), elementwise_ops.make_kernel(cupy, bwd)


@cupy.memoize(for_each_device=True)
def _module() -> Array:
    return cupy.RawModule(code=unit_source("activations"), options=("-std=c++14",))


@cupy.memoize(for_each_device=True)
def _kernel(name: str):
    """The compiled function, looked up once per device: a lookup per launch would cost a new
    RawKernel object and a driver call in every step."""
    return _module().get_function(name)


def _ctype(dtype: DTypeLike) -> str:
    return "float" if dtype == cupy.float32 else "double"


def vectorizable(*arrays) -> bool:
    """True when the fast vector path applies: C-contiguous, float32/64, 16-byte aligned."""
    return all(
        a.flags.c_contiguous and a.dtype in (cupy.float32, cupy.float64) and a.data.ptr % 16 == 0
        for a in arrays
    )


def _vector_grid(n: int, dtype: DTypeLike) -> tuple:
    lanes = 4 if dtype == cupy.float32 else 2
    threads = n // lanes + 1  # + 1: the tail thread
    return ((threads + BLOCK - 1) // BLOCK,), (BLOCK,)


def elementwise_forward(name: str, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    return _elementwise_kernels(name)[0](x, a, b)


def elementwise_backward(name: str, dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    return _elementwise_kernels(name)[1](dy, x, a, b)


def vector_forward(name: str, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    y = cupy.empty_like(x)
    if x.size:
        st = x.dtype.type
        grid, block = _vector_grid(x.size, x.dtype)
        _kernel(f"{name}_fwd_{_ctype(x.dtype)}")(
            grid, block, (x, y, cupy.int64(x.size), st(a), st(b))
        )
    return y


def vector_backward(name: str, dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    dx = cupy.empty_like(x)
    if x.size:
        st = x.dtype.type
        grid, block = _vector_grid(x.size, x.dtype)
        _kernel(f"{name}_bwd_{_ctype(x.dtype)}")(
            grid, block, (dy, x, dx, cupy.int64(x.size), st(a), st(b))
        )
    return dx


def _grid(n: int) -> tuple:
    return ((n + BLOCK - 1) // BLOCK,), (BLOCK,)


def prelu_forward(x: Array, w: Array, channels: int, inner: int) -> Array:
    """x contiguous, w contiguous of length ``channels``."""
    y = cupy.empty_like(x)
    if x.size:
        _kernel(f"prelu_fwd_{_ctype(x.dtype)}")(
            *_grid(x.size), (x, w, y, cupy.int64(x.size), cupy.int64(channels), cupy.int64(inner))
        )
    return y


def prelu_backward(dy: Array, x: Array, w: Array, channels: int, inner: int) -> tuple:
    """Returns (dx, dw_elem) where dw_elem[j] = x[j] * dy[j] where x[j] <= 0, else 0."""
    dx, dw_elem = cupy.empty_like(x), cupy.empty_like(x)
    if x.size:
        _kernel(f"prelu_bwd_{_ctype(x.dtype)}")(
            *_grid(x.size),
            (dy, x, w, dx, dw_elem, cupy.int64(x.size), cupy.int64(channels), cupy.int64(inner)),
        )
    return dx, dw_elem


def maxout_forward(x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    y = cupy.empty(out_shape, dtype=x.dtype)
    if y.size:
        _kernel(f"maxout_fwd_{_ctype(x.dtype)}")(
            *_grid(y.size), (x, y, cupy.int64(y.size), cupy.int64(pieces), cupy.int64(inner))
        )
    return y


def maxout_backward(dy: Array, x: Array, pieces: int, inner: int) -> Array:
    dx = cupy.empty_like(x)
    if dy.size:
        _kernel(f"maxout_bwd_{_ctype(x.dtype)}")(
            *_grid(dy.size), (dy, x, dx, cupy.int64(dy.size), cupy.int64(pieces), cupy.int64(inner))
        )
    return dx
