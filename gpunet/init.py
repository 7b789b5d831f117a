"""Weight initialization: small functions ``(shape, *, ..., dtype) -> array`` on the active backend.

Values are drawn on the host from ``gpunet.seed``'s generator and then moved, so the same seed gives
the same weights on NumPy and CuPy. Any of them can be named by string in ``init=``
(``Linear``, ``Conv2d``, ``mlp``): see ``INITIALIZERS`` and ``get_initializer``.

Fans, stated once (``fans``):

* 2-D weights are (fan_in, fan_out) -- ``Linear``'s (in_features, out_features), the lecture's
  ``W = randn(fan_in, fan_out)``;
* weights with k >= 3 dimensions are (out_channels, in_channels, *kernel):
  fan_in = in_channels * prod(kernel), fan_out = out_channels * prod(kernel) (``Conv2d``).

The lecture (CS231n): zeros never break symmetry; 0.01 * randn makes activations vanish in deep
tanh nets; Xavier/Glorot keeps the variance through tanh layers; He/Kaiming adds the factor 2 that
ReLU needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy

from gpunet.types import Array, DTypeLike

from .backend import get_xp, host_rng

__all__ = [
    "fans",
    "calculate_gain",
    "zeros",
    "constant",
    "normal",
    "uniform",
    "small_random",
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "orthogonal",
    "truncated_normal",
    "get_initializer",
    "INITIALIZERS",
]


#: a shape: an int (one dimension) or a tuple of ints
Shape = int | tuple[int, ...]


def _out(values: numpy.ndarray | list, dtype: DTypeLike) -> Array:
    return get_xp().asarray(numpy.asarray(values, dtype=dtype))


def _shape(shape: Shape) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, (int, numpy.integer)) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must have non-negative sizes, got {shape}")
    return shape


def fans(shape: Shape) -> tuple:
    """(fan_in, fan_out) of a weight of this shape (see the module docstring)."""
    shape = _shape(shape)
    if len(shape) < 2:
        raise ValueError(
            f"fan_in and fan_out need a weight with at least 2 dimensions, got shape {shape}"
        )
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(numpy.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table): linear, conv*, sigmoid: 1;
    tanh: 5/3; relu: sqrt(2); leaky_relu: sqrt(2 / (1 + slope^2)) (slope = param, default 0.01);
    selu: 3/4."""
    linear = (
        "linear",
        "identity",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
    )
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"negative slope {slope!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def zeros(shape: Shape, *, dtype: DTypeLike = numpy.float32) -> Array:
    """All zeros. For weights this never breaks symmetry (every unit stays identical)."""
    return _out(numpy.zeros(_shape(shape)), dtype)


def constant(shape: Shape, value: float = 0.0, *, dtype: DTypeLike = numpy.float32) -> Array:
    """All ``value``."""
    return _out(numpy.full(_shape(shape), value), dtype)


def normal(
    shape: Shape, std: float = 1.0, mean: float = 0.0, *, dtype: DTypeLike = numpy.float32
) -> Array:
    """N(mean, std^2)."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    return _out(host_rng().normal(mean, std, size=_shape(shape)), dtype)


def uniform(
    shape: Shape, a: float = 0.0, b: float = 1.0, *, dtype: DTypeLike = numpy.float32
) -> Array:
    """U(a, b)."""
    if not a <= b:
        raise ValueError(f"uniform needs a <= b, got a={a}, b={b}")
    return _out(host_rng().uniform(a, b, size=_shape(shape)), dtype)


def small_random(shape: Shape, *, dtype: DTypeLike = numpy.float32) -> Array:
    """0.01 * N(0, 1): the lecture's first try (fine for small nets, vanishes in deep ones)."""
    return normal(shape, 0.01, dtype=dtype)


def xavier_normal(shape: Shape, *, gain: float = 1.0, dtype: DTypeLike = numpy.float32) -> Array:
    """Glorot & Bengio 2010: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return normal(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), dtype=dtype)


def xavier_uniform(shape: Shape, *, gain: float = 1.0, dtype: DTypeLike = numpy.float32) -> Array:
    """Glorot & Bengio 2010: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, -a, a, dtype=dtype)


