"""The SGD and Adam(W) updates as NumPy expressions (the NumPy path; formulas: gpunet/optim.py)."""

from __future__ import annotations

import math

import numpy

from gpunet.types import Array

from ..interface import AdamStep, SGDStep


def sgd(g: Array, p: Array, buf: Array | None, step: SGDStep) -> None:
    """In place: p, and the momentum buffer ``buf`` (None without momentum)."""
    if step.weight_decay:
        g = g + step.weight_decay * p
    if buf is not None:
        if step.first:
            buf[...] = g
        else:
            buf *= step.momentum
            buf += (1 - step.dampening) * g
        g = g + step.momentum * buf if step.nesterov else buf
    p -= step.lr * g


def adam(g: Array, p: Array, m: Array, v: Array, step: AdamStep) -> None:
    """In place: p, m, v."""
    if step.weight_decay:
        if step.decoupled:
            p *= 1 - step.lr * step.weight_decay
        else:
            g = g + step.weight_decay * p
    m *= step.beta1
    m += (1 - step.beta1) * g
    v *= step.beta2
    v += (1 - step.beta2) * g * g
    denom = numpy.sqrt(v) / math.sqrt(step.bias2) + step.eps
    p -= (step.lr / step.bias1) * m / denom
