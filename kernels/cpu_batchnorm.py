"""BatchNorm on the CPU with Numba (``njit(parallel=True)``): the same algorithm as the GPU kernels,
faster than the vectorized NumPy reference (``python -m gpunet.bench batchnorm`` shows both).

x is a contiguous (N, C, S) array. Rows are split into ``parts`` chunks run in parallel; every
chunk reads its rows once, front to back:

* statistics: per (row, channel), the S values are summarized exactly (two passes over S values
  in cache) and merged into the chunk's per-channel (count, mean, M2) with Chan's formula, in
  float64; the chunks are then merged the same way. No E[x^2] - E[x]^2.
* backward sums: per-chunk float64 sums of dz and dz * xhat, added up at the end.
* elementwise passes (normalize, dx) run over rows in parallel.

Fused activation here: None or ReLU (the common case); other activations run as a NumPy pass on
top (gpunet/functional/batchnorm.py decides).
"""

from __future__ import annotations

import numba
import numpy
from numba import prange

from gpunet.types import Array

from . import cpu_threads, numba_cache


def _parts(N: int) -> int:
    return max(1, min(N, 4 * numba.get_num_threads()))


#: For the kernels that sum along a contiguous run (the spatial axis S): let LLVM reassociate the
#: float64 sums, i.e. keep 4-8 partial sums in vector lanes instead of one serial chain of adds
#: (an add's latency per value). Partial sums are, if anything, more accurate; NaN and inf keep
#: IEEE behaviour (no ``nnan``/``ninf``).
REDUCE_OPTIONS = {"fastmath": {"reassoc", "contract"}, "error_model": "numpy"}


@numba_cache.njit
def _sum_parts(s: Array) -> Array:
    """Column sums of (parts, C), in part order. A loop, not ``s.sum(axis=0)``: Numba's axis
    reductions cost over a second of compile time each, this one milliseconds."""
    out = numpy.zeros(s.shape[1])
    for p in range(s.shape[0]):
        for c in range(s.shape[1]):
            out[c] += s[p, c]
    return out


def _pick(kernels: tuple, x3: Array) -> Array:
    """The serial or parallel build, as the CPU thread policy says (kernels/cpu_threads.py)."""
    return kernels[cpu_threads.parallel(x3.size)]


@numba_cache.njit
def _merge_chunks(cnt: Array, mean: Array, m2: Array) -> tuple:
    """Chan's merge of per-chunk (count, mean, M2) rows, in order -> per-channel totals."""
    C = mean.shape[1]
    out_mean = numpy.zeros(C)
    out_m2 = numpy.zeros(C)
    total = 0.0
    for p in range(len(cnt)):
        if cnt[p] == 0:
            continue
        nn = total + cnt[p]
        w_new, w_cross = cnt[p] / nn, total * cnt[p] / nn
        for c in range(C):
            delta = mean[p, c] - out_mean[c]
            out_mean[c] += delta * w_new
            out_m2[c] += m2[p, c] + delta * delta * w_cross
        total = nn
    return out_mean, out_m2, total


def _stats(x: Array, parts: int) -> tuple:
    N, C, S = x.shape
    cnt = numpy.zeros(parts)
    mean = numpy.zeros((parts, C))
    m2 = numpy.zeros((parts, C))
    rows = (N + parts - 1) // parts
    for p in prange(parts):
        n0, n1 = p * rows, min(N, (p + 1) * rows)
        k = 0.0
        inv_s = 1.0 / S
        for n in range(n0, n1):
            na = k * S
            nn = na + S
            w_new, w_cross = S / nn, na * S / nn  # Chan's weights, the same for every channel
            for c in range(C):
                s_sum = 0.0
                for s in range(S):
                    s_sum += x[n, c, s]
                mb = s_sum * inv_s
                m2b = 0.0
                for s in range(S):
                    d = x[n, c, s] - mb
                    m2b += d * d
                delta = mb - mean[p, c]
                mean[p, c] += delta * w_new
                m2[p, c] += m2b + delta * delta * w_cross
            k += 1.0
        cnt[p] = k * S
    return _merge_chunks(cnt, mean, m2)


