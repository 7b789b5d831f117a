"""Convolution as im2col + one matrix product per chunk of the batch: the driver both compiled
paths share (kernels/numba_cpu/conv.py on the CPU, kernels/cupy/conv.py on the GPU); each brings
its own im2col and col2im kernels and its matrix product.

Shapes (gpunet/functional/conv.py has the formula): x (N, C, H, W), w (F, C, kh, kw),
K = C kh kw, P = Ho Wo; ``w2`` = w.reshape(F, K) (a view).

* forward, per chunk of ``nb`` samples: ``cols`` (K, nb P), row r = (c, p, q) holding the input
  values that tap (p, q) of channel c sees, sample after sample; then ``w2 @ cols`` (F, nb P).
  A chunk of one sample is that sample's NCHW output as it stands: where the path has a product
  that writes into a given array (``matmul_into``), it lands there with no copy; a longer chunk
  is copied into the output's rows (F nb P values). Neither operand of the product is ever
  transposed or copied (numpy.tensordot's transposed copy of the K N P im2col matrix was 36 % of
  a 7x7 training step).
* backward, per chunk: ``cols`` rebuilt into the same reused buffer, ``dw^T += cols @ dout_t.T``
  (dout_t (F, nb P) the chunk's output gradient: the sample's own rows where nb = 1, else a
  copy) and, for dx, ``dcols = w2.T @ dout_t`` summed back into the input by col2im.

Chunk size. The CPU takes chunks of about CPU_CHUNK_COLUMNS columns -- one sample from 32x32
outputs on -- so that cols is written and read in cache: at 7x7 taps from 3 channels, batch 64
(issue #23's first layer), a training step took 36 ms with chunks of 8192 columns whose cols
forward kept for backward (38 MB written to memory and read back twice) and 28 with one sample
per chunk rebuilt in backward (the products 15 -> 10 ms: each writes its sample's output in
place, and reads a cols matrix in cache). The GPU's chunks are as many samples as fit
``chunk_bytes`` of cols.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpunet.types import Array

#: columns (nb P) of one chunk where a path sets neither ``chunk_columns`` nor ``chunk_bytes``
CHUNK_COLUMNS = 8192
#: the CPU's chunks (kernels/numba_cpu/conv.py): about one sample at 32x32, in cache
CPU_CHUNK_COLUMNS = 1024


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
    stride: tuple,
    padding: tuple,
    input_grad: bool,
) -> tuple:
    """A path's ``conv2d_backward`` (kernels/interface.py) on its kernels ``k``."""
    x, w = k.xp.ascontiguousarray(x), k.xp.ascontiguousarray(w)  # type: ignore[attr-defined]
    g = geometry(x.shape, w.shape[2:], stride, padding, w.shape[0])
    return backward(k, dout, x, w, g, input_grad)


@dataclass(frozen=True)
class Kernels:
    """What a path brings: ``im2col(x, n0, nb, g, cols)`` fills cols (K, nb P);
    ``col2im(dcols, n0, nb, g, dx)`` writes dx[n0 : n0 + nb] (every value); ``matmul(a, b)``;
    ``buffer(slot, shape, dtype)`` a reusable scratch array; ``xp`` the array module."""

    im2col: Callable[..., None]
    col2im: Callable[..., None]
    matmul: Callable[[Array, Array], Array]
    buffer: Callable[..., Array]
    xp: object
    #: the GPU's chunks: as many samples as fit this many bytes of cols (0: ``chunk_columns``)
    chunk_bytes: int = 0
    #: columns (nb P) of one chunk
    chunk_columns: int = CHUNK_COLUMNS
    #: ``matmul_into(a, b, out, accumulate=False)``: out = a @ b (or +=) into a C-contiguous
    #: ``out``; None: ``matmul`` and a copy
    matmul_into: Callable[..., None] | None = None
    #: ``run_parts(fn, starts)``: [fn(part) for the parts of the chunk starts ``starts``], the
    #: parts maybe run at once on threads of the path's own; None: [fn(starts)]
    run_parts: Callable[..., list] | None = None

    def parts(self, fn: Callable[[range], object], starts: range) -> list:
        return self.run_parts(fn, starts) if self.run_parts is not None else [fn(starts)]


