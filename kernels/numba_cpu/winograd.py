"""3x3 convolution, stride 1, by Winograd's minimal filtering F(2x2, 3x3) on the CPU: 2.25x fewer
multiplies than the direct sum, in 16 matrix products per chunk of tiles.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). The output is cut
into 2x2 tiles; tile t of image n reads the 4x4 input patch d at rows 2 ti - ph + (0..3), columns
2 tj - pw + (0..3) (zero outside the image), and for one input and output channel

    Y (2x2) = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, 4x4)

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

is the correlation Y[i, j] = sum_pq g[p, q] d[i + p, j + q] exactly (in real arithmetic). Summed
over input channels the elementwise products become, for each of the 16 positions xi of the 4x4
transforms, one matrix product: M_xi (T, F) = V_xi (T, C) @ U_xi (C, F) with V = B^T d B per
(tile, channel) and U = G g G^T per (channel, filter).

Backward, from the same identity: dM = A dY A^T per tile (dY's 2x2 tile); the weight gradient
dU_xi (F, C) = dM_xi^T @ V_xi summed over tiles, then dg = G^T dU G; the input gradient is the
correlation of dY with the filters turned 180 degrees and transposed (C and F swapped), padding
2 - p: this same forward.

Layouts: x is copied once into a zero-padded NHWC buffer (channels contiguous: the transforms
run vectorized over channels); V and M hold a chunk of CHUNK_TILES tiles; the output transform
writes NCHW directly. Where it runs (kernels/numba_cpu/conv.py): 3x3 kernels, stride 1, padding
0-2, at least MIN_CHANNELS input and output channels; everything else (and the first layer of a
net, 3 input channels) goes through im2col.

Accuracy: float32 results differ from the direct sum by a few units of float32 rounding of the
largest partial sums (the transforms add and subtract four inputs; tests/test_conv.py checks
against float64 with the path's tolerance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy
from numba import prange

from gpunet.types import Array

from ..shared import cpu_blas, cpu_threads, numba_cache

#: tiles per chunk: V and M of a chunk (16 x tiles x channels float32) stay near the L2 cache
CHUNK_TILES = 2048
#: fewer input or output channels than this: im2col (the transforms cost more than they save)
MIN_CHANNELS = 16

_G = numpy.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def eligible(kernel: tuple, stride: tuple, padding: tuple, C: int, F: int) -> bool:
    """Whether conv2d of these sizes runs here (the module docstring)."""
    return (
        tuple(kernel) == (3, 3)
        and tuple(stride) == (1, 1)
        and all(0 <= p <= 2 for p in padding)
        and min(C, F) >= MIN_CHANNELS
    )


def filter_transform(w: Array) -> Array:
    """U (16, C, F) = G g G^T of each filter g = w[f, c] (3x3), in w's dtype."""
    g = _G.astype(w.dtype)
    u = g @ w @ g.T  # (F, C, 4, 4)
    return numpy.ascontiguousarray(u.transpose(2, 3, 1, 0).reshape(16, w.shape[1], w.shape[0]))


def filter_gradient(du: Array, dtype: numpy.dtype) -> Array:
    """dg (F, C, 3, 3) = G^T dU G from dU (16, F, C)."""
    F, C = du.shape[1], du.shape[2]
    d = du.reshape(4, 4, F, C).transpose(2, 3, 0, 1)  # (F, C, 4, 4)
    g = _G.astype(dtype)
    return numpy.ascontiguousarray(g.T @ d @ g)


# ----------------------------------------------------------------------------- Numba kernels
# Each entry of a transform is a signed sum of a few entries of its 4x4 (or 2x2) argument: B^T's
# row a takes d's rows BT_ROWS[a] with signs BT_SIGNS[a], so V[a, b] = sum over i in BT_ROWS[a],
# j in BT_ROWS[b] of the signs times d[i, j] (4 terms); A^T's row takes three of M's (9 terms).
# The kernels run one short loop per entry over the channels, reading the terms' rows: a loop
# with five arrays, which LLVM vectorizes (one loop writing all 16 entries from 16 rows did not:
# too many arrays to check for overlap, and it ran scalar at 59 ms for 64 channels at 32x32).
BT_ROWS = numpy.array([[0, 2], [1, 2], [1, 2], [1, 3]], numpy.int64)
BT_SIGNS = numpy.array([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
AT_ROWS = numpy.array([[0, 1, 2], [1, 2, 3]], numpy.int64)
AT_SIGNS = numpy.array([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0]])
# A (4x2) = (A^T)^T for the output gradient's dM = A dY A^T: the input transform's loop with
# these rows and signs, run on the 2x2 tiles of dY (a zero sign where A has a single term)
A_ROWS = numpy.array([[0, 1], [0, 1], [0, 1], [0, 1]], numpy.int64)
A_SIGNS = numpy.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]])


def _tile_corner(t: int, Th: int, Tw: int) -> tuple:
    """(image, row, column) of tile t's first output: tiles run image by image, row-major over
    the Th x Tw tiles of each."""
    per_image = Th * Tw
    return t // per_image, 2 * ((t % per_image) // Tw), 2 * (t % Tw)


