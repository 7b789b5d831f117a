"""Activation functions: values, gradients, limits, parity across kernel paths, bad input."""

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from parity import PATHS, assert_allclose, run
from reference import FORWARD, numerical_derivative

import gpunet
from gpunet import functional as F

DTYPES = [numpy.float32, numpy.float64]

# name -> (forward, backward, kwargs, reference key, has a kink at 0)
CASES = {
    "sigmoid": (F.sigmoid, F.sigmoid_backward, {}, "sigmoid", False),
    "tanh": (F.tanh, F.tanh_backward, {}, "tanh", False),
    "relu": (F.relu, F.relu_backward, {}, "relu", True),
    "leaky_relu": (
        F.leaky_relu,
        F.leaky_relu_backward,
        {"negative_slope": 0.2},
        "leaky_relu",
        True,
    ),
    "elu": (F.elu, F.elu_backward, {"alpha": 1.3}, "elu", True),
    "selu": (F.selu, F.selu_backward, {}, "selu", True),
    "gelu": (F.gelu, F.gelu_backward, {}, "gelu", False),
    "gelu_tanh": (F.gelu, F.gelu_backward, {"approximate": "tanh"}, "gelu_tanh", False),
    "softplus": (
        F.softplus,
        F.softplus_backward,
        {"beta": 2.0, "threshold": 5.0},
        "softplus",
        True,
    ),
    "silu": (F.silu, F.silu_backward, {}, "silu", False),
}
REF_ARGS = {"leaky_relu": (0.2,), "elu": (1.3,), "softplus": (2.0, 5.0)}


def _ref(name):
    return lambda x: FORWARD[CASES[name][3]](x, *REF_ARGS.get(name, ()))


def _inputs(dtype, shape=(3, 5, 7), kink=False):
    x = numpy.random.default_rng(1).uniform(-4, 4, size=shape)
    if kink:  # keep finite differences away from the kink at 0 (and softplus's switch at 2.5)
        x = numpy.where(numpy.abs(x) < 0.05, 0.5, x)
        x = numpy.where(numpy.abs(x - 2.5) < 0.05, 2.0, x)
    return x.astype(dtype)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_float64_reference(name, dtype, path):
    fwd, _, kwargs, _, kink = CASES[name]
    x = _inputs(dtype, kink=kink)
    y = run(path, fwd, x, **kwargs)
    assert y.dtype == dtype and y.shape == x.shape
    assert_allclose(y, _ref(name)(x), dtype)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_matches_finite_differences(name, dtype, path):
    fwd, bwd, kwargs, _, kink = CASES[name]
    x = _inputs(dtype, kink=kink)
    dy = numpy.random.default_rng(2).normal(size=x.shape).astype(dtype)
    dx = run(path, bwd, dy, x, **kwargs)
    assert dx.dtype == dtype and dx.shape == x.shape
    expected = dy.astype(numpy.float64) * numerical_derivative(_ref(name), x.astype(numpy.float64))
    assert_allclose(dx, expected, dtype, scale=1e3 if dtype == numpy.float64 else 1.0)


def test_finite_difference_check_can_fail():
    """The gradient check above would notice a wrong derivative (here: tanh's used for sigmoid)."""
    x = _inputs(numpy.float64)
    dy = numpy.ones_like(x)
    wrong = F.tanh_backward(dy, x)
    expected = numerical_derivative(FORWARD["sigmoid"], x)
    with pytest.raises(AssertionError):
        assert_allclose(wrong, expected, numpy.float64, scale=1e3)


