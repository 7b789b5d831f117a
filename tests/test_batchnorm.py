"""Fused BatchNorm: values vs a naive float64 reference, gradients vs finite differences, running
statistics vs a hand-computed sequence, numerics, bad input, parity across kernel paths."""

import numpy
import parity
import pytest
from parity import PATHS as ALL_PATHS
from parity import assert_allclose, run

import gpunet
from gpunet import functional as F

# BatchNorm's CPU implementations are switched by the cpu_implementation fixture below
PATHS = [p for p in ALL_PATHS if p.values[0] not in ("cpu-kernels", "cpu-parallel")]

SHAPES = [(6, 5), (4, 3, 7), (3, 2, 4, 5)]


@pytest.fixture(autouse=True, params=["cpu-serial", "cpu-parallel", "numpy-reference"])
def cpu_implementation(request, monkeypatch):
    """NumPy inputs run the Numba CPU kernels (serial below a size, parallel above) or the
    vectorized NumPy reference: test all three on every case."""
    choice = {
        "cpu-serial": "numba-serial",
        "cpu-parallel": "numba-parallel",
        "numpy-reference": "numpy",
    }
    monkeypatch.setitem(parity.CPU_CHOICE, "numpy", choice[request.param])
    with gpunet.use_cpu_kernels(choice[request.param]):
        yield request.param


ACTS = [None, "relu", "leaky_relu", "elu", "tanh", "sigmoid", "gelu", "silu"]
REF_ACT = {  # independent float64 definitions
    None: lambda z: z,
    "relu": lambda z: numpy.maximum(z, 0),
    "leaky_relu": lambda z: numpy.where(z > 0, z, 0.01 * z),
    "elu": lambda z: numpy.where(z > 0, z, numpy.expm1(numpy.minimum(z, 0))),
    "tanh": numpy.tanh,
    "sigmoid": lambda z: 1 / (1 + numpy.exp(-z)),
    "gelu": lambda z: numpy.array(
        [0.5 * v * (1 + __import__("math").erf(v / 2**0.5)) for v in z.ravel()]
    ).reshape(z.shape),
    "silu": lambda z: z / (1 + numpy.exp(-z)),
}


def naive_bn(x, gamma, beta, mean=None, var=None, eps=1e-5, act=None):
    """CS231n-style float64 batch norm, written out per channel."""
    x = numpy.moveaxis(numpy.asarray(x, numpy.float64), 1, -1)  # channels last
    flat = x.reshape(-1, x.shape[-1])
    if mean is None:
        mean = flat.sum(0) / flat.shape[0]
        var = ((flat - mean) ** 2).sum(0) / flat.shape[0]
    xhat = (x - mean) / numpy.sqrt(var + eps)
    z = xhat if gamma is None else xhat * gamma + beta
    return numpy.moveaxis(REF_ACT[act](z), -1, 1)


def _data(shape, dtype, seed=0, affine=True):
    rng = numpy.random.default_rng(seed)
    C = shape[1]
    x = (
        rng.normal(size=shape) * rng.uniform(0.5, 3, size=(1, C) + (1,) * (len(shape) - 2))
        + rng.normal(size=(1, C) + (1,) * (len(shape) - 2)) * 2
    ).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype) if affine else None
    beta = rng.normal(size=C).astype(dtype) if affine else None
    return x, gamma, beta


