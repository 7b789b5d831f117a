"""BatchNorm on the CPU with Numba (``njit(parallel=True)``): the same algorithm as the GPU kernels,
faster than the vectorized NumPy reference (``python -m gpunet.bench batchnorm`` shows both).

x is a contiguous (N, C, S) array. Rows are split into ``parts`` chunks run in parallel; every
chunk reads its rows once, front to back:

* statistics: per (row, channel), the S values are summarized exactly (two passes over S values
  in cache) and merged into the chunk's per-channel (count, mean, M2) with Chan's formula, in
  float64; the chunks are then merged the same way. No E[x^2] - E[x]^2. (N, C) input: one pass
  per chunk of shifted sums (see _stats_rows). The per-channel finish (invstd, running
  statistics) is one small loop too (_finish).
* backward sums: per-chunk float64 sums of dz and dz * xhat, added up at the end.
* elementwise passes (normalize, dx) run over rows in parallel.

Fused activation here: None or ReLU (the common case); other activations run as a NumPy pass on
top (gpunet/functional/batchnorm.py decides).
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy
from numba import prange

from gpunet.types import Array

from ..interface import BNParams, BNSpec, BNStats
from ..shared import cpu_threads, numba_cache


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
# contiguous memory and vectorizes. Statistics in one pass per chunk of rows: float64 sums of
# d = x - x[first row of the chunk] and of d^2, then mean = shift + sum(d) / k and
# M2 = sum(d^2) - sum(d)^2 / k (the "shifted data" algorithm: d is a difference of two samples,
# so sum(d)^2 / k is of the order of M2 and float64 loses nothing that float32 data has); the
# chunks merged with Chan's formula. One pass instead of two: (256, 1024) float32 67 -> 45 us,
# (4096, 4096) 3.8 -> 3.1 ms, 2 threads. Four rows per pass over the float64 sums (the loads and
# stores of s1, s2 were the bound): 51 -> 33 us at (256, 1024), 0.84 -> 0.61 ms at (4096, 1024),
# one thread.
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
        s1 = numpy.zeros(C)
        s2 = numpy.zeros(C)
        n = n0 + 1
        while n + 3 < n1:  # four rows per pass over the sums: half the loads and stores of s1, s2
            for c in range(C):
                shift = numpy.float64(x[n0, c])
                d0 = numpy.float64(x[n, c]) - shift
                d1 = numpy.float64(x[n + 1, c]) - shift
                d2 = numpy.float64(x[n + 2, c]) - shift
                d3 = numpy.float64(x[n + 3, c]) - shift
                s1[c] += (d0 + d1) + (d2 + d3)
                s2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            n += 4
        while n < n1:
            for c in range(C):
                d = numpy.float64(x[n, c]) - numpy.float64(x[n0, c])
                s1[c] += d
                s2[c] += d * d
            n += 1
        k = n1 - n0
        for c in range(C):
            mean[p, c] = x[n0, c] + s1[c] / k
            m2[p, c] = s2[c] - s1[c] * s1[c] / k
        cnt[p] = k
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
        a0 = numpy.zeros(C)  # the chunk's own sums (not rows of s0/s1: a parallel loop writing
        a1 = numpy.zeros(C)  # into one shared array vectorized worse, 89 -> 62 us at (256, 1024))
        for n in range(p * rows, min(N, (p + 1) * rows)):
            for c in range(C):
                xhat = (x[n, c] - mean[c]) * invstd[c]
                dz = dy[n, c]
                if relu and not (xhat * gamma[c] + beta[c] > 0):
                    dz = 0.0
                a0[c] += dz
                a1[c] += dz * xhat
        for c in range(C):  # element by element: an array assigned to a row (s0[p] = a0)
            s0[p, c] = a0[c]  # compiles Numba's broadcasting setitem, 2.3 s of a first run
            s1[p, c] = a1[c]
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


def _kernel(name: str, x3: Array, parallel: bool) -> Callable:
    """The serial or parallel build for x3's layout (rows kernels on 2-D views for S == 1);
    ``parallel`` is the CPU thread policy's answer (kernels/shared/cpu_threads.py), asked once per
    public call so that its kernels and their chunk count agree."""
    builds = _ROWS[name] if x3.shape[2] == 1 else {
        "stats": _STATS, "apply": _APPLY, "bwd_sums": _BWD_SUMS, "dx": _DX
    }[name]  # fmt: skip
    return builds[parallel]


def _view(a: Array) -> Array:
    return a.reshape(a.shape[0], a.shape[1]) if a.shape[2] == 1 else a


def _row_parts(x3: Array, parallel: bool):
    """Chunks of rows: one per thread for (N, C) input (its kernels read each row once, so
    larger chunks only mean fewer partial sums to merge), 4 per thread for (N, C, S)."""
    N = x3.shape[0]
    if x3.shape[2] == 1:
        return max(1, min(N, numba.get_num_threads() if parallel else 1))
    return _parts(N)


@numba_cache.njit(error_model="numpy")
def _finish(
    mean64: Array,
    m2: Array,
    count: float,
    eps: float,
    update: bool,
    factor: float,
    running_mean: Array,
    running_var: Array,
    mean: Array,
    invstd: Array,
) -> None:
    """Per channel, in one loop (a dozen NumPy operations on (C,) vectors cost 15-20 us at
    C = 1024, a fifth of the whole forward pass): mean and 1 / sqrt(var + eps) in x's dtype
    from the float64 sums, and with ``update`` the running statistics, in place, with the
    unbiased variance: r = (1 - factor) r + factor * batch (kernels/shared/batchnorm_stats.py)."""
    for c in range(mean64.shape[0]):
        var = m2[c] / count
        mean[c] = mean64[c]
        invstd[c] = 1.0 / numpy.sqrt(var + eps)
        if update:
            unbiased = m2[c] / (count - 1.0) if count > 1.0 else var
            running_mean[c] = (1.0 - factor) * running_mean[c] + factor * mean64[c]
            running_var[c] = (1.0 - factor) * running_var[c] + factor * unbiased


# An (N, C) batch that the thread policy runs serially (below cpu_threads.PARALLEL_MIN values,
# within a training loop's serial stretches, on one thread) in one call per direction: the
# forward's statistics, finish and normalization, the backward's sums and dx, the same kernels'
# code in one compiled function instead of three calls from Python (each cost a few microseconds
# of argument unboxing, views and thread-policy bookkeeping). The quickstart's MLP (batch 64, 128
# channels, ReLU fused, one core of the development machine): this path's forward 13.4 -> 6.4
# us, the layer's forward 36 -> 21 us and backward 24-27 -> 16-20 us; (256, 1024) on one thread,
# see ``_one_call``. The kernels are inlined (Numba's ``inline="always"``: one function to
# compile) rather than called as the compiled serial builds: a call links their machine code
# into the caller, which generates it again, and the first run's compiles took 1.47 + 1.33 s
# against 1.24 + 0.94 s inlined (1.18 + 0.90 s for the separate kernels).
_inline = numba.njit(inline="always")
_STATS_ROWS_INLINED, _APPLY_ROWS_INLINED = _inline(_stats_rows), _inline(_apply_rows)
_BWD_SUMS_ROWS_INLINED, _DX_ROWS_INLINED = _inline(_bwd_sums_rows), _inline(_dx_rows)


@numba_cache.njit(error_model="numpy")
def _forward_rows_serial(x: Array, y: Array, mean: Array, invstd: Array, gamma: Array,
                        beta: Array, running_mean: Array, running_var: Array, eps: float,
                        factor: float, update: bool, relu: bool) -> None:  # fmt: skip
    """batch_statistics then apply, for (N, C) x with gamma and beta, serially."""
    mean64, m2, count = _STATS_ROWS_INLINED(x, 1)
    _finish(mean64, m2, count, eps, update, factor, running_mean, running_var, mean, invstd)
    scale = numpy.empty_like(invstd)
    for c in range(scale.shape[0]):
        scale[c] = gamma[c] * invstd[c]
    _APPLY_ROWS_INLINED(x, y, mean, scale, beta, relu)


@numba_cache.njit(error_model="numpy")
def _backward_rows_serial(dy: Array, x: Array, dx: Array, mean: Array, invstd: Array,
                         gamma: Array, beta: Array, relu: bool, batch_stats: bool,
                         inv_m: float, dgamma: Array, dbeta: Array) -> None:  # fmt: skip
    """backward's two kernels for (N, C) x with gamma and beta, serially; dgamma and dbeta
    rounded to x's dtype (what ``astype`` does)."""
    s0, s1 = _BWD_SUMS_ROWS_INLINED(dy, x, mean, invstd, gamma, beta, relu, 1)
    for c in range(dbeta.shape[0]):
        dbeta[c] = s0[c]
        dgamma[c] = s1[c]
    _DX_ROWS_INLINED(dy, x, dx, mean, invstd, gamma, beta, relu, dbeta, dgamma, batch_stats, inv_m)


