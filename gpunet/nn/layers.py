"""Layers with parameters or state: Linear, Conv2d, MaxPool2d, AvgPool2d, Flatten, Dropout.

Each is a thin object over the functional core (gpunet/functional): forward keeps the cache,
backward returns dx and accumulates parameter gradients.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy

from gpunet.types import Array, DTypeLike

from .. import functional as F
from .. import init as initializers
from ..backend import get_array_module, uniform_like
from .module import Module, Parameter, saved


class SymmetryWarning(UserWarning):
    """A constant weight initialization: every unit computes the same thing and gets the same
    gradient and update, so symmetry never breaks (CS231n, weight initialization)."""


def _init_weight(init: str | Callable, shape: tuple, dtype: DTypeLike, owner: str) -> Array:
    if init == "zeros" or init is initializers.zeros:
        warnings.warn(
            f"{owner}: init='zeros' gives every unit the same output, gradient and "
            "update; symmetry will not break (use 'he_normal' or 'xavier_normal')",
            SymmetryWarning,
            stacklevel=3,
        )
    return initializers.get_initializer(init)(shape, dtype=dtype)


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _WeightBias(Module):
    """A layer with ``weight`` and optional ``bias`` whose functional backward returns
    ``(dx, dw, db)`` from the cache its forward kept."""

    #: the functional backward: _backward_fn(dout, cache, input_grad) -> (dx, dw, db)
    _backward_fn: Callable[..., tuple]

    def backward(self, dout: Array) -> Array | None:
        dx, dw, db = type(self)._backward_fn(dout, saved(self._cache, self), self.input_grad)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def _bias_data(self):
        return None if self.bias is None else self.bias.data


class Linear(_WeightBias):
    """y = x @ W + b with W of shape (in_features, out_features) (fan_in = in_features)."""

    _backward_fn = staticmethod(F.linear_backward)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str | Callable = "kaiming_normal",
        dtype: DTypeLike = numpy.float32,
    ):
        super().__init__()
        _check_positive_int(in_features, "in_features")
        _check_positive_int(out_features, "out_features")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_init_weight(init, (in_features, out_features), dtype, "Linear"))
        self.bias = Parameter(initializers.zeros(out_features, dtype=dtype)) if bias else None
        self._cache: tuple | None = None

    def forward(self, x: Array) -> Array:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) expects input of shape "
                f"(N, {self.in_features}), got {x.shape}"
            )
        out, self._cache = F.linear_forward(x, self.weight.data, self._bias_data())
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv2d(_WeightBias):
    """2-D convolution, NCHW, weight (out_channels, in_channels, kh, kw)."""

    _backward_fn = staticmethod(F.conv2d_backward)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple,
        stride: int | tuple = 1,
        padding: int | tuple = 0,
        bias: bool = True,
        init: str | Callable = "kaiming_normal",
        dtype: DTypeLike = numpy.float32,
    ):
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(out_channels, "out_channels")
        kh, kw = F.conv.pair(kernel_size, "kernel_size")
        self.stride, self.padding = F.conv.pair(stride, "stride"), F.conv.pair(padding, "padding")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.weight = Parameter(
            _init_weight(init, (out_channels, in_channels, kh, kw), dtype, "Conv2d")
        )
        self.bias = Parameter(initializers.zeros(out_channels, dtype=dtype)) if bias else None
        self._cache: tuple | None = None

    def forward(self, x: Array) -> Array:
        out, self._cache = F.conv2d_forward(
            x, self.weight.data, self._bias_data(), self.stride, self.padding
        )
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class MaxPool2d(Module):
    """Max pooling over kh x kw windows (``stride`` defaults to ``kernel_size``)."""

    def __init__(
        self, kernel_size: int | tuple, stride: int | tuple | None = None, padding: int | tuple = 0
    ):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self._cache: tuple | None = None

    def forward(self, x: Array) -> Array:
        out, self._cache = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return out

    def backward(self, dout: Array) -> Array:
        return F.max_pool2d_backward(dout, saved(self._cache, self))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class AvgPool2d(MaxPool2d):
    """Average pooling over kh x kw windows, padding counted as zeros (PyTorch's default)."""

    def forward(self, x: Array) -> Array:
        out, self._cache = F.avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return out

    def backward(self, dout: Array) -> Array:
        return F.avg_pool2d_backward(dout, saved(self._cache, self))


class Flatten(Module):
    """(N, *) -> (N, prod(*))."""

    def forward(self, x: Array) -> Array:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: Array) -> Array:
        return dout.reshape(self._shape)


class Dropout(Module):
    """Inverted dropout with drop probability ``p``; identity in eval mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1), got {p}")
        self.p = float(p)
        self._mask: Array | None = None

    def forward(self, x: Array) -> Array:
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        xp = get_array_module(x)
        mask = F.dropout_mask(x.shape, self.p, xp, x.dtype, lambda s: uniform_like(s, xp))
        out, self._mask = F.dropout_forward(x, self.p, mask)
        return out

    def backward(self, dout: Array) -> Array:
        return dout if self._mask is None else F.dropout_backward(dout, self._mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"
