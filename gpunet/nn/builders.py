"""Builders for the lecture's networks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy

from gpunet.types import DTypeLike

from ..functional.batchnorm import ACTIVATION_CODES
from .activation import ACTIVATION_LAYERS
from .batchnorm import BatchNorm1d
from .layers import Dropout, Linear
from .module import Module, Sequential


def mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    batchnorm: bool = True,
    init: str | Callable = "he_normal",
    dropout: float = 0.0,
    dtype: DTypeLike = numpy.float32,
    output_scale: float = 0.1,
) -> Sequential:
    """A fully connected net: [Linear -> (BatchNorm) -> activation -> (Dropout)] * k -> Linear.

    ``sizes`` = [input, hidden..., classes], e.g. ``mlp([3072, 100, 100, 10])``. With
    ``batchnorm=True`` the hidden Linear layers have no bias (BatchNorm's shift cancels it) and
    the activation is fused into the BatchNorm kernel where it has one (relu, leaky_relu, elu, tanh,
    sigmoid, gelu, silu): BN then activation is the lecture's order.

    ``output_scale``: the classifier layer's initial weights are ``init``'s times this, so that
    the scores start small and the softmax near uniform: the initial loss is log C, the lecture's
    first sanity check, and no early iterations are spent shrinking confident wrong scores
    (Karpathy, "A Recipe for Training Neural Networks", 2019: "init well"). 1.0 keeps ``init``.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or any(
        isinstance(s, bool) or not isinstance(s, (int, numpy.integer)) or s < 1 for s in sizes
    ):
        raise ValueError(
            f"sizes must be at least [inputs, outputs] of positive integers, got {sizes}"
        )
    if activation not in ACTIVATION_LAYERS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATION_LAYERS)}, got {activation!r}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: list[Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(Linear(fan_in, fan_out, bias=not batchnorm, init=init, dtype=dtype))
        if batchnorm and activation in ACTIVATION_CODES:
            layers.append(BatchNorm1d(fan_out, activation=activation, dtype=dtype))
        else:
            if batchnorm:
                layers.append(BatchNorm1d(fan_out, dtype=dtype))
            layers.append(ACTIVATION_LAYERS[activation]())
        if dropout:
            layers.append(Dropout(dropout))
    if not (isinstance(output_scale, (int, float)) and 0 < output_scale <= 1):
        raise ValueError(f"output_scale must be in (0, 1], got {output_scale!r}")
    head = Linear(sizes[-2], sizes[-1], init=init, dtype=dtype)
    head.weight.data *= head.weight.data.dtype.type(output_scale)
    layers.append(head)
    return Sequential(*layers)
