"""Maxout (Goodfellow et al. 2013): the max of ``pieces`` linear pieces.

The feature axis (axis 1) of ``x`` holds C groups of ``pieces`` consecutive features:

    x: (N, C * pieces, *)  ->  y: (N, C, *),   y[n, c, ...] = max_k x[n, c * pieces + k, ...]

Backward: the gradient goes to the winning piece (the first maximum; a NaN wins), zero elsewhere.
Maxout neither saturates nor dies, at ``pieces`` times the parameters of the layer before it.
"""

from __future__ import annotations

import math

import numpy

from gpunet.types import Array

from .._checks import float_inputs
from ..dispatch import kernels_for


def _split(x: Array, pieces: int) -> tuple:
    if isinstance(pieces, bool) or not isinstance(pieces, (int, numpy.integer)) or pieces < 1:
        raise ValueError(f"pieces must be a positive integer, got {pieces!r}")
    if x.ndim < 2:
        raise ValueError(f"x must have a feature axis (shape (N, F, ...)), got shape {x.shape}")
    if x.shape[1] % pieces:
        raise ValueError(
            f"the feature axis of x (axis 1, size {x.shape[1]}) is not divisible by pieces={pieces}"
        )
    channels = x.shape[1] // pieces
    inner = math.prod(x.shape[2:])
    return (x.shape[0], channels) + x.shape[2:], int(pieces), inner


def maxout(x: Array, pieces: int) -> Array:
    """y = max over ``pieces`` consecutive features of axis 1 (see module docstring)."""
    float_inputs(x=x)
    out_shape, pieces, inner = _split(x, pieces)
    return kernels_for("maxout", x).maxout_forward(x, out_shape, pieces, inner)


def maxout_backward(dy: Array, x: Array, pieces: int) -> Array:
    """dx: ``dy`` routed to the winning piece of each group, 0 to the others."""
    float_inputs(dy=dy, x=x)
    out_shape, pieces, inner = _split(x, pieces)
    if dy.shape != out_shape:
        raise ValueError(f"dy has shape {dy.shape}, expected the maxout output shape {out_shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy has dtype {dy.dtype}, expected the dtype of x ({x.dtype})")
    return kernels_for("maxout", dy, x).maxout_backward(dy, x, out_shape, pieces, inner)
