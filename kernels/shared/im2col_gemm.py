"""Convolution as im2col + one matrix product per chunk of the batch: the driver both compiled
paths share (kernels/numba_cpu/conv.py on the CPU, kernels/cupy/conv.py on the GPU); each brings
its own im2col and col2im kernels and its matrix product.

Shapes (gpunet/functional/conv.py has the formula): x (N, C, H, W), w (F, C, kh, kw),
K = C kh kw, P = Ho Wo; ``w2`` = w.reshape(F, K) (a view).

* forward, per chunk of ``nb`` samples: ``cols`` (K, nb P), row r = (c, p, q) holding the input
  values that tap (p, q) of channel c sees, sample after sample; then ``w2 @ cols`` (F, nb P),
  copied into the output's NCHW rows -- a copy of F nb P values. Neither operand of the product is
  ever transposed or copied (numpy.tensordot's transposed copy of the K N P im2col matrix was 36 %
  of a 7x7 training step).
* backward: ``cols`` rebuilt per chunk into the same reused buffer. Keeping every chunk's cols
  from forward instead (K N P values, K/C times the input's memory) measured no faster on the
  training steps of issue #23 (7x7 taps, batch 64: 17.6 ms rebuilt, 18.3-20.3 kept): the rebuild
  reads the input once, into a buffer already in cache. ``dout_t`` (F, nb P) is the chunk's
  output gradient, ``dw^T += cols @ dout_t.T`` and, for dx, ``dcols = w2.T @ dout_t`` summed
  back into the input by col2im.

The chunk holds about CHUNK_COLUMNS columns and its buffers are reused (kept by the caller's
``buffer``): on the CPU products of (F, K) by (K, 16384) ran at 158-271 GFLOP/s on the 2-core
development machine against 145-179 for a whole batch 64 at 32x32 in one product, and a fresh
38 MB cols array per call cost 10 ms of page faults (7x7 taps, batch 64). Whole training steps
(issue #23's four) with 2048 / 4096 / 8192 / 16384 / 32768 columns: 8192 was fastest or within
3 % on each.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

from gpunet.types import Array

#: columns (nb P) of one chunk
CHUNK_COLUMNS = 8192
#: forward keeps its cols for backward, instead of the rebuild, up to this many bytes
KEEP_COLS_BYTES = 64 << 20


@dataclass(frozen=True)
class Geometry:
    """The sizes of one convolution (or pooling) call, and its kernel arguments in order."""

    N: int
    C: int
    H: int
    W: int
    F: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    Ho: int
    Wo: int

    @property
    def K(self) -> int:
        return self.C * self.kh * self.kw

    @property
    def P(self) -> int:
        return self.Ho * self.Wo

    @property
    def taps(self) -> tuple:
        """(kh, kw, sh, sw, ph, pw, Ho, Wo): what every kernel takes after its arrays."""
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.Ho, self.Wo)

    def chunk(self, columns: int = CHUNK_COLUMNS, max_bytes: int = 0, itemsize: int = 4) -> int:
        """Samples per chunk: ``columns`` of cols, or (``max_bytes`` > 0) as many as fit that
        many bytes of cols."""
        if max_bytes:
            columns = max_bytes // max(self.K * itemsize, 1)
        return max(1, min(self.N, columns // max(self.P, 1)))


def output_size(h: int, w: int, kernel: tuple, stride: tuple, padding: tuple) -> tuple:
    """(Ho, Wo) of a kh x kw window at ``stride`` over an h x w input padded by ``padding``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def geometry(x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple, F: int = 0) -> Geometry:
    (N, C, H, W), (kh, kw), (sh, sw), (ph, pw) = x_shape, kernel, stride, padding
    Ho, Wo = output_size(H, W, kernel, stride, padding)
    return Geometry(N, C, H, W, F, kh, kw, sh, sw, ph, pw, Ho, Wo)


def conv2d_forward(k: Kernels, x: Array, w: Array, stride: tuple, padding: tuple) -> tuple:
    """A path's ``conv2d_forward`` (kernels/interface.py) on its kernels ``k``."""
    x, w = k.xp.ascontiguousarray(x), k.xp.ascontiguousarray(w)  # type: ignore[attr-defined]
    return forward(k, x, w, geometry(x.shape, w.shape[2:], stride, padding, w.shape[0]))


def conv2d_backward(
    k: Kernels,
    dout: Array,
    x: Array,
    w: Array,
    kept: object,
    stride: tuple,
    padding: tuple,
    input_grad: bool,
) -> tuple:
    """A path's ``conv2d_backward`` (kernels/interface.py) on its kernels ``k``."""
    x, w = k.xp.ascontiguousarray(x), k.xp.ascontiguousarray(w)  # type: ignore[attr-defined]
    g = geometry(x.shape, w.shape[2:], stride, padding, w.shape[0])
    return backward(k, dout, x, w, g, kept, input_grad)


@dataclass(frozen=True)
class Kernels:
    """What a path brings: ``im2col(x, n0, nb, g, cols)`` fills cols (K, nb P);
    ``col2im(dcols, n0, nb, g, dx)`` writes dx[n0 : n0 + nb] (every value); ``matmul(a, b)``;
    ``buffer(slot, shape, dtype)`` a reusable scratch array; ``xp`` the array module;
    ``keep``: forward keeps its cols for backward (KeptCols)."""

    im2col: Callable[..., None]
    col2im: Callable[..., None]
    matmul: Callable[[Array, Array], Array]
    buffer: Callable[..., Array]
    xp: object
    keep: bool = False
    #: the GPU's chunks: as many samples as fit this many bytes of cols (0: CHUNK_COLUMNS)
    chunk_bytes: int = 0
    #: from this many rows of cols (K = C kh kw) on, forward's product is made as
    #: cols^T (nb P, K) @ w2^T (K, F), the tall operand on the left, and its (nb P, F) result
    #: turned into NCHW by the copy into the output (0: never). On the CPU with MKL, 7x7 taps
    #: from 3 channels (K = 147), batch 64: 17-20 -> 12.6-14 ms; K = 576 at stride 2 50 -> 43;
    #: below (K = 27, 64) it was slower (3.3 -> 4.4 ms at K = 27).
    rows_product_min_k: int = 0


