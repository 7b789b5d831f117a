"""BatchNorm in NumPy (the NumPy path): two-pass float64 statistics, the normalization and its
backward as whole-array expressions. Formulas: gpunet/functional/batchnorm.py."""

from __future__ import annotations

import numpy

from gpunet.types import Array, DTypeLike

from ..interface import BNParams, BNSpec, BNStats
from ..shared.batchnorm_stats import invstd_of, running_constants, update_running
from . import activations


def batch_stats64(x3: Array) -> tuple:
    """(mean, biased var, unbiased var) per channel of (N, C, S) x, two passes in float64."""
    xd = x3.astype(numpy.float64)  # float64: 1e30 squared does not overflow
    M = x3.shape[0] * x3.shape[2]
    mean64 = xd.mean(axis=(0, 2))
    var64 = ((xd - mean64[None, :, None]) ** 2).mean(axis=(0, 2))
    return mean64, var64, (var64 * M / (M - 1) if M > 1 else var64)


def _per_channel(v: Array, dtype: DTypeLike) -> Array:
    return numpy.asarray(v, dtype=dtype).reshape(1, -1, 1)


def _z(x3: Array, mean: Array, invstd: Array, gamma: Array | None, beta: Array | None) -> Array:
    xhat = (x3 - _per_channel(mean, x3.dtype)) * _per_channel(invstd, x3.dtype)
    if gamma is None:
        return xhat
    return xhat * _per_channel(gamma, x3.dtype) + _per_channel(beta, x3.dtype)


def forward(x3: Array, params: BNParams, spec: BNSpec) -> tuple:
    """``(y, BNStats(mean, invstd))`` for (N, C, S) x (kernels/interface.py)."""
    if spec.batch_stats:
        mean64, var64, unbiased64 = batch_stats64(x3)
        if spec.update:
            update_running(params.running_mean, params.running_var, mean64, unbiased64, spec.factor)
        mean, invstd = mean64.astype(x3.dtype), invstd_of(var64, spec.eps, x3.dtype)
    else:
        mean, invstd = running_constants(params, spec, x3.dtype)
    z = _z(x3, mean, invstd, params.gamma, params.beta)
    if spec.act is not None:
        z = activations.forward(spec.act, z, spec.act_param, 0.0)
    return z, BNStats(mean, invstd)


def backward(dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec) -> tuple:
    """``(dx, dgamma, dbeta)``; sums in float64."""
    gamma, (mean, invstd) = params.gamma, stats
    xhat = (x3 - _per_channel(mean, x3.dtype)) * _per_channel(invstd, x3.dtype)
    dz = dy3
    if spec.act is not None:
        z = _z(x3, mean, invstd, gamma, params.beta)
        dz = activations.backward(spec.act, dy3, z, spec.act_param, 0.0)
    dz64, xhat64 = dz.astype(numpy.float64), xhat.astype(numpy.float64)
    dbeta = dz64.sum(axis=(0, 2))
    dgamma = (dz64 * xhat64).sum(axis=(0, 2))
    g = numpy.ones_like(dbeta) if gamma is None else gamma.astype(numpy.float64)
    k = (g * invstd.astype(numpy.float64))[None, :, None]
    if spec.batch_stats:
        M = x3.shape[0] * x3.shape[2]
        dx = k * (dz64 - dbeta[None, :, None] / M - xhat64 * dgamma[None, :, None] / M)
    else:
        dx = k * dz64
    dt = x3.dtype
    return dx.astype(dt), dgamma.astype(dt), dbeta.astype(dt)
