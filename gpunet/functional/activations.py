"""Elementwise activation functions, forward and backward.

Each function ``name(x, ...)`` has a backward ``name_backward(dy, x, ...) -> dx = dy * f'(x)`` that
recomputes what it needs from ``x`` (no saved output). Shapes: any; ``dy`` and ``dx`` have the
shape of ``x``. Dtypes: float32, float64. Definitions and constants follow ``torch.nn.functional``.
NaN in gives NaN out; +-inf give the mathematical limits; nothing overflows.

Three paths compute the same formulas:

* NumPy arrays -> the NumPy reference below (``_ref_*``), vectorized, warning-free; from
  ``CPU_KERNEL_MIN`` values on, the same math fused by Numba (kernels/cpu_activations.py) for
  the functions where that measured faster (``CPU_KERNEL_FUNCTIONS``).
* CuPy arrays  -> ``kernels/activations.cuh`` through a vectorized RawKernel (contiguous) or an
  ElementwiseKernel (any layout), or ``kernels/numba_activations.py`` (``set_kernels("numba")``).

The lecture (CS231n, Training Neural Networks I): sigmoid and tanh saturate and kill gradients,
sigmoid is not zero-centered; ReLU does not saturate for x > 0 but units can die; Leaky ReLU, ELU,
SELU, GELU keep a gradient for x < 0. Use ReLU; try Leaky ReLU / ELU / GELU; no sigmoid inside.
"""
from __future__ import annotations

import math

import numba
import numpy

from .._checks import check_like, float_inputs
from ..kernel_path import resolve_path

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ----------------------------------------------------------------------------- dispatch
#: NumPy arrays of at least this many values (C-contiguous) run the Numba CPU kernels
#: (kernels/cpu_activations.py) for the functions in CPU_KERNEL_FUNCTIONS; the rest run the
#: vectorized NumPy reference below. Chosen by measurement (1M float32 values, 2-core EPYC,
#: ms forward/backward, reference -> kernel): relu 4.5/8.9 -> 0.7/0.8, leaky_relu 4.9/9.0 -> 0.7/0.9,
#: gelu 12.0/17.5 -> 7.8/11.4, silu 11.7/18.0 -> 8.0/8.4; but tanh 0.75/1.3 -> 15/15 and sigmoid,
#: elu, selu, softplus lose in one direction: NumPy's SIMD exp/tanh beat Numba's scalar libm calls.
CPU_KERNEL_MIN = 4096
CPU_KERNEL_FUNCTIONS = frozenset({"relu", "leaky_relu", "gelu", "silu"})


def _cpu_kernels_apply(kernel, *arrays):
    return (kernel in CPU_KERNEL_FUNCTIONS and arrays[0].size >= CPU_KERNEL_MIN
            and all(a.flags.c_contiguous for a in arrays))


def _forward(kernel, x, a, b, reference):
    xp = float_inputs(x=x)
    if xp is numpy:
        if _cpu_kernels_apply(kernel, x):
            from gpunet.kernels import cpu_activations
            return cpu_activations.forward(kernel, x, a, b)
        with numpy.errstate(all="ignore"):  # the references select away every inf * 0 they make
            return numpy.asarray(reference(x, a, b), dtype=x.dtype)
    return _gpu_forward(kernel, x, a, b)


def _backward(kernel, dy, x, a, b, reference):
    xp = float_inputs(dy=dy, x=x)
    check_like(dy, "dy", x, "x")
    if xp is numpy:
        if _cpu_kernels_apply(kernel, dy, x):
            from gpunet.kernels import cpu_activations
            return cpu_activations.backward(kernel, dy, x, a, b)
        with numpy.errstate(all="ignore"):
            return numpy.asarray(reference(dy, x, a, b), dtype=x.dtype)
    return _gpu_backward(kernel, dy, x, a, b)


def _gpu_forward(kernel, x, a, b):
    import cupy

    from gpunet.kernels import cupy_activations as ck
    if resolve_path(x.size) == "numba":
        from gpunet.kernels import numba_activations as nk
        x = cupy.ascontiguousarray(x)
        y = cupy.empty_like(x)
        nk.forward(kernel, x.ravel(), y.ravel(), a, b)
        return y
    if ck.vectorizable(x):
        return ck.vector_forward(kernel, x, a, b)
    return ck.elementwise_forward(kernel, x, a, b)


def _gpu_backward(kernel, dy, x, a, b):
    import cupy

    from gpunet.kernels import cupy_activations as ck
    if resolve_path(x.size) == "numba":
        from gpunet.kernels import numba_activations as nk
        dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
        dx = cupy.empty_like(x)
        nk.backward(kernel, dy.ravel(), x.ravel(), dx.ravel(), a, b)
        return dx
    if ck.vectorizable(dy, x):
        return ck.vector_backward(kernel, dy, x, a, b)
    return ck.elementwise_backward(kernel, dy, x, a, b)


