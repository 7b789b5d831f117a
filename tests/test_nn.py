"""Layers, the Module machinery, losses and the mlp builder."""

import math

import numpy
import pytest
from gradcheck import check_module

import gpunet
from gpunet import functional as F
from gpunet import nn

F64 = numpy.float64


def _x(shape, seed=1, away_from_zero=False):
    x = numpy.random.default_rng(seed).normal(size=shape)
    if away_from_zero:
        x = numpy.where(numpy.abs(x) < 0.05, 0.3, x)
    return x


def test_linear_gradients():
    check_module(nn.Linear(4, 3, dtype=F64), _x((5, 4)))
    check_module(nn.Linear(4, 3, bias=False, dtype=F64), _x((2, 4)))


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (1, 2)])
def test_conv2d_gradients(stride, padding):
    check_module(nn.Conv2d(2, 3, 3, stride=stride, padding=padding, dtype=F64), _x((2, 2, 5, 6)))


def test_conv2d_matches_direct_loops():
    x, conv = _x((2, 3, 6, 5)), nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dtype=F64)
    conv.bias.data[:] = numpy.arange(4)
    out = conv(x)
    w, b = conv.weight.data, conv.bias.data
    xp = numpy.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = numpy.zeros(out.shape)
    for n in range(2):
        for f in range(4):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    ref[n, f, i, j] = (
                        xp[n, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 2] * w[f]
                    ).sum() + b[f]
    numpy.testing.assert_allclose(out, ref, rtol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), (2, 1, 0)])
def test_maxpool_gradients(kernel, stride, padding):
    x = numpy.random.default_rng(2).permutation(2 * 2 * 5 * 5).reshape(2, 2, 5, 5) * 0.1  # no ties
    check_module(nn.MaxPool2d(kernel, stride, padding), x)


def test_maxpool_values():
    x = numpy.arange(16.0).reshape(1, 1, 4, 4)
    numpy.testing.assert_array_equal(nn.MaxPool2d(2)(x), [[[[5, 7], [13, 15]]]])


def test_dropout_with_fixed_mask_gradient_and_eval_identity():
    x = _x((4, 6))
    mask = F.dropout_mask(x.shape, 0.5, numpy, F64, lambda s: numpy.random.default_rng(3).random(s))
    assert set(numpy.unique(mask)) <= {0.0, 2.0}
    out, cache = F.dropout_forward(x, 0.5, mask)
    dout = _x((4, 6), seed=4)
    h = 1e-6
    num = numpy.zeros_like(x)
    for i in numpy.ndindex(*x.shape):
        e = numpy.zeros_like(x)
        e[i] = h
        num[i] = (
            (F.dropout_forward(x + e, 0.5, mask)[0] - F.dropout_forward(x - e, 0.5, mask)[0]) * dout
        ).sum() / (2 * h)
    numpy.testing.assert_allclose(F.dropout_backward(dout, cache), num, rtol=1e-6)
    layer = nn.Dropout(0.5).eval()
    assert layer(x) is x


def test_dropout_keeps_expectation():
    gpunet.seed(5)
    layer = nn.Dropout(0.3)
    out = layer(numpy.ones((200, 500)))
    assert abs(out.mean() - 1.0) < 0.02
    assert abs((out == 0).mean() - 0.3) < 0.01


@pytest.mark.parametrize(
    "layer",
    [
        nn.ReLU(),
        nn.LeakyReLU(negative_slope=0.1),
        nn.ELU(alpha=0.7),
        nn.SELU(),
        nn.GELU(),
        nn.GELU(approximate="tanh"),
        nn.Sigmoid(),
        nn.Tanh(),
        nn.Softplus(beta=2.0),
        nn.SiLU(),
    ],
    ids=repr,
)
def test_activation_layer_gradients(layer):
    check_module(layer, _x((3, 4), away_from_zero=True))


def test_prelu_and_maxout_layer_gradients():
    check_module(nn.PReLU(3, dtype=F64), _x((4, 3, 2), away_from_zero=True))
    check_module(nn.PReLU(dtype=F64), _x((4, 3), away_from_zero=True))
    x = numpy.random.default_rng(6).permutation(24).reshape(2, 6, 2) * 0.1
    check_module(nn.Maxout(3), x)


def test_whole_mlp_with_batchnorm_gradients():
    gpunet.seed(7)
    model = nn.mlp([5, 6, 4, 3], activation="tanh", batchnorm=True, dtype=F64)
    check_module(model, _x((8, 5)), rtol=1e-5, atol=1e-7)
    model2 = nn.mlp(
        [5, 6, 3], activation="selu", batchnorm=True, dtype=F64
    )  # BN then a separate layer
    assert isinstance(model2[2], nn.SELU)
    check_module(model2, _x((8, 5)))


