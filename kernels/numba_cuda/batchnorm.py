"""Numba CUDA kernels for fused BatchNorm: the same algorithms as ``batchnorm.cuh``.

Statistics: per-thread Welford in float64, merged with Chan's formula through a shared-memory tree
(no warp shuffles, so Numba's CUDA simulator runs it in CI), one partial per block, then a small
finalize kernel per channel (the CuPy kernels fold that into the last block instead). With S = 1
((N, C) input) the partial kernels take 32 channels x ROWS_Y row groups per block, so that a warp
reads 32 consecutive values of one row (coalesced); else a block reads a chunk of one channel.
Grids: enough blocks to fill the device (its SM count x the resident blocks of THREADS threads).
Elementwise passes: one thread per element. Arrays are contiguous (N, C, S) views.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy

from gpunet.types import Array

from ..activation_table import ACTIVATION_CODES
from ..interface import BNParams, BNSpec, BNStats
from .fused_switch import act_bwd as _act_bwd
from .fused_switch import act_fwd as _act_fwd
from .support import cuda, launch

THREADS = 256
ROWS_X, ROWS_Y = 32, 8  # the rows kernels' block: 32 channels x 8 row groups (THREADS threads)
MIN_PER_BLOCK = 1024
BLOCKS_PER_SM = 2048 // 256  # resident blocks of THREADS threads on an SM (occupancy allowing)


def _target_blocks() -> int:
    """Blocks that fill the device: its SM count x BLOCKS_PER_SM (132 SMs where there is no
    device to ask: the simulator, the PTX compile in tests)."""
    from .support import device_sms

    return device_sms() * BLOCKS_PER_SM


@cuda.jit(device=True)
def _chan(n_a: float, mean_a: float, m2_a: float, n_b: float, mean_b: float, m2_b: float) -> tuple:
    """Chan et al.'s merge of two (count, mean, M2) summaries."""
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        return n_b, mean_b, m2_b
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