def forward(k: Kernels, x: Array, w: Array, g: Geometry) -> tuple:
    """(out (N, F, Ho, Wo) of contiguous x and w, no bias; None: nothing kept for backward)."""
    xp = k.xp
    w2 = w.reshape(g.F, g.K)
    out = xp.empty((g.N, g.F, g.P), x.dtype)  # type: ignore[attr-defined]
    nb = g.chunk(k.chunk_columns, k.chunk_bytes, x.dtype.itemsize)

    def chunks(starts: range) -> None:
        for n0 in starts:
            m = min(nb, g.N - n0)
            cols = k.buffer("cols", (g.K, m * g.P), x.dtype)
            k.im2col(x, n0, m, g, cols)
            if m == 1 and k.matmul_into is not None:
                k.matmul_into(w2, cols, out[n0])  # (F, P): the sample's output, in place
            else:
                out[n0 : n0 + m] = k.matmul(w2, cols).reshape(g.F, m, g.P).transpose(1, 0, 2)

    k.parts(chunks, range(0, g.N, nb))
    return out.reshape(g.N, g.F, g.Ho, g.Wo), None


def backward(k: Kernels, dout: Array, x: Array, w: Array, g: Geometry, input_grad: bool) -> tuple:
    """(dx or None, dw) of forward for the output gradient dout (N, F, Ho, Wo)."""
    xp = k.xp
    w2 = w.reshape(g.F, g.K)
    d3 = xp.ascontiguousarray(dout).reshape(g.N, g.F, g.P)  # type: ignore[attr-defined]
    dx = xp.empty((g.N, g.C, g.H, g.W), x.dtype) if input_grad else None  # type: ignore[attr-defined]
    nb = g.chunk(k.chunk_columns, k.chunk_bytes, x.dtype.itemsize)

    def chunks(starts: range) -> Array:
        """dw^T of these chunks; their dx written."""
        # dw^T (K, F) += cols (K, nb P) @ dout_t^T: the long sum over nb P as the product's
        # inner dimension with both operands read along rows -- 0.63 ms per 8192-column chunk
        # on one core where dout_t @ cols^T took 1.43 (7x7 taps, 3 -> 32 channels; MKL)
        dw_t = xp.zeros((g.K, g.F), x.dtype)  # type: ignore[attr-defined]
        for n0 in starts:
            m = min(nb, g.N - n0)
            if m == 1:
                d_t2 = d3[n0]  # (F, P): the sample's own rows
            else:
                d_t = k.buffer("dout_t", (g.F, m, g.P), x.dtype)
                d_t[...] = d3[n0 : n0 + m].transpose(1, 0, 2)
                d_t2 = d_t.reshape(g.F, m * g.P)
            cols = k.buffer("cols", (g.K, m * g.P), x.dtype)
            k.im2col(x, n0, m, g, cols)
            if k.matmul_into is not None:
                k.matmul_into(cols, d_t2.T, dw_t, accumulate=True)
            else:
                dw_t += k.matmul(cols, d_t2.T)
            if dx is not None:
                if k.matmul_into is not None:
                    dcols = k.buffer("dcols", (g.K, m * g.P), x.dtype)
                    k.matmul_into(w2.T, d_t2, dcols)
                else:
                    dcols = k.matmul(w2.T, d_t2)
                k.col2im(dcols, n0, m, g, dx)
        return dw_t

    dw_t, *rest = k.parts(chunks, range(0, g.N, nb))
    for part in rest:
        dw_t += part
    return dx, xp.ascontiguousarray(dw_t.T).reshape(w.shape)  # type: ignore[attr-defined]
