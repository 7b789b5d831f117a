"""Batch normalization (Ioffe & Szegedy 2015), optionally fused with the activation after it.

For each channel c (axis 1) over the M = N * (spatial) values of the batch:

    mean_c = (1/M) sum x,   var_c = (1/M) sum (x - mean_c)^2          (biased, to normalize)
    xhat   = (x - mean_c) / sqrt(var_c + eps)
    y      = act(gamma_c * xhat + beta_c)                             (act: None or "relu", ...)

Training updates the running statistics in place with the *unbiased* variance M / (M - 1) var_c:
``running = (1 - momentum) * running + momentum * batch`` (``momentum=None``: cumulative average,
factor 1 / (num_batches_tracked + 1)). Inference normalizes with the running statistics. With no
running statistics (``None``) the batch statistics are used in inference too. All as
``torch.nn.functional.batch_norm``.

Backward, with dz = dy * act'(z), z = gamma * xhat + beta recomputed from x:

    dbeta  = sum dz,   dgamma = sum dz * xhat
    dx     = gamma / (M sqrt(var + eps)) * (M dz - dbeta - xhat * dgamma)      (batch statistics)
    dx     = gamma / sqrt(running_var + eps) * dz                             (running statistics)

Shapes: x (N, C), (N, C, L) or (N, C, H, W); gamma, beta, running_mean, running_var (C,).
Statistics are computed without E[x^2] - E[x]^2: two passes in float64 on NumPy, Welford/Chan
in float64 on the GPU (kernels/batchnorm.cuh, kernels/numba_batchnorm.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from .._checks import check_array, check_like, float_inputs
from ..kernel_path import resolve_path
from . import activations as A

#: fused activation -> kernel code (the GPUNET_ACT_* table in kernels/batchnorm.cuh)
ACTIVATION_CODES = {None: 0, "relu": 1, "leaky_relu": 2, "elu": 3, "tanh": 4, "sigmoid": 5,
                    "gelu": 6, "silu": 7}
_REFERENCE_ACTIVATIONS = {"relu": (A.relu, A.relu_backward), "leaky_relu": (A.leaky_relu, A.leaky_relu_backward),
                          "elu": (A.elu, A.elu_backward), "tanh": (A.tanh, A.tanh_backward),
                          "sigmoid": (A.sigmoid, A.sigmoid_backward), "gelu": (A.gelu, A.gelu_backward),
                          "silu": (A.silu, A.silu_backward)}


@dataclass
class BatchNormCache:
    """What backward needs: x as (N, C, S), the statistics used, and the options."""
    x3: object
    shape: tuple
    mean: object
    invstd: object
    gamma: object
    beta: object
    activation: str | None
    batch_stats: bool


def _check(x, gamma, beta, running_mean, running_var, momentum, eps, activation):
    check_array(x, "x")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"x must be (N, C), (N, C, L) or (N, C, H, W), got shape {x.shape}")
    xp = float_inputs(x=x, **{k: v for k, v in (("gamma", gamma), ("beta", beta),
                                                ("running_mean", running_mean),
                                                ("running_var", running_var)) if v is not None})
    C = x.shape[1]
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if a is None:
            continue
        if a.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},) (one value per channel of x, axis 1), got {a.shape}")
        if a.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {a.dtype}, expected the dtype of x ({x.dtype})")
    if (gamma is None) != (beta is None):
        raise ValueError("gamma and beta must both be arrays or both be None")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be arrays or both be None")
    if momentum is not None and not (0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {list(ACTIVATION_CODES)}, got {activation!r}")
    return xp


def batch_norm_forward(x, gamma, beta, running_mean, running_var, *, training=True, momentum=0.1,
                       eps=1e-5, activation=None, num_batches_tracked=0):
    """Returns ``(y, cache)``; see the module docstring. ``running_mean``/``running_var`` are
    updated in place when training. ``num_batches_tracked`` (batches seen before this one) is
    only used with ``momentum=None``."""
    xp = _check(x, gamma, beta, running_mean, running_var, momentum, eps, activation)
    N, C = x.shape[:2]
    S = int(numpy.prod(x.shape[2:], dtype=numpy.int64))
    batch_stats = training or running_mean is None
    if batch_stats and N * S == 0:
        raise ValueError(f"x has an empty batch (shape {x.shape}): batch statistics need values; "
                         "running statistics are left untouched")
    if training and N * S == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input of shape {x.shape}")
    factor = momentum if momentum is not None else 1.0 / (num_batches_tracked + 1)
    x3 = xp.ascontiguousarray(x).reshape(N, C, S)
    update = training and running_mean is not None
    code = ACTIVATION_CODES[activation]
    # The kernels index per-channel vectors as plain arrays: strided views (G[:, 0]) are copied,
    # and updated running statistics are written back into the caller's arrays.
    gamma, beta, rm, rv = (None if v is None else xp.ascontiguousarray(v)
                           for v in (gamma, beta, running_mean, running_var))
    if xp is numpy:
        forward = _cpu_forward if _cpu_kernels_apply(activation) else _reference_forward
        y, mean, invstd = forward(x3, gamma, beta, rm, rv, batch_stats, update, factor, eps, activation)
    elif C == 0:        # nothing to normalize, and no zero-sized grid to launch
        y, mean, invstd = xp.empty_like(x3), xp.empty(0, x.dtype), xp.empty(0, x.dtype)
    else:
        kern = _gpu_module(x3.size)
        x3 = _aligned(xp, x3)
        if batch_stats:
            mean, invstd = kern.stats(x3, rm if update else None, rv if update else None, factor, eps)
            y = kern.apply(x3, mean, invstd, 0, gamma, beta, code, eps)
        else:
            # copies: the cache must keep the statistics of this forward, whatever happens to the
            # running statistics before backward; invstd is only computed if a backward comes
            mean, invstd = rm.copy(), _LazyInvstd(rv.copy(), eps)
            y = kern.apply(x3, mean, invstd.running_var, 1, gamma, beta, code, eps)
    if update:
        for mine, theirs in ((rm, running_mean), (rv, running_var)):
            if mine is not theirs:
                theirs[...] = mine
    cache = BatchNormCache(x3, x.shape, mean, invstd, gamma, beta, activation, batch_stats)
    return y.reshape(x.shape), cache


def batch_norm_backward(dy, cache: BatchNormCache):
    """Returns ``(dx, dgamma, dbeta)`` (``dgamma``/``dbeta`` None without affine)."""
    if not isinstance(cache, BatchNormCache):
        raise TypeError(f"cache must be the BatchNormCache returned by batch_norm_forward, got {type(cache).__name__}")
    x3 = cache.x3
    xp = float_inputs(dy=dy, x=x3)
    check_like(dy, "dy", x3.reshape(cache.shape), "x")
    dy3 = xp.ascontiguousarray(dy).reshape(x3.shape)
    invstd = cache.invstd.value() if isinstance(cache.invstd, _LazyInvstd) else cache.invstd
    if xp is numpy:
        if _cpu_kernels_apply(cache.activation):
            from gpunet.kernels import cpu_batchnorm
            dx, dgamma, dbeta = cpu_batchnorm.backward(dy3, x3, cache.mean, invstd, cache.gamma, cache.beta,
                                                       cache.activation == "relu", cache.batch_stats)
        else:
            dx, dgamma, dbeta = _reference_backward(dy3, x3, cache.mean, invstd, cache.gamma, cache.beta,
                                                    cache.activation, cache.batch_stats)
    elif x3.shape[1] == 0:
        dx, dgamma, dbeta = xp.empty_like(x3), xp.empty(0, x3.dtype), xp.empty(0, x3.dtype)
    else:
        dx, dgamma, dbeta = _gpu_module(x3.size).backward(
            _aligned(xp, dy3), x3, cache.mean, invstd, cache.gamma, cache.beta,
            ACTIVATION_CODES[cache.activation], cache.batch_stats)
    if cache.gamma is None:
        dgamma = dbeta = None
    return dx.reshape(cache.shape), dgamma, dbeta


class _LazyInvstd:
    """1 / sqrt(running_var + eps), computed only if backward runs in inference mode."""

    def __init__(self, running_var, eps):
        self.running_var, self.eps = running_var, eps

    def value(self):
        return (1.0 / (self.running_var.astype("float64") + self.eps) ** 0.5).astype(self.running_var.dtype)


def _gpu_module(n):
    if resolve_path(n) == "numba":
        from gpunet.kernels import numba_batchnorm
        return numba_batchnorm
    from gpunet.kernels import cupy_batchnorm
    return cupy_batchnorm


def _aligned(xp, a):
    """The CuPy kernels load 16-byte vectors: a view that starts mid-vector is copied."""
    return a if a.data.ptr % 16 == 0 else a.copy()


# ----------------------------------------------------------------------------- CPU
#: Use the Numba CPU kernels (kernels/cpu_batchnorm.py) for NumPy arrays when they apply (no
#: activation or ReLU); False forces the vectorized NumPy reference below (tests compare both).
CPU_KERNELS = True


def _cpu_kernels_apply(activation):
    return CPU_KERNELS and activation in (None, "relu")


def _cpu_forward(x3, gamma, beta, running_mean, running_var, batch_stats, update, factor, eps, activation):
    from gpunet.kernels import cpu_batchnorm
    if batch_stats:
        mean64, var64, unbiased = cpu_batchnorm.stats(x3)
        if update:
            running_mean[...] = (1 - factor) * running_mean + factor * mean64
            running_var[...] = (1 - factor) * running_var + factor * unbiased
        mean, invstd = mean64.astype(x3.dtype), (1.0 / numpy.sqrt(var64 + eps)).astype(x3.dtype)
    else:
        mean = running_mean.copy()
        invstd = (1.0 / numpy.sqrt(running_var.astype(numpy.float64) + eps)).astype(x3.dtype)
    y = cpu_batchnorm.apply(x3, mean, invstd, gamma, beta, activation == "relu")
    return y, mean, invstd


# ----------------------------------------------------------------------------- NumPy reference
def _per_channel(v, dtype):
    return numpy.asarray(v, dtype=dtype).reshape(1, -1, 1)


def _reference_forward(x3, gamma, beta, running_mean, running_var, batch_stats, update, factor, eps,
                       activation):
    M = x3.shape[0] * x3.shape[2]
    if batch_stats:
        xd = x3.astype(numpy.float64)               # float64: 1e30 squared does not overflow
        mean64 = xd.mean(axis=(0, 2))
        var64 = ((xd - mean64[None, :, None]) ** 2).mean(axis=(0, 2))
        if update:
            unbiased = var64 * M / (M - 1) if M > 1 else var64
            running_mean[...] = (1 - factor) * running_mean + factor * mean64
            running_var[...] = (1 - factor) * running_var + factor * unbiased
        mean = mean64.astype(x3.dtype)
        invstd = (1.0 / numpy.sqrt(var64 + eps)).astype(x3.dtype)
    else:
        mean = running_mean.copy()
        invstd = (1.0 / numpy.sqrt(running_var.astype(numpy.float64) + eps)).astype(x3.dtype)
    z = _reference_z(x3, mean, invstd, gamma, beta)
    y = z if activation is None else _REFERENCE_ACTIVATIONS[activation][0](z)
    return y, mean, invstd


def _reference_z(x3, mean, invstd, gamma, beta):
    xhat = (x3 - _per_channel(mean, x3.dtype)) * _per_channel(invstd, x3.dtype)
    if gamma is None:
        return xhat
    return xhat * _per_channel(gamma, x3.dtype) + _per_channel(beta, x3.dtype)


def _reference_backward(dy3, x3, mean, invstd, gamma, beta, activation, batch_stats):
    xhat = (x3 - _per_channel(mean, x3.dtype)) * _per_channel(invstd, x3.dtype)
    if activation is None:
        dz = dy3
    else:
        dz = _REFERENCE_ACTIVATIONS[activation][1](dy3, _reference_z(x3, mean, invstd, gamma, beta))
    dz64, xhat64 = dz.astype(numpy.float64), xhat.astype(numpy.float64)
    dbeta = dz64.sum(axis=(0, 2))
    dgamma = (dz64 * xhat64).sum(axis=(0, 2))
    g = numpy.ones_like(dbeta) if gamma is None else gamma.astype(numpy.float64)
    k = (g * invstd.astype(numpy.float64))[None, :, None]
    if batch_stats:
        M = x3.shape[0] * x3.shape[2]
        dx = k * (dz64 - dbeta[None, :, None] / M - xhat64 * dgamma[None, :, None] / M)
    else:
        dx = k * dz64
    dt = x3.dtype
    return dx.astype(dt), dgamma.astype(dt), dbeta.astype(dt)