def _apply(x: Array, y: Array, mean: Array, scale: Array, shift: Array, relu: bool) -> None:
    N, C, S = x.shape
    for n in prange(N):
        for c in range(C):
            m, sc, sh = mean[c], scale[c], shift[c]
            for s in range(S):
                z = (x[n, c, s] - m) * sc + sh
                if relu and z < 0:
                    z = 0.0
                y[n, c, s] = z


def _bwd_sums(
    dy: Array,
    x: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    relu: bool,
    parts: int,
) -> tuple:
    N, C, S = x.shape
    s0 = numpy.zeros((parts, C))
    s1 = numpy.zeros((parts, C))
    rows = (N + parts - 1) // parts
    for p in prange(parts):
        for n in range(p * rows, min(N, (p + 1) * rows)):
            for c in range(C):
                m, ist, g, b = mean[c], invstd[c], gamma[c], beta[c]
                a0 = 0.0
                a1 = 0.0
                for s in range(S):
                    xhat = (x[n, c, s] - m) * ist
                    dz = dy[n, c, s]
                    if relu and not (xhat * g + b > 0):
                        dz = 0.0
                    a0 += dz
                    a1 += dz * xhat
                s0[p, c] += a0
                s1[p, c] += a1
    return _sum_parts(s0), _sum_parts(s1)


def _dx(
    dy: Array,
    x: Array,
    dx: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    relu: bool,
    dbeta: Array,
    dgamma: Array,
    batch_stats: bool,
    inv_m: float,
) -> None:
    N, C, S = x.shape
    for n in prange(N):
        for c in range(C):
            m, ist, g, b = mean[c], invstd[c], gamma[c], beta[c]
            k = g * ist
            mdb, mdg = dbeta[c] * inv_m, dgamma[c] * inv_m
            for s in range(S):
                xhat = (x[n, c, s] - m) * ist
                dz = dy[n, c, s]
                if relu and not (xhat * g + b > 0):
                    dz = 0.0
                if batch_stats:
                    dz = dz - mdb - xhat * mdg
                dx[n, c, s] = k * dz


# (N, C) input (S == 1): the same algorithms with the channel loop innermost, so that it runs over
# contiguous memory and vectorizes; statistics by two passes over small row chunks (in cache),
# merged across chunks with Chan's formula.
ROWS_PER_CHUNK = 32


def _stats_rows(x: Array, parts: int) -> tuple:
    N, C = x.shape
    rows = (N + parts - 1) // parts
    cnt = numpy.zeros(parts)
    mean = numpy.zeros((parts, C))
    m2 = numpy.zeros((parts, C))
    for p in prange(parts):
        n0, n1 = p * rows, min(N, (p + 1) * rows)
        if n1 <= n0:
            continue
        acc = numpy.zeros(C)
        for n in range(n0, n1):
            for c in range(C):
                acc[c] += x[n, c]
        inv = 1.0 / (n1 - n0)
        for c in range(C):
            mean[p, c] = acc[c] * inv
        acc[:] = 0.0
        for n in range(n0, n1):
            for c in range(C):
                d = x[n, c] - mean[p, c]
                acc[c] += d * d
        for c in range(C):
            m2[p, c] = acc[c]
        cnt[p] = n1 - n0
    return _merge_chunks(cnt, mean, m2)


def _apply_rows(x: Array, y: Array, mean: Array, scale: Array, shift: Array, relu: bool) -> None:
    N, C = x.shape
    for n in prange(N):
        for c in range(C):
            z = (x[n, c] - mean[c]) * scale[c] + shift[c]
            y[n, c] = 0.0 if relu and z < 0 else z


def _bwd_sums_rows(
    dy: Array,
    x: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    relu: bool,
    parts: int,
) -> tuple:
    N, C = x.shape
    rows = (N + parts - 1) // parts
    s0 = numpy.zeros((parts, C))
    s1 = numpy.zeros((parts, C))
    for p in prange(parts):
        for n in range(p * rows, min(N, (p + 1) * rows)):
            for c in range(C):
                xhat = (x[n, c] - mean[c]) * invstd[c]
                dz = dy[n, c]
                if relu and not (xhat * gamma[c] + beta[c] > 0):
                    dz = 0.0
                s0[p, c] += dz
                s1[p, c] += dz * xhat
    return _sum_parts(s0), _sum_parts(s1)


