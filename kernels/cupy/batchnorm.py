"""Host side of the fused BatchNorm CUDA kernels (``batchnorm.cuh``): grid sizing and launches.

Inputs are contiguous (N, C, S) views; the functional layer (gpunet/functional/batchnorm.py)
checks arguments and makes them so. Forward in training: 2 launches (the statistics kernel also
folds the per-channel constants of the normalize pass); backward: 2 launches (the reduction folds
the dx pass's); inference forward: 2 launches (fold the running statistics, normalize).
"""

from __future__ import annotations

import cupy

from gpunet.types import Array, DTypeLike

from ..activation_table import ACTIVATION_CODES
from ..interface import BNParams, BNSpec, BNStats
from . import launch
from .sources import unit_source

THREADS = 256  # GPUNET_BN_THREADS
ROWS_X, ROWS_Y = 32, 8  # GPUNET_BN_ROWS_X, GPUNET_BN_ROWS_Y
MIN_PER_BLOCK = launch.MIN_PER_BLOCK
#: a fixed wave instead of the device's (tests: many blocks per channel on small shapes)
WAVE_OVERRIDE: int | None = None
_counters: dict = {}


@cupy.memoize(for_each_device=True)
def _module() -> Array:
    return cupy.RawModule(code=unit_source("batchnorm"), options=("-std=c++14",))


@cupy.memoize(for_each_device=True)
def _kernel(name: str, dtype: DTypeLike):
    """The compiled function, looked up once per device (not once per launch)."""
    return _module().get_function(f"{name}_{'float' if dtype == cupy.float32 else 'double'}")


@cupy.memoize(for_each_device=True)
def _wave(name: str, dtype: DTypeLike) -> int:
    """Blocks of kernel ``name`` the whole device holds at once: its occupancy (the compiled
    kernel's registers and shared memory, the device's limits) times the SM count. Cached per
    device and kernel."""
    attrs = cupy.cuda.Device().attributes
    limits = launch.SMLimits(
        sms=attrs["MultiProcessorCount"],
        registers=attrs.get("MaxRegistersPerMultiprocessor", 65536),
        threads=attrs.get("MaxThreadsPerMultiProcessor", 2048),
        blocks=attrs.get("MaxBlocksPerMultiprocessor", 32),
        shared=attrs.get("MaxSharedMemoryPerMultiprocessor", 233472),
    )
    k = _kernel(name, dtype).attributes
    per_sm = launch.resident_blocks(k["num_regs"], k["shared_size_bytes"], THREADS, limits)
    return per_sm * limits.sms


def _counter_buffer(n: int):
    """Zeroed per-group arrival counters; the last block of each group resets its counter to 0.
    One buffer per (device, stream) so that concurrent streams never share a counter."""
    key = (cupy.cuda.Device().id, cupy.cuda.get_current_stream().ptr)
    buf = _counters.get(key)
    if buf is None or buf.size < n:
        buf = cupy.zeros(max(n, 1024), dtype=cupy.uint32)
        _counters[key] = buf
    return buf


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def rows_per_thread(x3: Array, *others: Array) -> int:
    """Channels per thread of the S = 1 reductions: 4 floats / 2 doubles (one 16-byte load per
    row) where C allows it and every array is 16-byte aligned, else 1 -- the kernels decide the
    same way (batchnorm.cuh)."""
    lanes = 4 if x3.dtype == cupy.float32 else 2
    aligned = all(a.data.ptr % 16 == 0 for a in (x3, *others))  # type: ignore[union-attr]
    return lanes if x3.shape[1] % lanes == 0 and aligned else 1


def _reduce_launch(x3: Array, name: str, *others: Array) -> tuple:
    """Grid, block and (nparts, chunk, counter groups) for the per-channel reduction ``name``
    over x3 (and ``others``, read alongside): one whole wave of the kernel's resident blocks
    (launch.split)."""
    N, C, S = x3.shape
    if S == 1:
        tiles = _ceil(C, ROWS_X * rows_per_thread(x3, *others))
        nparts, chunk = launch.split(
            N, tiles, WAVE_OVERRIDE or _wave(f"{name}_rows", x3.dtype), MIN_PER_BLOCK // ROWS_X
        )
        return (tiles, nparts), (ROWS_X, ROWS_Y), nparts, chunk, tiles
    nparts, chunk = launch.split(
        N * S, C, WAVE_OVERRIDE or _wave(f"{name}_spatial", x3.dtype), MIN_PER_BLOCK
    )
    return (C, nparts), (THREADS,), nparts, chunk, C


