"""Builders for the lecture's networks: ``mlp`` (fully connected) and ``convnet`` (conv blocks,
then fully connected layers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy

from gpunet.types import DTypeLike

from ..functional.batchnorm import ACTIVATION_CODES
from .activation import ACTIVATION_LAYERS
from .batchnorm import BatchNorm1d, BatchNorm2d
from .layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d
from .module import Module, Sequential


def _positive_ints(values: Sequence, name: str, at_least: int = 0) -> list:
    values = list(values)
    if len(values) < at_least or any(
        isinstance(s, bool) or not isinstance(s, (int, numpy.integer)) or s < 1 for s in values
    ):
        need = f"at least {at_least} " if at_least else ""
        raise ValueError(f"{name} must be a list of {need}positive integers, got {values}")
    return [int(v) for v in values]


def _check_common(activation: str, dropout: float, output_scale: float) -> None:
    if activation not in ACTIVATION_LAYERS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATION_LAYERS)}, got {activation!r}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not (isinstance(output_scale, (int, float)) and 0 < output_scale <= 1):
        raise ValueError(f"output_scale must be in (0, 1], got {output_scale!r}")


def _normalized(
    batchnorm_cls: type, width: int, batchnorm: bool, activation: str, dtype: DTypeLike
) -> list:
    """[BatchNorm with the activation fused] where BatchNorm has it, else [BatchNorm,] activation:
    BN then activation, the lecture's order."""
    if batchnorm and activation in ACTIVATION_CODES:
        return [batchnorm_cls(width, activation=activation, dtype=dtype)]
    layers: list[Module] = [batchnorm_cls(width, dtype=dtype)] if batchnorm else []
    return layers + [ACTIVATION_LAYERS[activation]()]


def _fully_connected(
    sizes: list, activation: str, batchnorm: bool, init: str | Callable, dropout: float,
    dtype: DTypeLike, output_scale: float,
) -> list:  # fmt: skip
    """[Linear -> (BatchNorm) -> activation -> (Dropout)] per hidden size, then the classifier."""
    layers: list[Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(Linear(fan_in, fan_out, bias=not batchnorm, init=init, dtype=dtype))
        layers += _normalized(BatchNorm1d, fan_out, batchnorm, activation, dtype)
        if dropout:
            layers.append(Dropout(dropout))
    head = Linear(sizes[-2], sizes[-1], init=init, dtype=dtype)
    head.weight.data *= head.weight.data.dtype.type(output_scale)
    return layers + [head]


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
    sizes = _positive_ints(sizes, "sizes", at_least=2)
    _check_common(activation, dropout, output_scale)
    return Sequential(
        *_fully_connected(sizes, activation, batchnorm, init, dropout, dtype, output_scale)
    )


def convnet(
    channels: Sequence[int],
    input_shape: Sequence[int] = (3, 32, 32),
    hidden: Sequence[int] = (),
    classes: int = 10,
    kernel_size: int = 3,
    pool: int = 2,
    activation: str = "relu",
    batchnorm: bool = True,
    init: str | Callable = "he_normal",
    dropout: float = 0.0,
    dtype: DTypeLike = numpy.float32,
    output_scale: float = 0.1,
) -> Sequential:
    """A convolutional net for ``input_shape`` = (C, H, W) images:
    [Conv2d(k x k, "same" padding) -> (BatchNorm2d) -> activation -> MaxPool2d(pool)] per entry of
    ``channels``, then Flatten and ``mlp``'s fully connected part: [Linear -> (BatchNorm) ->
    activation -> (Dropout)] per entry of ``hidden``, then the classifier of ``classes`` scores.

    ``convnet([32, 64])`` is the common CIFAR-10 baseline (two 3x3 blocks, 32x32 -> 8x8);
    CS231n's three-layer ConvNet (conv 7x7 32 -> ReLU -> pool 2 -> affine 100 -> ReLU ->
    affine 10) is ``convnet([32], hidden=[100], kernel_size=7, batchnorm=False)``.

    BatchNorm goes after each conv (per channel, over N, H, W) and before the nonlinearity, as
    the lecture places it "after FC or CONV layers"; with it the convs have no bias. A block
    whose input is already smaller than ``pool`` skips its pooling (the 8x8 digits through three
    blocks: 8 -> 4 -> 2 -> 1). Weights: ``init`` with fan-in C kh kw (gpunet.init);
    ``output_scale`` as in ``mlp``.
    """
    channels = _positive_ints(channels, "channels", at_least=1)
    hidden = _positive_ints(hidden, "hidden")
    shape = _positive_ints(input_shape, "input_shape")
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    for name, v in (("classes", classes), ("kernel_size", kernel_size), ("pool", pool)):
        _positive_ints([v], name)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
    _check_common(activation, dropout, output_scale)
    (c, h, w) = shape
    layers: list[Module] = []
    for width in channels:
        layers.append(
            Conv2d(c, width, kernel_size, padding=kernel_size // 2, bias=not batchnorm,
                   init=init, dtype=dtype)
        )  # fmt: skip
        layers += _normalized(BatchNorm2d, width, batchnorm, activation, dtype)
        if pool > 1 and h >= pool and w >= pool:
            layers.append(MaxPool2d(pool))
            h, w = h // pool, w // pool
        c = width
    sizes = [c * h * w, *hidden, classes]
    fc = _fully_connected(sizes, activation, batchnorm, init, dropout, dtype, output_scale)
    return Sequential(*layers, Flatten(), *fc)
