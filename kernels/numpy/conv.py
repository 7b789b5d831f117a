"""Convolution and max pooling in whole-array NumPy expressions: the readable version of the
compiled paths (kernels/numba_cpu/conv.py, kernels/cupy/conv.py), run where those are not chosen.

im2col gathers the kh kw shifted views of the padded input into cols (N, C, kh, kw, Ho, Wo) with
kh kw strided copies; the product is a tensordot through kernels/shared/cpu_blas.py; backward
rebuilds cols and scatters dcols back with kh kw strided adds. Max pooling takes the argmax over
the window axis of the same cols (padded with -inf) and returns it as the flat index h W + w in
the plane, the contract every path keeps.
"""

from __future__ import annotations

import numpy

from gpunet.types import Array

from ..shared.cpu_blas import tensordot
from ..shared.im2col_gemm import output_size


def im2col(x: Array, kernel: tuple, stride: tuple, padding: tuple, pad_value: float = 0.0) -> Array:
    """cols (N, C, kh, kw, Ho, Wo) of the padded input."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C, H, W = x.shape
    Ho, Wo = output_size(H, W, kernel, stride, padding)
    xpad = numpy.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    cols = numpy.empty((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            cols[:, :, p, q] = xpad[:, :, p : p + sh * Ho : sh, q : q + sw * Wo : sw]
    return cols


def col2im(dcols: Array, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple) -> Array:
    """The adjoint of im2col: sums dcols (N, C, kh, kw, Ho, Wo) back into dx (N, C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C, H, W = x_shape
    Ho, Wo = dcols.shape[4:]
    dxpad = numpy.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dcols.dtype)
    for p in range(kh):
        for q in range(kw):
            dxpad[:, :, p : p + sh * Ho : sh, q : q + sw * Wo : sw] += dcols[:, :, p, q]
    return numpy.ascontiguousarray(dxpad[:, :, ph : ph + H, pw : pw + W])


def conv2d_forward(x: Array, w: Array, stride: tuple, padding: tuple) -> tuple:
    cols = im2col(x, w.shape[2:], stride, padding)
    out = tensordot(w, cols, ([1, 2, 3], [1, 2, 3]))  # (F, N, Ho, Wo)
    return numpy.ascontiguousarray(out.transpose(1, 0, 2, 3)), cols


def conv2d_backward(
    dout: Array, x: Array, w: Array, kept: object, stride: tuple, padding: tuple, input_grad: bool
) -> tuple:
    N, C, kh, kw = x.shape[0], x.shape[1], w.shape[2], w.shape[3]
    if isinstance(kept, numpy.ndarray) and kept.shape[:4] == (N, C, kh, kw):
        cols = kept  # this path's own (N, C, kh, kw, Ho, Wo) from forward
    else:
        cols = im2col(x, w.shape[2:], stride, padding)
    dw = tensordot(dout, cols, ([0, 2, 3], [0, 4, 5]))  # (F, C, kh, kw)
    if not input_grad:
        return None, dw
    dcols = tensordot(w, dout, ([0], [1]))  # (C, kh, kw, N, Ho, Wo)
    return col2im(dcols.transpose(3, 0, 1, 2, 4, 5), x.shape, w.shape[2:], stride, padding), dw


def max_pool2d_forward(x: Array, kernel: tuple, stride: tuple, padding: tuple) -> tuple:
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    cols = im2col(x, kernel, stride, padding, pad_value=-numpy.inf)
    N, C, _, _, Ho, Wo = cols.shape
    flat = cols.reshape(N, C, kh * kw, Ho, Wo)
    window = flat.argmax(axis=2)  # the first maximum; a NaN wins
    out = numpy.take_along_axis(flat, window[:, :, None], axis=2)[:, :, 0]
    h = numpy.arange(Ho).reshape(-1, 1) * sh + window // kw - ph
    w = numpy.arange(Wo) * sw + window % kw - pw
    # a window whose values are all -inf may pick a padding cell: an image cell of the window
    # (also -inf) stands in for it
    h, w = numpy.clip(h, 0, x.shape[2] - 1), numpy.clip(w, 0, x.shape[3] - 1)
    return out, (h * x.shape[3] + w).astype(numpy.int32)


def max_pool2d_backward(
    dout: Array, arg: Array, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple
) -> Array:
    N, C, H, W = x_shape
    dx = numpy.zeros((N * C, H * W), dout.dtype)
    rows = numpy.arange(N * C).reshape(-1, 1)
    numpy.add.at(dx, (rows, arg.reshape(N * C, -1)), dout.reshape(N * C, -1))
    return dx.reshape(x_shape)
