"""Fused optimizer updates for CuPy parameters: one ElementwiseKernel launch per parameter, the
math in optim.cuh (definitions in elementwise_ops.py). A small training step is bound by launches
(docs/gpu-notes.md), so this matters more than the arithmetic."""

from __future__ import annotations

import cupy

from gpunet.types import Array

from ..interface import AdamStep, SGDStep
from .elementwise_ops import OPTIM_OPS, make_kernel


@cupy.memoize(for_each_device=True)
def _kernel(name: str) -> Array:
    return make_kernel(cupy, OPTIM_OPS[name])


def sgd(g: Array, p: Array, buf: Array | None, step: SGDStep) -> None:
    """In place: p, and the momentum buffer buf (None without momentum)."""
    if buf is None:
        _kernel("sgd_plain")(g, step.lr, step.weight_decay, p)
        return
    flags = int(step.nesterov), int(step.first)
    _kernel("sgd")(g, step.lr, step.momentum, step.dampening, step.weight_decay, *flags, p, buf)


def adam(g: Array, p: Array, m: Array, v: Array, step: AdamStep) -> None:
    """In place: p, m, v."""
    _kernel("adam")(
        g,
        step.lr,
        step.beta1,
        step.beta2,
        step.eps,
        step.weight_decay,
        step.bias1,
        step.bias2,
        int(step.decoupled),
        p,
        m,
        v,
    )
