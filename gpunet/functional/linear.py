"""Affine (fully connected) layer, the lecture's convention: out = x @ W + b.

Shapes: x (N, D), W (D, M), b (M,) or None -> out (N, M).
Backward: dx = dout @ W.T, dW = x.T @ dout, db = sum over N of dout.
Matrix products go to cuBLAS on the GPU and, on the CPU, to NumPy's BLAS or Intel MKL
(kernels/shared/cpu_blas.py decides): one ``kernels_for("matmul", x)`` call per product.
"""

from __future__ import annotations

from gpunet.types import Array

from .._checks import float_inputs
from ..dispatch import kernels_for


def linear_forward(x: Array, w: Array, b: Array | None = None) -> tuple:
    """Returns ``(out, cache)``."""
    float_inputs(x=x, w=w, **({} if b is None else {"b": b}))
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"linear: x must be (N, D) and w (D, M); got x {x.shape}, w {w.shape}")
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"linear: b must have shape ({w.shape[1]},), got {b.shape}")
    return kernels_for("matmul", x).matmul(x, w, bias=b), (x, w, b is not None)


def linear_backward(dout: Array, cache: tuple, input_grad: bool = True) -> tuple:
    """Returns ``(dx, dw, db)`` (``db`` None without bias; ``dx`` None with
    ``input_grad=False``: the first layer of a trained model needs no gradient for its input,
    and skipping it saves a third of that layer's matrix products)."""
    x, w, has_bias = cache
    path = kernels_for("matmul", dout)
    dx = path.matmul(dout, w.T) if input_grad else None
    dw = path.matmul(x.T, dout)
    db = path.column_sums(dout) if has_bias else None
    return dx, dw, db
