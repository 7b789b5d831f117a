"""One-to-one checks against PyTorch's definitions, where torch imports (skipped otherwise)."""

import numpy
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

from gpunet import functional as F  # noqa: E402
from gpunet import init, optim  # noqa: E402
from gpunet.nn import Parameter  # noqa: E402

X = numpy.concatenate([numpy.linspace(-8, 8, 201), [-1e3, 1e3, 0.0]])

PAIRS = [
    (F.sigmoid, F.sigmoid_backward, {}, torch.sigmoid),
    (F.tanh, F.tanh_backward, {}, torch.tanh),
    (F.relu, F.relu_backward, {}, TF.relu),
    (F.leaky_relu, F.leaky_relu_backward, {"negative_slope": 0.2}, lambda t: TF.leaky_relu(t, 0.2)),
    (F.elu, F.elu_backward, {"alpha": 1.3}, lambda t: TF.elu(t, 1.3)),
    (F.selu, F.selu_backward, {}, TF.selu),
    (F.gelu, F.gelu_backward, {}, TF.gelu),
    (F.gelu, F.gelu_backward, {"approximate": "tanh"}, lambda t: TF.gelu(t, approximate="tanh")),
    (
        F.softplus,
        F.softplus_backward,
        {"beta": 2.0, "threshold": 5.0},
        lambda t: TF.softplus(t, 2.0, 5.0),
    ),
    (F.silu, F.silu_backward, {}, TF.silu),
]


@pytest.mark.parametrize("fwd,bwd,kwargs,tfn", PAIRS, ids=lambda v: getattr(v, "__name__", ""))
def test_activations_match_torch(fwd, bwd, kwargs, tfn):
    t = torch.tensor(X, requires_grad=True)
    y = tfn(t)
    dy = torch.linspace(-1, 1, len(X), dtype=torch.float64)
    (g,) = torch.autograd.grad(y, t, dy)
    numpy.testing.assert_allclose(fwd(X, **kwargs), y.detach().numpy(), rtol=1e-12, atol=1e-14)
    # absolute 1e-14 (forward too): in the tails both sides subtract numbers near 1 (1 + tanh, 1 -
    # tanh^2)
    numpy.testing.assert_allclose(bwd(dy.numpy(), X, **kwargs), g.numpy(), rtol=1e-12, atol=1e-14)


def test_prelu_matches_torch():
    x = numpy.random.default_rng(0).normal(size=(4, 3, 5))
    w = numpy.array([0.1, -0.2, 0.3])
    t, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = TF.prelu(t, tw)
    dy = torch.ones_like(y)
    gx, gw = torch.autograd.grad(y, (t, tw), dy)
    dx, dw = F.prelu_backward(dy.numpy(), x, w)
    numpy.testing.assert_allclose(F.prelu(x, w), y.detach().numpy(), rtol=1e-14)
    numpy.testing.assert_allclose(dx, gx.numpy(), rtol=1e-14)
    numpy.testing.assert_allclose(dw, gw.numpy(), rtol=1e-12)