_SA, _SC = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946  # SELU, published
EXTREMES = numpy.array([-numpy.inf, -1000.0, 1000.0, numpy.inf, numpy.nan])
# name -> expected forward at EXTREMES, expected derivative there (NaN stays NaN)
LIMITS = {
    "sigmoid": ([0, 0, 1, 1, numpy.nan], [0, 0, 0, 0, numpy.nan]),
    "tanh": ([-1, -1, 1, 1, numpy.nan], [0, 0, 0, 0, numpy.nan]),
    "relu": ([0, 0, 1000, numpy.inf, numpy.nan], [0, 0, 1, 1, numpy.nan]),
    "leaky_relu": ([-numpy.inf, -200, 1000, numpy.inf, numpy.nan], [0.2, 0.2, 1, 1, numpy.nan]),
    "elu": ([-1.3, -1.3, 1000, numpy.inf, numpy.nan], [0, 0, 1, 1, numpy.nan]),
    "selu": (
        [-_SC * _SA, -_SC * _SA, 1000 * _SC, numpy.inf, numpy.nan],
        [0, 0, _SC, _SC, numpy.nan],
    ),
    "gelu": ([0, 0, 1000, numpy.inf, numpy.nan], [0, 0, 1, 1, numpy.nan]),
    "gelu_tanh": ([0, 0, 1000, numpy.inf, numpy.nan], [0, 0, 1, 1, numpy.nan]),
    "softplus": ([0, 0, 1000, numpy.inf, numpy.nan], [0, 0, 1, 1, numpy.nan]),
    "silu": ([0, 0, 1000, numpy.inf, numpy.nan], [0, 0, 1, 1, numpy.nan]),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_limits_nan_and_no_overflow_warning(name, dtype, path):
    fwd, bwd, kwargs, _, _ = CASES[name]
    x = EXTREMES.astype(dtype)
    y = run(path, fwd, x, **kwargs)  # warnings are errors: no overflow warning either
    dx = run(path, bwd, numpy.ones_like(x), x, **kwargs)
    want_y, want_d = LIMITS[name]
    numpy.testing.assert_allclose(y, numpy.asarray(want_y, dtype), rtol=1e-6)
    numpy.testing.assert_allclose(dx, numpy.asarray(want_d, dtype), rtol=1e-6, atol=1e-30)


def test_sigmoid_saturates_exactly():
    assert F.sigmoid(numpy.array([-1000.0]))[0] == 0.0
    assert F.sigmoid(numpy.array([1000.0]))[0] == 1.0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_per_channel_and_single(dtype, path):
    rng = numpy.random.default_rng(3)
    x = numpy.where(numpy.abs(v := rng.normal(size=(4, 3, 5))) < 1e-3, 0.5, v).astype(dtype)
    w = numpy.array([0.1, -0.2, 0.3], dtype=dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    y = run(path, F.prelu, x, w)
    expected = numpy.where(x > 0, x, w[None, :, None] * x)
    assert_allclose(y, expected.astype(numpy.float64), dtype)
    dx, dw = run(path, F.prelu_backward, dy, x, w)
    assert dw.shape == w.shape and dw.dtype == dtype
    # independent: loop over channels and elements
    ref_dw = numpy.zeros(3)
    for n in range(4):
        for c in range(3):
            for k in range(5):
                if x[n, c, k] <= 0:
                    ref_dw[c] += float(x[n, c, k]) * float(dy[n, c, k])
    assert_allclose(dw, ref_dw, dtype, scale=10)
    assert_allclose(dx, numpy.where(x > 0, dy, w[None, :, None] * dy).astype(numpy.float64), dtype)
    single = numpy.array([0.25], dtype=dtype)
    y1 = run(path, F.prelu, x, single)
    assert_allclose(y1, numpy.where(x > 0, x, 0.25 * x).astype(numpy.float64), dtype)
    _, dw1 = run(path, F.prelu_backward, dy, x, single)
    assert dw1.shape == (1,)
    assert_allclose(dw1, [ref_dw.sum()], dtype, scale=10)


def test_prelu_weight_gradient_by_finite_differences():
    rng = numpy.random.default_rng(4)
    x, w, dy = rng.normal(size=(5, 2, 3)), numpy.array([0.3, -0.1]), rng.normal(size=(5, 2, 3))
    _, dw = F.prelu_backward(dy, x, w)
    h = 1e-6
    for c in range(2):
        e = numpy.zeros(2)
        e[c] = h
        num = ((dy * F.prelu(x, w + e)).sum() - (dy * F.prelu(x, w - e)).sum()) / (2 * h)
        assert abs(num - dw[c]) < 1e-8


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 6), (2, 6, 3, 2)])
def test_maxout_values_and_gradient_routing(shape, dtype, path):
    x = numpy.random.default_rng(5).permutation(int(numpy.prod(shape))).reshape(shape).astype(dtype)
    dy_shape = (shape[0], 2) + shape[2:]
    dy = numpy.random.default_rng(6).normal(size=dy_shape).astype(dtype)
    y = run(path, F.maxout, x, 3)
    dx = run(path, F.maxout_backward, dy, x, 3)
    ref_y = numpy.zeros(dy_shape)
    ref_dx = numpy.zeros(shape)
    for idx in numpy.ndindex(*dy_shape):  # explicit loops: an independent reference
        n, c, rest = idx[0], idx[1], idx[2:]
        vals = [x[(n, c * 3 + k) + rest] for k in range(3)]
        k = int(numpy.argmax(vals))
        ref_y[idx] = vals[k]
        ref_dx[(n, c * 3 + k) + rest] = dy[idx]
    numpy.testing.assert_array_equal(y, ref_y.astype(dtype))
    numpy.testing.assert_array_equal(dx, ref_dx.astype(dtype))


@pytest.mark.parametrize("path", PATHS)
def test_maxout_nan_wins(path):
    x = numpy.array([[1.0, numpy.nan, 3.0]])
    assert numpy.isnan(run(path, F.maxout, x, 3)).all()
    dx = run(path, F.maxout_backward, numpy.array([[2.0]]), x, 3)
    numpy.testing.assert_array_equal(dx, [[0.0, 2.0, 0.0]])


