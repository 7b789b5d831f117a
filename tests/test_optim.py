"""Optimizers and schedules against hand-derived update sequences."""

import math

import numpy
import pytest

import gpunet
from gpunet import nn, optim
from gpunet.nn import Parameter


def _quadratic_run(opt_factory, steps=4, p0=(1.0, -2.0), a=(1.0, 3.0)):
    """Minimize f(p) = sum a_i p_i^2 / 2 (grad = a * p); return the parameter after each step."""
    p = Parameter(numpy.array(p0))
    a = numpy.array(a)
    opt = opt_factory([p])
    out = []
    for _ in range(steps):
        p.grad = a * p.data
        opt.step()
        out.append(p.data.copy())
    return out


def test_sgd_plain_momentum_nesterov_weight_decay():
    lr, mu, wd = 0.1, 0.9, 0.01
    a, p = numpy.array([1.0, 3.0]), numpy.array([1.0, -2.0])
    # hand-derived
    plain, mom, nest = [], [], []
    q = p.copy()
    for _ in range(4):
        q = q - lr * (a * q + wd * q)
        plain.append(q.copy())
    q, buf = p.copy(), None
    for _ in range(4):
        g = a * q
        buf = g if buf is None else mu * buf + g
        q = q - lr * buf
        mom.append(q.copy())
    q, buf = p.copy(), None
    for _ in range(4):
        g = a * q
        buf = g if buf is None else mu * buf + g
        q = q - lr * (g + mu * buf)
        nest.append(q.copy())
    numpy.testing.assert_allclose(
        _quadratic_run(lambda ps: optim.SGD(ps, lr, weight_decay=wd)), plain, rtol=1e-14
    )
    numpy.testing.assert_allclose(
        _quadratic_run(lambda ps: optim.SGD(ps, lr, momentum=mu)), mom, rtol=1e-14
    )
    numpy.testing.assert_allclose(
        _quadratic_run(lambda ps: optim.SGD(ps, lr, momentum=mu, nesterov=True)), nest, rtol=1e-14
    )


def test_adam_and_adamw_bias_corrected():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    a, p0 = numpy.array([1.0, 3.0]), numpy.array([1.0, -2.0])
    for decoupled in (False, True):
        q, m, v, seq = p0.copy(), 0.0, 0.0, []
        for t in range(1, 5):
            g = a * q
            if decoupled:
                q = q * (1 - lr * wd)
            else:
                g = g + wd * q
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
            q = q - lr * mhat / (numpy.sqrt(vhat) + eps)
            seq.append(q.copy())
        cls = optim.AdamW if decoupled else optim.Adam
        got = _quadratic_run(lambda ps: cls(ps, lr, weight_decay=wd))
        numpy.testing.assert_allclose(got, seq, rtol=1e-10)
    # first Adam step moves every coordinate by ~lr, whatever the gradient scale
    first = _quadratic_run(lambda ps: optim.Adam(ps, 0.01), steps=1)[0]
    numpy.testing.assert_allclose(numpy.abs(first - p0), 0.01, rtol=1e-6)


def test_rmsprop_plain_and_momentum():
    lr, alpha, eps, mu = 0.01, 0.99, 1e-8, 0.5
    a, p0 = numpy.array([1.0, 3.0]), numpy.array([1.0, -2.0])
    q, v, seq = p0.copy(), 0.0, []
    for _ in range(4):
        g = a * q
        v = alpha * v + (1 - alpha) * g * g
        q = q - lr * g / (numpy.sqrt(v) + eps)
        seq.append(q.copy())
    numpy.testing.assert_allclose(_quadratic_run(lambda ps: optim.RMSprop(ps, lr)), seq, rtol=1e-12)
    q, v, buf, seq = p0.copy(), 0.0, 0.0, []
    for _ in range(4):
        g = a * q
        v = alpha * v + (1 - alpha) * g * g
        buf = mu * buf + g / (numpy.sqrt(v) + eps)
        q = q - lr * buf
        seq.append(q.copy())
    numpy.testing.assert_allclose(
        _quadratic_run(lambda ps: optim.RMSprop(ps, lr, momentum=mu)), seq, rtol=1e-12
    )


def test_optimizers_converge_on_a_small_net():
    from gpunet.datasets import make_spiral

    X, y = make_spiral(50, 3, seed=0)
    for name, kwargs in [
        ("sgd", {"lr": 0.5, "momentum": 0.9}),
        ("adam", {"lr": 0.02}),
        ("rmsprop", {"lr": 0.01}),
        ("adamw", {"lr": 0.02}),
    ]:
        gpunet.seed(1)
        model = nn.mlp([2, 64, 3], batchnorm=False)
        opt = optim.OPTIMIZERS[name](model.parameters(), **kwargs)
        loss_fn = nn.SoftmaxCrossEntropy()
        first = None
        for _ in range(150):
            loss, d = loss_fn(model(X), y)
            first = first if first is not None else float(loss)
            model.zero_grad()
            model.backward(d)
            opt.step()
        assert float(loss) < 0.5 * first, name


