"""Convolution and max pooling on the CPU with Numba (gpunet/functional/conv.py and pooling.py
have the formulas and the float64 reference).

Convolution: im2col into the layout the matrix product wants, about one sample at a time from a
zero-padded copy of it (plain copies, no bounds tests), and col2im its adjoint into a padded
buffer; the driver (kernels/shared/im2col_gemm.py) makes the products through
kernels/shared/cpu_blas.py. Where the thread policy lets a call run in parallel, its samples are
split over threads (_run_parts). 3x3 kernels at stride 1 between 16 or more channels take
Winograd's F(4x4, 3x3) instead (winograd.py).

Max pooling: one pass per (n, c) plane keeps each window's maximum and its flat index h W + w in
the plane (int32); backward adds each output gradient at that index (windows may overlap). At
3x3 taps, batch 64, 32 channels at 32x32 it replaced NumPy's argmax over a strided axis,
take_along_axis, where and col2im: ~24 ms of a 39 ms training step (issue #23's profile).

The pooling kernels have a serial and a parallel build; cpu_threads.parallel picks one per call
(serial within 0.15 s of a matrix product, where the BLAS's own threads still spin).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy
from numba import prange

from gpunet.config import CONFIG
from gpunet.types import Array

from ..shared import cpu_blas, cpu_threads, im2col_gemm, numba_cache
from . import direct_conv, winograd


def _im2col(  # pragma: no cover - Numba
    x: Array,
    n0: int,
    nb: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    Ho: int,
    Wo: int,
    xpad: Array,
    cols: Array,
) -> None:
    """cols[(c kh + p) kw + q, m Ho Wo + i Wo + j] = xpad[c, i sh + p, j sw + q], xpad (C,
    H + 2 ph, W + 2 pw) sample n0 + m inside a border of zeros: every row a run of plain
    copies, no bounds tests (at 7x7 taps from 3 channels, 12 us per 32x32 sample where clipping
    each run at the border took 60)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    P = Ho * Wo
    for m in range(nb):
        xpad[...] = 0
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    xpad[c, h + ph, w + pw] = x[n0 + m, c, h, w]
        for c in range(C):
            for p in range(kh):
                for q in range(kw):
                    dst = cols[(c * kh + p) * kw + q]
                    for i in range(Ho):
                        # views, so that the inner index is a plain count from 0: an offset
                        # in it (m P + i Wo + j) got a negative-index test per value and no
                        # vector loop (50 against 12 us per sample)
                        src = xpad[c, i * sh + p, q:]
                        run = dst[m * P + i * Wo : m * P + (i + 1) * Wo]
                        if sw == 1:
                            for j in range(Wo):
                                run[j] = src[j]
                        else:
                            for j in range(Wo):
                                run[j] = src[j * sw]


