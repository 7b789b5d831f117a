"""Direct convolution for a net's first layer (few input channels, stride 1) on AVX-512 CPUs,
forward and backward.

    out[n, f, y, x] = sum over taps t = (c, i, j) of w[f, c, i, j] xp[n, c, y + i, x + j]
    dw[f, c, i, j]  = sum over n, y, x of dout[n, f, y, x] xp[n, c, y + i, x + j]
    dx[n, c, r, q]  = sum over f, i, j of w[f, c, i, j] dout[n, f, r + ph - i, q + pw - j]

with xp the zero-padded input. This is the layer im2col serves worst: with C kh kw = 27 (3x3
taps of an RGB image) or 147 (CS231n's 7x7 first layer) the product per sample is (F x K) @
(K x Ho Wo) with a small K, where the BLAS runs at half its peak (measured on the 2-vCPU Xeon,
one core, float32: MKL 35-42 GMAC/s at K = 27, 66-73 at K = 147; NumPy's OpenBLAS 46-61 and
49-53), before im2col's copy of every tap; its backward's products ran at 25 GMAC/s and, made
of small Python-driven calls per sample, did not gain from a second thread.

The microkernels (direct_microkernels.py, LLVM intrinsics) keep 16-24 accumulators in AVX-512
registers through a whole reduction:

* forward: 8 output channels x 2 vectors of columns of one output row (8 x 32 outputs in
  float32) through all T = C kh kw taps. Per tap it loads the two input vectors at (c, y + i,
  x0 + j), broadcasts the tap's 8 weights and makes 16 fused multiply-adds; it writes the 8 x 32
  outputs once, straight into out's NCHW rows.
* dw: 8 output channels x 3 taps, the sum over positions in the lanes (8 rows of dout against
  3 shifted rows of the padded input, 24 FMAs per vector of positions), into a row of
  accumulators per thread, added up once at the end.
* dx: the forward's sum over taps on the output gradient padded by kh - 1 - ph rows and
  kw - 1 - pw columns, with the flipped kernel (taps (f, i', j'), weight w[f, c, kh - 1 - i',
  kw - 1 - j']), 4 input channels x 4 vectors of flat positions per call.

Each sample (one prange iteration) is copied into a zero-padded flat buffer of its own,
C (H + 2 ph) (W + 2 pw) values plus slack; a block's loads may run past a row's end into the
next row (or the slack): those lanes belong to columns >= Wo and are not stored, or meet zeros
of the padded output gradient. Blocks that would stick out of out (the last columns when Wo is
not a multiple of the block, the last channels when F is not a multiple of 8) are written to a
scratch block and copied. In the backward, dout is read once from memory: in place where dw
alone is asked for (a first layer's usual case) and its rows are whole vectors, else through a
zero-padded copy in cache that both sums read.

Measured on the 2-vCPU Intel Xeon development machine (AVX-512, 2.6 GHz), batch 64, 3 -> 32
channels at 32x32, float32, the kernels alone on one core: forward 3x3 0.88 ms (64.6 GMAC/s),
7x7 3.87 ms (79.6 GMAC/s, ~95 % of two FMA units' peak); dw 3x3 1.2 ms (47 GMAC/s), 7x7 4.8 ms
(64.5); dx 3x3 1.15 ms. torch 2.13 (oneDNN) takes 1.42 and 4.47 ms for the whole forward
layer. BENCHMARKS.md has the layers against torch.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy
from numba import prange

from gpunet.types import Array

from ..shared import cpu_threads, numba_cache
from .direct_microkernels import VECTOR_BYTES, lanes, position_block, tap_rows
from .vector_math import _has_avx512
from .winograd_planes import _threads

#: output channels per microkernel call (the weights broadcast per tap)
CHANNELS = 8
#: vectors of columns per output channel (CHANNELS x VECTORS accumulators: 16 of AVX-512's 32)
VECTORS = 2
#: where im2col takes over: taps per output (C kh kw) beyond this (3 x 7 x 7 = 147 is the
#: largest first layer of the CS231n nets; deeper layers go to Winograd or im2col's products)
MAX_TAPS = 160
#: narrower outputs waste most of a block of columns (Wo < 16: the digits' 8x8 maps)
MIN_WIDTH = 16


def _numba_targets_avx512() -> bool:
    """Whether Numba compiles for a CPU with AVX-512 (the host's features, or NUMBA_CPU_FEATURES):
    elsewhere 16 vector accumulators of 64 bytes would spill, and im2col serves the layer."""
    from numba.core.registry import cpu_target

    return _has_avx512(cpu_target.target_context)


def eligible(x_shape: tuple, w_shape: tuple, stride: tuple, padding: tuple, out_width: int) -> bool:
    """Whether a convolution goes here: stride 1, C kh kw <= MAX_TAPS, Wo >= MIN_WIDTH, AVX-512."""
    C, kh, kw = w_shape[1:]
    return (
        tuple(stride) == (1, 1) and C * kh * kw <= MAX_TAPS and out_width >= MIN_WIDTH and _AVX512
    )


_ROWS = tap_rows(CHANNELS, VECTORS)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _tap_offsets(channels: int, kh: int, kw: int, plane: int, row: int) -> Array:
    """(channels kh kw,) intp: where tap (c, i, j) starts in planes of ``plane`` values with rows
    of ``row``: c plane + i row + j."""
    c, i, j = numpy.meshgrid(
        numpy.arange(channels), numpy.arange(kh), numpy.arange(kw), indexing="ij"
    )
    return (c * plane + i * row + j).reshape(-1).astype(numpy.intp)


def _pad_sample(
    src: Array, n: int, dst: Array, plane: int, row: int, top: int, left: int
) -> None:  # pragma: no cover - Numba
    """dst[c plane + (r + top) row + left + q] = src[n, c, r, q]: sample n of src (N, C, H, W)
    into the planes of a flat buffer whose padding the caller zeroed. Element by element: an
    array assigned to a slice makes Numba compile its broadcasting setitem (2.3 s of a first
    run)."""
    for c in range(src.shape[1]):
        for r in range(src.shape[2]):
            at = c * plane + (r + top) * row + left
            for q in range(src.shape[3]):
                dst[at + q] = src[n, c, r, q]


_PAD_SAMPLE = numba_cache.njit(_pad_sample, error_model="numpy", boundscheck=False)


def _forward(
    x: Array, wt: Array, taps: Array, ph: int, pw: int, out: Array, work: Array, threaded: bool
) -> None:  # pragma: no cover - Numba
    """out (N, F, Ho, Wo) from x (N, C, H, W), wt (T, Fp) and the taps' offsets in a padded
    sample (T,); work: (threads, C Hp Wp + block + CHANNELS block) scratch rows."""
    N, C, H, W = x.shape
    F, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    plane = Hp * Wp
    block = VECTORS * (VECTOR_BYTES // x.itemsize)
    for n in prange(N):
        tid = numba.get_thread_id() if threaded else 0
        xp = work[tid, : C * plane + block]
        scratch = work[tid, C * plane + block :]
        xp[:] = 0
        _PAD_SAMPLE(x, n, xp, plane, Wp, ph, pw)
        on = out[n].reshape(F * Ho * Wo)
        for f0 in range(0, F, CHANNELS):
            for y in range(Ho):
                for c0 in range(0, Wo, block):
                    if f0 + CHANNELS <= F and c0 + block <= Wo:
                        _ROWS(xp, y * Wp + c0, taps, wt, f0, on, (f0 * Ho + y) * Wo + c0, Ho * Wo)
                    else:  # the block sticks out of out: write it aside, copy what is inside
                        _ROWS(xp, y * Wp + c0, taps, wt, f0, scratch, 0, block)
                        for k in range(min(CHANNELS, F - f0)):
                            for v in range(min(block, Wo - c0)):
                                out[n, f0 + k, y, c0 + v] = scratch[k * block + v]


FORWARD = numba_cache.serial_and_parallel(_forward, error_model="numpy", boundscheck=False)
_AVX512 = _numba_targets_avx512()


def forward(x: Array, w: Array, padding: tuple, buffer: Any) -> Array:
    """out (N, F, Ho, Wo) of x (N, C, H, W) and w (F, C, kh, kw) at stride 1 (eligible)."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    ph, pw = padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    Ho, Wo = Hp - kh + 1, Wp - kw + 1
    wt = numpy.zeros((C * kh * kw, _round_up(F, CHANNELS)), x.dtype)
    wt[:, :F] = w.reshape(F, -1).T
    taps = _tap_offsets(C, kh, kw, Hp * Wp, Wp)
    block = VECTORS * lanes(x.dtype)
    out = numpy.empty((N, F, Ho, Wo), x.dtype)
    # the stall watch compares per-value times across calls: count multiply-adds, not outputs
    # (a 7x7 layer's call takes 5x a 3x3 one's per output)
    with cpu_threads.choose(cpu_threads.key("direct_conv", x.dtype), out.size * taps.size) as par:
        threads = _threads(par)
        work = buffer("direct_conv", (threads, C * Hp * Wp + block + CHANNELS * block), x.dtype)
        FORWARD[par](x, wt.reshape(-1), taps, ph, pw, out, work, bool(par))
    return out


# ----------------------------------------------------------------------------- backward
#: the input gradient's microkernel: 4 input channels x 4 vectors of positions (a first layer
#: has 1 to a few input channels; 8 x 2 would compute mostly padding)
DX_CHANNELS = 4
DX_VECTORS = 4
_DX_ROWS = tap_rows(DX_CHANNELS, DX_VECTORS)
#: the weight gradient's microkernel: 8 output channels x 3 taps (24 accumulators); measured
#: against 4 x 4, 8 x 2, 6 x 4, 2 x 8 (one core, batch 64, 3 -> 32 at 32x32): the fastest at
#: 7x7 (64.5 GMAC/s) and level with 4 x 4 at 3x3 (47-49); 24 taps x 8 spills
DW_CHANNELS = 8
DW_TAPS = 3
_DW_BLOCK = position_block(DW_CHANNELS, DW_TAPS)


def backward_fits(kernel: tuple, padding: tuple) -> bool:
    """Whether the direct backward serves a layer the forward took: padding < kernel on each
    axis (else the output gradient's own padding, kernel - 1 - padding, would be negative)."""
    return padding[0] < kernel[0] and padding[1] < kernel[1]


def _backward(
    x: Array,
    dout: Array,
    taps_x: Array,
    taps_d: Array,
    w_dx: Array,
    sizes: Array,
    dx: Array,
    acc: Array,
    work: Array,
    threaded: bool,
    input_grad: bool,
) -> None:  # pragma: no cover - Numba
    """dw's sums into acc (threads, Fp, Tp, L) and, with input_grad, dx (N, C, H, W) from x
    (N, C, H, W) and dout (N, F, Ho, Wo). sizes (_layout): ph, pw, kh, kw, Rx (the padded
    input's row length), Rd and dplane (the padded dout's row length and plane), Cp (dx's
    channels rounded up to DX_CHANNELS), then the work row's parts: xsize (the padded input),
    bsize (a channel block's copy of dout), dsize (the padded dout), oplane (a plane of dx's
    scratch)."""
    N, C, H, W = x.shape
    F, Ho, Wo = dout.shape[1], dout.shape[2], dout.shape[3]
    ph, pw, kh, kw = sizes[0], sizes[1], sizes[2], sizes[3]
    Rx, Rd, dplane, Cp = sizes[4], sizes[5], sizes[6], sizes[7]
    xsize, bsize, dsize, oplane = sizes[8], sizes[9], sizes[10], sizes[11]
    Fp, Tp, L = acc.shape[1], acc.shape[2], acc.shape[3]
    xplane = (H + 2 * ph) * Rx
    steps = -(-Wo // L)  # vectors per output row
    rd = steps * L  # a row of the channel block's copy
    block = DX_VECTORS * L
    a, b = kh - 1 - ph, kw - 1 - pw  # where dout sits in its zero-padded planes
    flat = dout.reshape(N * F * Ho * Wo)
    for n in prange(N):
        tid = numba.get_thread_id() if threaded else 0
        xf = work[tid, :xsize]
        xf[:] = 0
        _PAD_SAMPLE(x, n, xf, xplane, Rx, ph, pw)
        sums = acc[tid].reshape(Fp * Tp * L)
        df = work[tid, xsize + bsize : xsize + bsize + dsize]
        if input_grad:  # dout into zero-padded planes, read by both sums (dout once from memory)
            df[:] = 0
            _PAD_SAMPLE(dout, n, df, dplane, Rd, a, b)
        for f0 in range(0, Fp, DW_CHANNELS):
            if input_grad:  # past Wo, each row of df reads zeros (Rd >= b + rd)
                src, s0, sstride, srow = df, f0 * dplane + a * Rd + b, dplane, Rd
            elif f0 + DW_CHANNELS <= F and rd == Wo:  # whole rows of dout: read in place
                src, s0, sstride, srow = flat, (n * F + f0) * Ho * Wo, Ho * Wo, Wo
            else:  # short rows or the last channels: a zero-padded copy
                src, s0, sstride, srow = work[tid, xsize : xsize + bsize], 0, Ho * rd, rd
                src[:] = 0
                for k in range(min(DW_CHANNELS, F - f0)):
                    for y in range(Ho):
                        for q in range(Wo):
                            src[(k * Ho + y) * rd + q] = dout[n, f0 + k, y, q]
            for t0 in range(0, Tp, DW_TAPS):
                _DW_BLOCK(
                    src,
                    s0,
                    sstride,
                    srow,
                    xf,
                    taps_x,
                    t0,
                    Rx,
                    Ho,
                    steps,
                    sums,
                    (f0 * Tp + t0) * L,
                    Tp,
                )
        if input_grad:
            out = work[tid, xsize + bsize + dsize : xsize + bsize + dsize + Cp * oplane]
            for c0 in range(0, Cp, DX_CHANNELS):
                for p0 in range(0, H * Rd, block):
                    _DX_ROWS(df, p0, taps_d, w_dx, c0, out, c0 * oplane + p0, oplane)
            for c in range(C):
                for r in range(H):
                    at = c * oplane + r * Rd
                    for q in range(W):
                        dx[n, c, r, q] = out[at + q]


BACKWARD = numba_cache.serial_and_parallel(_backward, error_model="numpy", boundscheck=False)


def _layout(
    x_shape: tuple, w_shape: tuple, padding: tuple, Wo: int, dtype: Any, input_grad: bool
) -> Array:
    """_backward's ``sizes``: the padded buffers' geometry and the parts of a thread's work
    row, computed once here."""
    _, C, H, W = x_shape
    F, _, kh, kw = w_shape
    ph, pw = padding
    L = lanes(dtype)
    block = DX_VECTORS * L
    Rx = W + 2 * pw
    # the padded dout: dx's taps read W + kw - 1 columns; dw's rows, whole vectors from column b
    Rd = max(W + kw - 1, kw - 1 - pw + _round_up(Wo, L))
    # ... its planes: H + kh - 1 rows and the slack dx's last block reads past them
    dplane = _round_up((H + kh - 1) * Rd + kw + block, L)
    Cp = _round_up(C, DX_CHANNELS)
    xsize = C * (H + 2 * ph) * Rx + kw + L  # slack: a row's last vector reads up to L past it
    Ho = H + 2 * ph - kh + 1
    bsize = 0 if input_grad else DW_CHANNELS * Ho * _round_up(Wo, L)
    dsize = _round_up(F, DW_CHANNELS) * dplane if input_grad else 0
    oplane = _round_up(H * Rd, block) if input_grad else 0
    return numpy.array(
        [ph, pw, kh, kw, Rx, Rd, dplane, Cp, xsize, bsize, dsize, oplane], numpy.intp
    )


def backward(
    dout: Array, x: Array, w: Array, padding: tuple, input_grad: bool, buffer: Any
) -> tuple:
    """(dx or None, dw) of forward for the output gradient dout (N, F, Ho, Wo) (eligible and
    backward_fits): the module docstring has the sums and their blocking. Per sample, x goes
    into zero-padded planes of rows Rx = W + 2 pw long; with input_grad, dout into planes of
    rows Rd long, padded by kh - 1 - ph rows and kw - 1 - pw columns, whose zeros also fill
    every column a row's last vector reads past Wo."""
    dout = numpy.ascontiguousarray(dout)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    ph, pw = padding
    Ho, Wo = dout.shape[2:]
    T = C * kh * kw
    sizes = _layout(x.shape, w.shape, padding, Wo, x.dtype, input_grad)
    Rx, Rd, dplane, Cp = sizes[4:8]
    Fp, Tp = _round_up(F, DW_CHANNELS), _round_up(T, DW_TAPS)
    taps_x = numpy.zeros(Tp, numpy.intp)  # the padding taps read plane 0; their sums are dropped
    taps_x[:T] = _tap_offsets(C, kh, kw, (H + 2 * ph) * Rx, Rx)
    taps_d = _tap_offsets(F, kh, kw, dplane, Rd)
    w_dx = numpy.zeros((F * kh * kw, Cp), x.dtype)
    w_dx[:, :C] = w[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(F * kh * kw, C)
    dx = numpy.empty(x.shape, x.dtype) if input_grad else numpy.empty((1, 1, 1, 1), x.dtype)
    row = int(sizes[8] + sizes[9] + sizes[10] + Cp * sizes[11])
    macs = dout.size * T * (2 if input_grad else 1)  # counted as the forward's (choose)
    with cpu_threads.choose(cpu_threads.key("direct_conv'", x.dtype), macs) as par:
        threads = _threads(par)
        acc = numpy.zeros((threads, Fp, Tp, lanes(x.dtype)), x.dtype)
        work = buffer("direct_conv'", (threads, row), x.dtype)
        BACKWARD[par](
            x, dout, taps_x, taps_d, w_dx.reshape(-1), sizes, dx, acc, work, bool(par), input_grad
        )
    dw = acc.sum(axis=(0, 3))[:F, :T].reshape(w.shape)
    return (dx if input_grad else None), dw
