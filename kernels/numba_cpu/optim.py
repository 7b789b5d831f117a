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

import numba
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
#: the loops inlined into the multi-tensor kernels below (see numba_cpu/batchnorm.py's small
#: batch: calling the compiled serial builds instead took 0.41 s to compile, against 0.28)
_SGD_INLINED, _ADAM_INLINED = (numba.njit(inline="always")(f) for f in (_sgd, _adam))

#: Multi-tensor updates: the parameters of a small net in one call, MANY at a time (tuples of MANY
#: arrays, the unused places an empty array: one compiled signature whatever the net's depth). A
#: Numba call costs a few microseconds before it computes, and the quickstart's MLP updates 8
#: parameters of 10 to 8192 values per step: 73 us per SGD step one call each, 31-36 us 8 a call.
#: Only parameters below cpu_threads.PARALLEL_MIN values join (``multi_ready``): those run
#: serially anyway; a larger one gets its own call, which may use every core.
MANY = 8


def _sgd_many(ps: tuple, gs: tuple, bufs: tuple, lr: float, mu: float, keep: float, wd: float,
              nesterov: bool, firsts: int) -> None:  # fmt: skip
    """``_sgd`` on every (p, g, buf) of the tuples; bit k of ``firsts``: the k-th buffer starts."""
    for k in range(len(ps)):
        _SGD_INLINED(ps[k], gs[k], bufs[k], lr, mu, keep, wd, nesterov, (firsts >> k) & 1 == 1)


def _adam_many(ps: tuple, gs: tuple, ms: tuple, vs: tuple, c1: float, c2: float, b1: float,
               b2: float, eps: float, wd: float, decay: float, decoupled: bool, step_size: float,
               bc2_sqrt: float) -> None:  # fmt: skip
    """``_adam`` on every (p, g, m, v) of the tuples."""
    for k in range(len(ps)):
        _ADAM_INLINED(ps[k], gs[k], ms[k], vs[k], c1, c2, b1, b2, eps, wd, decay, decoupled,
                     step_size, bc2_sqrt)  # fmt: skip


_SGD_MANY = numba_cache.njit(_sgd_many, error_model="numpy")
_ADAM_MANY = numba_cache.njit(_adam_many, error_model="numpy")


def multi_ready(*arrays: Array) -> bool:
    """Whether arrays can join a multi-tensor update: C-contiguous, one float dtype, non-empty,
    each below cpu_threads.PARALLEL_MIN values (see MANY)."""
    dt = arrays[0].dtype
    return dt in (numpy.float32, numpy.float64) and all(
        a.dtype == dt and a.flags.c_contiguous and 0 < a.size < cpu_threads.PARALLEL_MIN
        for a in arrays
    )


def _groups(columns: list, dtype: numpy.dtype) -> list:
    """``columns`` (lists of arrays, one list per argument) cut into tuples of MANY flat arrays,
    the last ones filled with an empty array."""
    empty = numpy.empty(0, dtype)
    out = []
    for start in range(0, len(columns[0]), MANY):
        group = []
        for column in columns:
            flat = [a.reshape(-1) for a in column[start : start + MANY]]
            group.append(tuple(flat + [empty] * (MANY - len(flat))))
        out.append(group)
    return out


def sgd_many(items: list, step: SGDStep, firsts: list) -> None:
    """In place, MANY parameters a call: every (g, p, buf) of ``items`` (buf None without
    momentum: p stands in, unread); ``firsts``: per item, whether its buffer starts this step.
    The same arithmetic as ``sgd``, value for value."""
    t = items[0][1].dtype.type
    columns = [[p for _, p, _ in items], [g for g, _, _ in items]]
    columns.append([p if buf is None else buf for _, p, buf in items])
    for k, (ps, gs, bufs) in enumerate(_groups(columns, items[0][1].dtype)):
        mask = sum(1 << j for j, f in enumerate(firsts[k * MANY : (k + 1) * MANY]) if f)
        _SGD_MANY(ps, gs, bufs, t(step.lr), t(step.momentum), t(1 - step.dampening),
                  t(step.weight_decay), bool(step.nesterov), mask)  # fmt: skip


def adam_many(items: list, step: AdamStep) -> None:
    """In place, MANY parameters a call: every (g, p, m, v) of ``items``; as ``adam``."""
    t = items[0][1].dtype.type
    columns = [[item[i] for item in items] for i in (1, 0, 2, 3)]
    for ps, gs, ms, vs in _groups(columns, items[0][1].dtype):
        _ADAM_MANY(ps, gs, ms, vs, *_adam_scalars(t, step))


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
        flat = (a.reshape(-1) for a in (p, g, m, v))
        _ADAM[par](*flat, *_adam_scalars(t, step))


def _adam_scalars(t: type, step: AdamStep) -> tuple:
    """``_adam``'s coefficients, in the parameters' dtype ``t``."""
    return (
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
