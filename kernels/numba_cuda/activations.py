"""Numba CUDA kernels for the activation functions: the second GPU path, held to the CuPy one by
tests.

The device functions are activation_math.py compiled for CUDA (the same math as
``activations.cuh``).
Kernels work on flat contiguous arrays; each thread handles ``ILP`` elements strided by the block
size, so that loads stay coalesced and several are in flight per thread.

On a GPU they take CuPy arrays without a host sync and run on CuPy's current stream (see
``support.launch``); in CI they run in Numba's CUDA simulator on NumPy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy

from gpunet.types import Array, DTypeLike

from ..shared import activation_math
from ..shared.numba_cache import renamed, source_hash
from .support import cuda, launch

ILP = 4
BLOCK = 128

#: the device functions: the shared scalar math (activation_math.py) compiled for CUDA, one set
#: per dtype so that float32 kernels compute in float32 (their constants are float32 too)
DEVICE_BY_DTYPE = {
    dt: activation_math.compile_all(cuda.jit(device=True), dt)
    for dt in (numpy.float32, numpy.float64)
}
DEVICE = DEVICE_BY_DTYPE[numpy.float64]
leaky_relu_fwd, leaky_relu_bwd = DEVICE["leaky_relu_fwd"], DEVICE["leaky_relu_bwd"]


# The kernels, written once; each (activation, dtype) gets a named copy whose global ``dev`` is
# that activation's device function (module-level functions, so their compiled code can be cached
# on disk: kernels/shared/numba_cache.py). Each thread handles ILP elements strided by the block
# size.
#: the activation's device function, set in each copy's namespace (declared only)
dev: Callable[..., float]


def _fwd_kernel(x: Array, y: Array, a: float, b: float) -> None:
    start = cuda.blockIdx.x * (cuda.blockDim.x * ILP) + cuda.threadIdx.x
    for k in range(ILP):
        i = start + k * cuda.blockDim.x
        if i < x.size:
            y[i] = dev(x[i], a, b)  # noqa: F821 (``dev`` is set in each copy's namespace)


def _bwd_kernel(dy: Array, x: Array, dx: Array, a: float, b: float) -> None:
    start = cuda.blockIdx.x * (cuda.blockDim.x * ILP) + cuda.threadIdx.x
    for k in range(ILP):
        i = start + k * cuda.blockDim.x
        if i < x.size:
            dx[i] = dev(dy[i], x[i], a, b)  # noqa: F821


_KERNELS: dict = {}


def _kernels(name: str, dtype: DTypeLike) -> tuple:
    key = (name, numpy.dtype(dtype).type)
    if key not in _KERNELS:
        device = DEVICE_BY_DTYPE[key[1]]
        tag = f"{name}__{numpy.dtype(dtype).name}__{source_hash(activation_math)}"
        _KERNELS[key] = tuple(
            cuda.jit(cache=True)(
                renamed(
                    k,
                    f"{k.__name__}__{tag}",
                    {"cuda": cuda, "ILP": ILP, "dev": device[f"{name}_{d}"]},
                )
            )
            for k, d in ((_fwd_kernel, "fwd"), (_bwd_kernel, "bwd"))
        )
    return _KERNELS[key]


def _blocks(n: int):
    return max(1, (n + BLOCK * ILP - 1) // (BLOCK * ILP))


def forward(name: str, x: Array, y: Array, a: float = 0.0, b: float = 0.0) -> None:
    """y[:] = f(x) for flat contiguous x, y (CuPy arrays on a GPU, NumPy in the simulator)."""
    st = x.dtype.type
    launch(_kernels(name, x.dtype)[0], _blocks(x.size), BLOCK, x, y, st(a), st(b))


def backward(name: str, dy: Array, x: Array, dx: Array, a: float = 0.0, b: float = 0.0) -> None:
    """dx[:] = dy * f'(x) for flat contiguous arrays."""
    st = x.dtype.type
    launch(_kernels(name, x.dtype)[1], _blocks(x.size), BLOCK, dy, x, dx, st(a), st(b))


@cuda.jit(cache=True)
def _prelu_fwd(x: Array, w: Array, y: Array, channels: int, inner: int) -> None:
    i = cuda.grid(1)
    if i < x.size:
        y[i] = leaky_relu_fwd(x[i], w[(i // inner) % channels], 0.0)


@cuda.jit(cache=True)
def _prelu_bwd(
    dy: Array, x: Array, w: Array, dx: Array, dw_elem: Array, channels: int, inner: int
) -> None:
    i = cuda.grid(1)
    if i < x.size:
        xv = x[i]
        dx[i] = leaky_relu_bwd(dy[i], xv, w[(i // inner) % channels], 0.0)
        dw_elem[i] = 0.0 if xv > 0 else xv * dy[i]


def prelu_forward(x: Array, w: Array, y: Array, channels: int, inner: int) -> None:
    launch(_prelu_fwd, max(1, (x.size + BLOCK - 1) // BLOCK), BLOCK, x, w, y, channels, inner)


def prelu_backward(
    dy: Array, x: Array, w: Array, dx: Array, dw_elem: Array, channels: int, inner: int
) -> None:
    launch(
        _prelu_bwd,
        max(1, (x.size + BLOCK - 1) // BLOCK),
        BLOCK,
        dy,
        x,
        w,
        dx,
        dw_elem,
        channels,
        inner,
    )


@cuda.jit(device=True)
def _maxout_winner(x: Array, base: int, pieces: int, inner: int):
    win = 0
    best = x[base]
    for k in range(1, pieces):
        if math.isnan(best):
            break
        v = x[base + k * inner]
        if v > best or math.isnan(v):
            best = v
            win = k
    return win


@cuda.jit(cache=True)
def _maxout_fwd(x: Array, y: Array, pieces: int, inner: int) -> None:
    o = cuda.grid(1)
    if o < y.size:
        base = (o // inner) * pieces * inner + o % inner
        y[o] = x[base + _maxout_winner(x, base, pieces, inner) * inner]


@cuda.jit(cache=True)
def _maxout_bwd(dy: Array, x: Array, dx: Array, pieces: int, inner: int) -> None:
    o = cuda.grid(1)
    if o < dy.size:
        base = (o // inner) * pieces * inner + o % inner
        win = _maxout_winner(x, base, pieces, inner)
        for k in range(pieces):
            dx[base + k * inner] = dy[o] if k == win else 0.0


def maxout_forward(x: Array, y: Array, pieces: int, inner: int) -> None:
    """Flat contiguous x of (outer, C, pieces, inner) -> flat y of (outer, C, inner)."""
    launch(_maxout_fwd, max(1, (y.size + BLOCK - 1) // BLOCK), BLOCK, x, y, pieces, inner)


def maxout_backward(dy: Array, x: Array, dx: Array, pieces: int, inner: int) -> None:
    launch(_maxout_bwd, max(1, (dy.size + BLOCK - 1) // BLOCK), BLOCK, dy, x, dx, pieces, inner)
