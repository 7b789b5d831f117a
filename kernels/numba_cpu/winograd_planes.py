"""3x3 convolution by Winograd's F(m x m, 3x3) on NCHW planes, a block of images per thread: the
layout for large feature maps (32x32 and up); winograd.py has the formula, the matrices and the
channel-vectorized layout that the smaller maps run.

The same algebra as winograd.py (Lavin & Gray 2016): per tile, V = B^T d B of the a x a input
patch d (a = m + 2) and per filter U = G g G^T; the a^2 positions xi of a tile are a^2 matrix
products M_xi (F x tiles) = U_xi (F x C) @ V_xi (C x tiles); the output tile is A^T M A. What
differs is how the work is laid out:

* **No copies of the whole tensor.** The input transform reads x's planes (n, c) where they
  lie, and the output transform writes out's planes: no padded NHWC copy of x and no NCHW copy
  of the result (the channel-vectorized layout spends ~40 % of its time in those two).
* **Vectorized over tiles.** A plane's transform is one-dimensional transforms over whole
  planes of tiles: the plane is copied into a zero-padded buffer Xp whose rows are grouped by
  row mod m (rows m pos + g at pos, in group g) and split by column mod m (D_k[i] = Xp[m i + k]),
  so that entry (ti, tj) of every tile's patch, for one (row i, column j) of the patch, is one
  contiguous run of D: column j of tile tj is D_{j mod m}[tj + j // m], row i of tile ti is
  group i mod m at position ti + i // m. Each entry of L d (L = B^T: R[b] = sum_j L[b, j]
  D_{j mod m}[. + j // m]) and of (L d) L^T (V[a, b] = sum_i L[a, i] R[b] at row group i mod m,
  shifted i // m rows) is then a loop over a whole plane of tiles, which LLVM vectorizes. The
  one seam: the last tile of a row reads columns m Tw, m Tw + 1 from the next row's start; those
  (at most 2 Hq per entry) are put right from the edge columns E kept aside.
* **A block of images per thread.** One prange iteration transforms the C planes of its images
  into V (C, a^2, tiles), makes the a^2 products by BLAS from Numba (blas_call.py, one thread
  each), and transforms the F planes of M (F, a^2, tiles) into out: V and M of BLOCK_TILES tiles
  stay in the core's L2 cache, and the two cores never wait for each other.

The backward pass: dU_xi (F, C) = sum over tiles dM_xi V_xi^T with dM = A dY A^T (the same
plane transform with L = A, an m x m patch per tile, no overlap), one partial dU per thread,
summed; the input gradient is the forward pass of dY with the filters turned (winograd.py).
Unsigned indices throughout the loops: with signed ones Numba adds a negative-index check to
every access and LLVM did not vectorize the sums (9x slower).

Measured on the 2-vCPU Intel Xeon development machine (AVX-512), batch 64, 64 channels at
32x32, F(4x4), forward: 27-29 ms on one core against 37-42 in the NHWC layout, 14-15 ms on two
against 23-30; backward 54-60 / 30-32 ms against 83-90 / 51-67 (BENCHMARKS.md).
"""

from __future__ import annotations

import numba
import numpy
from numba import prange

from gpunet.types import Array

from ..shared import blas_call, cpu_threads, numba_cache

#: tiles per block of images (one prange iteration): V and M of a block stay near the L2 cache
BLOCK_TILES = 64

u64 = numba.uint64


def _lincomb(
    out: Array,
    o: int,
    src: Array,
    s0: int,
    s1: int,
    s2: int,
    s3: int,
    s4: int,
    c: Array,
    k: int,
    n: int,
) -> None:  # pragma: no cover - Numba
    """out[o + t] = sum over the first k (<= 5) of c[u] src[s_u + t], for t < n (flat arrays)."""
    c0, c1, c2, c3, c4 = c[0], c[1], c[2], c[3], c[4]
    o, n = u64(o), u64(n)
    s0, s1, s2, s3, s4 = u64(s0), u64(s1), u64(s2), u64(s3), u64(s4)
    if k == 1:
        for t in range(n):
            out[o + t] = c0 * src[s0 + t]
    elif k == 2:
        for t in range(n):
            out[o + t] = c0 * src[s0 + t] + c1 * src[s1 + t]
    elif k == 3:
        for t in range(n):
            out[o + t] = c0 * src[s0 + t] + c1 * src[s1 + t] + c2 * src[s2 + t]
    elif k == 4:
        for t in range(n):
            out[o + t] = (c0 * src[s0 + t] + c1 * src[s1 + t] + c2 * src[s2 + t]
                          + c3 * src[s3 + t])  # fmt: skip
    else:
        for t in range(n):
            out[o + t] = (c0 * src[s0 + t] + c1 * src[s1 + t] + c2 * src[s2 + t]
                          + c3 * src[s3 + t] + c4 * src[s4 + t])  # fmt: skip


