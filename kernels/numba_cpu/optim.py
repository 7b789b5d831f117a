"""Optimizer updates on the CPU, one fused pass per parameter with Numba, instead of a chain of
NumPy temporaries (each a pass over memory): the update rules of gpunet/optim.py, in the same
order of operations and in the parameter's dtype, so the results equal the NumPy ones.

Serial and parallel builds, picked per call by the CPU thread policy (cpu_threads.py): the
parallel one measured 0.8 ms against 1.5 ms for SGD momentum on 3M float32 values alone, but
inside a training step it made the step slower (30-36 ms against 20-21 ms at batch 256,
3072-1024-1024-10): OpenBLAS's threads still spin after the step's matrix products and the two
thread pools fight for the 2 cores, so there the serial one runs. Cached on disk
(kernels/shared/numba_cache.py).
"""

from __future__ import annotations

import math

import numpy
from numba import prange

from gpunet.types import Array

from ..interface import AdamStep, SGDStep
from ..shared import cpu_threads, numba_cache


def _sgd(
    p: Array,
    g: Array,
    buf: Array,
    lr: float,
    mu: float,
    keep: float,
    wd: float,
    nesterov: bool,
    first: bool,
) -> None:
    """d = g + wd p; buf = d (first step) or mu buf + keep d (keep = 1 - dampening);
    d = d + mu buf (Nesterov) or buf; p -= lr d. ``buf`` is ignored when mu == 0."""
    for i in prange(p.size):
        d = g[i] + wd * p[i] if wd != 0 else g[i]
        if mu != 0:
            b = d if first else buf[i] * mu + keep * d
            buf[i] = b
            d = d + mu * b if nesterov else b
        p[i] -= lr * d


def _adam(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    c1: float,
    c2: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    decay: float,
    decoupled: bool,
    step_size: float,
    bc2_sqrt: float,
) -> None:
    """Adam (decoupled = False) / AdamW (p *= decay = 1 - lr wd first): m = b1 m + c1 g,
    v = b2 v + c2 g g (c = 1 - b); p -= step_size m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""
    for i in prange(p.size):
        gi = g[i]
        if wd != 0:
            if decoupled:
                p[i] *= decay
            else:
                gi = gi + wd * p[i]
        mi = m[i] * b1 + c1 * gi
        vi = v[i] * b2 + c2 * gi * gi
        m[i], v[i] = mi, vi
        p[i] -= step_size * mi / (numpy.sqrt(vi) / bc2_sqrt + eps)


# NumPy's error model: a division by zero gives inf/NaN as in NumPy (no exception check per
# value, which also kept the Adam loop from vectorizing: 15.7 -> 4.5 ms on 4.2M float32 values)
# Each has a serial and a parallel (``prange``) build; the CPU thread policy picks per call
# (kernels/shared/cpu_threads.py: serial inside a training step, parallel for an update on its own).
_SGD = numba_cache.serial_and_parallel(_sgd, error_model="numpy")
_ADAM = numba_cache.serial_and_parallel(_adam, error_model="numpy")


def sgd(g: Array, p: Array, buf: Array | None, step: SGDStep) -> None:
    """In place: p, and the momentum buffer ``buf`` (None without momentum). C-contiguous arrays;
    every coefficient computed in float64 and rounded to the parameter's dtype once, as NumPy
    does with a Python scalar, so float32 results equal the NumPy update's."""
    t = p.dtype.type
    flat = p.reshape(-1)
    with cpu_threads.choose(cpu_threads.key("sgd", p.dtype), p.size) as par:
        _SGD[par](
            flat,
            g.reshape(-1),
            flat if buf is None else buf.reshape(-1),
            t(step.lr),
            t(step.momentum),
            t(1 - step.dampening),
            t(step.weight_decay),
            bool(step.nesterov),
            bool(step.first),
        )


def adam(g: Array, p: Array, m: Array, v: Array, step: AdamStep) -> None:
    """In place: p and the moments m, v (see ``_adam``)."""
    t = p.dtype.type
    with cpu_threads.choose(cpu_threads.key("adam", p.dtype), p.size) as par:
        _ADAM[par](
            p.reshape(-1),
            g.reshape(-1),
            m.reshape(-1),
            v.reshape(-1),
            t(1 - step.beta1),
            t(1 - step.beta2),
            t(step.beta1),
            t(step.beta2),
            t(step.eps),
            t(step.weight_decay),
            t(1 - step.lr * step.weight_decay),
            bool(step.decoupled),
            t(step.lr / step.bias1),
            t(math.sqrt(step.bias2)),
        )
