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
Statistics are computed without E[x^2] - E[x]^2: two passes in float64 on NumPy, chunked
Welford/Chan in float64 in the kernels. Each call runs on the path that
``gpunet.dispatch.kernels_for("batchnorm[+ACT]", x)`` picks: ``bn_forward`` / ``bn_backward`` of
kernels/numpy/ (batchnorm.py), kernels/numba_cpu/ (batchnorm.py), kernels/cupy/ (batchnorm.cuh)
or kernels/numba_cuda/ (batchnorm.py), each taking a ``BNSpec`` (kernels/interface.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from gpunet.types import Array

from .._checks import FLOAT_DTYPES, check_array, check_like, float_inputs
from ..dispatch import kernels_for
from ..kernels.activation_table import ACTIVATION_CODES, FUSED_ACTIVATION_DEFAULTS
from ..kernels.interface import BNParams, BNSpec, BNStats

__all__ = ["ACTIVATION_CODES", "BatchNormCache", "batch_norm_forward", "batch_norm_backward"]


@dataclass
class BatchNormCache:
    """What backward needs: x as (N, C, S), the statistics used (the batch's, or the running ones
    of an inference forward), the per-channel arrays and the call's ``BNSpec``."""

    x3: Array
    shape: tuple
    mean: Array
    invstd: Array
    params: BNParams
    spec: BNSpec


def _check(
    x: Array,
    gamma: Array,
    beta: Array,
    running_mean: Array,
    running_var: Array,
    momentum: float | None,
    eps: float,
    activation: str | None,
):
    if _plain_numpy(x, gamma, beta, running_mean, running_var):
        xp = numpy  # every array check below passed (the common case, in 1 us instead of 3)
    else:
        xp = _check_arrays(x, gamma, beta, running_mean, running_var)
    if momentum is not None and not (0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {list(ACTIVATION_CODES)}, got {activation!r}")
    return xp


def _plain_numpy(x: Array, *vectors: Array | None) -> bool:
    """x a 2-4-D float32/float64 NumPy array and the per-channel vectors all NumPy arrays of its
    dtype and shape (C,), gamma/beta and the running statistics each both given or both None."""
    if type(x) is not numpy.ndarray or x.dtype not in FLOAT_DTYPES or not 2 <= x.ndim <= 4:
        return False
    shape = x.shape[1:2]
    for a in vectors:
        if a is not None and (
            type(a) is not numpy.ndarray or a.shape != shape or a.dtype != x.dtype
        ):
            return False
    gamma, beta, running_mean, running_var = vectors
    return (gamma is None) == (beta is None) and (running_mean is None) == (running_var is None)


def _check_arrays(x: Array, gamma: Array, beta: Array, running_mean: Array, running_var: Array):
    check_array(x, "x")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"x must be (N, C), (N, C, L) or (N, C, H, W), got shape {x.shape}")
    xp = float_inputs(
        x=x,
        **{
            k: v
            for k, v in (
                ("gamma", gamma),
                ("beta", beta),
                ("running_mean", running_mean),
                ("running_var", running_var),
            )
            if v is not None
        },
    )
    C = x.shape[1]
    for name, a in (
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ):
        if a is None:
            continue
        if a.shape != (C,):
            raise ValueError(
                f"{name} must have shape ({C},) (one value per channel of x, axis 1), got {a.shape}"
            )
        if a.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {a.dtype}, expected the dtype of x ({x.dtype})")
    if (gamma is None) != (beta is None):
        raise ValueError("gamma and beta must both be arrays or both be None")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be arrays or both be None")
    return xp


def _activation_arg(activation: str | None, activation_arg: float | None) -> float:
    """The fused activation's parameter: leaky_relu's negative slope, elu's alpha (defaults 0.01,
    1)."""
    if activation_arg is None:
        return FUSED_ACTIVATION_DEFAULTS.get(activation or "", 0.0)
    if activation not in FUSED_ACTIVATION_DEFAULTS:
        raise ValueError(
            f"activation_arg is the parameter of {sorted(FUSED_ACTIVATION_DEFAULTS)}; "
            f"activation {activation!r} takes none"
        )
    if not (isinstance(activation_arg, (int, float)) and math.isfinite(activation_arg)):
        raise ValueError(f"activation_arg must be a finite number, got {activation_arg!r}")
    return float(activation_arg)


def batch_norm_forward(
    x: Array,
    gamma: Array,
    beta: Array,
    running_mean: Array,
    running_var: Array,
    *,
    training: bool = True,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    activation: str | None = None,
    activation_arg: float | None = None,
    num_batches_tracked: int = 0,
) -> tuple:
    """Returns ``(y, cache)``; see the module docstring. ``running_mean``/``running_var`` are
    updated in place when training. ``activation_arg``: the fused activation's parameter
    (leaky_relu's negative_slope, default 0.01; elu's alpha, default 1). ``num_batches_tracked``
    (batches seen before this one) is only used with ``momentum=None``."""
    xp = _check(x, gamma, beta, running_mean, running_var, momentum, eps, activation)
    act_a = _activation_arg(activation, activation_arg)
    N, C = x.shape[:2]
    S = math.prod(x.shape[2:])
    batch_stats = training or running_mean is None
    if batch_stats and N * S == 0:
        raise ValueError(
            f"x has an empty batch (shape {x.shape}): batch statistics need values; "
            "running statistics are left untouched"
        )
    if training and N * S == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input of shape {x.shape}"
        )
    factor = momentum if momentum is not None else 1.0 / (num_batches_tracked + 1)
    x3 = xp.ascontiguousarray(x).reshape(N, C, S)
    update = training and running_mean is not None
    # The kernels index per-channel vectors as plain arrays: strided views (G[:, 0]) are copied,
    # and updated running statistics are written back into the caller's arrays.
    gamma, beta, rm, rv = (
        None if v is None else xp.ascontiguousarray(v)
        for v in (gamma, beta, running_mean, running_var)
    )
    params = BNParams(gamma, beta, rm, rv)
    spec = BNSpec(batch_stats, update, factor, eps, activation, act_a)
    if C == 0:  # nothing to normalize (and no zero-sized grid to launch)
        y, mean, invstd = xp.empty_like(x3), xp.empty(0, x.dtype), xp.empty(0, x.dtype)
    else:
        op = "batchnorm" if activation is None else f"batchnorm+{activation}"
        y, (mean, invstd) = kernels_for(op, x3).bn_forward(x3, params, spec)
    if update:
        for mine, theirs in ((rm, running_mean), (rv, running_var)):
            if mine is not theirs:
                theirs[...] = mine
    cache = BatchNormCache(x3, x.shape, mean, invstd, BNParams(gamma, beta, None, None), spec)
    return y.reshape(x.shape), cache


def batch_norm_backward(dy: Array, cache: BatchNormCache) -> tuple:
    """Returns ``(dx, dgamma, dbeta)`` (``dgamma``/``dbeta`` None without affine)."""
    if not isinstance(cache, BatchNormCache):
        raise TypeError(
            f"cache must be the BatchNormCache returned by batch_norm_forward, got "
            f"{type(cache).__name__}"
        )
    x3 = cache.x3
    xp = float_inputs(dy=dy, x=x3)
    check_like(dy, "dy", x3.reshape(cache.shape), "x")
    dy3 = xp.ascontiguousarray(dy).reshape(x3.shape)
    if x3.shape[1] == 0:
        dx, dgamma, dbeta = xp.empty_like(x3), xp.empty(0, x3.dtype), xp.empty(0, x3.dtype)
    else:
        act = cache.spec.act
        op = "batchnorm" if act is None else f"batchnorm+{act}"
        dx, dgamma, dbeta = kernels_for(op, dy3, x3).bn_backward(
            dy3, x3, BNStats(cache.mean, cache.invstd), cache.params, cache.spec
        )
    if cache.params.gamma is None:
        dgamma = dbeta = None
    return dx.reshape(cache.shape), dgamma, dbeta
