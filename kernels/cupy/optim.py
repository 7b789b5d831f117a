"""Fused optimizer updates for CuPy parameters, the math in optim.cuh. ``sgd_many``/``adam_many``:
one launch for every parameter of a step (optim_multi.cuh, as PyTorch's foreach/fused
optimizers), what gpunet.optim uses; ``sgd``/``adam``: one ElementwiseKernel launch per
parameter (definitions in elementwise_ops.py), for a lone parameter or odd layouts. A small
training step is bound by launches (docs/gpu-notes.md), so this matters more than the
arithmetic."""

from __future__ import annotations

import cupy
import numpy

from gpunet.types import Array

from ..interface import AdamStep, SGDStep
from .elementwise_ops import OPTIM_OPS, make_kernel
from .sources import unit_source

MT_THREADS = 256  # GPUNET_MT_THREADS
MT_CHUNK = MT_THREADS * 4  # GPUNET_MT_CHUNK


@cupy.memoize(for_each_device=True)
def _multi_module():
    """optim.cuh + optim_multi.cuh, compiled once per device (all four kernels)."""
    return cupy.RawModule(code=unit_source("optim"), options=("-std=c++14",))


@cupy.memoize(for_each_device=True)
def _multi(name: str, dtype: object):
    return _multi_module().get_function(f"{name}_{'float' if dtype == cupy.float32 else 'double'}")


#: device -> (host table, its device copy) of the last step: CuPy's memory pool usually hands the
#: gradients the same addresses step after step, and then the copy is reused, not made again
_last_table: dict = {}


def _table(arrays: list, flags: list) -> tuple:
    """The device table of optim_multi.cuh (pointers, sizes, flags, first blocks) and the grid."""
    nt = len(arrays)
    table = numpy.zeros(7 * nt + 1, numpy.int64)
    blocks = 0
    for i, (g, p, s1, s2) in enumerate(arrays):
        table[i], table[nt + i] = g.data.ptr, p.data.ptr
        table[2 * nt + i] = s1.data.ptr if s1 is not None else 0
        table[3 * nt + i] = s2.data.ptr if s2 is not None else 0
        table[4 * nt + i], table[5 * nt + i] = p.size, flags[i]
        table[6 * nt + i] = blocks
        blocks += -(-p.size // MT_CHUNK)
    table[7 * nt] = blocks
    device = cupy.cuda.Device().id
    last = _last_table.get(device)
    if last is None or not numpy.array_equal(last[0], table):
        last = _last_table[device] = (table, cupy.asarray(table))
    return last[1], blocks


def multi_ready(*arrays: Array) -> bool:
    """Whether arrays can join a multi-tensor update: contiguous, same dtype, non-empty."""
    dt = arrays[0].dtype
    return all(a.dtype == dt and a.flags.c_contiguous and a.size for a in arrays)


def sgd_many(items: list, step: SGDStep, firsts: list) -> None:
    """In place, one launch: every (g, p, buf) of ``items`` (buf None without momentum);
    ``firsts``: per item, whether its momentum buffer starts this step."""
    arrays = [(g, p, buf, None) for g, p, buf in items]
    table, blocks = _table(arrays, [int(f) for f in firsts])
    _multi("sgd_multi", items[0][1].dtype)(
        (blocks,),
        (MT_THREADS,),
        (
            table,
            numpy.int32(len(items)),
            numpy.float64(step.lr),
            numpy.float64(step.momentum),
            numpy.float64(step.dampening),
            numpy.float64(step.weight_decay),
            numpy.int32(step.nesterov),
        ),
    )


def adam_many(items: list, step: AdamStep) -> None:
    """In place, one launch: every (g, p, m, v) of ``items``."""
    table, blocks = _table(list(items), [0] * len(items))
    _multi("adam_multi", items[0][1].dtype)(
        (blocks,),
        (MT_THREADS,),
        (
            table,
            numpy.int32(len(items)),
            *(numpy.float64(v) for v in (step.lr, step.beta1, step.beta2, step.eps)),
            *(numpy.float64(v) for v in (step.weight_decay, step.bias1, step.bias2)),
            numpy.int32(step.decoupled),
        ),
    )


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
