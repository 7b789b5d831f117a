"""The Numba CUDA kernel path: CuPy arrays through kernels written in Python with Numba CUDA.

The second GPU implementation, held to the CuPy one by the tests; it computes the same formulas
(activations.py, batchnorm.py) on flat contiguous arrays, on CuPy's current device and stream.
Runs the operations in ``OPS``; gpunet/dispatch.py sends the others (loss, matrix products,
optimizer updates) to the CuPy path. Running statistics are updated on the host side
(kernels/shared/batchnorm_stats.py).
"""

from __future__ import annotations

import cupy

from gpunet.types import Array

from ..activation_table import scalars
from ..interface import BNParams, BNSpec, BNStats
from ..shared.batchnorm_stats import running_constants, update_running
from . import OPS, activations, batchnorm

NAME = "numba"


def activation_forward(name: str, x: Array, **params: float) -> Array:
    x = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x)
    activations.forward(name, x.ravel(), y.ravel(), *scalars(name, params))
    return y


def activation_backward(name: str, dy: Array, x: Array, **params: float) -> Array:
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    dx = cupy.empty_like(x)
    activations.backward(name, dy.ravel(), x.ravel(), dx.ravel(), *scalars(name, params))
    return dx


def prelu_forward(x: Array, w: Array, channels: int, inner: int) -> Array:
    x, y = cupy.ascontiguousarray(x), cupy.empty(x.shape, x.dtype)
    activations.prelu_forward(x.ravel(), cupy.ascontiguousarray(w), y.ravel(), channels, inner)
    return y


def prelu_backward(dy: Array, x: Array, w: Array, channels: int, inner: int) -> tuple:
    dy, x, w = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x), cupy.ascontiguousarray(w)
    dx, dw_elem = cupy.empty_like(x), cupy.empty_like(x)
    activations.prelu_backward(
        dy.ravel(), x.ravel(), w, dx.ravel(), dw_elem.ravel(), channels, inner
    )
    return dx, dw_elem


def maxout_forward(x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    x, y = cupy.ascontiguousarray(x), cupy.empty(out_shape, x.dtype)
    activations.maxout_forward(x.ravel(), y.ravel(), pieces, inner)
    return y


def maxout_backward(dy: Array, x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    dx = cupy.empty_like(x)
    activations.maxout_backward(dy.ravel(), x.ravel(), dx.ravel(), pieces, inner)
    return dx


def bn_forward(x3: Array, params: BNParams, spec: BNSpec) -> tuple:
    if spec.batch_stats:
        mean, invstd, stats64 = batchnorm.stats(x3, spec.eps)
        if spec.update:
            mean64, unbiased64 = stats64[:, 0], stats64[:, 1]
            update_running(params.running_mean, params.running_var, mean64, unbiased64, spec.factor)
    else:
        mean, invstd = running_constants(params, spec, x3.dtype)
    return batchnorm.apply(x3, mean, invstd, params, spec), BNStats(mean, invstd)


def bn_backward(dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec) -> tuple:
    return batchnorm.backward(dy3, x3, stats, params, spec)