def _elementwise_grid(n: int, dtype: DTypeLike) -> tuple:
    lanes = 4 if dtype == cupy.float32 else 2
    return (_ceil(n // lanes + 1, THREADS),), (THREADS,)


def _affine(params_gamma: Array | None, params_beta: Array | None, fallback: Array) -> tuple:
    affine = params_gamma is not None
    return (params_gamma, params_beta, 1) if affine else (fallback, fallback, 0)


def stats(
    x3: Array,
    running_mean: Array,
    running_var: Array,
    factor: float,
    eps: float,
    gamma: Array | None = None,
    beta: Array | None = None,
) -> tuple:
    """(mean, invstd, coef): batch mean and inverse std per channel, and the normalize pass's
    per-channel constants (3 x C, gpunet_bn_fold) computed by the same launch; running
    statistics updated in place if given."""
    N, C, S = x3.shape
    dt = x3.dtype
    mean, invstd, coef = cupy.empty(C, dt), cupy.empty(C, dt), cupy.empty(3 * C, dt)
    grid, block, nparts, chunk, groups = _reduce_launch(x3, "bn_stats")
    part = cupy.empty(3 * C * nparts, cupy.float64)
    counters = _counter_buffer(groups)
    update = running_mean is not None
    rm = running_mean if update else mean  # never read when update == 0
    rv = running_var if update else mean
    g, b, affine = _affine(gamma, beta, mean)
    i64 = cupy.int64
    shape = (i64(N), i64(C)) + ((i64(S),) if S != 1 else ())
    _kernel("bn_stats_rows" if S == 1 else "bn_stats_spatial", dt)(
        grid,
        block,
        (
            x3,
            *shape,
            i64(chunk),
            part,
            counters,
            mean,
            invstd,
            rm,
            rv,
            cupy.float64(factor),
            cupy.float64(eps),
            cupy.int32(update),
            g,
            b,
            cupy.int32(affine),
            coef,
        ),
    )
    return mean, invstd, coef


def fold_running(
    running_mean: Array, running_var: Array, eps: float, gamma: Array | None, beta: Array | None
) -> tuple:
    """(mean, invstd, coef) of an inference forward, one small launch: a copy of the running
    mean (the cache keeps this call's statistics), 1 / sqrt(running_var + eps), and coef."""
    C, dt = running_mean.size, running_mean.dtype
    mean, invstd, coef = running_mean.copy(), cupy.empty(C, dt), cupy.empty(3 * C, dt)
    g, b, affine = _affine(gamma, beta, mean)
    _kernel("bn_fold_running", dt)(
        (max(1, min(_ceil(C, THREADS), 1024)),),
        (THREADS,),
        (
            mean,
            running_var,
            cupy.float64(eps),
            g,
            b,
            cupy.int32(affine),
            cupy.int64(C),
            invstd,
            coef,
        ),
    )
    return mean, invstd, coef


def apply(x3: Array, coef: Array, spec: BNSpec) -> Array:
    """y = act((x - mean) * gamma * invstd + beta) from the folded constants ``coef``."""
    N, C, S = x3.shape
    y = cupy.empty_like(x3)
    if x3.size:
        _kernel("bn_apply", x3.dtype)(
            *_elementwise_grid(x3.size, x3.dtype),
            (
                x3,
                y,
                coef,
                cupy.int32(ACTIVATION_CODES[spec.act]),
                cupy.float64(spec.act_param),
                cupy.int64(x3.size),
                cupy.int64(C),
                cupy.int64(S),
            ),
        )
    return y


def backward(dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec) -> tuple:
    """(dx, dgamma, dbeta); dgamma = sum(dz * xhat), dbeta = sum(dz) per channel. The reduction's
    last block per channel also folds the dx pass's constants (dcoef, 7 x C)."""
    (mean, invstd), (gamma, beta), batch_stats = stats, params[:2], spec.batch_stats
    act, act_a = ACTIVATION_CODES[spec.act], spec.act_param
    N, C, S = x3.shape
    dt = x3.dtype
    dgamma, dbeta, dcoef = cupy.empty(C, dt), cupy.empty(C, dt), cupy.empty(7 * C, dt)
    dx = cupy.empty_like(x3)
    g, b, affine = _affine(gamma, beta, mean)
    grid, block, nparts, chunk, groups = _reduce_launch(x3, "bn_bwd_reduce", dy3)
    part = cupy.empty(2 * C * nparts, cupy.float64)
    counters = _counter_buffer(groups)
    i64, i32, f64 = cupy.int64, cupy.int32, cupy.float64
    shape = (i64(N), i64(C)) + ((i64(S),) if S != 1 else ())
    _kernel("bn_bwd_reduce_rows" if S == 1 else "bn_bwd_reduce_spatial", dt)(
        grid,
        block,
        (
            dy3,
            x3,
            mean,
            invstd,
            g,
            b,
            i32(affine),
            i32(act),
            f64(act_a),
            *shape,
            i64(chunk),
            part,
            counters,
            dgamma,
            dbeta,
            i32(batch_stats),
            f64(1.0 / (N * S)) if N * S else f64(0.0),
            dcoef,
        ),
    )
    if x3.size:
        _kernel("bn_bwd_dx", dt)(
            *_elementwise_grid(x3.size, dt),
            (dy3, x3, dx, dcoef, i32(act), f64(act_a), i64(x3.size), i64(C), i64(S)),
        )
    return dx, dgamma, dbeta