def _stats(x):
    xd = numpy.moveaxis(x.astype(numpy.float64), 1, -1).reshape(-1, x.shape[1])
    return xd.mean(0), xd.var(0), xd.shape[0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("act", [None, "relu", "gelu"])
def test_training_forward_and_running_update(act, affine, shape, dtype, path):
    x, gamma, beta = _data(shape, dtype, affine=affine)
    C = shape[1]
    rm, rv = numpy.full(C, 0.5, dtype), numpy.full(C, 2.0, dtype)

    def fwd(x, g, b, rm, rv):
        y, _ = F.batch_norm_forward(x, g, b, rm, rv, training=True, momentum=0.1, activation=act)
        return y, rm, rv

    y, rm_out, rv_out = run(path, fwd, x, gamma, beta, rm, rv)
    assert y.dtype == dtype and y.shape == shape
    assert_allclose(y, naive_bn(x, gamma, beta, act=act), dtype, scale=10)
    mean, var, M = _stats(x)
    assert_allclose(rm_out, 0.9 * 0.5 + 0.1 * mean, dtype, scale=10)
    assert_allclose(rv_out, 0.9 * 2.0 + 0.1 * var * M / (M - 1), dtype, scale=10)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
def test_eval_forward_uses_running_statistics(act, shape, path):
    x, gamma, beta = _data(shape, numpy.float64, seed=1)
    C = shape[1]
    rm = numpy.linspace(-1, 1, C)
    rv = numpy.linspace(0.5, 2, C)
    rm0, rv0 = rm.copy(), rv.copy()

    def fwd(x, g, b, rm, rv):
        y, _ = F.batch_norm_forward(x, g, b, rm, rv, training=False, activation=act)
        return y, rm, rv

    y, rm_out, rv_out = run(path, fwd, x, gamma, beta, rm, rv)
    assert_allclose(y, naive_bn(x, gamma, beta, rm0, rv0, act=act), numpy.float64, scale=100)
    numpy.testing.assert_array_equal(rm_out, rm0)  # inference never touches the statistics
    numpy.testing.assert_array_equal(rv_out, rv0)


def _numeric_grads(x, gamma, beta, dy, training, act, rm, rv, h=1e-6):
    def loss(x_, g_, b_):
        y, _ = F.batch_norm_forward(
            x_,
            g_,
            b_,
            None if training else rm,
            None if training else rv,
            training=training,
            activation=act,
        )
        return float((y * dy).sum())

    grads = []
    for arr in (x, gamma, beta):
        if arr is None:
            grads.append(None)
            continue
        g = numpy.zeros_like(arr)
        for i in numpy.ndindex(*arr.shape):
            old = arr[i]
            arr[i] = old + h
            lp = loss(x, gamma, beta)
            arr[i] = old - h
            lm = loss(x, gamma, beta)
            arr[i] = old
            g[i] = (lp - lm) / (2 * h)
        grads.append(g)
    return grads


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 3)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("act", [None, "relu", "tanh", "elu", "silu"])
def test_backward_matches_finite_differences(act, training, affine, shape, path):
    x, gamma, beta = _data(shape, numpy.float64, seed=2, affine=affine)
    C = shape[1]
    rm, rv = numpy.linspace(-0.5, 0.5, C), numpy.linspace(0.8, 1.6, C)
    dy = numpy.random.default_rng(3).normal(size=shape)

    def fwd_bwd(x, g, b, rm, rv, dy):
        _, cache = F.batch_norm_forward(
            x,
            g,
            b,
            None if training else rm,
            None if training else rv,
            training=training,
            activation=act,
        )
        return F.batch_norm_backward(dy, cache)

    out = run(path, fwd_bwd, x, gamma, beta, rm, rv, dy)
    dx, dgamma, dbeta = out
    ndx, ndg, ndb = _numeric_grads(
        x.copy(),
        None if gamma is None else gamma.copy(),
        None if beta is None else beta.copy(),
        dy,
        training,
        act,
        rm,
        rv,
    )
    numpy.testing.assert_allclose(dx, ndx, rtol=1e-5, atol=1e-7)
    if affine:
        numpy.testing.assert_allclose(dgamma, ndg, rtol=1e-5, atol=1e-7)
        numpy.testing.assert_allclose(dbeta, ndb, rtol=1e-5, atol=1e-7)
    else:
        assert dgamma is None and dbeta is None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_over_several_steps(momentum, path):
    rng = numpy.random.default_rng(4)
    batches = [rng.normal(loc=i, scale=1 + i, size=(8, 3, 2)) for i in range(4)]
    rm, rv = numpy.zeros(3), numpy.ones(3)
    exp_m, exp_v = numpy.zeros(3), numpy.ones(3)
    for step, xb in enumerate(batches):
        # hand-computed: unbiased batch variance, exponential or cumulative average
        m = xb.transpose(1, 0, 2).reshape(3, -1).mean(1)
        v = xb.transpose(1, 0, 2).reshape(3, -1).var(1, ddof=1)
        f = momentum if momentum is not None else 1.0 / (step + 1)
        exp_m, exp_v = (1 - f) * exp_m + f * m, (1 - f) * exp_v + f * v

        def fwd(xb, rm, rv):
            F.batch_norm_forward(
                xb, None, None, rm, rv, momentum=momentum, num_batches_tracked=step
            )
            return rm, rv

        rm, rv = run(path, fwd, xb, rm, rv)
    numpy.testing.assert_allclose(rm, exp_m, rtol=1e-12)
    numpy.testing.assert_allclose(rv, exp_v, rtol=1e-12)
    if momentum is None:  # the cumulative average is the plain mean of the batch statistics
        numpy.testing.assert_allclose(
            rm,
            numpy.mean([b.transpose(1, 0, 2).reshape(3, -1).mean(1) for b in batches], 0),
            rtol=1e-12,
        )