lincomb = numba_cache.njit(_lincomb, inline="always", error_model="numpy", fastmath={"contract"})


def _fill(
    src: Array, Xp: Array, E: Array, ph: int, pw: int, m: int, p: int, G: int, Wq: int
) -> None:  # pragma: no cover - Numba
    """Xp[(g G + pos) Wq + v] = the zero-padded plane src at row m pos + g, column v < Wq;
    E[s, e] = its column Wq + e (e < p - m) of storage row s = g G + pos. Only the positions
    inside the image are written: the zeros around them are the caller's, written once."""
    H, W = src.shape
    for g in range(m):
        for pos in range(G):
            r = m * pos + g - ph
            if r < 0 or r >= H:
                continue
            s = g * G + pos
            row = src[r]
            base = u64(s * Wq + pw)
            for v in range(u64(min(W, Wq - pw))):
                Xp[base + v] = row[v]
            for e in range(p - m):
                col = Wq + e - pw
                E[s, e] = row[col] if 0 <= col < W else 0


fill = numba_cache.njit(_fill, error_model="numpy")


def _plane_in(
    src: Array,
    ph: int,
    pw: int,
    Th: int,
    Tw: int,
    m: int,
    p: int,
    count: Array,
    index: Array,
    coef: Array,
    Xp: Array,
    E: Array,
    D: Array,
    R: Array,
    V: Array,
    vo: int,
    vstride: int,
) -> None:  # pragma: no cover - Numba
    """V[vo + (a q + b) vstride + t] = (L d_t L^T)[a, b] for the Th x Tw tiles t of the plane
    src (tile (ti, tj): the p x p patch at rows m ti - ph.., columns m tj - pw..); L (q x p) by
    its terms (winograd.terms); Xp, E, D, R scratch (the module docstring's names)."""
    q = count.shape[0]
    G = Th + 1
    Wq, L = m * Tw, m * G * Tw
    L1 = L + 1  # D's rows: one more, read by the last tile of the last row (put right below)
    fill(src, Xp, E, ph, pw, m, p, G, Wq)
    um = u64(m)
    for k in range(m):  # D_k[i] = Xp[m i + k]
        o, uk = u64(k * L1), u64(k)
        for i in range(u64(L)):
            D[o + i] = Xp[um * i + uk]
    for b in range(q):  # R[b][i] = sum_j L[b, j] D_{j mod m}[i + j // m]
        ib = index[b]
        lincomb(R, b * L, D, (ib[0] % m) * L1 + ib[0] // m, (ib[1] % m) * L1 + ib[1] // m,
                (ib[2] % m) * L1 + ib[2] // m, (ib[3] % m) * L1 + ib[3] // m,
                (ib[4] % m) * L1 + ib[4] // m, coef[b], count[b], L)  # fmt: skip
        for u in range(count[b]):  # the seam: columns m Tw + (j - m) came from the next row
            j = ib[u]
            if j >= m:
                cj = coef[b, u]
                for s in range(m * G):
                    wrong = D[(j - m) * L1 + (s + 1) * Tw]
                    R[b * L + s * Tw + Tw - 1] += cj * (E[s, j - m] - wrong)
    GT = G * Tw
    for a in range(q):  # V[a, b] = sum_i L[a, i] R[b] at row group i mod m, i // m rows on
        ia = index[a]
        s0 = (ia[0] % m) * GT + (ia[0] // m) * Tw
        s1 = (ia[1] % m) * GT + (ia[1] // m) * Tw
        s2 = (ia[2] % m) * GT + (ia[2] // m) * Tw
        s3 = (ia[3] % m) * GT + (ia[3] // m) * Tw
        s4 = (ia[4] % m) * GT + (ia[4] // m) * Tw
        for b in range(q):
            o = b * L
            lincomb(V, vo + (a * q + b) * vstride, R, s0 + o, s1 + o, s2 + o, s3 + o, s4 + o,
                    coef[a], count[a], Th * Tw)  # fmt: skip


plane_in = numba_cache.njit(_plane_in, error_model="numpy", fastmath={"contract"})


def _interleave(
    Y: Array, yo: int, S: Array, so: int, P: int, A: Array
) -> None:  # pragma: no cover - Numba
    """Y[yo + m t + j] = sum_b A[j, b] S[so + b P + t] for t < P, j < m (A: A^T, m x a, dense):
    the output tiles' rows, written in place in a row of m Tw outputs. m = 4 and 2 with the
    coefficients in registers and one store stream (LLVM vectorizes it); others scalar."""
    m, a = A.shape
    yo, so, P = u64(yo), u64(so), u64(P)
    if m == 4:
        c00, c01, c02, c03, c04, c05 = A[0, 0], A[0, 1], A[0, 2], A[0, 3], A[0, 4], A[0, 5]
        c10, c11, c12, c13, c14, c15 = A[1, 0], A[1, 1], A[1, 2], A[1, 3], A[1, 4], A[1, 5]
        c20, c21, c22, c23, c24, c25 = A[2, 0], A[2, 1], A[2, 2], A[2, 3], A[2, 4], A[2, 5]
        c30, c31, c32, c33, c34, c35 = A[3, 0], A[3, 1], A[3, 2], A[3, 3], A[3, 4], A[3, 5]
        for t in range(P):
            s0, s1, s2 = S[so + t], S[so + P + t], S[so + u64(2) * P + t]
            s3, s4, s5 = S[so + u64(3) * P + t], S[so + u64(4) * P + t], S[so + u64(5) * P + t]
            y = yo + u64(4) * t
            Y[y] = c00 * s0 + c01 * s1 + c02 * s2 + c03 * s3 + c04 * s4 + c05 * s5
            Y[y + u64(1)] = c10 * s0 + c11 * s1 + c12 * s2 + c13 * s3 + c14 * s4 + c15 * s5
            Y[y + u64(2)] = c20 * s0 + c21 * s1 + c22 * s2 + c23 * s3 + c24 * s4 + c25 * s5
            Y[y + u64(3)] = c30 * s0 + c31 * s1 + c32 * s2 + c33 * s3 + c34 * s4 + c35 * s5
    elif m == 2:
        c00, c01, c02, c03 = A[0, 0], A[0, 1], A[0, 2], A[0, 3]
        c10, c11, c12, c13 = A[1, 0], A[1, 1], A[1, 2], A[1, 3]
        for t in range(P):
            s0, s1 = S[so + t], S[so + P + t]
            s2, s3 = S[so + u64(2) * P + t], S[so + u64(3) * P + t]
            y = yo + u64(2) * t
            Y[y] = c00 * s0 + c01 * s1 + c02 * s2 + c03 * s3
            Y[y + u64(1)] = c10 * s0 + c11 * s1 + c12 * s2 + c13 * s3
    else:
        for t in range(P):
            for j in range(m):
                acc = A[j, 0] * S[so + t]
                for b in range(1, a):
                    acc += A[j, b] * S[so + u64(b) * P + t]
                Y[yo + u64(m) * t + u64(j)] = acc


interleave = numba_cache.njit(_interleave, error_model="numpy", fastmath={"contract"})


def _plane_out(
    M: Array,
    mo: int,
    mstride: int,
    Th: int,
    Tw: int,
    count: Array,
    index: Array,
    coef: Array,
    A: Array,
    S: Array,
    Y: Array,
    dst: Array,
) -> None:  # pragma: no cover - Numba
    """dst (Ho, Wo) = the tiles A^T mt A of one plane, mt[xi][t] = M[mo + xi mstride + t],
    clipped to dst; A^T by its terms (count, index, coef) and dense (A); S, Y scratch."""
    Ho, Wo = dst.shape
    m = count.shape[0]
    a = m + 2
    P = Th * Tw
    for i in range(m):  # S[i, b] = sum_r A^T[i, r] mt[r, b], over every tile at once
        ii = index[i]
        for b in range(a):
            lincomb(S, (i * a + b) * P, M, mo + (ii[0] * a + b) * mstride,
                    mo + (ii[1] * a + b) * mstride, mo + (ii[2] * a + b) * mstride,
                    mo + (ii[3] * a + b) * mstride, mo + (ii[4] * a + b) * mstride, coef[i],
                    count[i], P)  # fmt: skip
    for i in range(m):  # row i of every tile: Y[i][m t + j] = sum_b S[i, b] A^T[j, b]
        interleave(Y, i * m * P, S, i * a * P, P, A)
    for ti in range(Th):  # output row m ti + i is Y[i]'s run of tile row ti
        for i in range(m):
            h = m * ti + i
            if h < Ho:
                row = dst[h]
                yo = u64(i * m * P + ti * m * Tw)
                for v in range(u64(Wo)):
                    row[v] = Y[yo + v]


plane_out = numba_cache.njit(_plane_out, error_model="numpy", fastmath={"contract"})


def _scratch_in(
    Th: int, Tw: int, m: int, q: int, dtype: numpy.dtype
) -> tuple:  # pragma: no cover - Numba
    """Xp, E, D, R of _plane_in (zeros: Xp's padding is never written)."""
    G = Th + 1
    L = m * G * Tw
    return (numpy.zeros(m * G * m * Tw, dtype), numpy.zeros((m * G, 2), dtype),
            numpy.zeros(m * (L + 1), dtype), numpy.empty(q * L, dtype))  # fmt: skip


scratch_in = numba_cache.njit(_scratch_in, inline="always")


def _forward_blocks(
    x: Array,
    Ut: Array,
    nb: int,
    ph: int,
    pw: int,
    Th: int,
    Tw: int,
    bc: Array,
    bi: Array,
    bk: Array,
    ac: Array,
    ai: Array,
    ak: Array,
    A: Array,
    out: Array,
    work_v: Array,
    work_m: Array,
    fn: int,
    ilp64: bool,
    threaded: bool,
) -> None:  # pragma: no cover - Numba
    """out = x correlated with the filters of Ut (a^2, F, C) = G g G^T, by blocks of nb images
    (one per iteration: input transform, a^2 products, output transform); B^T's terms (bc, bi,
    bk), A^T's (ac, ai, ak) and dense A (m x a); work_v/work_m a row per thread."""
    N, C = x.shape[0], x.shape[1]
    F = Ut.shape[1]
    m = ac.shape[0]
    a = m + 2
    aa, P = a * a, Th * Tw
    one, zero = out.dtype.type(1), out.dtype.type(0)
    for blk in prange((N + nb - 1) // nb):
        n0 = blk * nb
        nimg = min(nb, N - n0)
        NT = nimg * P
        tid = numba.get_thread_id() if threaded else 0  # the thread's rows of the workspace
        V, M = work_v[tid], work_m[tid]
        Xp, E, D, R = scratch_in(Th, Tw, m, a, x.dtype)
        for k in range(nimg * C):  # V (C, a^2, NT)
            c, nl = k // nimg, k % nimg
            plane_in(x[n0 + nl, c], ph, pw, Th, Tw, m, a, bc, bi, bk, Xp, E, D, R, V,
                     c * aa * NT + nl * P, NT)  # fmt: skip
        for xi in range(aa):  # M_xi (F, NT) = U_xi (F, C) @ V_xi (C, NT), rows aa NT apart
            blas_call.gemm(fn, ilp64, blas_call.NO_TRANS, blas_call.NO_TRANS, F, NT, C, one,
                           Ut[xi].ctypes.data, C, V[xi * NT :].ctypes.data, aa * NT, zero,
                           M[xi * NT :].ctypes.data, aa * NT)  # fmt: skip
        S = numpy.empty(m * a * P, x.dtype)
        Y = numpy.empty(m * m * P, x.dtype)
        for k in range(nimg * F):
            f, nl = k // nimg, k % nimg
            plane_out(M, f * aa * NT + nl * P, NT, Th, Tw, ac, ai, ak, A, S, Y, out[n0 + nl, f])


def _weight_grad_blocks(
    x: Array,
    dy: Array,
    nb: int,
    ph: int,
    pw: int,
    Th: int,
    Tw: int,
    bc: Array,
    bi: Array,
    bk: Array,
    mc: Array,
    mi: Array,
    mk: Array,
    work_v: Array,
    work_m: Array,
    dU: Array,
    fn: int,
    ilp64: bool,
    threaded: bool,
) -> None:  # pragma: no cover - Numba
    """dU[thread] (a^2, F, C) += dM_xi V_xi^T over blocks of nb images: V = B^T d B of x's
    tiles, dM = A dY A^T of dy's (A's terms: mc, mi, mk); dU zero, a slice per thread."""
    N, C = x.shape[0], x.shape[1]
    F = dy.shape[1]
    m = mi.shape[0] - 2
    a = m + 2
    aa, P = a * a, Th * Tw
    one = dU.dtype.type(1)
    for blk in prange((N + nb - 1) // nb):
        n0 = blk * nb
        nimg = min(nb, N - n0)
        NT = nimg * P
        tid = numba.get_thread_id() if threaded else 0
        V, dM = work_v[tid], work_m[tid]
        Xp, E, D, R = scratch_in(Th, Tw, m, a, x.dtype)
        for k in range(nimg * C):
            c, nl = k // nimg, k % nimg
            plane_in(x[n0 + nl, c], ph, pw, Th, Tw, m, a, bc, bi, bk, Xp, E, D, R, V,
                     c * aa * NT + nl * P, NT)  # fmt: skip
        Xp, E, D, R = scratch_in(Th, Tw, m, a, x.dtype)
        for k in range(nimg * F):
            f, nl = k // nimg, k % nimg
            plane_in(dy[n0 + nl, f], 0, 0, Th, Tw, m, m, mc, mi, mk, Xp, E, D, R, dM,
                     f * aa * NT + nl * P, NT)  # fmt: skip
        for xi in range(aa):  # dU_xi (F, C) += dM_xi (F, NT) @ V_xi^T (NT, C)
            blas_call.gemm(fn, ilp64, blas_call.NO_TRANS, blas_call.TRANS, F, C, NT, one,
                           dM[xi * NT :].ctypes.data, aa * NT, V[xi * NT :].ctypes.data,
                           aa * NT, one, dU[tid, xi].ctypes.data, C)  # fmt: skip


_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}
FORWARD_BLOCKS = numba_cache.serial_and_parallel(_forward_blocks, **_OPTIONS)
WEIGHT_GRAD_BLOCKS = numba_cache.serial_and_parallel(_weight_grad_blocks, **_OPTIONS)


# ----------------------------------------------------------------------------- the operations
def _threads(par: bool) -> int:
    """The workspace rows a call needs. Asks Numba's thread count in both builds: that starts
    Numba's threading layer, which a serial build loaded from the cache needs for its (unused)
    get_thread_id symbol -- without it, the call crashed (Numba 0.68)."""
    threads = numba.get_num_threads()
    return threads if par else 1


def _block(N: int, P: int, threads: int) -> int:
    """Images per block: BLOCK_TILES tiles or one image, and at least one block per thread."""
    return max(1, min(-(-BLOCK_TILES // P), -(-N // threads)))


def _workspaces(
    buffer: object, par: bool, N: int, P: int, C: int, F: int, a: int, dtype: numpy.dtype
) -> tuple:
    """(threads, images per block, V's and M's workspaces: a row of each per thread)."""
    threads = _threads(par)
    nb = _block(N, P, threads)
    rows = [buffer(f"winograd_planes_{name}", (threads, n * a * a * nb * P), dtype)  # type: ignore[operator]
            for name, n in (("v", C), ("m", F))]  # fmt: skip
    return threads, nb, *rows


def forward(
    x: Array, Ut: Array, padding: tuple, m: int, tables: tuple, fn: tuple, buffer: object
) -> Array:
    """out (N, F, Ho, Wo) from x (N, C, H, W) and Ut (a^2, F, C); ``tables`` winograd's
    (B^T's, A^T's, A's terms); ``fn`` blas_call.gemm_function's (address, ilp64)."""
    from .winograd import TRANSFORMS, _sizes

    a = m + 2
    N, C = x.shape[:2]
    F = Ut.shape[1]
    Ho, Wo, Th, Tw = _sizes(x.shape, padding, m)
    bt, at, _ = tables
    A = numpy.array(TRANSFORMS[m][2], x.dtype)
    out = numpy.empty((N, F, Ho, Wo), x.dtype)
    # the stall watch compares per-value times across calls: count work (x.size F: the products'
    # share), not values -- a 128-filter layer's call takes twice a 64-filter one's per value
    with cpu_threads.choose(cpu_threads.key("winograd_planes", x.dtype), x.size * F) as par:
        _, nb, work_v, work_m = _workspaces(buffer, par, N, Th * Tw, C, F, a, x.dtype)
        FORWARD_BLOCKS[par](x, Ut, nb, padding[0], padding[1], Th, Tw, *bt, *at, A, out, work_v,
                            work_m, *fn, bool(par))  # fmt: skip
    return out


def weight_grad(
    dy: Array, x: Array, padding: tuple, m: int, tables: tuple, fn: tuple, buffer: object
) -> Array:
    """dU (a^2, F, C) = sum over tiles of dM_xi V_xi^T for the output gradient dy (N, F, Ho, Wo)."""
    from .winograd import _sizes

    a = m + 2
    N, C = x.shape[:2]
    F = dy.shape[1]
    _, _, Th, Tw = _sizes(x.shape, padding, m)
    bt, _, am = tables
    with cpu_threads.choose(cpu_threads.key("winograd_planes_dw", x.dtype), x.size * F) as par:
        threads, nb, work_v, work_m = _workspaces(buffer, par, N, Th * Tw, C, F, a, x.dtype)
        dU = numpy.zeros((threads, a * a, F, C), x.dtype)
        WEIGHT_GRAD_BLOCKS[par](x, dy, nb, padding[0], padding[1], Th, Tw, *bt, *am, work_v,
                                work_m, dU, *fn, bool(par))  # fmt: skip
    return dU.sum(axis=0)
