"""Numba CUDA kernels for the activation functions: the second GPU path, held to the CuPy one by tests.

The device functions mirror ``activations.cuh`` line for line (same constants, same special cases).
Kernels work on flat contiguous arrays; each thread handles ``ILP`` elements strided by the block
size, so that loads stay coalesced and several are in flight per thread.

On a GPU they take CuPy arrays without a host sync and run on CuPy's current stream (see
``numba_support.launch``); in CI they run in Numba's CUDA simulator on NumPy arrays.
"""
from __future__ import annotations

import math

from .numba_support import cuda, launch

ILP = 4
BLOCK = 128

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SQRT1_2 = 0.70710678118654752440
INV_SQRT_2PI = 0.39894228040143267794
SQRT_2_OVER_PI = 0.79788456080286535588


@cuda.jit(device=True)
def _kink(x, left):
    if x > 0:
        return 1.0
    if x <= 0:
        return left
    return x  # NaN


@cuda.jit(device=True)
def sigmoid_fwd(x, a, b):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@cuda.jit(device=True)
def sigmoid_bwd(dy, x, a, b):
    s = sigmoid_fwd(x, a, b)
    return dy * s * (1.0 - s)


@cuda.jit(device=True)
def tanh_fwd(x, a, b):
    return math.tanh(x)


@cuda.jit(device=True)
def tanh_bwd(dy, x, a, b):
    t = math.tanh(x)
    return dy * (1.0 - t * t)


@cuda.jit(device=True)
def relu_fwd(x, a, b):
    return 0.0 if x < 0 else x


@cuda.jit(device=True)
def relu_bwd(dy, x, a, b):
    return dy * _kink(x, 0.0)


@cuda.jit(device=True)
def leaky_relu_fwd(x, a, b):
    return x if x > 0 else a * x


@cuda.jit(device=True)
def leaky_relu_bwd(dy, x, a, b):
    return dy * _kink(x, a)


@cuda.jit(device=True)
def elu_fwd(x, a, b):
    return x if x > 0 else a * math.expm1(x)


@cuda.jit(device=True)
def elu_bwd(dy, x, a, b):
    if x > 0:
        return dy
    if x <= 0:
        return dy * a * math.exp(x)
    return x


@cuda.jit(device=True)
def selu_fwd(x, a, b):
    return SELU_SCALE * elu_fwd(x, SELU_ALPHA, 0.0)


@cuda.jit(device=True)
def selu_bwd(dy, x, a, b):
    return SELU_SCALE * elu_bwd(dy, x, SELU_ALPHA, 0.0)


@cuda.jit(device=True)
def gelu_fwd(x, a, b):
    if math.isinf(x):
        return x if x > 0 else 0.0
    return 0.5 * x * (1.0 + math.erf(x * SQRT1_2))


@cuda.jit(device=True)
def gelu_bwd(dy, x, a, b):
    if math.isinf(x):
        return dy if x > 0 else 0.0
    cdf = 0.5 * (1.0 + math.erf(x * SQRT1_2))
    pdf = INV_SQRT_2PI * math.exp(-0.5 * x * x)
    return dy * (cdf + x * pdf)


@cuda.jit(device=True)
def gelu_tanh_fwd(x, a, b):
    if abs(x) > 10:
        return x if x > 0 else 0.0
    inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
    return 0.5 * x * (1.0 + math.tanh(inner))


@cuda.jit(device=True)
def gelu_tanh_bwd(dy, x, a, b):
    if abs(x) > 10:
        return dy if x > 0 else 0.0
    x2 = x * x
    t = math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x2 * x))
    dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x2)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)


@cuda.jit(device=True)
def softplus_fwd(x, a, b):
    z = x * a
    return x if z > b else math.log1p(math.exp(z)) / a


@cuda.jit(device=True)
def softplus_bwd(dy, x, a, b):
    z = x * a
    if z > b:
        return dy
    e = math.exp(z)
    return dy * e / (e + 1.0)


@cuda.jit(device=True)
def silu_fwd(x, a, b):
    if math.isinf(x):
        return x if x > 0 else 0.0
    return x * sigmoid_fwd(x, a, b)


@cuda.jit(device=True)
def silu_bwd(dy, x, a, b):
    if math.isinf(x):
        return dy if x > 0 else 0.0
    s = sigmoid_fwd(x, a, b)
    return dy * s * (1.0 + x * (1.0 - s))


def _make_forward(dev):
    @cuda.jit
    def kernel(x, y, a, b):
        start = cuda.blockIdx.x * (cuda.blockDim.x * ILP) + cuda.threadIdx.x
        for k in range(ILP):
            i = start + k * cuda.blockDim.x
            if i < x.size:
                y[i] = dev(x[i], a, b)
    return kernel


