"""Fused optimizer updates for CuPy parameters: one ElementwiseKernel launch per parameter, the
math in optim.cuh (definitions in elementwise_ops.py). A small training step is bound by launches
(docs/gpu-notes.md), so this matters more than the arithmetic."""

from __future__ import annotations

import cupy

from gpunet.types import Array

from .elementwise_ops import OPTIM_OPS, make_kernel


@cupy.memoize(for_each_device=True)
def _kernel(name: str) -> Array:
    return make_kernel(cupy, OPTIM_OPS[name])


def sgd(
    g: Array,
    p: Array,
    buf: Array,
    lr: float,
    mu: float,
    damp: float,
    wd: float,
    nesterov: bool,
    first: bool,
) -> None:
    """In place: p, and the momentum buffer buf (None without momentum)."""
    if buf is None:
        _kernel("sgd_plain")(g, lr, wd, p)
    else:
        _kernel("sgd")(g, lr, mu, damp, wd, int(nesterov), int(first), p, buf)


def adam(
    g: Array,
    p: Array,
    m: Array,
    v: Array,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    bc1: float,
    bc2: float,
    decoupled: bool,
) -> None:
    _kernel("adam")(g, lr, b1, b2, eps, wd, bc1, bc2, int(decoupled), p, m, v)