tile_corner = numba_cache.njit(_tile_corner, inline="always")


def _pad_nhwc(x: Array, ph: int, pw: int, xp: Array) -> None:  # pragma: no cover - Numba
    """xp (N, Hp, Wp, C) = x (N, C, H, W) moved to rows ph.., columns pw.., zero elsewhere."""
    N, C, H, W = x.shape
    Hp, Wp = xp.shape[1], xp.shape[2]
    for n in prange(N):
        for h in range(Hp):
            inside = ph <= h < ph + H
            for w in range(Wp):
                if not inside or w < pw or w >= pw + W:
                    for c in range(C):
                        xp[n, h, w, c] = 0
            if inside:
                row = xp[n, h]
                for c in range(C):  # a (C, W) block of x into a (W, C) block: both in L1
                    src = x[n, c, h - ph]
                    for w in range(W):
                        row[w + pw, c] = src[w]


def _input_transform(
    xp: Array, t0: int, nt: int, Th: int, Tw: int, rows: Array, signs: Array, V: Array
) -> None:  # pragma: no cover - Numba
    """V[:, t - t0, :] = B^T d B of tiles t0 .. t0 + nt (tile t: image t // (Th Tw), then row-major
    over the Th x Tw tiles), d = the tile's 4x4 patch of xp, one loop over channels per entry."""
    C = xp.shape[3]
    for k in prange(nt):
        n, h, w = tile_corner(t0 + k, Th, Tw)
        for a in range(4):
            i1, i2 = rows[a, 0], rows[a, 1]
            si1, si2 = signs[a, 0], signs[a, 1]
            for b in range(4):
                j1, j2 = rows[b, 0], rows[b, 1]
                sj1, sj2 = signs[b, 0], signs[b, 1]
                c11, c12, c21, c22 = si1 * sj1, si1 * sj2, si2 * sj1, si2 * sj2
                d11, d12 = xp[n, h + i1, w + j1], xp[n, h + i1, w + j2]
                d21, d22 = xp[n, h + i2, w + j1], xp[n, h + i2, w + j2]
                out = V[a * 4 + b, k]
                for c in range(C):
                    out[c] = c11 * d11[c] + c12 * d12[c] + c21 * d21[c] + c22 * d22[c]


def _output_transform(
    M: Array, t0: int, nt: int, Th: int, Tw: int, rows: Array, signs: Array, out: Array
) -> None:  # pragma: no cover - Numba
    """out[n, 2 ti + i, 2 tj + j, :] = (A^T m A)[i, j] of tiles t0 .. t0 + nt, m = M[:, t - t0, :]
    (out: an NHWC buffer of whole tiles), one loop over filters per entry."""
    F = M.shape[2]
    for k in prange(nt):
        n, h, w = tile_corner(t0 + k, Th, Tw)
        for i in range(2):
            a1, a2, a3 = rows[i, 0], rows[i, 1], rows[i, 2]
            sa1, sa2, sa3 = signs[i, 0], signs[i, 1], signs[i, 2]
            for j in range(2):
                b1, b2, b3 = rows[j, 0], rows[j, 1], rows[j, 2]
                sb1, sb2, sb3 = signs[j, 0], signs[j, 1], signs[j, 2]
                m11, m12, m13 = M[a1 * 4 + b1, k], M[a1 * 4 + b2, k], M[a1 * 4 + b3, k]
                m21, m22, m23 = M[a2 * 4 + b1, k], M[a2 * 4 + b2, k], M[a2 * 4 + b3, k]
                m31, m32, m33 = M[a3 * 4 + b1, k], M[a3 * 4 + b2, k], M[a3 * 4 + b3, k]
                y = out[n, h + i, w + j]
                for f in range(F):
                    r1 = sb1 * m11[f] + sb2 * m12[f] + sb3 * m13[f]
                    r2 = sb1 * m21[f] + sb2 * m22[f] + sb3 * m23[f]
                    r3 = sb1 * m31[f] + sb2 * m32[f] + sb3 * m33[f]
                    y[f] = sa1 * r1 + sa2 * r2 + sa3 * r3


def _to_nchw(buf: Array, out: Array) -> None:  # pragma: no cover - Numba
    """out (N, F, Ho, Wo) = buf (N, >= Ho, >= Wo, F): (W, F) blocks turned into (F, W) blocks."""
    N, F, Ho, Wo = out.shape
    for n in prange(N):
        for h in range(Ho):
            row = buf[n, h]
            for f in range(F):
                dst = out[n, f, h]
                for w in range(Wo):
                    dst[w] = row[w, f]


_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}
PAD_NHWC = numba_cache.serial_and_parallel(_pad_nhwc, **_OPTIONS)
INPUT_TRANSFORM = numba_cache.serial_and_parallel(_input_transform, **_OPTIONS)
OUTPUT_TRANSFORM = numba_cache.serial_and_parallel(_output_transform, **_OPTIONS)
TO_NCHW = numba_cache.serial_and_parallel(_to_nchw, **_OPTIONS)