def _col2im(  # pragma: no cover - Numba
    dcols: Array,
    n0: int,
    nb: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    Ho: int,
    Wo: int,
    dxpad: Array,
    dx: Array,
) -> None:
    """The adjoint of _im2col: each tap's column added back at its input in the padded dxpad,
    whose inside is then dx[n0 + m]."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    P = Ho * Wo
    for m in range(nb):
        dxpad[...] = 0
        for c in range(C):
            for p in range(kh):
                for q in range(kw):
                    src = dcols[(c * kh + p) * kw + q]
                    for i in range(Ho):
                        dst = dxpad[c, i * sh + p, q:]
                        run = src[m * P + i * Wo : m * P + (i + 1) * Wo]
                        if sw == 1:
                            for j in range(Wo):
                                dst[j] += run[j]
                        else:
                            for j in range(Wo):
                                dst[j * sw] += run[j]
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    dx[n0 + m, c, h, w] = dxpad[c, h + ph, w + pw]


def _pool_fwd(  # pragma: no cover - Numba
    x: Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int, out: Array, arg: Array
) -> None:
    """out = the window maximum (the first NaN if any; else the first maximum in row-major window
    order), arg = its flat index h W + w in the plane."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        plane = x[nc // C, nc % C]
        o_plane = out[nc // C, nc % C]
        a_plane = arg[nc // C, nc % C]
        for i in range(Ho):
            h0 = i * sh - ph
            hlo, hhi = max(h0, 0), min(h0 + kh, H)
            for j in range(Wo):
                w0 = j * sw - pw
                wlo, whi = max(w0, 0), min(w0 + kw, W)
                best = plane[hlo, wlo]
                at = hlo * W + wlo
                for h in range(hlo, hhi):
                    for w in range(wlo, whi):
                        v = plane[h, w]
                        if v > best:
                            best = v
                            at = h * W + w
                        elif v != v and best == best:  # the first NaN wins, as in argmax
                            best = v
                            at = h * W + w
                o_plane[i, j] = best
                a_plane[i, j] = at


def _pool2_fwd(x: Array, out: Array, arg: Array) -> None:  # pragma: no cover - Numba
    """_pool_fwd for 2x2 windows at stride 2 without padding (the common case), unrolled: the
    window's three comparisons compile to selects, not branches (the general loop mispredicted
    every other comparison on random data: 3.9 ms against 0.8 for 2M float32 values)."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        plane = x[nc // C, nc % C]
        o_plane = out[nc // C, nc % C]
        a_plane = arg[nc // C, nc % C]
        for i in range(Ho):
            r0 = plane[2 * i]
            r1 = plane[2 * i + 1]
            base = 2 * i * W
            for j in range(Wo):
                a, b, c, d = r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]
                best, at = a, base + 2 * j
                if b > best:
                    best, at = b, base + 2 * j + 1
                if c > best:
                    best, at = c, base + W + 2 * j
                if d > best:
                    best, at = d, base + W + 2 * j + 1
                if (a != a) or (b != b) or (c != c) or (d != d):  # rare: the first NaN wins
                    if a != a:
                        best, at = a, base + 2 * j
                    elif b != b:
                        best, at = b, base + 2 * j + 1
                    elif c != c:
                        best, at = c, base + W + 2 * j
                    else:
                        best, at = d, base + W + 2 * j + 1
                o_plane[i, j] = best
                a_plane[i, j] = at


def _pool_bwd(dout: Array, arg: Array, dx: Array) -> None:  # pragma: no cover - Numba
    """dx[n, c] = 0, then dout[n, c, i, j] added at arg[n, c, i, j]."""
    N, C, H, W = dx.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for h in range(H):
            for w in range(W):
                dx[n, c, h, w] = 0
        for i in range(Ho):
            for j in range(Wo):
                a = arg[n, c, i, j]
                dx[n, c, a // W, a % W] += dout[n, c, i, j]


def _pool2_bwd(dout: Array, arg: Array, dx: Array) -> None:  # pragma: no cover - Numba
    """_pool_bwd for 2x2 windows at stride 2 without padding: each dx row written once, in
    order, every value a select (the window's gradient where arg points, else 0), instead of a
    zeroing pass and scattered adds (1.41 ms against torch's 0.92 for (64, 32, 32, 32) float32);
    an odd last row or column, which no window covers, zero."""
    N, C, H, W = dx.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    zero = dx.dtype.type(0)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        g_plane, a_plane, d_plane = dout[n, c], arg[n, c], dx[n, c]
        for i in range(Ho):
            g_row, a_row = g_plane[i], a_plane[i]
            top, bottom = d_plane[2 * i], d_plane[2 * i + 1]
            base = 2 * i * W
            for j in range(Wo):
                g, at = g_row[j], a_row[j] - base - 2 * j  # 0, 1, W, W + 1: the window's place
                top[2 * j] = g if at == 0 else zero
                top[2 * j + 1] = g if at == 1 else zero
                bottom[2 * j] = g if at == W else zero
                bottom[2 * j + 1] = g if at == W + 1 else zero
            for w in range(2 * Wo, W):
                top[w] = zero
                bottom[w] = zero
        for h in range(2 * Ho, H):
            for w in range(W):
                d_plane[h, w] = zero


#: im2col and col2im run serially: a chunk is about one sample (kernels/shared/im2col_gemm.py),
#: 12 us at 7x7 taps from 3 channels, less than a parallel launch would cost
_IM2COL = numba_cache.njit(_im2col, error_model="numpy", nogil=True)
_COL2IM = numba_cache.njit(_col2im, error_model="numpy", nogil=True)
_POOL_FWD = numba_cache.serial_and_parallel(_pool_fwd, error_model="numpy")
_POOL2_FWD = numba_cache.serial_and_parallel(_pool2_fwd, error_model="numpy")
_POOL_BWD = numba_cache.serial_and_parallel(_pool_bwd, error_model="numpy")
_POOL2_BWD = numba_cache.serial_and_parallel(_pool2_bwd, error_model="numpy")


# ----------------------------------------------------------------------------- workspace
_workspace = threading.local()


def _buffer(slot: str, shape: tuple, dtype: numpy.dtype) -> Array:
    """A reused scratch array of ``shape`` (one per thread and slot), rewritten entirely before
    each use: a fresh large array per call costs its page faults every time."""
    size = math.prod(shape)
    key = (slot, numpy.dtype(dtype).str)
    arrays = getattr(_workspace, "arrays", None)
    if arrays is None:
        arrays = _workspace.arrays = {}
    have = arrays.get(key)
    if have is None or have.size < size:
        have = arrays[key] = numpy.empty(size, dtype)
    return have[:size].reshape(shape)


def _padded(slot: str, g: im2col_gemm.Geometry, dtype: numpy.dtype) -> Array:
    return _buffer(slot, (g.C, g.H + 2 * g.ph, g.W + 2 * g.pw), dtype)


def _im2col_into(x: Array, n0: int, nb: int, g: im2col_gemm.Geometry, cols: Array) -> None:
    _IM2COL(x, n0, nb, *g.taps, _padded("xpad", g, x.dtype), cols)


def _col2im_into(dcols: Array, n0: int, nb: int, g: im2col_gemm.Geometry, dx: Array) -> None:
    _COL2IM(dcols, n0, nb, *g.taps, _padded("dxpad", g, dx.dtype), dx)


#: split a call's samples over threads from this many multiply-adds per part on (below, starting
#: the threads costs more than they save)
SPLIT_MIN_MACS = 1 << 22
#: ... and per chunk: below, a chunk's Python calls (some 8 us of im2col and product calls, which
#: hold the interpreter) weigh more than its products -- 3x3 taps from 3 channels (0.9 M per
#: sample) took 1.9 ms on one thread and 2.9 split over two (batch 64)
SPLIT_MIN_CHUNK_MACS = 1 << 21


def _workers(n: int) -> ThreadPoolExecutor:
    """The process's pool of at least ``n`` sample workers (made again after a fork)."""
    have = CONFIG.found.sample_workers
    if have is None or have[0] != os.getpid() or have[1]._max_workers < n:
        if have is not None and have[0] == os.getpid():
            have[1].shutdown(wait=False)
        pool = ThreadPoolExecutor(n, thread_name_prefix="gpunet-conv")
        have = CONFIG.found.sample_workers = (os.getpid(), pool)
    return have[1]


def _run_parts(name: str, dtype: object, macs: int, fn: Callable, starts: range) -> list:
    """[fn(part)] for ``starts`` (a call's chunks of samples) split into one part per Numba
    thread where the thread policy lets a kernel of ``macs`` multiply-adds run in parallel
    (kernels/shared/cpu_threads.py: its stall watch times the call), each part's im2col and
    products on its own thread with the BLAS held to one thread per product; the calling thread
    runs the first part. A sample's products are too small to split well inside the BLAS: at
    7x7 taps from 3 channels, batch 64, a step's products took 10.2 ms on one MKL thread and
    9.4 on two."""
    import numba

    # the parts this call could have: one per chunk, per SPLIT_MIN_MACS, none below the chunk size
    most = 1
    if macs >= SPLIT_MIN_CHUNK_MACS * len(starts):
        most = min(len(starts), max(1, macs // SPLIT_MIN_MACS))
    with cpu_threads.choose(cpu_threads.key(name, dtype), macs) as parallel:
        n = min(numba.get_num_threads() if parallel else 1, most)
        if n <= 1:
            if not parallel and most > 1 and cpu_threads.held_by_last_product(macs):
                # serial only because of a product just before -- maybe this call's own last
                # time: made on one BLAS thread, these are not noted and the next call splits
                # (else the 7x7 first layer's forward, called again and again, never split)
                with cpu_blas.one_thread_per_product():
                    return [fn(starts)]
            return [fn(starts)]
        bounds = [len(starts) * i // n for i in range(n + 1)]
        parts = [starts[a:b] for a, b in zip(bounds, bounds[1:])]
        with cpu_blas.one_thread_per_product(), cpu_threads.product_loop(serial=True):
            futures = [_workers(n - 1).submit(_on_one_thread, fn, part) for part in parts[1:]]
            first = fn(parts[0])
            return [first, *(f.result() for f in futures)]


def _on_one_thread(fn: Callable, part: range) -> object:
    with cpu_blas.one_thread_here():
        return fn(part)


def _split(name: str, x: Array, w: Array) -> Callable:
    """``run_parts(fn, starts)`` for one call of ``name`` on x and w (_run_parts)."""
    macs = x.shape[0] * x.shape[2] * x.shape[3] * w.size  # about: the output's size x C kh kw
    return functools.partial(_run_parts, name, x.dtype, macs)


def _kernels(name: str, x: Array, w: Array) -> im2col_gemm.Kernels:
    """The CPU's im2col kernels for one call of ``name`` on x and w."""
    return im2col_gemm.Kernels(
        _im2col_into,
        _col2im_into,
        cpu_blas.matmul,
        _buffer,
        numpy,
        chunk_columns=im2col_gemm.CPU_CHUNK_COLUMNS,
        matmul_into=cpu_blas.matmul_into,
        run_parts=_split(name, x, w),
    )


# ----------------------------------------------------------------------------- the operations
def _winograd(x: Array, w: Array, stride: tuple, padding: tuple) -> bool:
    return x.dtype == w.dtype and winograd.eligible(
        w.shape[2:], stride, padding, w.shape[1], w.shape[0]
    )


def _direct(x: Array, w: Array, stride: tuple, padding: tuple) -> bool:
    _, out_width = im2col_gemm.output_size(x.shape[2], x.shape[3], w.shape[2:], stride, padding)
    return x.dtype == w.dtype and direct_conv.eligible(x.shape, w.shape, stride, padding, out_width)


def conv2d_forward(x: Array, w: Array, stride: tuple, padding: tuple) -> tuple:
    """(out (N, F, Ho, Wo) of x (N, C, H, W) and w (F, C, kh, kw), no bias; kept). 3x3 kernels
    at stride 1 with 16 or more channels in and out: Winograd F(4x4, 3x3) (winograd.py); a first
    layer (C kh kw <= 160 taps, stride 1) directly (direct_conv.py, AVX-512); the rest im2col."""
    if _winograd(x, w, stride, padding):
        x, w = numpy.ascontiguousarray(x), numpy.ascontiguousarray(w)
        return winograd.forward(x, w, padding, _buffer), None
    if _direct(x, w, stride, padding):
        return direct_conv.forward(numpy.ascontiguousarray(x), w, padding, _buffer), None
    return im2col_gemm.conv2d_forward(_kernels("conv2d", x, w), x, w, stride, padding)


def conv2d_backward(
    dout: Array, x: Array, w: Array, kept: object, stride: tuple, padding: tuple, input_grad: bool
) -> tuple:
    """(dx or None, dw) for the output gradient dout (N, F, Ho, Wo): Winograd's, the direct
    first layer's (where its padding is below the kernel size), or im2col's."""
    if _winograd(x, w, stride, padding):
        x, w = numpy.ascontiguousarray(x), numpy.ascontiguousarray(w)
        return winograd.backward(dout, x, w, padding, input_grad, _buffer)
    if _direct(x, w, stride, padding) and direct_conv.backward_fits(w.shape[2:], padding):
        x, w = numpy.ascontiguousarray(x), numpy.ascontiguousarray(w)
        return direct_conv.backward(dout, x, w, padding, input_grad, _buffer)
    k = _kernels("conv2d'", x, w)
    return im2col_gemm.conv2d_backward(k, dout, x, w, stride, padding, input_grad)


def max_pool2d_forward(x: Array, kernel: tuple, stride: tuple, padding: tuple) -> tuple:
    """(out, arg): arg (N, C, Ho, Wo) int32, the flat index in the plane of each window's
    maximum."""
    x = numpy.ascontiguousarray(x)
    g = im2col_gemm.geometry(x.shape, kernel, stride, padding)
    out = numpy.empty((g.N, g.C, g.Ho, g.Wo), x.dtype)
    arg = numpy.empty((g.N, g.C, g.Ho, g.Wo), numpy.int32)
    with cpu_threads.choose(cpu_threads.key("max_pool", x.dtype), x.size) as parallel:
        if kernel == stride == (2, 2) and padding == (0, 0):
            _POOL2_FWD[parallel](x, out, arg)
        else:
            _POOL_FWD[parallel](x, *g.taps[:6], out, arg)
    return out, arg


def max_pool2d_backward(
    dout: Array, arg: Array, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple
) -> Array:
    """dx (x_shape): each output gradient added at its window's maximum."""
    dx = numpy.empty(x_shape, dout.dtype)
    dout, arg = numpy.ascontiguousarray(dout), numpy.ascontiguousarray(arg)
    with cpu_threads.choose(cpu_threads.key("max_pool'", dx.dtype), dx.size) as parallel:
        if kernel == stride == (2, 2) and padding == (0, 0):
            _POOL2_BWD[parallel](dout, arg, dx)
        else:
            _POOL_BWD[parallel](dout, arg, dx)
    return dx
