"""The activation functions' scalar math for Numba, written once for two targets.

Plain Python functions in the subset that both Numba CUDA (device functions) and Numba CPU
(``njit``) compile; ``compile_all(jit)`` compiles them all for one target, dependencies first, each
seeing the others' compiled versions. The formulas and special cases mirror ``activations.cuh``
(the CuPy path) line for line; the NumPy reference is gpunet/functional/activations.py.

Every activation NAME has NAME_fwd(x, a, b) -> f(x) and NAME_bwd(dy, x, a, b) -> dy * f'(x), with
up to two scalar parameters a, b (see activations.cuh for which).
"""
from __future__ import annotations

import math
import types

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SQRT1_2 = 0.70710678118654752440
INV_SQRT_2PI = 0.39894228040143267794
SQRT_2_OVER_PI = 0.79788456080286535588


def kink(x, left):
    if x > 0:
        return 1.0
    if x <= 0:
        return left
    return x  # NaN


def sigmoid_fwd(x, a, b):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def sigmoid_bwd(dy, x, a, b):
    s = sigmoid_fwd(x, a, b)
    return dy * s * (1.0 - s)


def tanh_fwd(x, a, b):
    return math.tanh(x)


def tanh_bwd(dy, x, a, b):
    t = math.tanh(x)
    return dy * (1.0 - t * t)


def relu_fwd(x, a, b):
    return 0.0 if x < 0 else x


def relu_bwd(dy, x, a, b):
    return dy * kink(x, 0.0)


def leaky_relu_fwd(x, a, b):
    return x if x > 0 else a * x


def leaky_relu_bwd(dy, x, a, b):
    return dy * kink(x, a)


def elu_fwd(x, a, b):
    return x if x > 0 else a * math.expm1(x)


def elu_bwd(dy, x, a, b):
    if x > 0:
        return dy
    if x <= 0:
        return dy * a * math.exp(x)
    return x


def selu_fwd(x, a, b):
    return SELU_SCALE * elu_fwd(x, SELU_ALPHA, 0.0)


def selu_bwd(dy, x, a, b):
    return SELU_SCALE * elu_bwd(dy, x, SELU_ALPHA, 0.0)


def gelu_fwd(x, a, b):
    if math.isinf(x):
        return x if x > 0 else 0.0
    return 0.5 * x * (1.0 + math.erf(x * SQRT1_2))


def gelu_bwd(dy, x, a, b):
    if math.isinf(x):
        return dy if x > 0 else 0.0
    cdf = 0.5 * (1.0 + math.erf(x * SQRT1_2))
    pdf = INV_SQRT_2PI * math.exp(-0.5 * x * x)
    return dy * (cdf + x * pdf)


def gelu_tanh_fwd(x, a, b):
    if abs(x) > 10:
        return x if x > 0 else 0.0
    inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
    return 0.5 * x * (1.0 + math.tanh(inner))


def gelu_tanh_bwd(dy, x, a, b):
    if abs(x) > 10:
        return dy if x > 0 else 0.0
    x2 = x * x
    t = math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x2 * x))
    dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x2)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)


def softplus_fwd(x, a, b):
    z = x * a
    return x if z > b else math.log1p(math.exp(z)) / a


def softplus_bwd(dy, x, a, b):
    z = x * a
    if z > b:
        return dy
    e = math.exp(z)
    return dy * e / (e + 1.0)


def silu_fwd(x, a, b):
    if math.isinf(x):
        return x if x > 0 else 0.0
    return x * sigmoid_fwd(x, a, b)


def silu_bwd(dy, x, a, b):
    if math.isinf(x):
        return dy if x > 0 else 0.0
    s = sigmoid_fwd(x, a, b)
    return dy * s * (1.0 + x * (1.0 - s))


#: the functions in dependency order (a function only calls those before it)
ORDER = ("kink", "sigmoid_fwd", "sigmoid_bwd", "tanh_fwd", "tanh_bwd", "relu_fwd", "relu_bwd",
         "leaky_relu_fwd", "leaky_relu_bwd", "elu_fwd", "elu_bwd", "selu_fwd", "selu_bwd", "gelu_fwd",
         "gelu_bwd", "gelu_tanh_fwd", "gelu_tanh_bwd", "softplus_fwd", "softplus_bwd", "silu_fwd", "silu_bwd")
NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "softplus", "silu")


def compile_all(jit):
    """{name: jit(function)} for every function of ORDER; calls between them go to the compiled
    versions (each copy of a function gets a namespace holding what was compiled before it)."""
    namespace = {k: v for k, v in globals().items() if k.isupper() or k == "math"}
    compiled = {}
    for name in ORDER:
        fn = globals()[name]
        copy = types.FunctionType(fn.__code__, namespace, name, fn.__defaults__, fn.__closure__)
        compiled[name] = namespace[name] = jit(copy)
    return compiled
