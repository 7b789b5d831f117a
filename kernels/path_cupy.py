"""The CuPy path: CuPy arrays through gpunet's CUDA C kernels (kernels/*.cuh).

One of the four kernel paths (same functions and signatures as path_numpy.py; gpunet/dispatch.py
chooses). Activations: the vectorized RawKernel (one 16-byte vector per thread, vector.cuh) for
contiguous, aligned float32/float64 arrays, the ElementwiseKernel for any other layout
(cupy_activations.py). BatchNorm: fused statistics (running statistics updated in the kernel),
normalize+activation, and a two-kernel backward (cupy_batchnorm.py, batchnorm.cuh).
"""

from __future__ import annotations

import cupy

from . import ACTIVATION_CODES, cupy_activations, cupy_batchnorm


def activation_forward(name, x, a=0.0, b=0.0):
    if cupy_activations.vectorizable(x):
        return cupy_activations.vector_forward(name, x, a, b)
    return cupy_activations.elementwise_forward(name, x, a, b)


def activation_backward(name, dy, x, a=0.0, b=0.0):
    if cupy_activations.vectorizable(dy, x):
        return cupy_activations.vector_backward(name, dy, x, a, b)
    return cupy_activations.elementwise_backward(name, dy, x, a, b)


def prelu_forward(x, w, channels, inner):
    return cupy_activations.prelu_forward(
        cupy.ascontiguousarray(x), cupy.ascontiguousarray(w), channels, inner
    )


def prelu_backward(dy, x, w, channels, inner):
    return cupy_activations.prelu_backward(
        cupy.ascontiguousarray(dy),
        cupy.ascontiguousarray(x),
        cupy.ascontiguousarray(w),
        channels,
        inner,
    )


def maxout_forward(x, out_shape, pieces, inner):
    return cupy_activations.maxout_forward(cupy.ascontiguousarray(x), out_shape, pieces, inner)


def maxout_backward(dy, x, out_shape, pieces, inner):
    return cupy_activations.maxout_backward(
        cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x), pieces, inner
    )


def _aligned(a):
    """The kernels load 16-byte vectors: a view that starts mid-vector is copied."""
    return a if a.data.ptr % 16 == 0 else a.copy()


def bn_forward(
    x3, gamma, beta, running_mean, running_var, batch_stats, update, factor, eps, act, act_a
):
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


def bn_backward(dy3, x3, mean, invstd, gamma, beta, act, act_a, batch_stats):
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
