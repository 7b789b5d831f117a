"""2-D convolution (cross-correlation, as in every framework), NCHW, by im2col + one matrix product.

Shapes: x (N, C, H, W), w (F, C, kh, kw), b (F,) or None
        -> out (N, F, Ho, Wo), Ho = (H + 2 pad - kh) // stride + 1 (same for Wo).
out[n, f, i, j] = b[f] + sum_{c, p, q} w[f, c, p, q] * xpad[n, c, i*stride + p, j*stride + q]

im2col gathers the kh*kw shifted views into cols (N, C, kh, kw, Ho, Wo) with kh*kw strided copies;
the product is a tensordot (cuBLAS on the GPU; on the CPU NumPy's BLAS or MKL, as
kernels/shared/cpu_blas.py decides). Backward scatters dcols back with kh*kw strided
adds.
"""

from __future__ import annotations

from gpunet.types import Array

from .._checks import float_inputs
from ..backend import get_array_module
from ..dispatch import kernels_for

#: (height, width) of a kernel, stride or padding
Pair = tuple[int, int]


def pair(v: int | tuple, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    if len(v) != 2 or any((not isinstance(a, int)) or a < 0 for a in v):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {v!r}")
    return (v[0], v[1])


def output_size(h: int, w: int, kernel: Pair, stride: Pair, padding: Pair) -> tuple:
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def im2col(x: Array, kernel: Pair, stride: Pair, padding: Pair, pad_value: float = 0.0) -> Array:
    """cols (N, C, kh, kw, Ho, Wo) of the padded input."""
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C, H, W = x.shape
    Ho, Wo = output_size(H, W, kernel, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"kernel {kernel} with padding {padding} does not fit the input {H}x{W}")
    xpad = (
        xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
        if ph or pw
        else x
    )
    cols = xp.empty((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            cols[:, :, p, q] = xpad[:, :, p : p + sh * Ho : sh, q : q + sw * Wo : sw]
    return cols


def col2im(dcols: Array, x_shape: tuple, kernel: Pair, stride: Pair, padding: Pair) -> Array:
    """The adjoint of im2col: sums dcols (N, C, kh, kw, Ho, Wo) back into dx (N, C, H, W)."""
    xp = get_array_module(dcols)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C, H, W = x_shape
    Ho, Wo = dcols.shape[4:]
    dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dcols.dtype)
    for p in range(kh):
        for q in range(kw):
            dxpad[:, :, p : p + sh * Ho : sh, q : q + sw * Wo : sw] += dcols[:, :, p, q]
    return dxpad[:, :, ph : ph + H, pw : pw + W]


def conv2d_forward(
    x: Array, w: Array, b: Array | None = None, stride: int | tuple = 1, padding: int | tuple = 0
) -> tuple:
    """Returns ``(out, cache)``."""
    xp = float_inputs(x=x, w=w, **({} if b is None else {"b": b}))
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(
            f"conv2d: x must be (N, C, H, W) and w (F, C, kh, kw); got x {x.shape}, w {w.shape}"
        )
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"conv2d: b must have shape ({w.shape[0]},), got {b.shape}")
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    if 0 in stride:
        raise ValueError("stride must be positive")
    kernel = w.shape[2:]
    cols = im2col(x, kernel, stride, padding)
    out = _tensordot(w, cols, ([1, 2, 3], [1, 2, 3]))  # (F, N, Ho, Wo)
    out = xp.ascontiguousarray(out.transpose(1, 0, 2, 3))
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out, (x.shape, w, cols, stride, padding, b is not None)


def conv2d_backward(dout: Array, cache: tuple, input_grad: bool = True) -> tuple:
    """Returns ``(dx, dw, db)`` (``dx`` None with ``input_grad=False``)."""
    x_shape, w, cols, stride, padding, has_bias = cache
    xp = get_array_module(dout)
    dw = _tensordot(dout, cols, ([0, 2, 3], [0, 4, 5]))  # (F, C, kh, kw)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if not input_grad:
        return None, dw, db
    dcols = _tensordot(w, dout, ([0], [1]))  # (C, kh, kw, N, Ho, Wo)
    dx = col2im(dcols.transpose(3, 0, 1, 2, 4, 5), x_shape, w.shape[2:], stride, padding)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return xp.ascontiguousarray(dx), dw, db


def _tensordot(a: Array, b: Array, axes: tuple) -> Array:
    """The kernel path's product: cuBLAS for CuPy arrays, kernels/shared/cpu_blas.py for NumPy
    ones."""
    return kernels_for("matmul", a).tensordot(a, b, axes)
