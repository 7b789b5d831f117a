"""2-D max pooling, NCHW: out[n, c, i, j] = max over the kh x kw window at (i*stride - pad,
j*stride - pad) (cells of the padding never win).

Backward routes each output gradient to its window's maximum -- the first NaN if there is one,
else the first maximum in row-major window order -- accumulating where windows overlap. The
forward keeps that position for backward as ``arg`` (N, C, Ho, Wo) int32, the flat index h W + w
in the (n, c) plane: the contract of every kernel path (op key ``"max_pool2d"``:
kernels/numba_cpu/conv.py, kernels/cupy/conv.py, kernels/numpy/conv.py). As in PyTorch, padding is
at most half the kernel, so every window holds an input cell.
"""

from __future__ import annotations

from gpunet.types import Array

from .._checks import float_inputs
from ..dispatch import kernels_for
from .conv import check_window, pair


def max_pool2d_forward(
    x: Array, kernel_size: int | tuple, stride: int | tuple | None = None, padding: int | tuple = 0
) -> tuple:
    """Returns ``(out, cache)``; ``stride`` defaults to ``kernel_size``."""
    float_inputs(x=x)
    if x.ndim != 4:
        raise ValueError(f"max_pool2d: x must be (N, C, H, W), got shape {x.shape}")
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    check_window("max_pool2d", x.shape, kernel, stride, padding)
    if 2 * padding[0] > kernel[0] or 2 * padding[1] > kernel[1]:
        raise ValueError(
            f"max_pool2d: padding must be at most half the kernel size, got padding {padding} "
            f"for kernel_size {kernel}"
        )
    out, arg = kernels_for("max_pool2d", x).max_pool2d_forward(x, kernel, stride, padding)
    return out, (x.shape, arg, kernel, stride, padding)


def max_pool2d_backward(dout: Array, cache: tuple) -> Array:
    """Returns dx."""
    x_shape, arg, kernel, stride, padding = cache
    if dout.shape != arg.shape:
        raise ValueError(f"max_pool2d_backward: dout must have shape {arg.shape}, got {dout.shape}")
    return kernels_for("max_pool2d", dout).max_pool2d_backward(
        dout, arg, x_shape, kernel, stride, padding
    )
