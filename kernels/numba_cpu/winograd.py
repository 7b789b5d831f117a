"""3x3 convolution, stride 1, by Winograd's minimal filtering F(m x m, 3x3) on the CPU: m = 4 (4x
fewer multiplies than the direct sum) or m = 2 (2.25x), as (m + 2)^2 matrix products per chunk of
tiles.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). The output is cut
into m x m tiles; tile (ti, tj) of image n reads the a x a input patch d (a = m + 2) at rows
m ti - ph + (0 .. a - 1), columns m tj - pw + (0 .. a - 1) (zero outside the image), and for one
input and output channel

    Y (m x m) = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, a x a)

is the correlation Y[i, j] = sum_pq g[p, q] d[i + p, j + q] exactly (in real arithmetic), with
the matrices of TRANSFORMS (F(2x2, 3x3): section 4.1 of the paper; F(4x4, 3x3): section 4.2).
Summed over input channels the elementwise products become, for each of the a^2 positions xi of
the transforms, one matrix product: M_xi (T, F) = V_xi (T, C) @ U_xi (C, F) with V = B^T d B per
(tile, channel) and U = G g G^T per (channel, filter).

Backward, from the same identity: dM = A dY A^T per tile (dY's m x m tile); the weight gradient
dU_xi (F, C) = dM_xi^T @ V_xi summed over tiles, then dg = G^T dU G; the input gradient is the
correlation of dY with the filters turned 180 degrees and transposed (C and F swapped), padding
2 - p: this same forward.

Layouts. Outputs of PLANES_MIN_TILES tiles or more per image (32x32 and up with F(4x4)) run
winograd_planes.py's: NCHW planes read and written where they lie, the transforms vectorized
over tiles, a block of images per thread with its own products. Smaller maps (16x16, 8x8: too
few tiles per plane for loops over tiles, while their many channels make long loops over
channels) run this module's: x is copied once into a zero-padded NHWC buffer (channels
contiguous: the transforms run vectorized over channels); V and M hold a chunk of CHUNK_TILES
tiles; the output transform writes an NHWC buffer of whole tiles, turned into NCHW at the end.
Each transform runs in two passes of one-dimensional transforms (rows, then columns: L d L^T =
(L (L d)^T)^T), each entry a loop over the channels that sums at most five rows. The a^2
products of a chunk are called from Numba (blas_call.py), split over Numba's threads with one
BLAS thread each, where the BLAS allows it (NumPy's OpenBLAS, MKL); else from Python, one at a
time on the BLAS's threads. Where Winograd runs at all (kernels/numba_cpu/conv.py): 3x3
kernels, stride 1, padding 0-2, at least MIN_CHANNELS input and output channels; everything
else (and the first layer of a net, 3 input channels) goes through im2col.

Accuracy: the transforms add inputs with weights up to 8 (F(4x4)'s A) and 1/24 (its G), so
float32 results differ from the direct sum by more rounding than F(2x2)'s: measured against
float64 on 64 channels, batch 8 at 32x32, unit normal data, the largest error relative to the
output's largest magnitude was 3.6e-7 for F(2x2) and 5.8e-6 for F(4x4) (the im2col product:
6.0e-7); tests/test_conv.py holds both to float64 sums. F(4x4) is the default for its speed: on
one core, batch 64, forward / backward ms, 64 channels at 32x32 41-45 / 85-96 with F(2x2) and
31-34 / 64-71 with F(4x4); 128 at 16x16 27-30 / 57-61 and 21-26 / 44-52; 256 at 16x16 90-97 /
177-193 and 83-89 / 153-163 (fewer, larger products; the same layout copies; all in the NHWC
layout, before the filter transform became one product). The two layouts, F(4x4), same
machine, bare install, 1 / 2 threads, forward ms: 64 channels at 32x32 28.5 / 21 planes, 42 /
23 NHWC; 32 at 32x32 10.9 / 6.2 and 17.9 / 15.4; 64 at 16x16 12.0 / 6.2 and 12.0 / 7.2; 128 at
16x16 32 / 18 and 30 / 19; 256 at 16x16 101 / 56 and 79 / 51; 256 at 8x8 49 / 26 and 30 / 23.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy
from numba import prange

from gpunet.types import Array

from ..shared import blas_call, cpu_blas, cpu_threads, numba_cache
from . import winograd_planes

#: the transforms of F(m x m, 3x3) by m: B^T (a x a), G (a x 3), A^T (m x a), a = m + 2
TRANSFORMS = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}
#: the output tile side m this module runs (TRANSFORMS' keys)
TILE = 4
#: tiles per chunk: V and M of a chunk ((m + 2)^2 x tiles x channels) stay near the L2 cache
CHUNK_TILES = 1024
#: fewer input or output channels than this: im2col (the transforms cost more than they save)
MIN_CHANNELS = 16
#: tiles per iteration of the transforms' parallel loops (one scratch array each)
TILE_BLOCK = 16
#: this many output tiles per image or more: winograd_planes.py's layout (measured below)
PLANES_MIN_TILES = 64


def eligible(kernel: tuple, stride: tuple, padding: tuple, C: int, F: int) -> bool:
    """Whether conv2d of these sizes runs here (the module docstring)."""
    return (
        tuple(kernel) == (3, 3)
        and tuple(stride) == (1, 1)
        and all(0 <= p <= 2 for p in padding)
        and min(C, F) >= MIN_CHANNELS
    )


def _matrices(m: int) -> tuple:
    """(B^T, G, A^T) of F(m x m, 3x3) in float64."""
    BT, G, AT = (numpy.array(v, numpy.float64) for v in TRANSFORMS[m])
    return BT, G, AT


def filter_transform(w: Array, m: int, layout: str = "CF") -> Array:
    """U (a^2, C, F) = G g G^T of each filter g = w[f, c] (3x3) (``layout`` "FC": (a^2, F, C)),
    in w's dtype, computed in float64 as one product: vec(G g G^T) = (G kron G) vec(g) for
    row-major vec, so the a^2 x 9 matrix G kron G times the 9 x (F C) filters gives every U_xi at
    once (a batch of F C tiny G @ g @ G^T products took 33 ms for 256 x 256 filters, this 3)."""
    _, G, _ = _matrices(m)
    a, (F, C) = G.shape[0], w.shape[:2]
    u = numpy.kron(G, G) @ w.reshape(F * C, 9).astype(numpy.float64).T  # (a^2, F C)
    u = u.reshape(a * a, F, C)
    return numpy.ascontiguousarray(u if layout == "FC" else u.transpose(0, 2, 1), dtype=w.dtype)


def filter_gradient(du: Array, m: int, dtype: numpy.dtype) -> Array:
    """dg (F, C, 3, 3) = G^T dU G from dU (a^2, F, C): (G kron G)^T times dU's a^2 x (F C)."""
    _, G, _ = _matrices(m)
    a, F, C = G.shape[0], du.shape[1], du.shape[2]
    dg = numpy.kron(G, G).T @ du.reshape(a * a, F * C).astype(numpy.float64)  # (9, F C)
    return numpy.ascontiguousarray(dg.T.reshape(F, C, 3, 3), dtype=dtype)