def _one_call(x3: Array, gamma: Array | None, beta: Array | None) -> bool:
    """Whether the one-call kernels take x3: (N, C) data with gamma and beta, which the CPU
    thread policy would run serially now (``cpu_threads.parallel``: below PARALLEL_MIN values,
    ``numba-serial``, one thread, a training loop's serial stretch). Measured at (256, 1024)
    float32 on one thread: the forward's kernels 92-95 us as three calls, 83-85 us as one."""
    return (
        x3.shape[2] == 1
        and gamma is not None
        and beta is not None
        and not cpu_threads.parallel(x3.size)
    )


def forward_one_call(x3: Array, params: BNParams, spec: BNSpec) -> tuple:
    """(y, mean, invstd) of a training forward where ``_one_call`` holds (BatchNorm alone or with
    ReLU): batch_statistics and apply in one call, the same arithmetic."""
    gamma, beta, running_mean, running_var = params
    C = x3.shape[1]
    mean, invstd = numpy.empty(C, x3.dtype), numpy.empty(C, x3.dtype)
    y = numpy.empty_like(x3)
    if not spec.update:
        running_mean = running_var = mean  # not touched: a placeholder of the right type
    rows = x3.shape[:2]
    _forward_rows_serial(x3.reshape(rows), y.reshape(rows), mean, invstd, gamma, beta,
                        running_mean, running_var, float(spec.eps), float(spec.factor),
                        spec.update, spec.act == "relu")  # fmt: skip
    return y, mean, invstd


