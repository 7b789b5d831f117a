"""PReLU: leaky ReLU with a learned slope per channel (He et al. 2015).

    y = x            where x > 0
    y = w[c] * x     where x <= 0        (c = index along axis 1, the channel axis)

Shapes: ``x`` (N, C, *), ``weight`` (C,) -- or a single slope of shape (1,) or () for any ``x``
(for 1-D ``x`` only a single slope: there is no channel axis, as in PyTorch).

Backward: dx = dy where x > 0, w[c] * dy where x <= 0;  dw[c] = sum over all but axis 1 of
x * dy where x <= 0.
"""

from __future__ import annotations

import math

from gpunet.types import Array

from .._checks import check_like, float_inputs
from ..dispatch import kernels_for


def _layout(x: Array, weight: Array) -> tuple:
    """(channels, inner) for the flat-index formula c = (j // inner) % channels; checks the
    shape."""
    if weight.dtype != x.dtype:
        raise TypeError(f"weight has dtype {weight.dtype}, expected the dtype of x ({x.dtype})")
    if weight.size == 1 and weight.ndim <= 1:
        return 1, 1
    channels = x.shape[1] if x.ndim >= 2 else None
    if weight.ndim != 1 or channels is None or weight.shape[0] != channels:
        raise ValueError(
            f"weight must have shape ({channels},) (one slope per channel of x, axis 1) or (1,) "
            f"(one slope); got weight shape {weight.shape} for x shape {x.shape}"
        )
    inner = math.prod(x.shape[2:])
    return channels, inner


def prelu(x: Array, weight: Array) -> Array:
    """y = x if x > 0 else weight[c] * x. See the module docstring for shapes."""
    float_inputs(x=x, weight=weight)
    channels, inner = _layout(x, weight)
    return kernels_for("prelu", x).prelu_forward(x, weight.ravel(), channels, inner)


def prelu_backward(dy: Array, x: Array, weight: Array) -> tuple:
    """Returns ``(dx, dweight)``; ``dweight`` has the shape of ``weight``."""
    float_inputs(dy=dy, x=x, weight=weight)
    check_like(dy, "dy", x, "x")
    channels, inner = _layout(x, weight)
    dx, dw_elem = kernels_for("prelu", dy, x).prelu_backward(dy, x, weight.ravel(), channels, inner)
    if channels == 1:
        dw = dw_elem.sum()
    else:
        dw = dw_elem.sum(axis=(0,) + tuple(range(2, x.ndim)))
    return dx, dw.reshape(weight.shape).astype(x.dtype, copy=False)