def test_optimizer_state_dict_round_trip():
    p = Parameter(numpy.array([1.0, 2.0]))
    opt = optim.Adam([p], 0.1)
    for _ in range(3):
        p.grad = p.data.copy()
        opt.step()
    state = {k: numpy.array(v) for k, v in opt.state_dict().items()}
    p2 = Parameter(p.data.copy())
    opt2 = optim.Adam([p2], 0.5).load_state_dict(state)
    assert opt2.t == 3 and opt2.lr == 0.1
    p.grad, p2.grad = p.data.copy(), p2.data.copy()
    opt.step(), opt2.step()
    numpy.testing.assert_array_equal(p.data, p2.data)


def test_optimizer_bad_arguments():
    p = Parameter(numpy.zeros(2))
    with pytest.raises(ValueError, match="lr must be a non-negative number"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="nesterov momentum requires momentum > 0"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(TypeError, match="params\\[0\\] is ndarray"):
        optim.SGD([numpy.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="betas must be two numbers"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(TypeError):
        optim.SGD([p], lr=0.1, momentun=0.9)  # unknown keyword: refused


def test_schedules():
    def lrs(make, n=6):
        opt = optim.SGD([Parameter(numpy.zeros(1))], lr=1.0)
        s = make(opt)
        return [opt.lr] + [s.step() for _ in range(n)]

    assert lrs(lambda o: optim.StepDecay(o, 2, 0.5)) == [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]
    numpy.testing.assert_allclose(
        lrs(lambda o: optim.ExponentialDecay(o, 0.9)), [0.9**t for t in range(7)]
    )
    numpy.testing.assert_allclose(
        lrs(lambda o: optim.CosineAnnealing(o, 4, eta_min=0.1)),
        [0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 4) / 4)) / 2 for t in range(7)],
    )
    numpy.testing.assert_allclose(
        lrs(lambda o: optim.LinearWarmup(o, 4, start_factor=0.2)), [0.2, 0.4, 0.6, 0.8, 1, 1, 1]
    )
    opt = optim.SGD([Parameter(numpy.zeros(1))], lr=1.0)
    s = optim.CosineAnnealing(opt, 10)
    for _ in range(3):
        s.step()
    s2 = optim.CosineAnnealing(optim.SGD([Parameter(numpy.zeros(1))], lr=1.0), 10)
    s2.load_state_dict(s.state_dict())
    assert s2.optimizer.lr == opt.lr


@pytest.mark.gpu
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, 0.1),
        lambda ps: optim.SGD(ps, 0.1, momentum=0.9, weight_decay=0.01),
        lambda ps: optim.SGD(ps, 0.1, momentum=0.9, nesterov=True),
        lambda ps: optim.Adam(ps, 0.01, weight_decay=0.1),
        lambda ps: optim.AdamW(ps, 0.01),
    ],
)
def test_fused_gpu_updates_match_numpy(make):
    import cupy

    p0 = numpy.random.default_rng(0).normal(size=(7, 5))
    host, dev = Parameter(p0.copy()), Parameter(cupy.asarray(p0))
    oh, od = make([host]), make([dev])
    for k in range(4):
        g = numpy.sin(p0 * (k + 1))
        host.grad, dev.grad = g, cupy.asarray(g)
        oh.step()
        od.step()
    numpy.testing.assert_allclose(cupy.asnumpy(dev.data), host.data, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["sgd_nesterov", "adam"])
