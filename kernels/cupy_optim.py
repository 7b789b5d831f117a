"""Fused optimizer updates for CuPy parameters: one ElementwiseKernel launch per parameter, the
math in optim.cuh. A small training step is bound by launches (shared/GPU_NOTES.md), so this
matters more than the arithmetic."""
from __future__ import annotations

import cupy

from . import read_source

_SGD = cupy.memoize(for_each_device=True)(lambda: cupy.ElementwiseKernel(
    "T g, float64 lr, float64 mu, float64 damp, float64 wd, int32 nesterov, int32 first",
    "T p, T buf",
    "gpunet_sgd_update(g, p, buf, lr, mu, damp, wd, nesterov, first)",
    "gpunet_sgd_update", preamble=read_source("optim.cuh")))

_SGD_PLAIN = cupy.memoize(for_each_device=True)(lambda: cupy.ElementwiseKernel(
    "T g, float64 lr, float64 wd", "T p", "gpunet_sgd_plain_update(g, p, lr, wd)",
    "gpunet_sgd_plain_update", preamble=read_source("optim.cuh")))

_ADAM = cupy.memoize(for_each_device=True)(lambda: cupy.ElementwiseKernel(
    "T g, float64 lr, float64 b1, float64 b2, float64 eps, float64 wd, float64 bc1, float64 bc2, int32 decoupled",
    "T p, T m, T v",
    "gpunet_adam_update(g, p, m, v, lr, b1, b2, eps, wd, bc1, bc2, decoupled)",
    "gpunet_adam_update", preamble=read_source("optim.cuh")))


def sgd(g, p, buf, lr, mu, damp, wd, nesterov, first):
    """In place: p, and the momentum buffer buf (None without momentum)."""
    if buf is None:
        _SGD_PLAIN()(g, lr, wd, p)
    else:
        _SGD()(g, lr, mu, damp, wd, int(nesterov), int(first), p, buf)


def adam(g, p, m, v, lr, b1, b2, eps, wd, bc1, bc2, decoupled):
    _ADAM()(g, lr, b1, b2, eps, wd, bc1, bc2, int(decoupled), p, m, v)