@cuda.jit(cache=True)
def _stats_partial(x: Array, chunk: int, part: Array) -> None:
    """Block (c, p): Welford over values [p*chunk, (p+1)*chunk) of channel c -> part[c, p].
    Channels on the grid's x axis (up to 2^31 - 1; y stops at 65535): wide BatchNorm1d launches."""
    sh_n = cuda.shared.array(THREADS, numpy.float64)
    sh_mean = cuda.shared.array(THREADS, numpy.float64)
    sh_m2 = cuda.shared.array(THREADS, numpy.float64)
    c, p, t = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
    S = x.shape[2]
    total = x.shape[0] * S
    end = min((p + 1) * chunk, total)
    n, mean, m2 = 0.0, 0.0, 0.0
    k = p * chunk + t
    while k < end:
        v = float(x[k // S, c, k % S])
        n += 1.0
        delta = v - mean
        mean += delta / n
        m2 += delta * (v - mean)
        k += THREADS
    sh_n[t], sh_mean[t], sh_m2[t] = n, mean, m2
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride:
            sh_n[t], sh_mean[t], sh_m2[t] = _chan(
                sh_n[t],
                sh_mean[t],
                sh_m2[t],
                sh_n[t + stride],
                sh_mean[t + stride],
                sh_m2[t + stride],
            )
        cuda.syncthreads()
        stride //= 2
    if t == 0:
        part[c, p, 0], part[c, p, 1], part[c, p, 2] = sh_n[0], sh_mean[0], sh_m2[0]


@cuda.jit(cache=True)
def _stats_partial_rows(x: Array, chunk: int, part: Array) -> None:
    """S = 1: block (tile, p), threads (32, ROWS_Y): Welford over rows [p*chunk, (p+1)*chunk)
    of channels tile*32 + threadIdx.x -> part[c, p]; a warp reads one row's 32 channels."""
    sh_n = cuda.shared.array((ROWS_Y, ROWS_X), numpy.float64)
    sh_mean = cuda.shared.array((ROWS_Y, ROWS_X), numpy.float64)
    sh_m2 = cuda.shared.array((ROWS_Y, ROWS_X), numpy.float64)
    tx, ty, p = cuda.threadIdx.x, cuda.threadIdx.y, cuda.blockIdx.y
    c = cuda.blockIdx.x * ROWS_X + tx
    end = min((p + 1) * chunk, x.shape[0])
    n, mean, m2 = 0.0, 0.0, 0.0
    if c < x.shape[1]:
        r = p * chunk + ty
        while r < end:
            v = float(x[r, c, 0])
            n += 1.0
            delta = v - mean
            mean += delta / n
            m2 += delta * (v - mean)
            r += ROWS_Y
    sh_n[ty, tx], sh_mean[ty, tx], sh_m2[ty, tx] = n, mean, m2
    cuda.syncthreads()
    if ty == 0 and c < x.shape[1]:
        for j in range(1, ROWS_Y):
            n, mean, m2 = _chan(n, mean, m2, sh_n[j, tx], sh_mean[j, tx], sh_m2[j, tx])
        part[c, p, 0], part[c, p, 1], part[c, p, 2] = n, mean, m2


@cuda.jit(cache=True)
def _stats_finalize(
    part: Array, mean_out: Array, invstd_out: Array, stats64: Array, eps: float
) -> None:
    """Per channel: merge the partials in order -> mean, invstd, and (mean, unbiased var) in
    float64 for the running statistics (updated on the host side: shared/batchnorm_stats.py)."""
    c = cuda.grid(1)
    if c < part.shape[0]:
        n, mean, m2 = 0.0, 0.0, 0.0
        for p in range(part.shape[1]):
            n, mean, m2 = _chan(n, mean, m2, part[c, p, 0], part[c, p, 1], part[c, p, 2])
        var = m2 / n
        mean_out[c] = mean
        invstd_out[c] = 1.0 / math.sqrt(var + eps)
        stats64[c, 0] = mean
        stats64[c, 1] = m2 / (n - 1.0) if n > 1.0 else var


@cuda.jit(cache=True)
def _apply(
    x: Array,
    y: Array,
    mean: Array,
    var_or_invstd: Array,
    is_var: bool,
    gamma: Array,
    beta: Array,
    affine: bool,
    code: int,
    act_a: float,
    eps: float,
) -> None:
    j = cuda.grid(1)
    C, S = x.shape[1], x.shape[2]
    if j < x.size:
        n, rest = j // (C * S), j % (C * S)
        c, s = rest // S, rest % S
        inv = 1.0 / math.sqrt(var_or_invstd[c] + eps) if is_var else var_or_invstd[c]
        scale = gamma[c] * inv if affine else inv
        shift = beta[c] if affine else 0.0
        y[n, c, s] = _act_fwd(code, (x[n, c, s] - mean[c]) * scale + shift, act_a)


@cuda.jit(cache=True)
def _bwd_partial(
    dy: Array,
    x: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    affine: bool,
    code: int,
    act_a: float,
    chunk: int,
    part: Array,
) -> None:
    sh0 = cuda.shared.array(THREADS, numpy.float64)
    sh1 = cuda.shared.array(THREADS, numpy.float64)
    c, p, t = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
    S = x.shape[2]
    end = min((p + 1) * chunk, x.shape[0] * S)
    g = gamma[c] if affine else 1.0
    b = beta[c] if affine else 0.0
    s0, s1 = 0.0, 0.0
    k = p * chunk + t
    while k < end:
        n, s = k // S, k % S
        xhat = (x[n, c, s] - mean[c]) * invstd[c]
        dz = _act_bwd(code, dy[n, c, s], xhat * g + b, act_a)
        s0 += dz
        s1 += dz * xhat
        k += THREADS
    sh0[t], sh1[t] = s0, s1
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride:
            sh0[t] += sh0[t + stride]
            sh1[t] += sh1[t + stride]
        cuda.syncthreads()
        stride //= 2
    if t == 0:
        part[c, p, 0], part[c, p, 1] = sh0[0], sh1[0]


@cuda.jit(cache=True)
def _bwd_partial_rows(
    dy: Array,
    x: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    affine: bool,
    code: int,
    act_a: float,
    chunk: int,
    part: Array,
) -> None:
    """S = 1, the layout of _stats_partial_rows: sums of dz and dz * xhat per channel."""
    sh0 = cuda.shared.array((ROWS_Y, ROWS_X), numpy.float64)
    sh1 = cuda.shared.array((ROWS_Y, ROWS_X), numpy.float64)
    tx, ty, p = cuda.threadIdx.x, cuda.threadIdx.y, cuda.blockIdx.y
    c = cuda.blockIdx.x * ROWS_X + tx
    end = min((p + 1) * chunk, x.shape[0])
    s0, s1 = 0.0, 0.0
    if c < x.shape[1]:
        g = gamma[c] if affine else 1.0
        b = beta[c] if affine else 0.0
        r = p * chunk + ty
        while r < end:
            xhat = (x[r, c, 0] - mean[c]) * invstd[c]
            dz = _act_bwd(code, dy[r, c, 0], xhat * g + b, act_a)
            s0 += dz
            s1 += dz * xhat
            r += ROWS_Y
    sh0[ty, tx], sh1[ty, tx] = s0, s1
    cuda.syncthreads()
    if ty == 0 and c < x.shape[1]:
        for j in range(1, ROWS_Y):
            s0 += sh0[j, tx]
            s1 += sh1[j, tx]
        part[c, p, 0], part[c, p, 1] = s0, s1


@cuda.jit(cache=True)
def _bwd_finalize(part: Array, dgamma: Array, dbeta: Array) -> None:
    c = cuda.grid(1)
    if c < part.shape[0]:
        s0, s1 = 0.0, 0.0
        for p in range(part.shape[1]):
            s0 += part[c, p, 0]
            s1 += part[c, p, 1]
        dbeta[c] = s0
        dgamma[c] = s1


@cuda.jit(cache=True)
def _dx(
    dy: Array,
    x: Array,
    dx: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    affine: bool,
    code: int,
    act_a: float,
    dgamma: Array,
    dbeta: Array,
    batch_stats: bool,
    inv_m: float,
) -> None:
    j = cuda.grid(1)
    C, S = x.shape[1], x.shape[2]
    if j < x.size:
        n, rest = j // (C * S), j % (C * S)
        c, s = rest // S, rest % S
        g = gamma[c] if affine else 1.0
        b = beta[c] if affine else 0.0
        xhat = (x[n, c, s] - mean[c]) * invstd[c]
        dz = _act_bwd(code, dy[n, c, s], xhat * g + b, act_a)
        if batch_stats:
            dz = dz - dbeta[c] * inv_m - xhat * dgamma[c] * inv_m
        dx[n, c, s] = g * invstd[c] * dz


def _split(total: int, groups: int, min_per_block: int) -> tuple:
    target = _target_blocks()
    nparts = max(1, min(-(-target // max(groups, 1)), -(-total // min_per_block)))
    chunk = max(1, -(-total // nparts))
    return max(1, -(-total // chunk)), chunk


def _xp(a: Array) -> ModuleType:
    import sys

    if type(a).__module__.startswith("cupy"):
        return sys.modules["cupy"]
    return numpy


def _blocks(n: int):
    return max(1, -(-n // THREADS))


def partial_grid(x3: Array) -> tuple:
    """(grid, block, chunk) of the per-channel partial kernels: (C, nparts) blocks of THREADS
    threads, or for S = 1 (ceil(C / 32), nparts) blocks of (32, ROWS_Y)."""
    N, C, S = x3.shape
    if S == 1:
        tiles = -(-C // ROWS_X)
        nparts, chunk = _split(N, tiles, max(1, MIN_PER_BLOCK // ROWS_X))
        return (tiles, nparts), (ROWS_X, ROWS_Y), chunk
    nparts, chunk = _split(N * S, C, MIN_PER_BLOCK)
    return (C, nparts), THREADS, chunk


def stats(x3: Array, eps: float) -> tuple:
    """(mean, invstd) in x's dtype and (C, 2) float64 (mean, unbiased var) per channel."""
    xp = _xp(x3)
    C = x3.shape[1]
    grid, block, chunk = partial_grid(x3)
    part = xp.empty((C, grid[1], 3), xp.float64)
    mean, invstd, stats64 = (
        xp.empty(C, x3.dtype),
        xp.empty(C, x3.dtype),
        xp.empty((C, 2), xp.float64),
    )
    partial = _stats_partial_rows if x3.shape[2] == 1 else _stats_partial
    launch(partial, grid, block, x3, chunk, part)
    launch(_stats_finalize, _blocks(C), THREADS, part, mean, invstd, stats64, float(eps))
    return mean, invstd, stats64


def apply(x3: Array, mean: Array, invstd: Array, params: BNParams, spec: BNSpec) -> Array:
    """y = act((x - mean) * gamma * invstd + beta), the activation ``spec.act``."""
    gamma, beta = params.gamma, params.beta
    act_code, act_a, eps, is_var = ACTIVATION_CODES[spec.act], spec.act_param, spec.eps, False
    var_or_invstd = invstd  # the kernel can also take running_var (is_var)
    xp = _xp(x3)
    y = xp.empty_like(x3)
    if x3.size:
        affine = gamma is not None
        launch(
            _apply,
            _blocks(x3.size),
            THREADS,
            x3,
            y,
            mean,
            var_or_invstd,
            bool(is_var),
            gamma if affine else mean,
            beta if affine else mean,
            affine,
            act_code,
            float(act_a),
            float(eps),
        )
    return y


def backward(dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec) -> tuple:
    """(dx, dgamma, dbeta): float64 partial sums per block, a finalize kernel, then dx."""
    (mean, invstd), (gamma, beta), batch_stats = stats, params[:2], spec.batch_stats
    act_code, act_a = ACTIVATION_CODES[spec.act], spec.act_param
    xp = _xp(x3)
    N, C, S = x3.shape
    grid, block, chunk = partial_grid(x3)
    part = xp.empty((C, grid[1], 2), xp.float64)
    dgamma, dbeta, dx = xp.empty(C, x3.dtype), xp.empty(C, x3.dtype), xp.empty_like(x3)
    affine = gamma is not None
    g, b = (gamma, beta) if affine else (mean, mean)
    launch(
        _bwd_partial_rows if S == 1 else _bwd_partial,
        grid,
        block,
        dy3,
        x3,
        mean,
        invstd,
        g,
        b,
        affine,
        act_code,
        float(act_a),
        chunk,
        part,
    )
    launch(_bwd_finalize, _blocks(C), THREADS, part, dgamma, dbeta)
    if x3.size:
        launch(
            _dx,
            _blocks(x3.size),
            THREADS,
            dy3,
            x3,
            dx,
            mean,
            invstd,
            g,
            b,
            affine,
            act_code,
            float(act_a),
            dgamma,
            dbeta,
            bool(batch_stats),
            1.0 / (N * S),
        )
    return dx, dgamma, dbeta