def _make_backward(dev):
    @cuda.jit
    def kernel(dy, x, dx, a, b):
        start = cuda.blockIdx.x * (cuda.blockDim.x * ILP) + cuda.threadIdx.x
        for k in range(ILP):
            i = start + k * cuda.blockDim.x
            if i < x.size:
                dx[i] = dev(dy[i], x[i], a, b)
    return kernel


_DEVICE_FUNCTIONS = {
    "sigmoid": (sigmoid_fwd, sigmoid_bwd), "tanh": (tanh_fwd, tanh_bwd),
    "relu": (relu_fwd, relu_bwd), "leaky_relu": (leaky_relu_fwd, leaky_relu_bwd),
    "elu": (elu_fwd, elu_bwd), "selu": (selu_fwd, selu_bwd), "gelu": (gelu_fwd, gelu_bwd),
    "gelu_tanh": (gelu_tanh_fwd, gelu_tanh_bwd), "softplus": (softplus_fwd, softplus_bwd),
    "silu": (silu_fwd, silu_bwd),
}
_KERNELS: dict = {}


def _kernels(name):
    if name not in _KERNELS:
        fwd, bwd = _DEVICE_FUNCTIONS[name]
        _KERNELS[name] = (_make_forward(fwd), _make_backward(bwd))
    return _KERNELS[name]


def _blocks(n):
    return max(1, (n + BLOCK * ILP - 1) // (BLOCK * ILP))


def forward(name, x, y, a=0.0, b=0.0):
    """y[:] = f(x) for flat contiguous x, y (CuPy arrays on a GPU, NumPy in the simulator)."""
    st = x.dtype.type
    launch(_kernels(name)[0], _blocks(x.size), BLOCK, x, y, st(a), st(b))


def backward(name, dy, x, dx, a=0.0, b=0.0):
    """dx[:] = dy * f'(x) for flat contiguous arrays."""
    st = x.dtype.type
    launch(_kernels(name)[1], _blocks(x.size), BLOCK, dy, x, dx, st(a), st(b))


@cuda.jit
def _prelu_fwd(x, w, y, channels, inner):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = leaky_relu_fwd(x[i], w[(i // inner) % channels], 0.0)


@cuda.jit
def _prelu_bwd(dy, x, w, dx, dw_elem, channels, inner):
    i = cuda.grid(1)
    if i < x.size:
        xv = x[i]
        dx[i] = leaky_relu_bwd(dy[i], xv, w[(i // inner) % channels], 0.0)
        dw_elem[i] = 0.0 if xv > 0 else xv * dy[i]


def prelu_forward(x, w, y, channels, inner):
    launch(_prelu_fwd, max(1, (x.size + BLOCK - 1) // BLOCK), BLOCK, x, w, y, channels, inner)


def prelu_backward(dy, x, w, dx, dw_elem, channels, inner):
    launch(_prelu_bwd, max(1, (x.size + BLOCK - 1) // BLOCK), BLOCK, dy, x, w, dx, dw_elem,
           channels, inner)


@cuda.jit(device=True)
def _maxout_winner(x, base, pieces, inner):
    win = 0
    best = x[base]
    for k in range(1, pieces):
        if math.isnan(best):
            break
        v = x[base + k * inner]
        if v > best or math.isnan(v):
            best = v
            win = k
    return win


@cuda.jit
def _maxout_fwd(x, y, pieces, inner):
    o = cuda.grid(1)
    if o < y.size:
        base = (o // inner) * pieces * inner + o % inner
        y[o] = x[base + _maxout_winner(x, base, pieces, inner) * inner]


@cuda.jit
def _maxout_bwd(dy, x, dx, pieces, inner):
    o = cuda.grid(1)
    if o < dy.size:
        base = (o // inner) * pieces * inner + o % inner
        win = _maxout_winner(x, base, pieces, inner)
        for k in range(pieces):
            dx[base + k * inner] = dy[o] if k == win else 0.0


def maxout_forward(x, y, pieces, inner):
    """Flat contiguous x of (outer, C, pieces, inner) -> flat y of (outer, C, inner)."""
    launch(_maxout_fwd, max(1, (y.size + BLOCK - 1) // BLOCK), BLOCK, x, y, pieces, inner)


def maxout_backward(dy, x, dx, pieces, inner):
    launch(_maxout_bwd, max(1, (dy.size + BLOCK - 1) // BLOCK), BLOCK, dy, x, dx, pieces, inner)