def _kink(x, left):
    """1 where x > 0, ``left`` where x <= 0, NaN where x is NaN."""
    return numpy.where(x > 0, 1.0, numpy.where(x <= 0, left, x))


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=False)
def _erf(x):  # NumPy has no erf; libm's, vectorized by Numba on the CPU
    return math.erf(x)


# ----------------------------------------------------------------------------- sigmoid
def _ref_sigmoid(x, a=0.0, b=0.0):
    """1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|) in (0, 1]: never overflows.
    In place where possible: each temporary costs a pass over memory (half the time here)."""
    e = numpy.asarray(numpy.abs(x))          # (a 0-d input gives a scalar: make it an array)
    numpy.negative(e, out=e)
    numpy.exp(e, out=e)
    out = numpy.where(x >= 0, x.dtype.type(1), e)
    e += 1
    return numpy.divide(out, e, out=out)


def sigmoid(x):
    """sigma(x) = 1 / (1 + exp(-x)), in (0, 1). sigmoid(-1000) = 0, sigmoid(1000) = 1."""
    return _forward("sigmoid", x, 0.0, 0.0, _ref_sigmoid)


def sigmoid_backward(dy, x):
    """dx = dy * sigma(x) (1 - sigma(x))."""
    def ref(dy, x, a, b):
        s = _ref_sigmoid(x)
        return dy * s * (1 - s)
    return _backward("sigmoid", dy, x, 0.0, 0.0, ref)


# ----------------------------------------------------------------------------- tanh
def tanh(x):
    """tanh(x), in (-1, 1): zero-centered but saturating."""
    return _forward("tanh", x, 0.0, 0.0, lambda x, a, b: numpy.tanh(x))


def tanh_backward(dy, x):
    """dx = dy * (1 - tanh(x)^2)."""
    return _backward("tanh", dy, x, 0.0, 0.0, lambda dy, x, a, b: dy * (1 - numpy.tanh(x) ** 2))


# ----------------------------------------------------------------------------- relu
def relu(x):
    """relu(x) = max(x, 0) (NaN passes through)."""
    return _forward("relu", x, 0.0, 0.0, lambda x, a, b: numpy.where(x < 0, 0, x))


def relu_backward(dy, x):
    """dx = dy where x > 0, 0 where x <= 0 (the subgradient 0 at the kink, as PyTorch)."""
    return _backward("relu", dy, x, 0.0, 0.0, lambda dy, x, a, b: dy * _kink(x, 0.0))


# ----------------------------------------------------------------------------- leaky relu
def _check_finite_scalar(value, name):
    if not isinstance(value, (int, float, numpy.floating, numpy.integer)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def leaky_relu(x, negative_slope=0.01):
    """leaky_relu(x) = x if x > 0 else negative_slope * x."""
    a = _check_finite_scalar(negative_slope, "negative_slope")
    return _forward("leaky_relu", x, a, 0.0, lambda x, a, b: numpy.where(x > 0, x, a * x))


def leaky_relu_backward(dy, x, negative_slope=0.01):
    """dx = dy where x > 0, negative_slope * dy where x <= 0."""
    a = _check_finite_scalar(negative_slope, "negative_slope")
    return _backward("leaky_relu", dy, x, a, 0.0, lambda dy, x, a, b: dy * _kink(x, a))


# ----------------------------------------------------------------------------- elu, selu
def _ref_elu(x, a, b=0.0):
    return numpy.where(x > 0, x, a * numpy.expm1(numpy.minimum(x, 0)))


def _ref_elu_backward(dy, x, a, b=0.0):
    return dy * _kink(x, a * numpy.exp(numpy.minimum(x, 0)))


def elu(x, alpha=1.0):
    """elu(x) = x if x > 0 else alpha * (exp(x) - 1)  (Clevert et al. 2016)."""
    a = _check_finite_scalar(alpha, "alpha")
    return _forward("elu", x, a, 0.0, _ref_elu)


def elu_backward(dy, x, alpha=1.0):
    """dx = dy where x > 0, dy * alpha * exp(x) where x <= 0."""
    a = _check_finite_scalar(alpha, "alpha")
    return _backward("elu", dy, x, a, 0.0, _ref_elu_backward)


def selu(x):
    """selu(x) = scale * elu(x, alpha), alpha = 1.6732632..., scale = 1.0507009... (Klambauer 2017)."""
    return _forward("selu", x, 0.0, 0.0, lambda x, a, b: SELU_SCALE * _ref_elu(x, SELU_ALPHA))


def selu_backward(dy, x):
    """dx = scale * elu_backward(dy, x, alpha)."""
    return _backward("selu", dy, x, 0.0, 0.0,
                     lambda dy, x, a, b: SELU_SCALE * _ref_elu_backward(dy, x, SELU_ALPHA))


# ----------------------------------------------------------------------------- gelu
_GELU_KERNELS = {"none": "gelu", "tanh": "gelu_tanh"}
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _ref_gelu(x, a=0.0, b=0.0):
    y = 0.5 * x * (1 + _erf(x * numpy.asarray(math.sqrt(0.5), x.dtype)))
    return numpy.where(numpy.isinf(x), numpy.where(x > 0, x, 0), y)


def _ref_gelu_backward(dy, x, a=0.0, b=0.0):
    cdf = 0.5 * (1 + _erf(x * numpy.asarray(math.sqrt(0.5), x.dtype)))
    pdf = numpy.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    d = numpy.where(numpy.isinf(x), numpy.where(x > 0, 1.0, 0.0), cdf + x * pdf)
    return dy * d


def _ref_gelu_tanh(x, a=0.0, b=0.0):
    xc = numpy.clip(x, -10, 10)   # past |x| = 10, tanh is exactly +-1: the limits are exact
    y = 0.5 * xc * (1 + numpy.tanh(_SQRT_2_OVER_PI * (xc + 0.044715 * xc ** 3)))
    return numpy.where(numpy.abs(x) > 10, numpy.where(x > 0, x, 0), y)


def _ref_gelu_tanh_backward(dy, x, a=0.0, b=0.0):
    xc = numpy.clip(x, -10, 10)
    t = numpy.tanh(_SQRT_2_OVER_PI * (xc + 0.044715 * xc ** 3))
    d = 0.5 * (1 + t) + 0.5 * xc * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * xc * xc)
    return dy * numpy.where(numpy.abs(x) > 10, numpy.where(x > 0, 1.0, 0.0), d)


