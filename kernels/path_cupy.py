"""The CuPy path: CuPy arrays through gpunet's CUDA C kernels (kernels/*.cuh).

One of the four kernel paths (same functions and signatures as path_numpy.py; gpunet/dispatch.py
chooses). Activations: the vectorized RawKernel (one 16-byte vector per thread, vector.cuh) for
contiguous, aligned float32/float64 arrays, the ElementwiseKernel for any other layout
(cupy_activations.py). BatchNorm: fused statistics (running statistics updated in the kernel),
normalize+activation, and a two-kernel backward (cupy_batchnorm.py, batchnorm.cuh).
"""

from __future__ import annotations

import cupy

from gpunet.types import Array

from . import ACTIVATION_CODES, cupy_activations, cupy_batchnorm


def activation_forward(name: str, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    if cupy_activations.vectorizable(x):
        return cupy_activations.vector_forward(name, x, a, b)
    return cupy_activations.elementwise_forward(name, x, a, b)


def activation_backward(name: str, dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    if cupy_activations.vectorizable(dy, x):
        return cupy_activations.vector_backward(name, dy, x, a, b)
    return cupy_activations.elementwise_backward(name, dy, x, a, b)


def prelu_forward(x: Array, w: Array, channels: int, inner: int) -> Array:
    return cupy_activations.prelu_forward(
        cupy.ascontiguousarray(x), cupy.ascontiguousarray(w), channels, inner
    )


def prelu_backward(dy: Array, x: Array, w: Array, channels: int, inner: int) -> tuple:
    return cupy_activations.prelu_backward(
        cupy.ascontiguousarray(dy),
        cupy.ascontiguousarray(x),
        cupy.ascontiguousarray(w),
        channels,
        inner,
    )


def maxout_forward(x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    return cupy_activations.maxout_forward(cupy.ascontiguousarray(x), out_shape, pieces, inner)


def maxout_backward(dy: Array, x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    return cupy_activations.maxout_backward(
        cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x), pieces, inner
    )


def _aligned(a: float):
    """The kernels load 16-byte vectors: a view that starts mid-vector is copied."""
    return a if a.data.ptr % 16 == 0 else a.copy()


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
    """As path_numpy.bn_forward: 2 launches in training (statistics + running update, then
    normalize + activation), 1 with the running statistics (the kernel takes running_var)."""
    x3, code = _aligned(x3), ACTIVATION_CODES[act]
    if batch_stats:
        mean, invstd = cupy_batchnorm.stats(
            x3, running_mean if update else None, running_var if update else None, factor, eps
        )
        return (
            cupy_batchnorm.apply(x3, mean, invstd, 0, gamma, beta, code, act_a, eps),
            mean,
            invstd,
        )
    mean = running_mean.copy()  # the cache keeps this forward's statistics
    return cupy_batchnorm.apply(x3, mean, running_var, 1, gamma, beta, code, act_a, eps), mean, None


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
    return cupy_batchnorm.backward(
        _aligned(dy3),
        _aligned(x3),
        mean,
        invstd,
        gamma,
        beta,
        ACTIVATION_CODES[act],
        act_a,
        batch_stats,
    )


def softmax_xent(scores: Array, y: Array) -> tuple:
    """One fused CUDA C launch (kernels/loss.cuh) instead of ~14 small CuPy ones."""
    from . import cupy_loss

    return cupy_loss.softmax_cross_entropy(scores, y)
