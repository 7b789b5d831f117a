"""Matrix products of the CuPy path: cuBLAS through CuPy's own operators."""

from __future__ import annotations

import cupy

from gpunet.types import Array


def matmul(a: Array, b: Array, bias: Array | None = None) -> Array:
    """a @ b (+ bias on every row)."""
    out = a @ b
    if bias is not None:
        out += bias
    return out


def tensordot(a: Array, b: Array, axes: tuple) -> Array:
    return cupy.tensordot(a, b, axes=axes)


def column_sums(a: Array) -> Array:
    return a.sum(axis=0)