def test_optimizer_on_a_small_net_follows_the_hand_derived_sequence(name):
    """Two identical nets on the same data: one updated by the optimizer, one by the update rule
    written out by hand from the same gradients; their weights agree after every step."""
    from gpunet.datasets import make_spiral

    X, y = make_spiral(20, 3, seed=0)
    X = X.astype(numpy.float64)
    nets = []
    for _ in range(2):
        gpunet.seed(5)
        nets.append(nn.mlp([2, 8, 3], batchnorm=False, dtype=numpy.float64))
    net, ref = nets
    lr, mu, b1, b2, eps = 0.1, 0.9, 0.9, 0.999, 1e-8
    opt = (
        optim.SGD(net.parameters(), lr, momentum=mu, nesterov=True)
        if name == "sgd_nesterov"
        else optim.Adam(net.parameters(), lr)
    )
    state = [dict() for _ in ref.parameters()]
    for t in range(1, 5):
        for model in (net, ref):
            _, d = nn.SoftmaxCrossEntropy()(model(X), y)
            model.zero_grad()
            model.backward(d)
        opt.step()
        for p, st in zip(ref.parameters(), state):
            g = p.grad
            if name == "sgd_nesterov":
                st["buf"] = g.copy() if t == 1 else mu * st["buf"] + g
                p.data = p.data - lr * (g + mu * st["buf"])
            else:
                st["m"] = b1 * st.get("m", 0) + (1 - b1) * g
                st["v"] = b2 * st.get("v", 0) + (1 - b2) * g * g
                p.data = p.data - lr * (st["m"] / (1 - b1**t)) / (
                    numpy.sqrt(st["v"] / (1 - b2**t)) + eps
                )
        for (k, a), (_, b) in zip(net.named_parameters(), ref.named_parameters()):
            numpy.testing.assert_allclose(
                a.data, b.data, rtol=1e-12, atol=1e-14, err_msg=f"{k} at step {t}"
            )


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, 0.1),
        lambda ps: optim.SGD(ps, 0.1, momentum=0.9, weight_decay=0.01),
        lambda ps: optim.SGD(ps, 0.1, momentum=0.9, dampening=0.3),
        lambda ps: optim.SGD(ps, 0.1, momentum=0.9, nesterov=True),
        lambda ps: optim.Adam(ps, 0.01, weight_decay=0.1),
        lambda ps: optim.AdamW(ps, 0.01),
    ],
    ids=["sgd", "momentum-wd", "dampening", "nesterov", "adam-l2", "adamw"],
)
def test_fused_cpu_updates_equal_the_numpy_expressions(make, dtype):
    """kernels/numba_cpu/optim.py (one Numba pass per parameter; its serial and parallel builds)
    against the NumPy update of gpunet/optim.py, step by step, in float32 and float64."""
    p0 = numpy.random.default_rng(0).normal(size=(7, 5)).astype(dtype)
    results = {}
    for choice in ("numpy", "numba-serial", "numba-parallel"):
        with gpunet.use_cpu_kernels(choice):
            p = Parameter(p0.copy())
            opt = make([p])
            for k in range(4):
                p.grad = numpy.sin(p0 * (k + 1)).astype(dtype)
                opt.step()
            results[choice] = p.data
    for build in ("numba-serial", "numba-parallel"):
        assert results[build].dtype == dtype
        numpy.testing.assert_allclose(
            results[build], results["numpy"], rtol=4 * numpy.finfo(dtype).eps, atol=0
        )


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, 0.1, momentum=0.9, weight_decay=0.01),
        lambda ps: optim.SGD(ps, 0.1, momentum=0.9, dampening=0.3),
        lambda ps: optim.SGD(ps, 0.1, momentum=0.9, nesterov=True),
        lambda ps: optim.SGD(ps, 0.1),
        lambda ps: optim.Adam(ps, 0.01, weight_decay=0.1),
        lambda ps: optim.AdamW(ps, 0.01),
    ],
    ids=["momentum-wd", "dampening", "nesterov", "sgd", "adam-l2", "adamw"],
)
def test_multi_tensor_cpu_updates_equal_the_numpy_expressions(make, dtype, monkeypatch):
    """A small net's parameters updated several per call (kernels/numba_cpu/optim.py, MANY a
    call): eleven of mixed shapes, two of them without a gradient in the first step (their
    momentum starts a step late), against NumPy's update of each, step by step; and the calls
    really were shared."""
    from gpunet.kernels.numba_cpu import optim as cpu_optim

    calls = []
    for name in ("_SGD_MANY", "_ADAM_MANY"):
        real = getattr(cpu_optim, name)
        monkeypatch.setattr(cpu_optim, name, lambda *a, real=real: calls.append(1) or real(*a))
    shapes = [(64, 32), (32,), (32,), (32, 16), (16,), (16,), (16, 10), (10,), (3,), (5, 7), (1,)]
    results = {}
    for choice in ("numpy", "numba"):
        calls.clear()
        with gpunet.use_cpu_kernels(choice):
            rng = numpy.random.default_rng(0)
            ps = [Parameter(rng.normal(size=s).astype(dtype)) for s in shapes]
            opt = make(ps)
            for k in range(4):
                for i, p in enumerate(ps):
                    late = k == 0 and i in (2, 9)
                    p.grad = None if late else numpy.sin(p.data * (k + 1) + i).astype(dtype)
                opt.step()
            results[choice] = [p.data for p in ps]
        assert len(calls) == (0 if choice == "numpy" else 8)  # two a step: 8 parameters, the rest
    for got, want in zip(results["numba"], results["numpy"], strict=True):
        assert got.dtype == dtype
        numpy.testing.assert_allclose(got, want, rtol=4 * numpy.finfo(dtype).eps, atol=0)


def test_large_parameters_are_updated_one_call_each():
    """A parameter of cpu_threads.PARALLEL_MIN values or more keeps its own call (which may use
    every core): the whole step goes one call per parameter then."""
    from gpunet.kernels.numba_cpu import optim as cpu_optim
    from gpunet.kernels.shared import cpu_threads

    small = numpy.ones(10, numpy.float32)
    large = numpy.ones(cpu_threads.PARALLEL_MIN, numpy.float32)
    assert cpu_optim.multi_ready(small, small)
    assert not cpu_optim.multi_ready(small, large)
    assert not cpu_optim.multi_ready(small, small.astype(numpy.float64))
    assert not cpu_optim.multi_ready(small, numpy.ones((4, 4), numpy.float32).T)
