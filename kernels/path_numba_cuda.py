"""The Numba CUDA path: CuPy arrays through kernels written in Python with Numba CUDA.

One of the four kernel paths (same functions and signatures as path_numpy.py; gpunet/dispatch.py
chooses). The second GPU implementation, held to the CuPy one by the tests; it computes the same
formulas (numba_activations.py, numba_batchnorm.py) on flat contiguous arrays, on CuPy's current
device and stream. Running statistics are updated on the host side (path_numpy.update_running).
"""

from __future__ import annotations

import cupy

from gpunet.types import Array

from . import ACTIVATION_CODES, numba_activations, numba_batchnorm, path_cupy, path_numpy

# No Numba CUDA kernel for this: the CUDA C one of the CuPy path runs.
softmax_xent = path_cupy.softmax_xent


def activation_forward(name: str, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    x = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x)
    numba_activations.forward(name, x.ravel(), y.ravel(), a, b)
    return y


def activation_backward(name: str, dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    dx = cupy.empty_like(x)
    numba_activations.backward(name, dy.ravel(), x.ravel(), dx.ravel(), a, b)
    return dx


def prelu_forward(x: Array, w: Array, channels: int, inner: int) -> Array:
    x, y = cupy.ascontiguousarray(x), cupy.empty(x.shape, x.dtype)
    numba_activations.prelu_forward(
        x.ravel(), cupy.ascontiguousarray(w), y.ravel(), channels, inner
    )
    return y


def prelu_backward(dy: Array, x: Array, w: Array, channels: int, inner: int) -> tuple:
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    dx, dw_elem = cupy.empty_like(x), cupy.empty_like(x)
    numba_activations.prelu_backward(
        dy.ravel(),
        x.ravel(),
        cupy.ascontiguousarray(w),
        dx.ravel(),
        dw_elem.ravel(),
        channels,
        inner,
    )
    return dx, dw_elem


def maxout_forward(x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    x, y = cupy.ascontiguousarray(x), cupy.empty(out_shape, x.dtype)
    numba_activations.maxout_forward(x.ravel(), y.ravel(), pieces, inner)
    return y


def maxout_backward(dy: Array, x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    dx = cupy.empty_like(x)
    numba_activations.maxout_backward(dy.ravel(), x.ravel(), dx.ravel(), pieces, inner)
    return dx


def bn_forward(
    x3: Array,
    gamma: Array,
    beta: Array,
    running_mean: Array,
    running_var: Array,
    batch_stats: bool,
    update: bool,
    factor: float,
    eps: float,
    act: str | None,
    act_a: float,
) -> tuple:
    code = ACTIVATION_CODES[act]
    if batch_stats:
        mean, invstd, stats64 = numba_batchnorm.stats(x3, eps)
        if update:
            path_numpy.update_running(
                running_mean, running_var, stats64[:, 0], stats64[:, 1], factor
            )
        return (
            numba_batchnorm.apply(x3, mean, invstd, 0, gamma, beta, code, act_a, eps),
            mean,
            invstd,
        )
    mean = running_mean.copy()
    return (
        numba_batchnorm.apply(x3, mean, running_var, 1, gamma, beta, code, act_a, eps),
        mean,
        None,
    )


def bn_backward(
    dy3: Array,
    x3: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    act: str | None,
    act_a: float,
    batch_stats: bool,
) -> tuple:
    return numba_batchnorm.backward(
        dy3, x3, mean, invstd, gamma, beta, ACTIVATION_CODES[act], act_a, batch_stats
    )