def _kaiming_std(shape: Shape, a: float, mode: str, nonlinearity: str) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_normal(
    shape: Shape,
    *,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    dtype: DTypeLike = numpy.float32,
) -> Array:
    """He et al. 2015: N(0, std^2), std = gain / sqrt(fan) (gain sqrt(2) for ReLU, so
    std = sqrt(2 / fan_in)); ``a`` is leaky ReLU's slope."""
    return normal(shape, _kaiming_std(shape, a, mode, nonlinearity), dtype=dtype)


def kaiming_uniform(
    shape: Shape,
    *,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    dtype: DTypeLike = numpy.float32,
) -> Array:
    """He et al. 2015: U(-b, b), b = sqrt(3) * gain / sqrt(fan)."""
    bound = math.sqrt(3.0) * _kaiming_std(shape, a, mode, nonlinearity)
    return uniform(shape, -bound, bound, dtype=dtype)


def lecun_normal(shape: Shape, *, dtype: DTypeLike = numpy.float32) -> Array:
    """LeCun et al. 1998: N(0, 1 / fan_in) (the SELU paper's choice)."""
    fan_in, _ = fans(shape)
    return normal(shape, 1.0 / math.sqrt(fan_in), dtype=dtype)


def orthogonal(shape: Shape, *, gain: float = 1.0, dtype: DTypeLike = numpy.float32) -> Array:
    """Saxe et al. 2014: a (semi-)orthogonal matrix from the QR decomposition of a Gaussian one,
    signs fixed so that the distribution is uniform; times ``gain``. Shape (rows, *cols) is
    flattened to (rows, prod(cols))."""
    shape = _shape(shape)
    if len(shape) < 2:
        raise ValueError(f"orthogonal needs at least 2 dimensions, got shape {shape}")
    rows, cols = shape[0], int(numpy.prod(shape[1:]))
    flat = host_rng().normal(size=(rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = numpy.linalg.qr(flat)
    q *= numpy.sign(numpy.diag(r))
    if rows < cols:
        q = q.T
    return _out(gain * q.reshape(shape), dtype)


def truncated_normal(
    shape: Shape,
    std: float = 1.0,
    mean: float = 0.0,
    a: float = -2.0,
    b: float = 2.0,
    *,
    dtype: DTypeLike = numpy.float32,
) -> Array:
    """N(mean, std^2) restricted to [a, b] (absolute bounds, as PyTorch's trunc_normal_), by
    redrawing the values that fall outside."""
    if not a < b:
        raise ValueError(f"truncated_normal needs a < b, got a={a}, b={b}")
    shape = _shape(shape)
    values = host_rng().normal(mean, std, size=shape)
    bad = (values < a) | (values > b)
    for _ in range(1000):
        if not bad.any():
            break
        values[bad] = host_rng().normal(mean, std, size=int(bad.sum()))
        bad = (values < a) | (values > b)
    else:
        raise ValueError(
            f"truncated_normal: [a, b] = [{a}, {b}] has almost no mass under N({mean}, {std}^2)"
        )
    return _out(values, dtype)


INITIALIZERS = {
    "zeros": zeros,
    "small_random": small_random,
    "normal": normal,
    "uniform": uniform,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "glorot_normal": xavier_normal,
    "glorot_uniform": xavier_uniform,
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
    "he_normal": kaiming_normal,
    "he_uniform": kaiming_uniform,
    "lecun_normal": lecun_normal,
    "orthogonal": orthogonal,
    "truncated_normal": truncated_normal,
}


def get_initializer(init: str | Callable) -> Callable:
    """A callable ``(shape, dtype=...) -> array`` from a name in ``INITIALIZERS`` or a callable."""
    if callable(init):
        return init
    if isinstance(init, str) and init in INITIALIZERS:
        return INITIALIZERS[init]
    raise ValueError(f"init must be a callable or one of {sorted(INITIALIZERS)}, got {init!r}")
