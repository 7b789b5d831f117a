"""The activation functions' scalar math for Numba, written once for two targets.

Plain Python functions in the subset that both Numba CUDA (device functions) and Numba CPU
(``njit``) compile; ``compile_all(jit)`` compiles them all for one target, dependencies first, each
seeing the others' compiled versions. The formulas and special cases mirror
``kernels/cupy/activations.cuh`` (the CuPy path), except sigmoid, written here branch-free (the
NumPy reference's form) so that the Numba CPU loops vectorize; the NumPy reference is
kernels/numpy/activations.py.

Every activation NAME has NAME_fwd(x, a, b) -> f(x) and NAME_bwd(dy, x, a, b) -> dy * f'(x), with
up to two scalar parameters a, b (kernels/activation_table.py names them).
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable

import numpy

from ..activation_table import NAMES  # noqa: F401 (the activations this math covers)

#: Every constant the formulas use, by name: ``compile_all`` gives each compiled copy of the
#: functions these values in the dtype it is compiled for, so that float32 math stays float32
#: (a bare Python literal such as 0.5 is a float64 to Numba and promotes the whole expression).
ZERO, ONE, HALF, TEN, THREE = 0.0, 1.0, 0.5, 10.0, 3.0
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SQRT1_2 = 0.70710678118654752440
INV_SQRT_2PI = 0.39894228040143267794
SQRT_2_OVER_PI = 0.79788456080286535588
GELU_TANH_K = 0.044715
#: |x| beyond which GELU's Phi(x) is 0 or 1 and phi(x) is 0 in float32 and float64 alike (Phi(-40)
#: = 4e-350 underflows float64): GELU holds x here instead of testing for +-inf (fewer selects
#: in a vector loop, and inf * 0 never happens).
GELU_LIMIT = 40.0
CONSTANTS = {
    name: globals()[name]
    for name in (
        "ZERO",
        "ONE",
        "HALF",
        "TEN",
        "THREE",
        "SELU_ALPHA",
        "SELU_SCALE",
        "SQRT1_2",
        "INV_SQRT_2PI",
        "SQRT_2_OVER_PI",
        "GELU_TANH_K",
        "GELU_LIMIT",
    )
}


def kink(x: float, left: float) -> float:
    if x > ZERO:
        return ONE
    if x <= ZERO:
        return left
    return x  # NaN


def sigmoid_fwd(x: float, a: float, b: float) -> float:
    # e = exp(-|x|) in (0, 1] never overflows; one exp and one division, both sides of the
    # select computed (so a CPU loop vectorizes): 1 / (1 + e) for x >= 0, e / (1 + e) below.
    e = math.exp(-abs(x))
    s = ONE / (ONE + e)
    return s if x >= ZERO else e * s


def sigmoid_bwd(dy: float, x: float, a: float, b: float) -> float:
    s = sigmoid_fwd(x, a, b)
    return dy * s * (ONE - s)


def tanh_fwd(x: float, a: float, b: float) -> float:
    return math.tanh(x)


def tanh_bwd(dy: float, x: float, a: float, b: float) -> float:
    t = math.tanh(x)
    return dy * (ONE - t * t)


def relu_fwd(x: float, a: float, b: float) -> float:
    return ZERO if x < ZERO else x


def relu_bwd(dy: float, x: float, a: float, b: float) -> float:
    return dy * kink(x, ZERO)


def leaky_relu_fwd(x: float, a: float, b: float) -> float:
    return x if x > ZERO else a * x


def leaky_relu_bwd(dy: float, x: float, a: float, b: float) -> float:
    return dy * kink(x, a)


def elu_fwd(x: float, a: float, b: float) -> float:
    return x if x > ZERO else a * math.expm1(x)


def elu_bwd(dy: float, x: float, a: float, b: float) -> float:
    if x > ZERO:
        return dy
    if x <= ZERO:
        return dy * a * math.exp(x)
    return x


def selu_fwd(x: float, a: float, b: float) -> float:
    return SELU_SCALE * elu_fwd(x, SELU_ALPHA, ZERO)


def selu_bwd(dy: float, x: float, a: float, b: float) -> float:
    return SELU_SCALE * elu_bwd(dy, x, SELU_ALPHA, ZERO)


def erfc_and_gauss(u: float) -> tuple:
    """(erfc(u), exp(-u^2)). Two library calls here; the float32 CPU path takes
    vector_math.erfc_and_gauss instead, which computes the exponential once for both."""
    return math.erfc(u), math.exp(-u * u)


def gelu_fwd(x: float, a: float, b: float) -> float:
    # x held at -GELU_LIMIT from below (gelu = -0 there, and at -inf); +inf passes: inf * 1
    xc = -GELU_LIMIT if x < -GELU_LIMIT else x  # NaN passes the comparison and stays NaN
    return HALF * xc * math.erfc(-xc * SQRT1_2)  # Phi(x) = erfc(-x / sqrt 2) / 2: no cancellation


def gelu_bwd(dy: float, x: float, a: float, b: float) -> float:
    xc = -GELU_LIMIT if x < -GELU_LIMIT else x
    xc = GELU_LIMIT if xc > GELU_LIMIT else xc  # gelu' = 0 below, 1 above
    c, g = erfc_and_gauss(-xc * SQRT1_2)  # Phi(x) = c / 2, phi(x) = g / sqrt(2 pi)
    return dy * (HALF * c + xc * INV_SQRT_2PI * g)


def gelu_tanh_fwd(x: float, a: float, b: float) -> float:
    if abs(x) > TEN:
        return x if x > ZERO else ZERO
    inner = SQRT_2_OVER_PI * (x + GELU_TANH_K * x * x * x)
    return HALF * x * (ONE + math.tanh(inner))


def gelu_tanh_bwd(dy: float, x: float, a: float, b: float) -> float:
    if abs(x) > TEN:
        return dy if x > ZERO else ZERO
    x2 = x * x
    t = math.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_K * x2 * x))
    dinner = SQRT_2_OVER_PI * (ONE + THREE * GELU_TANH_K * x2)
    return dy * (HALF * (ONE + t) + HALF * x * (ONE - t * t) * dinner)


def softplus_fwd(x: float, a: float, b: float) -> float:
    z = x * a
    return x if z > b else math.log1p(math.exp(z)) / a


def softplus_bwd(dy: float, x: float, a: float, b: float) -> float:
    z = x * a
    if z > b:
        return dy
    e = math.exp(z)
    return dy * e / (e + ONE)


def silu_fwd(x: float, a: float, b: float) -> float:
    if math.isinf(x):
        return x if x > ZERO else ZERO
    return x * sigmoid_fwd(x, a, b)


def silu_bwd(dy: float, x: float, a: float, b: float) -> float:
    if math.isinf(x):
        return dy if x > ZERO else ZERO
    s = sigmoid_fwd(x, a, b)
    return dy * s * (ONE + x * (ONE - s))


#: helpers that a math module may provide itself, faster (vector_math does)
MATH_MODULE_OVERRIDES = frozenset({"erfc_and_gauss"})
#: the functions in dependency order (a function only calls those before it)
ORDER = (
    "erfc_and_gauss",
    "kink",
    "sigmoid_fwd",
    "sigmoid_bwd",
    "tanh_fwd",
    "tanh_bwd",
    "relu_fwd",
    "relu_bwd",
    "leaky_relu_fwd",
    "leaky_relu_bwd",
    "elu_fwd",
    "elu_bwd",
    "selu_fwd",
    "selu_bwd",
    "gelu_fwd",
    "gelu_bwd",
    "gelu_tanh_fwd",
    "gelu_tanh_bwd",
    "softplus_fwd",
    "softplus_bwd",
    "silu_fwd",
    "silu_bwd",
)


def compile_all(
    jit: Callable, dtype: type = numpy.float64, math_module: types.ModuleType = math
) -> dict:
    """{name: jit(function)} for every function of ORDER, with CONSTANTS in ``dtype``; calls
    between them go to the compiled versions (each copy of a function gets a namespace holding the
    typed constants and what was compiled before it). ``math_module`` is what the formulas call
    ``math``: the C library's, or kernels/numba_cpu/vector_math.py's vectorizable float32
    functions. Each copy has its own name, e.g. ``gelu_fwd__float32__<hash>``, so that cached
    machine code is never shared between dtypes or math modules, or outlives a change of the
    math (kernels/shared/numba_cache.py)."""
    from .numba_cache import renamed, source_hash

    sources = (sys.modules[__name__],) + (() if math_module is math else (math_module,))
    tag = f"{numpy.dtype(dtype).name}__{source_hash(*sources)}"
    namespace = {"math": math_module, **{k: dtype(v) for k, v in CONSTANTS.items()}}
    compiled = {}
    for name in ORDER:
        if name in MATH_MODULE_OVERRIDES and hasattr(math_module, name):
            compiled[name] = namespace[name] = getattr(math_module, name)  # the module's own
            continue
        copy = renamed(globals()[name], f"{name}__{tag}", namespace)
        compiled[name] = namespace[name] = jit(copy)
    return compiled
