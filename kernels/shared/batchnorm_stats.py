"""BatchNorm's per-channel bookkeeping, written once for every path that does it outside a kernel
(NumPy and CuPy arrays alike): the running-statistics update and the inverse standard deviation.
The CUDA C statistics kernel fuses the same update into its last block (kernels/cupy/batchnorm.cuh);
the Numba CPU path into its finishing loop (kernels/numba_cpu/batchnorm.py)."""

from __future__ import annotations

from gpunet.types import Array, DTypeLike

from ..interface import BNParams, BNSpec


def update_running(
    running_mean: Array, running_var: Array, mean64: Array, unbiased64: Array, factor: float
) -> None:
    """The running statistics, in place: r = (1 - factor) r + factor * batch (unbiased variance)."""
    running_mean[...] = (1 - factor) * running_mean + factor * mean64
    running_var[...] = (1 - factor) * running_var + factor * unbiased64


def running_statistics(params: BNParams) -> tuple:
    """(running_mean, running_var) of an inference forward, both given or a clear error."""
    rm, rv = params.running_mean, params.running_var
    if rm is None or rv is None:
        raise ValueError("inference with running statistics needs running_mean and running_var")
    return rm, rv


def running_constants(params: BNParams, spec: BNSpec, dtype: DTypeLike) -> tuple:
    """(mean, invstd) of an inference forward: a copy of the running mean (the cache keeps this
    call's statistics) and 1 / sqrt(running_var + eps)."""
    rm, rv = running_statistics(params)
    return rm.copy(), invstd_of(rv, spec.eps, dtype)


def invstd_of(var: Array, eps: float, dtype: DTypeLike) -> Array:
    """1 / sqrt(var + eps) in float64, returned in ``dtype``."""
    return (1.0 / (var.astype("float64") + eps) ** 0.5).astype(dtype)