# ----------------------------------------------------------------------------- property tests
_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(CASES)), dtype=st.sampled_from(DTYPES))
def test_any_shape_and_layout(data, name, dtype):
    """Empty, 0-d and non-contiguous inputs: same result as the contiguous copy, shape kept."""
    fwd, bwd, kwargs, _, _ = CASES[name]
    x = data.draw(hnp.arrays(dtype, _shapes, elements=st.floats(-50, 50, width=32)))
    if x.ndim and data.draw(st.booleans()):
        x = x[..., ::-1] if data.draw(st.booleans()) else numpy.swapaxes(x, 0, -1)
    y = fwd(x, **kwargs)
    assert y.shape == x.shape and y.dtype == dtype
    numpy.testing.assert_array_equal(y, fwd(numpy.ascontiguousarray(x), **kwargs))
    dx = bwd(numpy.ones_like(x), x, **kwargs)
    assert dx.shape == x.shape and numpy.isfinite(dx).all()


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(numpy.float64, st.integers(1, 20), elements=st.floats(-30, 30)))
def test_sigmoid_properties(x):
    s = F.sigmoid(x)
    assert ((s >= 0) & (s <= 1)).all()
    numpy.testing.assert_allclose(s + F.sigmoid(-x), 1.0, atol=1e-12)  # symmetry
    numpy.testing.assert_allclose(F.softplus(x) - F.softplus(-x), x, atol=1e-9)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", sorted(CASES))
def test_integer_input_is_rejected(name):
    fwd, bwd, kwargs, _, _ = CASES[name]
    with pytest.raises(TypeError, match="x must have dtype float32 or float64, got int64"):
        fwd(numpy.arange(3), **kwargs)
    with pytest.raises(TypeError, match="dy must have dtype"):
        bwd(numpy.arange(3), numpy.ones(3), **kwargs)


def test_backward_shape_and_dtype_mismatch():
    with pytest.raises(ValueError, match=r"dy has shape \(2,\), expected the shape of x \(3,\)"):
        F.relu_backward(numpy.ones(2), numpy.ones(3))
    with pytest.raises(TypeError, match="dy has dtype float32"):
        F.relu_backward(numpy.ones(3, numpy.float32), numpy.ones(3))


def test_not_an_array():
    with pytest.raises(TypeError, match="x must be a NumPy or CuPy array, got list"):
        F.relu([1.0, 2.0])


def test_bad_parameters():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        F.gelu(numpy.ones(2), approximate="erf")
    with pytest.raises(ValueError, match="negative_slope must be a finite number"):
        F.leaky_relu(numpy.ones(2), negative_slope=float("nan"))
    with pytest.raises(ValueError, match="beta must be non-zero"):
        F.softplus(numpy.ones(2), beta=0)


def test_prelu_wrong_weight_shape():
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*got weight shape \(2,\)"):
        F.prelu(numpy.ones((2, 3)), numpy.ones(2))
    with pytest.raises(ValueError, match=r"weight must have shape \(None,\)"):
        F.prelu(numpy.ones(4), numpy.ones(4))
    with pytest.raises(TypeError, match="weight has dtype float32"):
        F.prelu(numpy.ones((2, 3)), numpy.ones(3, numpy.float32))


def test_maxout_indivisible_features():
    with pytest.raises(ValueError, match=r"axis 1, size 5\) is not divisible by pieces=2"):
        F.maxout(numpy.ones((3, 5)), 2)
    with pytest.raises(ValueError, match="pieces must be a positive integer"):
        F.maxout(numpy.ones((3, 4)), 0)
    with pytest.raises(
        ValueError, match=r"dy has shape \(3, 4\), expected the maxout output shape \(3, 2\)"
    ):
        F.maxout_backward(numpy.ones((3, 4)), numpy.ones((3, 4)), 2)


@pytest.mark.gpu
def test_mixed_devices_are_rejected():
    import cupy

    with pytest.raises(TypeError, match="different devices"):
        F.relu_backward(cupy.ones(3), numpy.ones(3))
    with pytest.raises(TypeError, match="different devices"):
        F.prelu(cupy.ones((2, 3)), numpy.ones(3))


def test_mixed_devices_message_without_gpu():
    """The device check works on array types alone: a fake device array is enough to trigger it."""

    class FakeCupy:  # quacks like a CuPy array for the type check
        __module__ = "cupy._core.core"
        __cuda_array_interface__ = {}

    with pytest.raises(
        TypeError, match=r"arguments \[0\] are CuPy \(GPU\) arrays and \[1\] are NumPy"
    ):
        gpunet.get_array_module(FakeCupy(), numpy.ones(2))
