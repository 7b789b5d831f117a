"""2-D max pooling, NCHW: out[n, c, i, j] = max over the kh x kw window at (i*stride, j*stride).

Backward routes each output gradient to the first maximum of its window (ties: the first, in
row-major window order), accumulating where windows overlap.
"""

from __future__ import annotations

from gpunet.types import Array

from .._checks import float_inputs
from ..backend import get_array_module
from .conv import col2im, im2col, pair


def max_pool2d_forward(
    x: Array, kernel_size: int | tuple, stride: int | tuple | None = None, padding: int | tuple = 0
) -> tuple:
    """Returns ``(out, cache)``; ``stride`` defaults to ``kernel_size``."""
    xp = float_inputs(x=x)
    if x.ndim != 4:
        raise ValueError(f"max_pool2d: x must be (N, C, H, W), got shape {x.shape}")
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    if 0 in kernel or 0 in stride:
        raise ValueError("kernel_size and stride must be positive")
    cols = im2col(x, kernel, stride, padding, pad_value=-xp.inf)  # (N, C, kh, kw, Ho, Wo)
    N, C, kh, kw, Ho, Wo = cols.shape
    flat = cols.reshape(N, C, kh * kw, Ho, Wo)
    arg = flat.argmax(axis=2)
    out = xp.take_along_axis(flat, arg[:, :, None], axis=2)[:, :, 0]
    return out, (x.shape, arg, kernel, stride, padding)


def max_pool2d_backward(dout: Array, cache: tuple) -> Array:
    """Returns dx."""
    x_shape, arg, kernel, stride, padding = cache
    xp = get_array_module(dout)
    kh, kw = kernel
    N, C, Ho, Wo = dout.shape
    window = xp.arange(kh * kw).reshape(1, 1, kh * kw, 1, 1)
    dcols = xp.where(window == arg[:, :, None], dout[:, :, None], 0).astype(dout.dtype)
    return col2im(dcols.reshape(N, C, kh, kw, Ho, Wo), x_shape, kernel, stride, padding)
