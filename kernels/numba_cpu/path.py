"""The Numba CPU kernel path: NumPy arrays through kernels Numba compiles for the CPU.

Runs the operations in ``OPS``; gpunet/dispatch.py sends the others (PReLU, Maxout, the matrix
products) to the NumPy path. Activations: the shared scalar math (kernels/shared/activation_math.py)
fused into one loop per call (activations.py). BatchNorm: one-pass chunked statistics and fused
passes (batchnorm.py) with ReLU fused into the kernels and any other activation as one more
Numba pass. Kernels take C-contiguous arrays: other layouts are copied first.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

import numpy

from gpunet.types import Array

from ..activation_table import scalars
from ..interface import BNParams, BNSpec, BNStats
from ..shared.batchnorm_stats import running_constants
from . import OPS, batchnorm
from .loss import softmax_xent
from .optim import adam, adam_many, multi_ready, sgd, sgd_many  # noqa: F401


class _Lazy:
    """This path's heavier modules, imported at their first use: the activation and
    convolution kernels' modules set up ~60 ms of Numba dispatchers and vector intrinsics, which
    a run that never calls them (the quickstart's MLP, with ReLU fused into BatchNorm) need not
    pay for."""

    def __getattr__(self, name: str) -> ModuleType:
        module = importlib.import_module(f"{__package__}.{name}")
        setattr(self, name, module)  # found directly from then on
        return module


_lazy = _Lazy()


def conv2d_forward(x: Array, w: Array, stride: tuple, padding: tuple) -> tuple:
    return _lazy.conv.conv2d_forward(x, w, stride, padding)


def conv2d_backward(
    dout: Array, x: Array, w: Array, kept: object, stride: tuple, padding: tuple, input_grad: bool
) -> tuple:
    return _lazy.conv.conv2d_backward(dout, x, w, kept, stride, padding, input_grad)


def max_pool2d_forward(x: Array, kernel: tuple, stride: tuple, padding: tuple) -> tuple:
    return _lazy.conv.max_pool2d_forward(x, kernel, stride, padding)


def max_pool2d_backward(
    dout: Array, arg: Array, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple
) -> Array:
    return _lazy.conv.max_pool2d_backward(dout, arg, x_shape, kernel, stride, padding)


NAME = "numba-cpu"


def activation_forward(name: str, x: Array, **params: float) -> Array:
    return _lazy.activations.forward(name, numpy.ascontiguousarray(x), *scalars(name, params))


def activation_backward(name: str, dy: Array, x: Array, **params: float) -> Array:
    dy, x = numpy.ascontiguousarray(dy), numpy.ascontiguousarray(x)
    return _lazy.activations.backward(name, dy, x, *scalars(name, params))


def bn_forward(x3: Array, params: BNParams, spec: BNSpec) -> tuple:
    gamma, beta, running_mean, running_var = params
    if spec.batch_stats and spec.act in (None, "relu") and batchnorm._one_call(x3, gamma, beta):
        y, mean, invstd = batchnorm.forward_one_call(x3, params, spec)
        return y, BNStats(mean, invstd)
    if spec.batch_stats:
        mean, invstd = batchnorm.batch_statistics(
            x3, spec.eps, running_mean, running_var, spec.factor, spec.update
        )
    else:
        mean, invstd = running_constants(params, spec, x3.dtype)
    y = batchnorm.apply(x3, mean, invstd, gamma, beta, spec.act == "relu")
    if spec.act not in (None, "relu"):
        y = _lazy.activations.forward(spec.act, y, spec.act_param, 0.0)
    return y, BNStats(mean, invstd)


def bn_backward(dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec) -> tuple:
    if spec.act not in (None, "relu"):  # dz = dy * act'(z), then the plain kernels
        z = batchnorm.apply(x3, *stats, params.gamma, params.beta, False)
        dy3 = _lazy.activations.backward(spec.act, dy3, z, spec.act_param, 0.0)
        spec = dataclasses.replace(spec, act=None)
    return batchnorm.backward(dy3, x3, stats, params, spec)