def test_batchnorm_layers_modes_and_buffers():
    bn = nn.BatchNorm2d(3, dtype=F64)
    x = _x((4, 3, 2, 2)) * 3 + 1
    y = bn(x)
    numpy.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    y_eval = bn(x)
    numpy.testing.assert_allclose(
        y_eval,
        (x - bn.running_mean[None, :, None, None])
        / numpy.sqrt(bn.running_var[None, :, None, None] + 1e-5),
        rtol=1e-10,
    )
    with pytest.raises(ValueError, match="BatchNorm2d expects 4-D input"):
        bn(numpy.ones((2, 3)))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\) got 4 channels"):
        nn.BatchNorm1d(3, dtype=F64)(numpy.ones((2, 4)))
    bn_cma = nn.BatchNorm1d(2, momentum=None, dtype=F64)
    batches = [_x((6, 2), seed=s) for s in range(3)]
    for b in batches:
        bn_cma(b)
    numpy.testing.assert_allclose(
        bn_cma.running_mean, numpy.mean([b.mean(0) for b in batches], 0), rtol=1e-12
    )
    check_module(nn.BatchNorm1d(3, activation="relu", dtype=F64), _x((6, 3, 2)))


def test_module_state_dict_round_trip_is_exact():
    gpunet.seed(8)
    a = nn.mlp([4, 8, 3], dtype=F64)
    a(_x((5, 4)))  # moves running statistics away from their initial values
    gpunet.seed(9)
    b = nn.mlp([4, 8, 3], dtype=F64)
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        numpy.testing.assert_array_equal(va, vb)
    a.eval(), b.eval()
    numpy.testing.assert_array_equal(a(_x((3, 4))), b(_x((3, 4))))
    with pytest.raises(KeyError, match=r"missing \['2.bias'\]"):
        b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "2.bias"})
    bad = dict(a.state_dict())
    bad["0.weight"] = numpy.ones((3, 3))
    with pytest.raises(
        ValueError,
        match=r"state_dict\['0.weight'\] has shape \(3, 3\), the module expects \(4, 8\)",
    ):
        b.load_state_dict(bad)


def test_parameters_train_eval_zero_grad_and_names():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "3.weight",
        "3.bias",
    ]
    model.eval()
    assert not any(m.training for _, m in model.named_modules())
    model.train()
    x = numpy.ones((2, 3), numpy.float32) * numpy.arange(2, dtype=numpy.float32)[:, None]
    model.backward(numpy.ones_like(model(x)[:, :2]))
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(TypeError, match="argument 0 is int"):
        nn.Sequential(3)


def test_zero_init_warns_about_symmetry():
    with pytest.warns(nn.SymmetryWarning, match="symmetry will not break"):
        lin = nn.Linear(3, 4, init="zeros")
    with pytest.warns(nn.SymmetryWarning):
        nn.Conv2d(1, 2, 3, init="zeros")
    # and the lecture's point holds: every hidden unit gets the same gradient
    h = lin(numpy.ones((2, 3), numpy.float32))
    lin.backward(numpy.ones_like(h))
    assert (lin.weight.grad == lin.weight.grad[:, :1]).all()


def test_layer_bad_input():
    with pytest.raises(
        ValueError, match=r"Linear\(3, 4\) expects input of shape \(N, 3\), got \(2, 5\)"
    ):
        nn.Linear(3, 4)(numpy.ones((2, 5), numpy.float32))
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        nn.Linear(0, 4)
    with pytest.raises(ValueError, match="init must be a callable or one of"):
        nn.Linear(3, 4, init="bogus")
    with pytest.raises(ValueError, match="dropout probability p must be in"):
        nn.Dropout(1.0)
    with pytest.raises(ValueError, match="does not fit the input"):
        nn.Conv2d(1, 1, 5)(numpy.ones((1, 1, 3, 3), numpy.float32))
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.mlp([2, 3, 2], activation="swish")


# ----------------------------------------------------------------------------- losses
def _ref_softmax_ce(s, y):
    total = 0.0
    for row, label in zip(s, y):
        m = max(row)
        total += math.log(sum(math.exp(v - m) for v in row)) + m - row[label]
    return total / len(y)


@pytest.fixture(params=["numpy", "numba"])
def cpu_loss_path(request):
    """The loss on the NumPy reference and on the Numba CPU kernel (kernels/numba_cpu/loss.py)."""
    with gpunet.use_cpu_kernels(request.param):
        yield request.param


def test_softmax_cross_entropy_value_gradient_and_shift(cpu_loss_path):
    rng = numpy.random.default_rng(10)
    s, y = rng.normal(size=(6, 4)), rng.integers(0, 4, 6)
    loss, ds = F.loss.softmax_cross_entropy(s, y)
    assert abs(float(loss) - _ref_softmax_ce(s, y)) < 1e-12
    num = numpy.zeros_like(s)
    for i in numpy.ndindex(*s.shape):
        e = numpy.zeros_like(s)
        e[i] = 1e-6
        num[i] = (
            float(F.loss.softmax_cross_entropy(s + e, y)[0])
            - float(F.loss.softmax_cross_entropy(s - e, y)[0])
        ) / 2e-6
    numpy.testing.assert_allclose(ds, num, rtol=1e-6, atol=1e-9)
    shifted, ds2 = F.loss.softmax_cross_entropy(s + 1e7, y)
    assert abs(float(shifted) - float(loss)) < 1e-8 and numpy.isfinite(ds2).all()
    numpy.testing.assert_allclose(ds2, ds, atol=1e-8)