def terms(L: Array, dtype: numpy.dtype) -> tuple:
    """A matrix L (q x p) as its rows' nonzero terms: (count (q,), index (q, 5), coefficient
    (q, 5)), unused places index 0 with coefficient 0. Every row of TRANSFORMS has at most 5."""
    q = L.shape[0]
    count = numpy.zeros(q, numpy.int64)
    index = numpy.zeros((q, 5), numpy.int64)
    coef = numpy.zeros((q, 5), dtype)
    for r in range(q):
        nz = numpy.flatnonzero(L[r])
        count[r] = len(nz)
        index[r, : len(nz)] = nz
        coef[r, : len(nz)] = L[r, nz]
    return count, index, coef


# ----------------------------------------------------------------------------- Numba kernels
# The arrays are seen as rows of channels: a 2-D (rows, C) view, a transform entry a row. Each
# entry of a one-dimensional transform L x (L's row r: its terms) sums at most five rows; one
# loop over the channels per entry and per term count is a loop over two arrays, which LLVM
# vectorizes (one loop writing all of a transform's entries at once ran scalar: too many arrays
# to check for overlap; views per row cost as much as the sums at 64 channels).
def _combine(
    out: Array, o: int, src: Array, r0: int, r1: int, r2: int, r3: int, r4: int, c: Array, k: int
) -> None:  # pragma: no cover - Numba
    """out[o] = the sum of the first k of c[t] src[r_t] (k <= 5)."""
    n = out.shape[1]
    if k == 1:
        for i in range(n):
            out[o, i] = c[0] * src[r0, i]
    elif k == 2:
        for i in range(n):
            out[o, i] = c[0] * src[r0, i] + c[1] * src[r1, i]
    elif k == 3:
        for i in range(n):
            out[o, i] = c[0] * src[r0, i] + c[1] * src[r1, i] + c[2] * src[r2, i]
    elif k == 4:
        for i in range(n):
            out[o, i] = (c[0] * src[r0, i] + c[1] * src[r1, i] + c[2] * src[r2, i]
                         + c[3] * src[r3, i])  # fmt: skip
    else:
        for i in range(n):
            out[o, i] = (c[0] * src[r0, i] + c[1] * src[r1, i] + c[2] * src[r2, i]
                         + c[3] * src[r3, i] + c[4] * src[r4, i])  # fmt: skip