def batch_statistics(
    x3: Array, eps: float, running_mean: Array, running_var: Array, factor: float, update: bool
) -> tuple:
    """(mean, invstd) per channel of x3 (N, C, S), in its dtype, from float64 statistics; with
    ``update`` the running statistics (x3's dtype) move towards the batch's, in place."""
    with cpu_threads.choose(cpu_threads.key("bn_stats", x3.dtype), x3.size) as parallel:
        mean64, m2, count = _kernel("stats", x3, parallel)(_view(x3), _row_parts(x3, parallel))
    C = x3.shape[1]
    mean, invstd = numpy.empty(C, x3.dtype), numpy.empty(C, x3.dtype)
    if not update:
        running_mean = running_var = mean  # not touched: a placeholder of the right type
    _finish(mean64, m2, float(count), eps, update, factor, running_mean, running_var, mean, invstd)
    return mean, invstd


def apply(x3: Array, mean: Array, invstd: Array, gamma: Array, beta: Array, relu: bool) -> Array:
    """y = act((x - mean) * gamma * invstd + beta), in x's dtype."""
    dt = x3.dtype
    scale = (invstd if gamma is None else gamma * invstd).astype(dt, copy=False)
    shift = numpy.zeros(len(mean), dt) if beta is None else beta.astype(dt, copy=False)
    y = numpy.empty_like(x3)
    mean = mean.astype(dt, copy=False)
    with cpu_threads.choose(cpu_threads.key("bn_apply", dt), x3.size) as parallel:
        _kernel("apply", x3, parallel)(_view(x3), _view(y), mean, scale, shift, relu)
    return y


def backward(dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec) -> tuple:
    """(dx, dgamma, dbeta) with float64 sums. The kernels fuse ReLU only: ``spec.act`` is None or
    "relu" here (the path applies any other activation's backward first)."""
    (mean, invstd), (gamma, beta), batch_stats = stats, params[:2], spec.batch_stats
    relu = spec.act == "relu"
    dt = x3.dtype
    C = x3.shape[1]
    if _one_call(x3, gamma, beta) and mean.dtype == dt and invstd.dtype == dt:
        dx, dgamma, dbeta = numpy.empty_like(x3), numpy.empty(C, dt), numpy.empty(C, dt)
        rows = x3.shape[:2]
        _backward_rows_serial(dy3.reshape(rows), x3.reshape(rows), dx.reshape(rows), mean,
                             invstd, gamma, beta, relu, batch_stats, 1.0 / x3.shape[0], dgamma,
                             dbeta)  # fmt: skip
        return dx, dgamma, dbeta
    g = numpy.ones(C, dt) if gamma is None else gamma
    b = numpy.zeros(C, dt) if beta is None else beta
    mean, invstd = mean.astype(dt, copy=False), invstd.astype(dt, copy=False)
    dx = numpy.empty_like(x3)
    M = x3.shape[0] * x3.shape[2]
    with cpu_threads.choose(cpu_threads.key("bn_backward", dt), x3.size) as parallel:
        dbeta, dgamma = _kernel("bwd_sums", x3, parallel)(
            _view(dy3), _view(x3), mean, invstd, g, b, relu, _row_parts(x3, parallel)
        )
        _kernel("dx", x3, parallel)(
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
