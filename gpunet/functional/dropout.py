"""Inverted dropout (Srivastava et al. 2014): in training, keep each value with probability
1 - p and scale it by 1 / (1 - p), so nothing changes at test time (identity in eval).

    out = x * mask,   mask = (u >= p) / (1 - p),  u ~ U(0, 1)        dx = dout * mask
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from gpunet.types import Array, DTypeLike

from .._checks import float_inputs
from ..backend import get_array_module


def dropout_mask(
    shape: tuple, p: float, xp: ModuleType, dtype: DTypeLike, rng: Callable[[tuple], Array]
) -> Array:
    """A mask of ``shape``: 1 / (1 - p) with probability 1 - p, else 0. ``rng(shape)`` draws
    U(0, 1) values on xp's device."""
    if p >= 1.0:
        return xp.zeros(shape, dtype=dtype)
    u = rng(shape)
    return ((u >= p) / (1.0 - p)).astype(dtype)


def dropout_forward(x: Array, p: float, mask: Array) -> tuple:
    """Returns ``(out, cache)`` for a given ``mask`` (from ``dropout_mask``)."""
    float_inputs(x=x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {mask.shape}, expected the shape of x {x.shape}")
    return x * mask, mask


def dropout_backward(dout: Array, cache: object) -> Array:
    mask = cache
    get_array_module(dout, mask)
    return dout * mask
