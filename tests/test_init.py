"""Initializers against the published formulas (Glorot 2010, He 2015, LeCun 1998, Saxe 2014)."""

import math

import numpy
import pytest
from scipy import stats

import gpunet
from gpunet import init

SHAPE_2D = (400, 300)  # Linear: (fan_in, fan_out)
SHAPE_4D = (64, 32, 3, 3)  # Conv: fan_in = 32*9 = 288, fan_out = 64*9 = 576


def test_fans():
    assert init.fans(SHAPE_2D) == (400, 300)
    assert init.fans(SHAPE_4D) == (288, 576)
    with pytest.raises(ValueError, match="at least 2 dimensions, got shape \\(5,\\)"):
        init.fans((5,))


def test_calculate_gain_table():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")


def _ks_normal(values, std):
    return stats.kstest(numpy.asarray(values, numpy.float64).ravel(), "norm", args=(0, std)).pvalue


def _ks_uniform(values, a):
    return stats.kstest(
        numpy.asarray(values, numpy.float64).ravel(), "uniform", args=(-a, 2 * a)
    ).pvalue


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_4D])
def test_normal_initializers_follow_their_formulas(shape):
    gpunet.seed(0)
    fan_in, fan_out = init.fans(shape)
    cases = [
        (init.xavier_normal(shape), math.sqrt(2 / (fan_in + fan_out))),
        (init.xavier_normal(shape, gain=5 / 3), 5 / 3 * math.sqrt(2 / (fan_in + fan_out))),
        (init.kaiming_normal(shape), math.sqrt(2 / fan_in)),
        (init.kaiming_normal(shape, mode="fan_out"), math.sqrt(2 / fan_out)),
        (
            init.kaiming_normal(shape, a=0.2, nonlinearity="leaky_relu"),
            math.sqrt(2 / 1.04) / math.sqrt(fan_in),
        ),
        (init.lecun_normal(shape), 1 / math.sqrt(fan_in)),
        (init.small_random(shape), 0.01),
    ]
    for values, std in cases:
        assert values.shape == shape and values.dtype == numpy.float32
        assert abs(values.mean()) < 4 * std / math.sqrt(values.size)
        assert abs(values.std() / std - 1) < 0.01
        assert _ks_normal(values, std) > 1e-3
        assert _ks_normal(values, std * 1.1) < 1e-3  # the test can tell a 10% wrong std apart


def test_uniform_initializers_follow_their_formulas():
    gpunet.seed(1)
    fan_in, fan_out = init.fans(SHAPE_2D)
    a = math.sqrt(6 / (fan_in + fan_out))
    v = init.xavier_uniform(SHAPE_2D)
    assert v.min() >= -a and v.max() <= a and _ks_uniform(v, a) > 1e-3
    b = math.sqrt(3) * math.sqrt(2 / fan_in)
    v = init.kaiming_uniform(SHAPE_2D)
    assert v.min() >= -b and v.max() <= b and _ks_uniform(v, b) > 1e-3
    v = init.uniform(SHAPE_2D, -0.5, 2.0)
    assert stats.kstest(v.ravel().astype(float), "uniform", args=(-0.5, 2.5)).pvalue > 1e-3


def test_orthogonal_truncated_constant_zeros():
    gpunet.seed(2)
    q = init.orthogonal((50, 80), gain=2.0, dtype=numpy.float64)
    numpy.testing.assert_allclose(q @ q.T, 4 * numpy.eye(50), atol=1e-10)
    q = init.orthogonal((80, 50), dtype=numpy.float64)
    numpy.testing.assert_allclose(q.T @ q, numpy.eye(50), atol=1e-10)
    t = init.truncated_normal((200, 200), std=1.0, a=-1.0, b=1.5)
    assert t.min() >= -1.0 and t.max() <= 1.5
    ref = stats.truncnorm(-1.0, 1.5)
    assert stats.kstest(t.ravel().astype(float), ref.cdf).pvalue > 1e-3
    assert (init.constant((3, 2), 0.5) == 0.5).all() and (init.zeros(4) == 0).all()
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_normal((7,))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_normal(SHAPE_2D, mode="avg")


def test_same_seed_same_values_and_names():
    gpunet.seed(3)
    a = init.get_initializer("he_normal")((10, 10))
    gpunet.seed(3)
    b = init.kaiming_normal((10, 10))
    numpy.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_same_seed_gives_identical_weights_on_cupy():
    gpunet.seed(4)
    host = init.xavier_normal((30, 20))
    gpunet.set_backend("cupy")
    gpunet.seed(4)
    dev = init.xavier_normal((30, 20))
    numpy.testing.assert_array_equal(gpunet.to_numpy(dev), host)
