"""Elementwise activation functions, forward and backward.

Each function ``name(x, ...)`` has a backward ``name_backward(dy, x, ...) -> dx = dy * f'(x)`` that
recomputes what it needs from ``x`` (no saved output). Shapes: any; ``dy`` and ``dx`` have the
shape of ``x``. Dtypes: float32, float64. Definitions and constants follow ``torch.nn.functional``.
NaN in gives NaN out; +-inf give the mathematical limits; nothing overflows.

Each call runs on the kernel path that ``gpunet.dispatch.kernels_for`` picks (its docstring has
the rules): ``activation_forward(name, x, **params)`` of kernels/numpy/path.py (NumPy),
kernels/numba_cpu/path.py (Numba CPU), kernels/cupy/path.py (CUDA C: kernels/cupy/activations.cuh),
or kernels/numba_cuda/path.py; the parameters are named as here (kernels/activation_table.py).

The lecture (CS231n, Training Neural Networks I): sigmoid and tanh saturate and kill gradients,
sigmoid is not zero-centered; ReLU does not saturate for x > 0 but units can die; Leaky ReLU, ELU,
SELU, GELU keep a gradient for x < 0. Use ReLU; try Leaky ReLU / ELU / GELU; no sigmoid inside.
"""

from __future__ import annotations

import math

import numpy

from gpunet.types import Array

from .._checks import check_like, float_input, float_inputs
from ..dispatch import kernels_for
from ..kernels.shared.activation_math import CONSTANTS

SELU_ALPHA, SELU_SCALE = CONSTANTS["SELU_ALPHA"], CONSTANTS["SELU_SCALE"]


def _forward(name: str, x: Array, **params: float) -> Array:
    float_input(x, "x")
    return kernels_for(name, x).activation_forward(name, x, **params)


def _backward(name: str, dy: Array, x: Array, **params: float) -> Array:
    float_inputs(dy=dy, x=x)
    check_like(dy, "dy", x, "x")
    return kernels_for(name, dy, x).activation_backward(name, dy, x, **params)


def _finite(value: object, name: str) -> float:
    if not isinstance(value, (int, float, numpy.floating, numpy.integer)) or not math.isfinite(
        value
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def sigmoid(x: Array) -> Array:
    """sigma(x) = 1 / (1 + exp(-x)), in (0, 1). sigmoid(-1000) = 0, sigmoid(1000) = 1."""
    return _forward("sigmoid", x)


def sigmoid_backward(dy: Array, x: Array) -> Array:
    """dx = dy * sigma(x) (1 - sigma(x))."""
    return _backward("sigmoid", dy, x)


def tanh(x: Array) -> Array:
    """tanh(x), in (-1, 1): zero-centered but saturating."""
    return _forward("tanh", x)


def tanh_backward(dy: Array, x: Array) -> Array:
    """dx = dy * (1 - tanh(x)^2)."""
    return _backward("tanh", dy, x)


def relu(x: Array) -> Array:
    """relu(x) = max(x, 0) (NaN passes through)."""
    return _forward("relu", x)


def relu_backward(dy: Array, x: Array) -> Array:
    """dx = dy where x > 0, 0 where x <= 0 (the subgradient 0 at the kink, as PyTorch)."""
    return _backward("relu", dy, x)


def leaky_relu(x: Array, negative_slope: float = 0.01) -> Array:
    """leaky_relu(x) = x if x > 0 else negative_slope * x."""
    return _forward("leaky_relu", x, negative_slope=_finite(negative_slope, "negative_slope"))


def leaky_relu_backward(dy: Array, x: Array, negative_slope: float = 0.01) -> Array:
    """dx = dy where x > 0, negative_slope * dy where x <= 0."""
    return _backward("leaky_relu", dy, x, negative_slope=_finite(negative_slope, "negative_slope"))


def elu(x: Array, alpha: float = 1.0) -> Array:
    """elu(x) = x if x > 0 else alpha * (exp(x) - 1)  (Clevert et al. 2016)."""
    return _forward("elu", x, alpha=_finite(alpha, "alpha"))


def elu_backward(dy: Array, x: Array, alpha: float = 1.0) -> Array:
    """dx = dy where x > 0, dy * alpha * exp(x) where x <= 0."""
    return _backward("elu", dy, x, alpha=_finite(alpha, "alpha"))


def selu(x: Array) -> Array:
    """selu(x) = scale * elu(x, alpha), alpha = 1.6732632..., scale = 1.0507009... (Klambauer
    2017)."""
    return _forward("selu", x)


def selu_backward(dy: Array, x: Array) -> Array:
    """dx = scale * elu_backward(dy, x, alpha)."""
    return _backward("selu", dy, x)


_GELU_KERNELS = {"none": "gelu", "tanh": "gelu_tanh"}


def _gelu_kernel(approximate: str) -> str:
    if approximate not in _GELU_KERNELS:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _GELU_KERNELS[approximate]


def gelu(x: Array, approximate: str = "none") -> Array:
    """gelu(x) = x * Phi(x) (Hendrycks & Gimpel 2016); ``approximate="tanh"`` uses
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return _forward(_gelu_kernel(approximate), x)


def gelu_backward(dy: Array, x: Array, approximate: str = "none") -> Array:
    """dx = dy * (Phi(x) + x phi(x)), or the derivative of the tanh form."""
    return _backward(_gelu_kernel(approximate), dy, x)


def _softplus_args(beta: float, threshold: float) -> dict:
    beta = _finite(beta, "beta")
    if beta == 0:
        raise ValueError("beta must be non-zero")
    return {"beta": beta, "threshold": _finite(threshold, "threshold")}


def softplus(x: Array, beta: float = 1.0, threshold: float = 20.0) -> Array:
    """softplus(x) = log(1 + exp(beta x)) / beta, and x where beta x > threshold (stable)."""
    return _forward("softplus", x, **_softplus_args(beta, threshold))


def softplus_backward(dy: Array, x: Array, beta: float = 1.0, threshold: float = 20.0) -> Array:
    """dx = dy * sigmoid(beta x), and dy where beta x > threshold."""
    return _backward("softplus", dy, x, **_softplus_args(beta, threshold))


def silu(x: Array) -> Array:
    """silu(x) = x * sigmoid(x) (a.k.a. swish)."""
    return _forward("silu", x)


def silu_backward(dy: Array, x: Array) -> Array:
    """dx = dy * s (1 + x (1 - s)), s = sigmoid(x)."""
    return _backward("silu", dy, x)


#: name -> (forward, backward) of every activation with no tensor parameter.
ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
    "relu": (relu, relu_backward),
    "leaky_relu": (leaky_relu, leaky_relu_backward),
    "elu": (elu, elu_backward),
    "selu": (selu, selu_backward),
    "gelu": (gelu, gelu_backward),
    "softplus": (softplus, softplus_backward),
    "silu": (silu, silu_backward),
}
