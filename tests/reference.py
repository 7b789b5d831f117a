"""Independent float64 references: textbook formulas evaluated element by element with ``math``.

Written apart from gpunet's own code (no shared helpers), for moderate inputs; the extreme values
(+-inf, +-1000, NaN) are checked against known limits in the tests themselves.
"""

import math

import numpy

SELU_ALPHA = 1.6732632423543772848170429916717  # Klambauer et al. 2017, eq. 14
SELU_SCALE = 1.0507009873554804934193349852946


def _vec(f):
    def g(x, *args):
        x = numpy.asarray(x, dtype=numpy.float64)
        return numpy.vectorize(lambda v: f(float(v), *args), otypes=[numpy.float64])(x)

    return g


FORWARD = {
    "sigmoid": _vec(lambda x: 1.0 / (1.0 + math.exp(-x))),
    "tanh": _vec(math.tanh),
    "relu": _vec(lambda x: max(x, 0.0)),
    "leaky_relu": _vec(lambda x, s=0.01: x if x > 0 else s * x),
    "elu": _vec(lambda x, a=1.0: x if x > 0 else a * (math.exp(x) - 1.0)),
    "selu": _vec(lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * (math.exp(x) - 1.0))),
    "gelu": _vec(lambda x: x * 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))),
    "gelu_tanh": _vec(
        lambda x: 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    ),
    "softplus": _vec(
        lambda x, beta=1.0, th=20.0: (
            x if beta * x > th else math.log(1.0 + math.exp(beta * x)) / beta
        )
    ),
    "silu": _vec(lambda x: x / (1.0 + math.exp(-x))),
}


def numerical_derivative(f, x, h=1e-3):
    """Five-point centered finite difference of an elementwise function, float64
    (truncation error O(h^4) ~ 1e-12, rounding ~ 1e-13 at h = 1e-3)."""
    x = numpy.asarray(x, dtype=numpy.float64)
    return (-f(x + 2 * h) + 8 * f(x + h) - 8 * f(x - h) + f(x - 2 * h)) / (12 * h)