@pytest.mark.parametrize("path", PATHS)
def test_large_mean_float32_is_accurate(path):
    rng = numpy.random.default_rng(5)
    x = (1e4 + rng.normal(size=(256, 4, 8))).astype(numpy.float32)
    y = run(path, lambda x: F.batch_norm_forward(x, None, None, None, None)[0], x)
    numpy.testing.assert_allclose(y, naive_bn(x, None, None), atol=1e-3)


@pytest.mark.parametrize("path", PATHS)
def test_constant_channel_and_huge_values(path):
    x = numpy.ones((16, 2, 3), numpy.float32) * 7.0
    x[:, 1] = (
        numpy.random.default_rng(6).normal(size=(16, 3)) * 1e30
    )  # would overflow sum(x^2) in float32
    gamma, beta = numpy.array([2.0, 1.0], numpy.float32), numpy.array([0.5, 0.0], numpy.float32)
    y = run(path, lambda x, g, b: F.batch_norm_forward(x, g, b, None, None)[0], x, gamma, beta)
    assert numpy.isfinite(y).all()
    numpy.testing.assert_array_equal(y[:, 0], 0.5)  # constant channel: xhat = 0 -> beta
    numpy.testing.assert_allclose(y[:, 1], naive_bn(x, gamma, beta)[:, 1], atol=1e-4)


def test_running_statistics_never_nan_on_constant_channel():
    x = numpy.full((4, 2), 3.0)
    rm, rv = numpy.zeros(2), numpy.ones(2)
    F.batch_norm_forward(x, None, None, rm, rv)
    assert numpy.isfinite(rm).all() and numpy.isfinite(rv).all()
    numpy.testing.assert_allclose(rv, 0.9)


def test_one_value_per_channel_and_empty_batch():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm_forward(numpy.ones((1, 3)), None, None, None, None)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        F.batch_norm_forward(numpy.ones((1, 3, 1, 1)), None, None, None, None)
    rm, rv = numpy.zeros(3), numpy.ones(3)
    with pytest.raises(ValueError, match=r"empty batch .*running statistics are left untouched"):
        F.batch_norm_forward(numpy.ones((0, 3)), None, None, rm, rv)
    numpy.testing.assert_array_equal(rm, 0)
    numpy.testing.assert_array_equal(rv, 1)
    y, _ = F.batch_norm_forward(
        numpy.ones((1, 3)), None, None, rm, rv, training=False
    )  # fine in eval
    assert y.shape == (1, 3)


