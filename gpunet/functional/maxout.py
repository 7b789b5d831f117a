"""Maxout (Goodfellow et al. 2013): the max of ``pieces`` linear pieces.

The feature axis (axis 1) of ``x`` holds C groups of ``pieces`` consecutive features:

    x: (N, C * pieces, *)  ->  y: (N, C, *),   y[n, c, ...] = max_k x[n, c * pieces + k, ...]

Backward: the gradient goes to the winning piece (the first maximum; a NaN wins), zero elsewhere.
Maxout neither saturates nor dies, at ``pieces`` times the parameters of the layer before it.
"""
from __future__ import annotations

import numpy

from .._checks import float_inputs
from ..kernel_path import resolve_path


def _split(x, pieces):
    if isinstance(pieces, bool) or not isinstance(pieces, (int, numpy.integer)) or pieces < 1:
        raise ValueError(f"pieces must be a positive integer, got {pieces!r}")
    if x.ndim < 2:
        raise ValueError(f"x must have a feature axis (shape (N, F, ...)), got shape {x.shape}")
    if x.shape[1] % pieces:
        raise ValueError(f"the feature axis of x (axis 1, size {x.shape[1]}) is not divisible by "
                         f"pieces={pieces}")
    channels = x.shape[1] // pieces
    inner = int(numpy.prod(x.shape[2:], dtype=numpy.int64))
    return (x.shape[0], channels) + x.shape[2:], int(pieces), inner


def _ref_grouped(x, pieces, out_shape):
    return x.reshape(out_shape[:2] + (pieces,) + out_shape[2:])


def maxout(x, pieces):
    """y = max over ``pieces`` consecutive features of axis 1 (see module docstring)."""
    xp = float_inputs(x=x)
    out_shape, pieces, inner = _split(x, pieces)
    if xp is numpy:
        return _ref_grouped(x, pieces, out_shape).max(axis=2)
    x = xp.ascontiguousarray(x)
    if resolve_path(x.size) == "numba":
        from gpunet.kernels import numba_activations as nk
        y = xp.empty(out_shape, dtype=x.dtype)
        nk.maxout_forward(x.ravel(), y.ravel(), pieces, inner)
        return y
    from gpunet.kernels import cupy_activations as ck
    return ck.maxout_forward(x, out_shape, pieces, inner)


def maxout_backward(dy, x, pieces):
    """dx: ``dy`` routed to the winning piece of each group, 0 to the others."""
    xp = float_inputs(dy=dy, x=x)
    out_shape, pieces, inner = _split(x, pieces)
    if dy.shape != out_shape:
        raise ValueError(f"dy has shape {dy.shape}, expected the maxout output shape {out_shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy has dtype {dy.dtype}, expected the dtype of x ({x.dtype})")
    if xp is numpy:
        grouped = _ref_grouped(x, pieces, out_shape)
        win = numpy.expand_dims(grouped.argmax(axis=2), 2)
        dx = numpy.zeros_like(grouped)
        numpy.put_along_axis(dx, win, numpy.expand_dims(dy, 2), axis=2)
        return dx.reshape(x.shape)
    dy, x = xp.ascontiguousarray(dy), xp.ascontiguousarray(x)
    if resolve_path(x.size) == "numba":
        from gpunet.kernels import numba_activations as nk
        dx = xp.empty_like(x)
        nk.maxout_backward(dy.ravel(), x.ravel(), dx.ravel(), pieces, inner)
        return dx
    from gpunet.kernels import cupy_activations as ck
    return ck.maxout_backward(dy, x, pieces, inner)
