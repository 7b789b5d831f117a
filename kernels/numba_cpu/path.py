"""The Numba CPU kernel path: NumPy arrays through kernels Numba compiles for the CPU.

Runs the operations in ``OPS``; gpunet/dispatch.py sends the others (PReLU, Maxout, the matrix
products) to the NumPy path. Activations: the shared scalar math (kernels/shared/activation_math.py)
fused into one loop per call (activations.py). BatchNorm: one-pass chunked statistics and fused
passes (batchnorm.py) with ReLU fused into the kernels and any other activation as one more
Numba pass. Kernels take C-contiguous arrays: other layouts are copied first.
"""

from __future__ import annotations

import dataclasses

import numpy

from gpunet.types import Array

from ..activation_table import scalars
from ..interface import BNParams, BNSpec, BNStats
from ..shared.batchnorm_stats import running_constants
from . import OPS, activations, batchnorm
from .conv import (  # noqa: F401
    conv2d_backward,
    conv2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from .loss import softmax_xent
from .optim import adam, sgd

NAME = "numba-cpu"


def activation_forward(name: str, x: Array, **params: float) -> Array:
    return activations.forward(name, numpy.ascontiguousarray(x), *scalars(name, params))


def activation_backward(name: str, dy: Array, x: Array, **params: float) -> Array:
    dy, x = numpy.ascontiguousarray(dy), numpy.ascontiguousarray(x)
    return activations.backward(name, dy, x, *scalars(name, params))


def bn_forward(x3: Array, params: BNParams, spec: BNSpec) -> tuple:
    gamma, beta, running_mean, running_var = params
    if spec.batch_stats:
        mean, invstd = batchnorm.batch_statistics(
            x3, spec.eps, running_mean, running_var, spec.factor, spec.update
        )
    else:
        mean, invstd = running_constants(params, spec, x3.dtype)
    y = batchnorm.apply(x3, mean, invstd, gamma, beta, spec.act == "relu")
    if spec.act not in (None, "relu"):
        y = activations.forward(spec.act, y, spec.act_param, 0.0)
    return y, BNStats(mean, invstd)


def bn_backward(dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec) -> tuple:
    if spec.act not in (None, "relu"):  # dz = dy * act'(z), then the plain kernels
        z = batchnorm.apply(x3, *stats, params.gamma, params.beta, False)
        dy3 = activations.backward(spec.act, dy3, z, spec.act_param, 0.0)
        spec = dataclasses.replace(spec, act=None)
    return batchnorm.backward(dy3, x3, stats, params, spec)