# ----------------------------------------------------------------------------- the operations
def _sizes(x_shape: tuple, padding: tuple) -> tuple:
    """(Ho, Wo, Th, Tw): the output and its 2x2 tiles."""
    H, W = x_shape[2], x_shape[3]
    Ho, Wo = H + 2 * padding[0] - 2, W + 2 * padding[1] - 2
    return Ho, Wo, (Ho + 1) // 2, (Wo + 1) // 2


def _padded(x: Array, padding: tuple, Th: int, Tw: int, buffer: Callable) -> Array:
    """x (N, C, H, W) as a zero-padded NHWC buffer holding every tile's 4x4 patch."""
    N, C, H, W = x.shape
    xp = buffer("winograd_x", (N, 2 * Th + 2, 2 * Tw + 2, C), x.dtype)
    with cpu_threads.choose(cpu_threads.key("winograd_pad", x.dtype), x.size) as par:
        PAD_NHWC[par](x, padding[0], padding[1], xp)
    return xp


def _chunks(T: int) -> range:
    return range(0, T, CHUNK_TILES)


def forward(x: Array, w: Array, padding: tuple, buffer: Callable) -> Array:
    """out (N, F, Ho, Wo) = the correlation of x (N, C, H, W) with w (F, C, 3, 3), stride 1,
    zero padding (ph, pw) <= 2; ``buffer(slot, shape, dtype)`` reusable scratch arrays."""
    N, C = x.shape[:2]
    F = w.shape[0]
    Ho, Wo, Th, Tw = _sizes(x.shape, padding)
    xp = _padded(x, padding, Th, Tw, buffer)
    U = filter_transform(w)
    y = buffer("winograd_y", (N, 2 * Th, 2 * Tw, F), x.dtype)
    V = buffer("winograd_v", (16, CHUNK_TILES, C), x.dtype)
    M = buffer("winograd_m", (16, CHUNK_TILES, F), x.dtype)
    T = N * Th * Tw
    bt = (BT_ROWS, BT_SIGNS.astype(x.dtype))
    at = (AT_ROWS, AT_SIGNS.astype(x.dtype))
    key_in = cpu_threads.key("winograd_in", x.dtype)
    key_out = cpu_threads.key("winograd_out", x.dtype)
    for t0 in _chunks(T):
        nt = min(CHUNK_TILES, T - t0)
        with cpu_threads.choose(key_in, nt * C) as par:
            INPUT_TRANSFORM[par](xp, t0, nt, Th, Tw, *bt, V)
        for xi in range(16):
            cpu_blas.matmul_into(V[xi, :nt], U[xi], M[xi, :nt])
        with cpu_threads.choose(key_out, nt * F) as par:
            OUTPUT_TRANSFORM[par](M, t0, nt, Th, Tw, *at, y)
    out = numpy.empty((N, F, Ho, Wo), x.dtype)
    with cpu_threads.choose(cpu_threads.key("winograd_nchw", x.dtype), out.size) as par:
        TO_NCHW[par](y, out)
    return out


def backward(
    dout: Array,
    x: Array,
    w: Array,
    padding: tuple,
    input_grad: bool,
    buffer: Callable,
) -> tuple:
    """(dx or None, dw) of forward for the output gradient dout (N, F, Ho, Wo)."""
    N, C = x.shape[:2]
    F = w.shape[0]
    Ho, Wo, Th, Tw = _sizes(x.shape, padding)
    xp = _padded(x, padding, Th, Tw, buffer)
    dout = numpy.ascontiguousarray(dout)
    dyp = buffer("winograd_dy", (N, 2 * Th + 2, 2 * Tw + 2, F), x.dtype)
    with cpu_threads.choose(cpu_threads.key("winograd_pad", x.dtype), dout.size) as par:
        PAD_NHWC[par](dout, 0, 0, dyp)
    V = buffer("winograd_v", (16, CHUNK_TILES, C), x.dtype)
    dM = buffer("winograd_m", (16, CHUNK_TILES, F), x.dtype)
    dU = numpy.zeros((16, F, C), x.dtype)
    T = N * Th * Tw
    bt = (BT_ROWS, BT_SIGNS.astype(x.dtype))
    a = (A_ROWS, A_SIGNS.astype(x.dtype))
    key_in = cpu_threads.key("winograd_in", x.dtype)
    for t0 in _chunks(T):
        nt = min(CHUNK_TILES, T - t0)
        with cpu_threads.choose(key_in, nt * C) as par:
            INPUT_TRANSFORM[par](xp, t0, nt, Th, Tw, *bt, V)
        with cpu_threads.choose(key_in, nt * F) as par:
            INPUT_TRANSFORM[par](dyp, t0, nt, Th, Tw, *a, dM)  # dM = A dY A^T
        for xi in range(16):  # dU_xi (F, C) += dM_xi^T (F, nt) @ V_xi (nt, C)
            cpu_blas.matmul_into(dM[xi, :nt].T, V[xi, :nt], dU[xi], accumulate=True)
    dw = filter_gradient(dU, x.dtype)
    dx = None
    if input_grad:  # the correlation of dout with the filters turned and transposed
        w_turned = numpy.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        dx = forward(dout, w_turned, (2 - padding[0], 2 - padding[1]), buffer)
    return dx, dw