@pytest.mark.parametrize("shape", [(8, 3), (5, 3, 4), (4, 3, 2, 5)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_matches_torch(shape, training, momentum):
    rng = numpy.random.default_rng(1)
    x = rng.normal(size=shape) * 2 + 1
    g, b = rng.uniform(0.5, 1.5, 3), rng.normal(size=3)
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    dy = rng.normal(size=shape)
    t, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, g, b))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    # torch's momentum=None with num_batches_tracked = 2 before this batch -> factor 1/3
    factor = momentum if momentum is not None else 1 / 3
    y_t = TF.batch_norm(t, trm, trv, tg, tb, training=training, momentum=factor, eps=1e-5)
    gx, gg, gb = torch.autograd.grad(y_t, (t, tg, tb), torch.tensor(dy))
    y, cache = F.batch_norm_forward(
        x, g, b, rm, rv, training=training, momentum=momentum, num_batches_tracked=2
    )
    dx, dg, db = F.batch_norm_backward(dy, cache)
    numpy.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(rm, trm.numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(rv, trv.numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(dx, gx.numpy(), rtol=1e-9, atol=1e-11)
    numpy.testing.assert_allclose(dg, gg.numpy(), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(db, gb.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (
            lambda ps: optim.SGD(ps, 0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            lambda ps: torch.optim.SGD(ps, 0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        ),
        (
            lambda ps: optim.RMSprop(ps, 0.01, momentum=0.5, centered=True, weight_decay=0.1),
            lambda ps: torch.optim.RMSprop(ps, 0.01, momentum=0.5, centered=True, weight_decay=0.1),
        ),
        (
            lambda ps: optim.Adam(ps, 0.01, weight_decay=0.1),
            lambda ps: torch.optim.Adam(ps, 0.01, weight_decay=0.1),
        ),
        (lambda ps: optim.AdamW(ps, 0.01), lambda ps: torch.optim.AdamW(ps, 0.01)),
    ],
)
def test_optimizers_match_torch(ours, theirs):
    p0 = numpy.array([1.0, -2.0, 0.5])
    p = Parameter(p0.copy())
    tp = torch.tensor(p0.copy(), requires_grad=True)
    opt, topt = ours([p]), theirs([tp])
    for k in range(5):
        grad = numpy.array([1.0, 3.0, -2.0]) * p.data + k
        p.grad = grad
        tp.grad = torch.tensor(numpy.array([1.0, 3.0, -2.0]) * tp.detach().numpy() + k)
        opt.step()
        topt.step()
    numpy.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12)


def test_gains_and_fans_match_torch():
    for nl, param in [
        ("linear", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", 0.2),
        ("selu", None),
    ]:
        assert init.calculate_gain(nl, param) == pytest.approx(
            torch.nn.init.calculate_gain(nl, param)
        )
    w = torch.empty(64, 32, 3, 3)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
    assert init.fans((64, 32, 3, 3)) == (fan_in, fan_out)


def test_softmax_cross_entropy_matches_torch():
    rng = numpy.random.default_rng(2)
    s, y = rng.normal(size=(7, 5)) * 3, rng.integers(0, 5, 7)
    ts = torch.tensor(s, requires_grad=True)
    loss_t = TF.cross_entropy(ts, torch.tensor(y))
    (g,) = torch.autograd.grad(loss_t, ts)
    loss, ds = F.loss.softmax_cross_entropy(s, y)
    assert float(loss) == pytest.approx(loss_t.item(), rel=1e-13)
    numpy.testing.assert_allclose(ds, g.numpy(), rtol=1e-12, atol=1e-14)


def test_conv_and_pool_match_torch():
    rng = numpy.random.default_rng(3)
    x, w, b = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
    out, cache = F.conv2d_forward(x, w, b, stride=2, padding=1)
    t, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ot = TF.conv2d(t, tw, tb, stride=2, padding=1)
    dy = rng.normal(size=out.shape)
    gx, gw, gb = torch.autograd.grad(ot, (t, tw, tb), torch.tensor(dy))
    dx, dw, db = F.conv2d_backward(dy, cache)
    for a, e in ((out, ot.detach()), (dx, gx), (dw, gw), (db, gb)):
        numpy.testing.assert_allclose(a, e.numpy(), rtol=1e-10, atol=1e-12)
    p, pc = F.max_pool2d_forward(x, 3, 2, 1)
    tp = torch.tensor(x, requires_grad=True)
    pt = TF.max_pool2d(tp, 3, 2, 1)
    (gp,) = torch.autograd.grad(pt, tp, torch.ones_like(pt))
    numpy.testing.assert_allclose(p, pt.detach().numpy())
    numpy.testing.assert_allclose(F.max_pool2d_backward(numpy.ones(p.shape), pc), gp.numpy())
