"""2-D max and average pooling, NCHW.

Max pooling: out[n, c, i, j] = max over the kh x kw window at (i*stride - pad,
j*stride - pad) (cells of the padding never win).

Backward routes each output gradient to its window's maximum -- the first NaN if there is one,
else the first maximum in row-major window order -- accumulating where windows overlap. The
forward keeps that position for backward as ``arg`` (N, C, Ho, Wo) int32, the flat index h W + w
in the (n, c) plane: the contract of every kernel path (op key ``"max_pool2d"``:
kernels/numba_cpu/conv.py, kernels/cupy/conv.py, kernels/numpy/conv.py). As in PyTorch, padding is
at most half the kernel, so every window holds an input cell.

Average pooling: out[n, c, i, j] = the sum over the window / (kh kw), padding cells counted as
zeros (PyTorch's ``count_include_pad=True``). It is a convolution of each (n, c) plane, as a
one-channel image, with a kernel of constant 1 / (kh kw): it runs as ``conv2d`` on whatever path
that takes, and its backward is that convolution's input gradient.
"""

from __future__ import annotations

from gpunet.types import Array

from .._checks import float_inputs
from ..backend import get_array_module
from ..dispatch import kernels_for
from .conv import check_window, conv2d_backward, conv2d_forward, pair


def max_pool2d_forward(
    x: Array, kernel_size: int | tuple, stride: int | tuple | None = None, padding: int | tuple = 0
) -> tuple:
    """Returns ``(out, cache)``; ``stride`` defaults to ``kernel_size``."""
    float_inputs(x=x)
    kernel, stride, padding = _window_args("max_pool2d", x, kernel_size, stride, padding)
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


def _window_args(name: str, x: Array, kernel_size: int | tuple, stride: object, padding: object):
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be (N, C, H, W), got shape {x.shape}")
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")  # type: ignore[arg-type]
    padding = pair(padding, "padding")  # type: ignore[arg-type]
    check_window(name, x.shape, kernel, stride, padding)
    if 2 * padding[0] > kernel[0] or 2 * padding[1] > kernel[1]:
        raise ValueError(
            f"{name}: padding must be at most half the kernel size, got padding {padding} "
            f"for kernel_size {kernel}"
        )
    return kernel, stride, padding


def avg_pool2d_forward(
    x: Array, kernel_size: int | tuple, stride: int | tuple | None = None, padding: int | tuple = 0
) -> tuple:
    """Returns ``(out, cache)``; ``stride`` defaults to ``kernel_size``."""
    xp = float_inputs(x=x)
    kernel, stride, padding = _window_args("avg_pool2d", x, kernel_size, stride, padding)
    N, C, H, W = x.shape
    w = xp.full((1, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=x.dtype)
    out, conv_cache = conv2d_forward(x.reshape(N * C, 1, H, W), w, None, stride, padding)
    return out.reshape(N, C, *out.shape[2:]), (x.shape, conv_cache)


def avg_pool2d_backward(dout: Array, cache: tuple) -> Array:
    """Returns dx."""
    x_shape, conv_cache = cache
    N, C = x_shape[:2]
    if dout.ndim != 4 or dout.shape[:2] != (N, C):
        raise ValueError(
            f"avg_pool2d_backward: dout must be (N, C, Ho, Wo) with N, C = {N, C}, got {dout.shape}"
        )
    xp = get_array_module(dout)
    d = xp.ascontiguousarray(dout).reshape(N * C, 1, *dout.shape[2:])
    dx, _, _ = conv2d_backward(d, conv_cache)
    return dx.reshape(x_shape)