combine = numba_cache.njit(_combine, inline="always", error_model="numpy")


def _tile_corner(t: int, Th: int, Tw: int, m: int) -> tuple:
    """(image, row, column) of tile t's first output: tiles run image by image, row-major over
    the Th x Tw tiles of each."""
    per_image = Th * Tw
    return t // per_image, m * ((t % per_image) // Tw), m * (t % Tw)


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


def _patch_transform(
    src: Array,
    Hp: int,
    Wp: int,
    t0: int,
    nt: int,
    Th: int,
    Tw: int,
    m: int,
    p: int,
    count: Array,
    index: Array,
    coef: Array,
    V: Array,
) -> None:  # pragma: no cover - Numba
    """V[(a q + b) nv + t - t0] = (L d L^T)[a, b] of tiles t0 .. t0 + nt (tile t: image
    t // (Th Tw), then row-major over the Th x Tw tiles, corner m (ti, tj)), d = the tile's p x p
    patch of src, an (N, Hp, Wp) grid of rows (N Hp Wp, C); V (q^2 nv, C); L (q x p) given by its
    terms (count, index, coef). Rows first (S = L d, a scratch array per block of tiles), then
    columns."""
    q = count.shape[0]
    C = src.shape[1]
    nv = V.shape[0] // (q * q)
    for blk in prange((nt + TILE_BLOCK - 1) // TILE_BLOCK):
        S = numpy.empty((q * p, C), src.dtype)
        for k in range(blk * TILE_BLOCK, min(nt, (blk + 1) * TILE_BLOCK)):
            n, h, w = tile_corner(t0 + k, Th, Tw, m)
            base = (n * Hp + h) * Wp + w
            for a in range(q):
                ia = index[a]
                r0, r1, r2 = ia[0] * Wp + base, ia[1] * Wp + base, ia[2] * Wp + base
                r3, r4 = ia[3] * Wp + base, ia[4] * Wp + base
                for j in range(p):  # S[a, j] = sum_i L[a, i] d[i, j]
                    combine(S, a * p + j, src, r0 + j, r1 + j, r2 + j, r3 + j, r4 + j, coef[a],
                            count[a])  # fmt: skip
            for a in range(q):
                o = a * p
                for b in range(q):  # V[a, b] = sum_j S[a, j] L[b, j]
                    ib = index[b]
                    combine(V, (a * q + b) * nv + k, S, ib[0] + o, ib[1] + o, ib[2] + o,
                            ib[3] + o, ib[4] + o, coef[b], count[b])  # fmt: skip


def _output_transform(
    M: Array,
    t0: int,
    nt: int,
    Th: int,
    Tw: int,
    count: Array,
    index: Array,
    coef: Array,
    out: Array,
    Ho: int,
    Wo: int,
) -> None:  # pragma: no cover - Numba
    """out[(n Ho + h + i) Wo + w + j] = (A^T mt A)[i, j] of tiles t0 .. t0 + nt, mt the tile's
    a x a rows of M (a^2 nm, F) (row (r a + b) nm + t - t0); out an (N, Ho, Wo) grid of rows of
    whole m x m tiles; A^T (m x a) given by its terms. Rows first (S = A^T mt), then columns."""
    m = count.shape[0]
    a = m + 2
    F = M.shape[1]
    nm = M.shape[0] // (a * a)
    for blk in prange((nt + TILE_BLOCK - 1) // TILE_BLOCK):
        S = numpy.empty((m * a, F), M.dtype)
        for k in range(blk * TILE_BLOCK, min(nt, (blk + 1) * TILE_BLOCK)):
            n, h, w = tile_corner(t0 + k, Th, Tw, m)
            for i in range(m):
                ii = index[i]
                r0, r1, r2 = ii[0] * a * nm + k, ii[1] * a * nm + k, ii[2] * a * nm + k
                r3, r4 = ii[3] * a * nm + k, ii[4] * a * nm + k
                for b in range(a):  # S[i, b] = sum_r A^T[i, r] mt[r, b]
                    o = b * nm
                    combine(S, i * a + b, M, r0 + o, r1 + o, r2 + o, r3 + o, r4 + o, coef[i],
                            count[i])  # fmt: skip
            for i in range(m):
                row, o = (n * Ho + h + i) * Wo + w, i * a
                for j in range(m):  # out[i, j] = sum_b S[i, b] A^T[j, b]
                    ij = index[j]
                    combine(out, row + j, S, ij[0] + o, ij[1] + o, ij[2] + o, ij[3] + o,
                            ij[4] + o, coef[j], count[j])  # fmt: skip


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


def _products(
    A: Array, B: Array, C: Array, ta: int, M: int, N: int, K: int, beta: float, fn: int, ilp64: bool
) -> None:  # pragma: no cover - Numba
    """C[xi] (M x N) = op(A[xi]) @ B[xi] + beta C[xi] for every position xi, one BLAS gemm each
    (blas_call.py), op(A) = A (ta NO_TRANS) or A^T (TRANS); A, B, C (a^2, rows, cols) arrays with
    C-contiguous matrices, of which the products use the first rows."""
    one = C.dtype.type(1)
    for xi in prange(A.shape[0]):
        blas_call.gemm(fn, ilp64, ta, blas_call.NO_TRANS, M, N, K, one, A[xi].ctypes.data,
                       A.shape[2], B[xi].ctypes.data, B.shape[2], beta, C[xi].ctypes.data,
                       C.shape[2])  # fmt: skip


_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}
PAD_NHWC = numba_cache.serial_and_parallel(_pad_nhwc, **_OPTIONS)
PATCH_TRANSFORM = numba_cache.serial_and_parallel(_patch_transform, **_OPTIONS)
OUTPUT_TRANSFORM = numba_cache.serial_and_parallel(_output_transform, **_OPTIONS)
TO_NCHW = numba_cache.serial_and_parallel(_to_nchw, **_OPTIONS)
PRODUCTS = numba_cache.serial_and_parallel(_products, **_OPTIONS)


# ----------------------------------------------------------------------------- the operations
def _sizes(x_shape: tuple, padding: tuple, m: int) -> tuple:
    """(Ho, Wo, Th, Tw): the output and its m x m tiles."""
    H, W = x_shape[2], x_shape[3]
    Ho, Wo = H + 2 * padding[0] - 2, W + 2 * padding[1] - 2
    return Ho, Wo, -(-Ho // m), -(-Wo // m)


def _padded(
    slot: str, x: Array, padding: tuple, Th: int, Tw: int, m: int, buffer: Callable
) -> Array:
    """x (N, C, H, W) as a zero-padded NHWC buffer holding every tile's (m + 2)^2 patch."""
    N, C = x.shape[:2]
    xp = buffer(slot, (N, m * Th + 2, m * Tw + 2, C), x.dtype)
    with cpu_threads.choose(cpu_threads.key("winograd_pad", x.dtype), x.size) as par:
        PAD_NHWC[par](x, padding[0], padding[1], xp)
    return xp


def _each_position(
    A: Array, B: Array, C: Array, ta: int, M: int, N: int, K: int, beta: float, fn: tuple | None
) -> None:
    """C[xi] = op(A[xi]) @ B[xi] + beta C[xi] (``_products``) for the a^2 positions: on Numba's
    threads, each product on one BLAS thread, where the BLAS's gemm can be called from Numba
    (``fn``: blas_call.gemm_function's); else one product at a time from here, each on the
    BLAS's threads."""
    if fn is not None:  # inside _one_blas_thread
        key = cpu_threads.key("winograd_products", A.dtype)
        with cpu_threads.choose(key, A.shape[0] * M * N * K) as par:
            PRODUCTS[par](A, B, C, ta, M, N, K, A.dtype.type(beta), *fn)
        return
    for xi in range(A.shape[0]):
        a = A[xi, :M] if ta == blas_call.NO_TRANS else A[xi, :K].T
        cpu_blas.matmul_into(a, B[xi, :K], C[xi, :M], accumulate=beta != 0)


def _one_blas_thread(fn: tuple | None) -> contextlib.AbstractContextManager:
    """The BLAS on one thread per product while a convolution runs, where its products are made
    on Numba's threads (``_each_position``): the positions' products then split over the cores,
    and no product leaves BLAS threads spinning against the transforms' parallel loops (the
    filter transform's small product did, on two threads, and the stall watch of
    kernels/shared/cpu_threads.py then turned every kernel serial)."""
    if fn is None:
        return contextlib.nullcontext()
    return cpu_blas.one_thread_per_product()


def _tables(m: int, dtype: numpy.dtype) -> tuple:
    """The terms of B^T, A^T and A (the transforms' one-dimensional steps) in ``dtype``."""
    BT, _, AT = _matrices(m)
    return terms(BT, dtype), terms(AT, dtype), terms(AT.T, dtype)


def forward(x: Array, w: Array, padding: tuple, buffer: Callable, m: int = 0) -> Array:
    """out (N, F, Ho, Wo) = the correlation of x (N, C, H, W) with w (F, C, 3, 3), stride 1,
    zero padding (ph, pw) <= 2, by F(m x m, 3x3) (m: TILE unless given); ``buffer(slot, shape,
    dtype)`` reusable scratch arrays. (Split over Python threads like im2col's samples, its
    chunks ran slower than on Numba's threads with MKL's: 28 against 19 ms for 64 channels at
    32x32 on two threads -- kernels/numba_cpu/conv.py splits im2col only.)"""
    fn = blas_call.gemm_function(x.dtype, cpu_blas.active())
    with _one_blas_thread(fn):
        return _forward(x, w, padding, buffer, m or TILE, fn)


def _planes(x_shape: tuple, padding: tuple, m: int) -> bool:
    """Whether the output has PLANES_MIN_TILES tiles or more per image: winograd_planes.py's
    layout, where Numba can call the BLAS."""
    _, _, Th, Tw = _sizes(x_shape, padding, m)
    return Th * Tw >= PLANES_MIN_TILES


def _forward(
    x: Array, w: Array, padding: tuple, buffer: Callable, m: int, fn: tuple | None
) -> Array:
    if fn is not None and _planes(x.shape, padding, m):
        return winograd_planes.forward(
            x, filter_transform(w, m, "FC"), padding, m, _tables(m, x.dtype), fn, buffer
        )
    a = m + 2
    N, C = x.shape[:2]
    F = w.shape[0]
    Ho, Wo, Th, Tw = _sizes(x.shape, padding, m)
    xp = _padded("winograd_x", x, padding, Th, Tw, m, buffer)
    Hp, Wp = xp.shape[1], xp.shape[2]
    U = filter_transform(w, m)
    y = buffer("winograd_y", (N, m * Th, m * Tw, F), x.dtype)
    bt, at, _ = _tables(m, x.dtype)
    key_in = cpu_threads.key("winograd_in", x.dtype)
    key_out = cpu_threads.key("winograd_out", x.dtype)
    V = buffer("winograd_v", (a * a, CHUNK_TILES, C), x.dtype)
    Mt = buffer("winograd_m", (a * a, CHUNK_TILES, F), x.dtype)
    T = N * Th * Tw
    for t0 in range(0, T, CHUNK_TILES):
        nt = min(CHUNK_TILES, T - t0)
        with cpu_threads.choose(key_in, nt * C) as par:
            PATCH_TRANSFORM[par](xp.reshape(-1, C), Hp, Wp, t0, nt, Th, Tw, m, a, *bt,
                                 V.reshape(-1, C))  # fmt: skip
        _each_position(V, U, Mt, blas_call.NO_TRANS, nt, F, C, 0.0, fn)
        with cpu_threads.choose(key_out, nt * F) as par:
            OUTPUT_TRANSFORM[par](Mt.reshape(-1, F), t0, nt, Th, Tw, *at, y.reshape(-1, F),
                                  m * Th, m * Tw)  # fmt: skip
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
    m: int = 0,
) -> tuple:
    """(dx or None, dw) of forward for the output gradient dout (N, F, Ho, Wo)."""
    fn = blas_call.gemm_function(x.dtype, cpu_blas.active())
    with _one_blas_thread(fn):
        return _backward(dout, x, w, padding, input_grad, buffer, m or TILE, fn)


def _backward(
    dout: Array,
    x: Array,
    w: Array,
    padding: tuple,
    input_grad: bool,
    buffer: Callable,
    m: int,
    fn: tuple | None,
) -> tuple:
    dout = numpy.ascontiguousarray(dout)
    if fn is not None and _planes(x.shape, padding, m):
        dU = winograd_planes.weight_grad(dout, x, padding, m, _tables(m, x.dtype), fn, buffer)
    else:
        dU = _weight_grad_chunks(dout, x, w.shape[0], padding, buffer, m, fn)
    dw = filter_gradient(dU, m, x.dtype)
    dx = None
    if input_grad:  # the correlation of dout with the filters turned and transposed
        w_turned = numpy.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        dx = forward(dout, w_turned, (2 - padding[0], 2 - padding[1]), buffer, m)
    return dx, dw


def _weight_grad_chunks(
    dout: Array, x: Array, F: int, padding: tuple, buffer: Callable, m: int, fn: tuple | None
) -> Array:
    """dU (a^2, F, C) = sum over tiles of dM_xi^T V_xi, chunk by chunk in the NHWC layout."""
    a = m + 2
    N, C = x.shape[:2]
    Ho, Wo, Th, Tw = _sizes(x.shape, padding, m)
    xp = _padded("winograd_x", x, padding, Th, Tw, m, buffer)
    Hp, Wp = xp.shape[1], xp.shape[2]
    dyp = _padded("winograd_dy", dout, (0, 0), Th, Tw, m, buffer)
    bt, _, am = _tables(m, x.dtype)
    key_in = cpu_threads.key("winograd_in", x.dtype)
    V = buffer("winograd_v", (a * a, CHUNK_TILES, C), x.dtype)
    dM = buffer("winograd_m", (a * a, CHUNK_TILES, F), x.dtype)
    dU = numpy.zeros((a * a, F, C), x.dtype)
    T = N * Th * Tw
    for t0 in range(0, T, CHUNK_TILES):
        nt = min(CHUNK_TILES, T - t0)
        with cpu_threads.choose(key_in, nt * C) as par:
            PATCH_TRANSFORM[par](xp.reshape(-1, C), Hp, Wp, t0, nt, Th, Tw, m, a, *bt,
                                 V.reshape(-1, C))  # fmt: skip
        with cpu_threads.choose(key_in, nt * F) as par:  # dM = A dY A^T
            PATCH_TRANSFORM[par](dyp.reshape(-1, F), Hp, Wp, t0, nt, Th, Tw, m, m, *am,
                                 dM.reshape(-1, F))  # fmt: skip
        # dU_xi (F, C) += dM_xi^T (F, nt) @ V_xi (nt, C)
        _each_position(dM, V, dU, blas_call.TRANS, F, C, nt, 1.0, fn)
    return dU