def _dx_rows(
    dy: Array,
    x: Array,
    dx: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    relu: bool,
    dbeta: Array,
    dgamma: Array,
    batch_stats: bool,
    inv_m: float,
) -> None:
    N, C = x.shape
    for n in prange(N):
        for c in range(C):
            xhat = (x[n, c] - mean[c]) * invstd[c]
            dz = dy[n, c]
            if relu and not (xhat * gamma[c] + beta[c] > 0):
                dz = 0.0
            if batch_stats:
                dz = dz - dbeta[c] * inv_m - xhat * dgamma[c] * inv_m
            dx[n, c] = gamma[c] * invstd[c] * dz


_STATS, _BWD_SUMS = (
    numba_cache.serial_and_parallel(_stats, **REDUCE_OPTIONS),
    numba_cache.serial_and_parallel(_bwd_sums, **REDUCE_OPTIONS),
)
_APPLY, _DX = numba_cache.serial_and_parallel(_apply), numba_cache.serial_and_parallel(_dx)
_ROWS = {
    name: numba_cache.serial_and_parallel(f)
    for name, f in (
        ("stats", _stats_rows),
        ("apply", _apply_rows),
        ("bwd_sums", _bwd_sums_rows),
        ("dx", _dx_rows),
    )
}


def _kernel(name: str, x3: Array) -> Array:
    """The (serial, parallel)-picked kernel for x3's layout: rows kernels on 2-D views for S ==
    1."""
    if x3.shape[2] == 1:
        return _pick(_ROWS[name], x3)
    return _pick({"stats": _STATS, "apply": _APPLY, "bwd_sums": _BWD_SUMS, "dx": _DX}[name], x3)


def _view(a: float):
    return a.reshape(a.shape[0], a.shape[1]) if a.shape[2] == 1 else a


def _row_parts(x3: Array):
    N = x3.shape[0]
    if x3.shape[2] == 1:
        return max(1, -(-N // ROWS_PER_CHUNK))
    return _parts(N)


def stats(x3: Array) -> tuple:
    """(mean, biased var, unbiased var) per channel, float64."""
    mean, m2, count = _kernel("stats", x3)(_view(x3), _row_parts(x3))
    var = m2 / count
    return mean, var, (m2 / (count - 1) if count > 1 else var)


def apply(x3: Array, mean: Array, invstd: Array, gamma: Array, beta: Array, relu: bool) -> Array:
    """y = act((x - mean) * gamma * invstd + beta), in x's dtype."""
    dt = x3.dtype
    scale = (invstd if gamma is None else gamma * invstd).astype(dt)
    shift = numpy.zeros(len(mean), dt) if beta is None else beta.astype(dt)
    y = numpy.empty_like(x3)
    _kernel("apply", x3)(_view(x3), _view(y), mean.astype(dt), scale, shift, relu)
    return y


def backward(
    dy3: Array,
    x3: Array,
    mean: Array,
    invstd: Array,
    gamma: Array,
    beta: Array,
    relu: bool,
    batch_stats: bool,
) -> tuple:
    """(dx, dgamma, dbeta) with float64 sums."""
    dt = x3.dtype
    C = x3.shape[1]
    g = numpy.ones(C, dt) if gamma is None else gamma
    b = numpy.zeros(C, dt) if beta is None else beta
    mean, invstd = mean.astype(dt), invstd.astype(dt)
    dbeta, dgamma = _kernel("bwd_sums", x3)(
        _view(dy3), _view(x3), mean, invstd, g, b, relu, _row_parts(x3)
    )
    dx = numpy.empty_like(x3)
    M = x3.shape[0] * x3.shape[2]
    _kernel("dx", x3)(
        _view(dy3),
        _view(x3),
        _view(dx),
        mean,
        invstd,
        g,
        b,
        relu,
        dbeta.astype(dt),
        dgamma.astype(dt),
        batch_stats,
        1.0 / M,
    )
    return dx, dgamma.astype(dt), dbeta.astype(dt)
