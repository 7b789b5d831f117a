"""2-D convolution (cross-correlation, as in every framework), NCHW.

Shapes: x (N, C, H, W), w (F, C, kh, kw), b (F,) or None
        -> out (N, F, Ho, Wo), Ho = (H + 2 pad - kh) // stride + 1 (same for Wo).
out[n, f, i, j] = b[f] + sum_{c, p, q} w[f, c, p, q] * xpad[n, c, i*stride + p, j*stride + q]

Backward (dout = dL/dout):
dw[f, c, p, q] = sum_{n, i, j} dout[n, f, i, j] * xpad[n, c, i*stride + p, j*stride + q]
dx = the same sums scattered back: dxpad[n, c, i*stride + p, j*stride + q] += w[f, c, p, q] dout
db[f] = sum_{n, i, j} dout[n, f, i, j]

How it runs (gpunet.dispatch picks the path, op key ``"conv2d"``): im2col -- the input values
each output sees, as the columns of a (C kh kw, N Ho Wo) matrix -- and one matrix product per
chunk of the batch, on the CPU with Numba's im2col/col2im and the CPU BLAS
(kernels/numba_cpu/conv.py), on the GPU with CUDA im2col/col2im and cuBLAS
(kernels/cupy/conv.py); kernels/numpy/conv.py is the same in NumPy expressions. Reference:
CS231n assignment 2, ``conv_forward_naive`` / ``conv_backward_naive`` (the float64 direct loops
of tests/test_conv.py).
"""

from __future__ import annotations

import numpy

from gpunet.types import Array

from .._checks import float_inputs
from ..backend import get_array_module
from ..dispatch import kernels_for
from ..kernels.shared.im2col_gemm import output_size

#: (height, width) of a kernel, stride or padding
Pair = tuple[int, int]


def pair(v: int | tuple, name: str) -> tuple[int, int]:
    if isinstance(v, (int, numpy.integer)) and not isinstance(v, bool):
        v = (v, v)
    if (
        not isinstance(v, (tuple, list))
        or len(v) != 2
        or any(isinstance(a, bool) or not isinstance(a, (int, numpy.integer)) or a < 0 for a in v)
    ):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {v!r}")
    return (int(v[0]), int(v[1]))


def check_window(what: str, x_shape: tuple, kernel: Pair, stride: Pair, padding: Pair) -> None:
    """A clear error for a window that does not fit the (padded) input, or a zero stride."""
    if 0 in stride:
        raise ValueError(f"{what}: stride must be positive, got {stride}")
    if 0 in kernel:
        raise ValueError(f"{what}: kernel_size must be positive, got {kernel}")
    Ho, Wo = output_size(x_shape[2], x_shape[3], kernel, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{what}: kernel {kernel} with padding {padding} does not fit the input "
            f"{x_shape[2]}x{x_shape[3]}"
        )


def conv2d_forward(
    x: Array, w: Array, b: Array | None = None, stride: int | tuple = 1, padding: int | tuple = 0
) -> tuple:
    """Returns ``(out, cache)``."""
    float_inputs(x=x, w=w, **({} if b is None else {"b": b}))
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(
            f"conv2d: x must be (N, C, H, W) and w (F, C, kh, kw); got x {x.shape}, w {w.shape}"
        )
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"conv2d: b must have shape ({w.shape[0]},), got {b.shape}")
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    check_window("conv2d", x.shape, w.shape[2:], stride, padding)
    out, kept = kernels_for("conv2d", x, w).conv2d_forward(x, w, stride, padding)
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out, (x, w, kept, stride, padding, b is not None)


def conv2d_backward(dout: Array, cache: tuple, input_grad: bool = True) -> tuple:
    """Returns ``(dx, dw, db)`` (``dx`` None with ``input_grad=False``)."""
    x, w, kept, stride, padding, has_bias = cache
    if dout.shape[:2] != (x.shape[0], w.shape[0]) or dout.ndim != 4:
        raise ValueError(f"conv2d_backward: dout must be (N, F, Ho, Wo), got {dout.shape}")
    xp = get_array_module(dout)
    dx, dw = kernels_for("conv2d", dout, x, w).conv2d_backward(
        dout, x, w, kept, stride, padding, input_grad
    )
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return (None if dx is None else xp.ascontiguousarray(dx)), dw, db
