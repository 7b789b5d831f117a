"""The activations in whole-array NumPy expressions (the NumPy path; kernels/numpy/path.py).

The path for small arrays, for the functions where NumPy's SIMD loops beat Numba's, and the one
the others are compared with in the tests (which hold it in turn to the independent float64
formulas of tests/reference.py). Formulas: the docstrings of gpunet/functional/activations.py.
Each activation takes the kernels' two scalars ``a``, ``b`` (kernels/activation_table.py maps the
named parameters onto them).

Warning-free: every inf * 0 or overflow that an expression makes is selected away, so the
computations run under ``errstate(all="ignore")``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy

from gpunet.types import Array

from ..shared.activation_math import CONSTANTS

SELU_ALPHA, SELU_SCALE = CONSTANTS["SELU_ALPHA"], CONSTANTS["SELU_SCALE"]
_SQRT_2_OVER_PI = CONSTANTS["SQRT_2_OVER_PI"]


def _kink(x: Array, left: Array) -> Array:
    """1 where x > 0, ``left`` where x <= 0, NaN where x is NaN."""
    return numpy.where(x > 0, 1.0, numpy.where(x <= 0, left, x))


@functools.cache
def _erf_ufunc() -> Callable:
    """libm's erf as a NumPy ufunc, compiled by Numba on first use (NumPy has no erf) and cached
    on disk; not at import, which stays free of Numba."""
    import numba

    def erf(x: float) -> float:
        return math.erf(x)

    signatures = ["float32(float32)", "float64(float64)"]
    try:
        return numba.vectorize(signatures, cache=True)(erf)
    except RuntimeError:  # no writable cache: compiled in memory
        return numba.vectorize(signatures)(erf)


def _erf(x: Array) -> Array:
    return _erf_ufunc()(x)


def sigmoid(x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    """1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|) in (0, 1]: never overflows.
    In place where possible: each temporary costs a pass over memory (half the time here)."""
    e = numpy.asarray(numpy.abs(x))  # (a 0-d input gives a scalar: make it an array)
    numpy.negative(e, out=e)
    numpy.exp(e, out=e)
    out = numpy.where(x >= 0, x.dtype.type(1), e)
    e += 1
    return numpy.divide(out, e, out=out)


def _elu(x: Array, a: float, b: float = 0.0) -> Array:
    return numpy.where(x > 0, x, a * numpy.expm1(numpy.minimum(x, 0)))


def _elu_backward(dy: Array, x: Array, a: float, b: float = 0.0) -> Array:
    return dy * _kink(x, a * numpy.exp(numpy.minimum(x, 0)))


def _gelu(x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    y = 0.5 * x * (1 + _erf(x * numpy.asarray(math.sqrt(0.5), x.dtype)))
    return numpy.where(numpy.isinf(x), numpy.where(x > 0, x, 0), y)


def _gelu_backward(dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    cdf = 0.5 * (1 + _erf(x * numpy.asarray(math.sqrt(0.5), x.dtype)))
    pdf = numpy.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return dy * numpy.where(numpy.isinf(x), numpy.where(x > 0, 1.0, 0.0), cdf + x * pdf)


def _gelu_tanh(x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    xc = numpy.clip(x, -10, 10)  # past |x| = 10, tanh is exactly +-1: the limits are exact
    y = 0.5 * xc * (1 + numpy.tanh(_SQRT_2_OVER_PI * (xc + 0.044715 * xc**3)))
    return numpy.where(numpy.abs(x) > 10, numpy.where(x > 0, x, 0), y)


def _gelu_tanh_backward(dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    xc = numpy.clip(x, -10, 10)
    t = numpy.tanh(_SQRT_2_OVER_PI * (xc + 0.044715 * xc**3))
    d = 0.5 * (1 + t) + 0.5 * xc * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * xc * xc)
    return dy * numpy.where(numpy.abs(x) > 10, numpy.where(x > 0, 1.0, 0.0), d)


def _softplus(x: Array, a: float, b: float) -> Array:
    z = x * a
    return numpy.where(z > b, x, numpy.log1p(numpy.exp(numpy.minimum(z, b))) / a)


def _silu(x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    return numpy.where(numpy.isinf(x), numpy.where(x > 0, x, 0), x * sigmoid(x))


def _silu_backward(dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    s = sigmoid(x)
    return dy * numpy.where(numpy.isinf(x), numpy.where(x > 0, 1.0, 0.0), s * (1 + x * (1 - s)))


def _sigmoid_backward(dy: Array, x: Array, a: float = 0.0, b: float = 0.0) -> Array:
    s = sigmoid(x)
    return dy * s * (1 - s)


#: name -> (f(x, a, b), dy * f'(x) as g(dy, x, a, b)); a, b: the scalar parameters
ACTIVATIONS = {
    "sigmoid": (sigmoid, _sigmoid_backward),
    "tanh": (lambda x, a, b: numpy.tanh(x), lambda dy, x, a, b: dy * (1 - numpy.tanh(x) ** 2)),
    "relu": (lambda x, a, b: numpy.where(x < 0, 0, x), lambda dy, x, a, b: dy * _kink(x, 0.0)),
    "leaky_relu": (
        lambda x, a, b: numpy.where(x > 0, x, a * x),
        lambda dy, x, a, b: dy * _kink(x, a),
    ),
    "elu": (_elu, _elu_backward),
    "selu": (
        lambda x, a, b: SELU_SCALE * _elu(x, SELU_ALPHA),
        lambda dy, x, a, b: SELU_SCALE * _elu_backward(dy, x, SELU_ALPHA),
    ),
    "gelu": (_gelu, _gelu_backward),
    "gelu_tanh": (_gelu_tanh, _gelu_tanh_backward),
    "softplus": (_softplus, lambda dy, x, a, b: numpy.where(x * a > b, dy, dy * sigmoid(x * a))),
    "silu": (_silu, _silu_backward),
}


def forward(name: str, x: Array, a: float, b: float) -> Array:
    """f(x) for activation ``name`` (any layout; a new array of x's dtype)."""
    with numpy.errstate(all="ignore"):
        return numpy.asarray(ACTIVATIONS[name][0](x, a, b), dtype=x.dtype)


def backward(name: str, dy: Array, x: Array, a: float, b: float) -> Array:
    """dy * f'(x)."""
    with numpy.errstate(all="ignore"):
        return numpy.asarray(ACTIVATIONS[name][1](dy, x, a, b), dtype=x.dtype)


def _slopes(x: Array, w: Array, channels: int):
    return w.reshape(()) if channels == 1 else w.reshape((1, channels) + (1,) * (x.ndim - 2))


def prelu_forward(x: Array, w: Array, channels: int, inner: int) -> Array:
    """y = x where x > 0, else w[c] * x; w has ``channels`` values (1: one shared slope)."""
    return numpy.where(x > 0, x, _slopes(x, w, channels) * x).astype(x.dtype, copy=False)


def prelu_backward(dy: Array, x: Array, w: Array, channels: int, inner: int) -> tuple:
    """(dx, dw_elem): dw_elem = x * dy where x <= 0, else 0 (summed per channel by the caller)."""
    dx = numpy.where(x > 0, dy, numpy.where(x <= 0, _slopes(x, w, channels) * dy, x)).astype(
        x.dtype, copy=False
    )
    return dx, numpy.where(x > 0, 0, x * dy).astype(x.dtype, copy=False)


def maxout_forward(x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    """Max over each group of ``pieces`` consecutive features of axis 1."""
    return x.reshape(out_shape[:2] + (pieces,) + out_shape[2:]).max(axis=2)


def maxout_backward(dy: Array, x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
    """dy routed to each group's first maximum (a NaN wins), 0 elsewhere."""
    grouped = x.reshape(out_shape[:2] + (pieces,) + out_shape[2:])
    win = numpy.expand_dims(grouped.argmax(axis=2), 2)
    dx = numpy.zeros_like(grouped)
    numpy.put_along_axis(dx, win, numpy.expand_dims(dy, 2), axis=2)
    return dx.reshape(x.shape)
