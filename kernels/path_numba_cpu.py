"""The Numba CPU path: NumPy arrays through kernels compiled by Numba for the CPU.

One of the four kernel paths (same functions and signatures as path_numpy.py; gpunet/dispatch.py
chooses). Activations: the shared scalar math of activation_math.py fused into one loop per call
(cpu_activations.py). BatchNorm: one-pass chunked statistics and fused passes (cpu_batchnorm.py),
with ReLU fused into the kernels and any other activation as a NumPy pass on top. PReLU and
Maxout have no Numba CPU kernels: this path runs the NumPy code for them.

Kernels take C-contiguous arrays: other layouts are copied first.
"""

from __future__ import annotations

import numpy

from gpunet.types import Array

from . import cpu_activations, cpu_batchnorm, cpu_loss, path_numpy

# No CPU kernels for these: the NumPy code is what this path runs.
prelu_forward, prelu_backward = path_numpy.prelu_forward, path_numpy.prelu_backward
maxout_forward, maxout_backward = path_numpy.maxout_forward, path_numpy.maxout_backward


softmax_xent = cpu_loss.softmax_xent


def activation_forward(name: str, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    return cpu_activations.forward(name, numpy.ascontiguousarray(x), a, b)


def activation_backward(name: str, dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    return cpu_activations.backward(
        name, numpy.ascontiguousarray(dy), numpy.ascontiguousarray(x), a, b
    )


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
    """As path_numpy.bn_forward."""
    if batch_stats:
        mean, invstd = cpu_batchnorm.batch_statistics(
            x3, eps, running_mean, running_var, factor, update
        )
        apply_invstd = invstd
    else:
        mean, invstd = running_mean.copy(), None
        apply_invstd = path_numpy.invstd_of(running_var, eps, x3.dtype)
    fused = act in (None, "relu")
    y = cpu_batchnorm.apply(x3, mean, apply_invstd, gamma, beta, act == "relu")
    if not fused:
        y = path_numpy.activation_forward(act, y, act_a)
    return y, mean, invstd


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
    """As path_numpy.bn_backward."""
    if act not in (None, "relu"):  # dz = dy * act'(z) in NumPy, then the plain kernels
        z = cpu_batchnorm.apply(x3, mean, invstd, gamma, beta, False)
        dy3 = path_numpy.activation_backward(act, dy3, z, act_a)
    return cpu_batchnorm.backward(dy3, x3, mean, invstd, gamma, beta, act == "relu", batch_stats)