def test_initial_loss_is_log_c_and_regularization_raises_it():
    gpunet.seed(11)
    model = nn.mlp([20, 50, 10], batchnorm=False, init="small_random")
    x = numpy.random.default_rng(12).normal(size=(500, 20)).astype(numpy.float32)
    y = numpy.random.default_rng(13).integers(0, 10, 500)
    loss, _ = nn.SoftmaxCrossEntropy()(model(x), y)
    assert abs(float(loss) - math.log(10)) < 0.01
    assert float(loss + nn.l2_penalty(model, 1e3)) > float(loss) + 0.1
    assert len(nn.loss.regularized_weights(model)) == 2  # weights only, no biases


def test_l2_penalty_gradient():
    model = nn.Linear(3, 2, dtype=F64)
    model.zero_grad()
    nn.l2_penalty_backward(model, 0.5)
    numpy.testing.assert_allclose(model.weight.grad, 2 * 0.5 * model.weight.data)
    assert model.bias.grad is None


def test_multiclass_svm_against_loops():
    rng = numpy.random.default_rng(14)
    s, y = rng.normal(size=(5, 4)), rng.integers(0, 4, 5)
    loss, ds = nn.MulticlassSVM()(s, y)
    ref, ref_ds = 0.0, numpy.zeros_like(s)
    for i in range(5):
        for j in range(4):
            if j != y[i]:
                m = s[i, j] - s[i, y[i]] + 1
                if m > 0:
                    ref += m
                    ref_ds[i, j] += 1
                    ref_ds[i, y[i]] -= 1
    assert abs(float(loss) - ref / 5) < 1e-12
    numpy.testing.assert_allclose(ds, ref_ds / 5)


def test_loss_bad_labels():
    s = numpy.zeros((3, 4))
    with pytest.raises(ValueError, match=r"labels in y must be in \[0, 4\), got min 0, max 4"):
        F.loss.softmax_cross_entropy(s, numpy.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        F.loss.softmax_cross_entropy(s, numpy.array([0, 1]))
    with pytest.raises(TypeError, match="y must hold integer class labels, got dtype float64"):
        F.loss.multiclass_svm(s, numpy.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="labels in y must be in"):
        F.loss.multiclass_svm(s, numpy.array([-1, 0, 0]))


@pytest.mark.gpu
def test_module_to_cupy_and_back_preserves_values():
    gpunet.seed(15)
    model = nn.mlp([4, 8, 3])
    before = {k: numpy.array(v) for k, v in model.state_dict().items()}
    model.to("cupy")
    assert model.device() == "cupy"
    model.to("numpy")
    for k, v in model.state_dict().items():
        numpy.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (300, 10), (5, 1000)])
def test_fused_cpu_softmax_cross_entropy_matches_float64_loops(shape, dtype):
    """numba_cpu/loss.py against the float64 loops of _ref_softmax_ce and the softmax formula;
    NaN propagates; the result keeps the dtype."""
    rng = numpy.random.default_rng(16)
    s, y = (rng.normal(size=shape) * 5).astype(dtype), rng.integers(0, shape[1], shape[0])
    with gpunet.use_cpu_kernels("numba"):
        loss, ds = F.loss.softmax_cross_entropy(s, y)
    s64 = s.astype(numpy.float64)
    p = numpy.exp(s64 - s64.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[numpy.arange(shape[0]), y] -= 1
    tol = 2e-6 if dtype == numpy.float32 else 1e-12
    assert numpy.asarray(loss).dtype == dtype and ds.dtype == dtype
    assert float(loss) == pytest.approx(_ref_softmax_ce(s64, y), rel=tol, abs=tol)
    numpy.testing.assert_allclose(ds, p / shape[0], rtol=tol, atol=tol / shape[0])
    s[0, 0] = numpy.nan
    with gpunet.use_cpu_kernels("numba"):
        assert numpy.isnan(float(F.loss.softmax_cross_entropy(s, y)[0]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("shape", [(7, 3), (300, 10), (5, 1000)])
def test_fused_gpu_softmax_cross_entropy_matches_numpy(shape, dtype):
    import cupy

    rng = numpy.random.default_rng(16)
    s, y = (rng.normal(size=shape) * 5).astype(dtype), rng.integers(0, shape[1], shape[0])
    loss, ds = F.loss.softmax_cross_entropy(s, y)
    gl, gds = F.loss.softmax_cross_entropy(cupy.asarray(s), cupy.asarray(y))
    tol = 1e-5 if dtype == numpy.float32 else 1e-12
    assert float(gl) == pytest.approx(float(loss), rel=tol)
    numpy.testing.assert_allclose(cupy.asnumpy(gds), ds, rtol=tol, atol=tol / shape[0])
    s[2, 0] = numpy.nan
    assert numpy.isnan(float(F.loss.softmax_cross_entropy(cupy.asarray(s), cupy.asarray(y))[0]))