class KeptCols:
    """The cols of a layer's last forward, for its backward: one buffer per weight array (per
    layer), reused by every step, so that the writes of forward land in memory the process
    already has in cache. A fresh 38 MB array per step cost more in forward than the rebuild in
    backward saved (7x7 taps, 3 -> 32 channels, batch 64: 18.3-20.3 ms per step against 17.6);
    the reused one removes the rebuild (see BENCHMARKS.md).

    Each forward takes a new ``token``; a backward whose cache holds an older token (the same
    weights went through another forward since -- shared weights) rebuilds its cols instead of
    reading the newer ones."""

    _by_weight: dict = {}

    def __init__(self) -> None:
        self.chunks: list = []
        self.token: object = None

    @classmethod
    def of(cls, w: Array, shapes: list, dtype: object, xp: object) -> KeptCols:
        key = id(w)
        kept = cls._by_weight.get(key)
        if kept is None:
            kept = cls._by_weight[key] = cls()
            weakref.finalize(w, cls._by_weight.pop, key, None)
        if [c.shape for c in kept.chunks] != shapes or kept.chunks[0].dtype != dtype:
            kept.chunks = [xp.empty(s, dtype) for s in shapes]  # type: ignore[attr-defined]
        kept.token = object()
        return kept


def forward(k: Kernels, x: Array, w: Array, g: Geometry) -> tuple:
    """(out (N, F, Ho, Wo) of contiguous x and w, no bias; kept): ``kept`` (KeptCols, token)
    where the path keeps cols and they take at most KEEP_COLS_BYTES, else None."""
    xp = k.xp
    w2 = w.reshape(g.F, g.K)
    out = xp.empty((g.N, g.F, g.P), x.dtype)  # type: ignore[attr-defined]
    nb = g.chunk(CHUNK_COLUMNS, k.chunk_bytes, x.dtype.itemsize)
    starts = range(0, g.N, nb)
    kept = None
    if k.keep and g.K * g.N * g.P * x.dtype.itemsize <= KEEP_COLS_BYTES:
        shapes = [(g.K, min(nb, g.N - n0) * g.P) for n0 in starts]
        kept = KeptCols.of(w, shapes, x.dtype, xp)
    for i, n0 in enumerate(starts):
        m = min(nb, g.N - n0)
        if kept is not None:
            cols = kept.chunks[i]
        else:
            cols = k.buffer("cols", (g.K, m * g.P), x.dtype)
        k.im2col(x, n0, m, g, cols)
        if k.rows_product_min_k and g.K >= k.rows_product_min_k:
            out[n0 : n0 + m] = k.matmul(cols.T, w2.T).reshape(m, g.P, g.F).transpose(0, 2, 1)
        else:
            out[n0 : n0 + m] = k.matmul(w2, cols).reshape(g.F, m, g.P).transpose(1, 0, 2)
    saved = None if kept is None else (kept, kept.token)
    return out.reshape(g.N, g.F, g.Ho, g.Wo), saved


def backward(
    k: Kernels, dout: Array, x: Array, w: Array, g: Geometry, kept: object, input_grad: bool
) -> tuple:
    """(dx or None, dw) of forward for the output gradient dout (N, F, Ho, Wo); ``kept`` what
    forward returned (stale or foreign: the cols are rebuilt)."""
    chunks = None
    if isinstance(kept, tuple) and len(kept) == 2 and isinstance(kept[0], KeptCols):
        if kept[0].token is kept[1]:
            chunks = kept[0].chunks
    xp = k.xp
    w2 = w.reshape(g.F, g.K)
    d3 = dout.reshape(g.N, g.F, g.P)
    # dw^T (K, F) += cols (K, nb P) @ dout_t^T: the long sum over nb P as the product's inner
    # dimension with both operands read along rows -- 0.63 ms per 8192-column chunk on one core
    # where dout_t @ cols^T took 1.43 (7x7 taps, 3 -> 32 channels; MKL)
    dw_t = xp.zeros((g.K, g.F), x.dtype)  # type: ignore[attr-defined]
    dx = xp.empty((g.N, g.C, g.H, g.W), x.dtype) if input_grad else None  # type: ignore[attr-defined]
    nb = g.chunk(CHUNK_COLUMNS, k.chunk_bytes, x.dtype.itemsize)
    for i, n0 in enumerate(range(0, g.N, nb)):
        m = min(nb, g.N - n0)
        d_t = k.buffer("dout_t", (g.F, m, g.P), x.dtype)
        d_t[...] = d3[n0 : n0 + m].transpose(1, 0, 2)
        d_t2 = d_t.reshape(g.F, m * g.P)
        if chunks is not None:
            cols = chunks[i]
        else:
            cols = k.buffer("cols", (g.K, m * g.P), x.dtype)
            k.im2col(x, n0, m, g, cols)
        dw_t += k.matmul(cols, d_t2.T)
        if dx is not None:
            k.col2im(k.matmul(w2.T, d_t2), n0, m, g, dx)
    return dx, xp.ascontiguousarray(dw_t.T).reshape(w.shape)  # type: ignore[attr-defined]