def test_bad_input():
    x = numpy.ones((4, 3))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\).*got \(2,\)"):
        F.batch_norm_forward(x, numpy.ones(2), numpy.ones(2), None, None)
    with pytest.raises(ValueError, match=r"running_var must have shape \(3,\)"):
        F.batch_norm_forward(x, None, None, numpy.zeros(3), numpy.ones(4))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64, got int64"):
        F.batch_norm_forward(numpy.ones((4, 3), numpy.int64), None, None, None, None)
    with pytest.raises(TypeError, match="gamma has dtype float32, expected the dtype of x"):
        F.batch_norm_forward(
            x, numpy.ones(3, numpy.float32), numpy.ones(3, numpy.float32), None, None
        )
    with pytest.raises(ValueError, match=r"x must be \(N, C\), \(N, C, L\) or \(N, C, H, W\)"):
        F.batch_norm_forward(numpy.ones(4), None, None, None, None)
    with pytest.raises(ValueError, match="activation must be one of"):
        F.batch_norm_forward(x, None, None, None, None, activation="softmax")
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        F.batch_norm_forward(x, None, None, None, None, momentum=1.5)
    with pytest.raises(ValueError, match="gamma and beta must both be"):
        F.batch_norm_forward(x, numpy.ones(3), None, None, None)
    _, cache = F.batch_norm_forward(x + numpy.arange(4)[:, None], None, None, None, None)
    with pytest.raises(
        ValueError, match=r"dy has shape \(4, 2\), expected the shape of x \(4, 3\)"
    ):
        F.batch_norm_backward(numpy.ones((4, 2)), cache)


@pytest.mark.gpu
def test_mixed_devices():
    import cupy

    with pytest.raises(TypeError, match="different devices"):
        F.batch_norm_forward(cupy.ones((4, 3)), numpy.ones(3), numpy.ones(3), None, None)


@pytest.mark.parametrize("shape", [(4096, 64), (256, 16, 32, 32)])
@pytest.mark.gpu
def test_gpu_large_shapes_many_blocks(shape):
    """Shapes big enough that every channel is split over several blocks (last-block merge): 64
    row blocks per channel tile at (4096, 64), 33 blocks per channel at (256, 16, 32, 32)."""
    x, gamma, beta = _data(shape, numpy.float32, seed=8)
    dy = numpy.random.default_rng(9).normal(size=shape).astype(numpy.float32)
    for path in ("cupy", "numba"):

        def fb(x, g, b, dy):
            y, c = F.batch_norm_forward(x, g, b, None, None, activation="relu")
            return (y,) + F.batch_norm_backward(dy, c)

        got = run(path, fb, x, gamma, beta, dy)
        want = fb(x, gamma, beta, dy)
        for a, b in zip(got, want):
            numpy.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("act,arg", [("leaky_relu", 0.2), ("elu", 0.5)])
def test_fused_activation_takes_its_parameter(act, arg, path):
    """The fused kernels take leaky_relu's slope and elu's alpha as arguments (no hard-coded 0.01
    and 1): the result equals BatchNorm followed by the separate activation with that parameter."""
    x, gamma, beta = _data((12, 3, 4), numpy.float64, seed=11)
    dy = numpy.random.default_rng(12).normal(size=x.shape)
    ref_act = {
        "leaky_relu": lambda z: numpy.where(z > 0, z, arg * z),
        "elu": lambda z: numpy.where(z > 0, z, arg * numpy.expm1(numpy.minimum(z, 0))),
    }[act]
    ref_dact = {
        "leaky_relu": lambda z: numpy.where(z > 0, 1.0, arg),
        "elu": lambda z: numpy.where(z > 0, 1.0, arg * numpy.exp(numpy.minimum(z, 0))),
    }[act]

    def fused(x, g, b, dy):
        y, cache = F.batch_norm_forward(x, g, b, None, None, activation=act, activation_arg=arg)
        return (y,) + F.batch_norm_backward(dy, cache)

    y, dx, dg, db = run(path, fused, x, gamma, beta, dy)
    z = naive_bn(x, gamma, beta)
    numpy.testing.assert_allclose(y, ref_act(z), rtol=1e-10, atol=1e-12)
    _, cache = F.batch_norm_forward(x, gamma, beta, None, None)
    want = F.batch_norm_backward(dy * ref_dact(z), cache)  # chain rule through the plain BN
    for got, w in zip((dx, dg, db), want):
        numpy.testing.assert_allclose(got, w, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="activation 'relu' takes none"):
        F.batch_norm_forward(x, gamma, beta, None, None, activation="relu", activation_arg=0.3)