def _gelu_kernel(approximate):
    if approximate not in _GELU_KERNELS:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _GELU_KERNELS[approximate]


def gelu(x, approximate="none"):
    """gelu(x) = x * Phi(x) (Hendrycks & Gimpel 2016); ``approximate="tanh"`` uses
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    kernel = _gelu_kernel(approximate)
    return _forward(kernel, x, 0.0, 0.0, _ref_gelu if kernel == "gelu" else _ref_gelu_tanh)


def gelu_backward(dy, x, approximate="none"):
    """dx = dy * (Phi(x) + x phi(x)), or the derivative of the tanh form."""
    kernel = _gelu_kernel(approximate)
    ref = _ref_gelu_backward if kernel == "gelu" else _ref_gelu_tanh_backward
    return _backward(kernel, dy, x, 0.0, 0.0, ref)


# ----------------------------------------------------------------------------- softplus
def _softplus_args(beta, threshold):
    beta = _check_finite_scalar(beta, "beta")
    if beta == 0:
        raise ValueError("beta must be non-zero")
    return beta, _check_finite_scalar(threshold, "threshold")


def softplus(x, beta=1.0, threshold=20.0):
    """softplus(x) = log(1 + exp(beta x)) / beta, and x where beta x > threshold (stable)."""
    a, b = _softplus_args(beta, threshold)

    def ref(x, a, b):
        z = x * a
        return numpy.where(z > b, x, numpy.log1p(numpy.exp(numpy.minimum(z, b))) / a)
    return _forward("softplus", x, a, b, ref)


def softplus_backward(dy, x, beta=1.0, threshold=20.0):
    """dx = dy * sigmoid(beta x), and dy where beta x > threshold."""
    a, b = _softplus_args(beta, threshold)

    def ref(dy, x, a, b):
        z = x * a
        return numpy.where(z > b, dy, dy * _ref_sigmoid(z))
    return _backward("softplus", dy, x, a, b, ref)


# ----------------------------------------------------------------------------- silu
def silu(x):
    """silu(x) = x * sigmoid(x) (a.k.a. swish)."""
    return _forward("silu", x, 0.0, 0.0, lambda x, a, b: numpy.where(
        numpy.isinf(x), numpy.where(x > 0, x, 0), x * _ref_sigmoid(x)))


def silu_backward(dy, x):
    """dx = dy * s (1 + x (1 - s)), s = sigmoid(x)."""
    def ref(dy, x, a, b):
        s = _ref_sigmoid(x)
        d = numpy.where(numpy.isinf(x), numpy.where(x > 0, 1.0, 0.0), s * (1 + x * (1 - s)))
        return dy * d
    return _backward("silu", dy, x, 0.0, 0.0, ref)


#: name -> (forward, backward) of every activation with no tensor parameter.
ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_backward), "tanh": (tanh, tanh_backward),
    "relu": (relu, relu_backward), "leaky_relu": (leaky_relu, leaky_relu_backward),
    "elu": (elu, elu_backward), "selu": (selu, selu_backward), "gelu": (gelu, gelu_backward),
    "softplus": (softplus, softplus_backward), "silu": (silu, silu_backward),
}
