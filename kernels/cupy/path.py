"""The CuPy kernel path (complete: every operation of kernels/interface.py) -- CuPy arrays through
gpunet's CUDA C (the ``*.cuh`` files beside this module) and cuBLAS.

Activations: the vectorized RawKernel (one 16-byte vector per thread, vector.cuh) for contiguous,
aligned float32/float64 arrays, the ElementwiseKernel for any other layout (activations.py).
BatchNorm: fused statistics (running statistics updated in the kernel), normalize+activation, and
a two-kernel backward (batchnorm.py, batchnorm.cuh); the reductions' grids from the kernels'
occupancy and the SM count, in whole waves (launch.py). Loss: one launch, 32 threads per row
(loss.py). Optimizer: one launch for every parameter of a step (optim.py, optim_multi.cuh).
"""

from __future__ import annotations

from typing import Any

import cupy

from gpunet.types import Array

from ..activation_table import scalars
from ..interface import BNParams, BNSpec, BNStats
from ..shared.batchnorm_stats import running_statistics
from . import OPS, activations, batchnorm
from .conv import (  # noqa: F401
    conv2d_backward,
    conv2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from .linalg import column_sums, matmul, tensordot
from .loss import softmax_cross_entropy as softmax_xent
from .optim import adam, adam_many, multi_ready, sgd, sgd_many  # noqa: F401

NAME = "cupy"


def activation_forward(name: str, x: Array, **params: float) -> Array:
    a, b = scalars(name, params)
    if activations.vectorizable(x):
        return activations.vector_forward(name, x, a, b)
    return activations.elementwise_forward(name, x, a, b)


def activation_backward(name: str, dy: Array, x: Array, **params: float) -> Array:
    a, b = scalars(name, params)
    if activations.vectorizable(dy, x):
        return activations.vector_backward(name, dy, x, a, b)
    return activations.elementwise_backward(name, dy, x, a, b)


def prelu_forward(x: Array, w: Array, channels: int, inner: int) -> Array:
    x, w = cupy.ascontiguousarray(x), cupy.ascontiguousarray(w)
    return activations.prelu_forward(x, w, channels, inner)


def prelu_backward(dy: Array, x: Array, w: Array, channels: int, inner: int) -> tuple:
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    return activations.prelu_backward(dy, x, cupy.ascontiguousarray(w), channels, inner)


def maxout_forward(x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    return activations.maxout_forward(cupy.ascontiguousarray(x), out_shape, pieces, inner)


def maxout_backward(dy: Array, x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    return activations.maxout_backward(dy, x, pieces, inner)


def _aligned(a: Any) -> Any:  # a CuPy array
    """The kernels load 16-byte vectors: a view that starts mid-vector is copied."""
    return a if a.data.ptr % 16 == 0 else a.copy()


def bn_forward(x3: Array, params: BNParams, spec: BNSpec) -> tuple:
    """2 launches in training (statistics + running update + per-channel constants, then
    normalize + activation); with the running statistics, a fold of them (C values) and the
    normalize."""
    x3 = _aligned(x3)
    if spec.batch_stats:
        rm, rv = (params.running_mean, params.running_var) if spec.update else (None, None)
        mean, invstd, coef = batchnorm.stats(
            x3, rm, rv, spec.factor, spec.eps, params.gamma, params.beta
        )
    else:
        rm, rv = running_statistics(params)
        rm = rm.astype(x3.dtype, copy=False)
        mean, invstd, coef = batchnorm.fold_running(rm, rv, spec.eps, params.gamma, params.beta)
    return batchnorm.apply(x3, coef, spec), BNStats(mean, invstd)


def bn_backward(dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec) -> tuple:
    return batchnorm.backward(_aligned(dy3), _aligned(x3), stats, params, spec)
