"""gpunet's side of the process benchmarks (gpunet.bench.vs_torch): the same cases as
torch_side.py, built from the same specs, timed by the same timer, in a process of its own:

    python -m gpunet.bench.gpunet_side '{"threads": 1, "repeat": 20, "cases": [...]}'

``threads``: the BLAS (threadpoolctl, applied again after gpunet's BLAS is loaded: MKL loads
lazily) and Numba's thread count. A training step runs inside the CPU thread policy ``fit``
uses (backend.cpu_threads), and without an input gradient, as ``fit`` trains: what users get.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy

from .torch_side import blas_info, maker, run_cases


def _limit_threads(threads: int) -> None:
    import numba
    import threadpoolctl

    from gpunet.kernels.shared import cpu_blas

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    cpu_blas.active()  # load the BLAS the products use before limiting it
    threadpoolctl.threadpool_limits(threads, user_api="blas")


def make(spec: dict) -> Callable:
    """A no-argument callable that runs the case once with gpunet."""
    import gpunet

    gpunet.seed(0)
    return maker(MAKERS, spec)(spec, numpy.random.default_rng(0))


def _train_step(model: Any, x: Any, y: Any, batch: int) -> Callable:
    """One step as ``fit`` makes it: no input gradient, inside fit's CPU thread policy."""
    from gpunet import backend, nn, optim
    from gpunet.train.loop import _largest_product

    model.input_grad = False
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.SoftmaxCrossEntropy()
    policy = backend.cpu_threads(_largest_product(model, batch))

    def step() -> None:
        _, dscores = loss_fn(model.forward(x), y, check=False)
        model.zero_grad()
        model.backward(dscores)
        opt.step()

    step.context = policy  # type: ignore[attr-defined]  # run_cases holds it while timing
    return step


def _mlp(spec: dict, rng: numpy.random.Generator) -> Callable:
    from gpunet import nn

    b, d, h = spec["batch"], spec["d"], spec["h"]
    model = nn.mlp([d, h, h, 10], batchnorm=spec["bn"])
    x = rng.normal(size=(b, d)).astype(numpy.float32)
    return _train_step(model, x, rng.integers(0, 10, b), b)


def _convstep(spec: dict, rng: numpy.random.Generator) -> Callable:
    from gpunet import nn

    k, pad, b = spec["k"], spec["pad"], spec["batch"]
    model = nn.Sequential(
        nn.Conv2d(3, 32, k, padding=pad, bias=False),
        nn.BatchNorm2d(32, activation="relu"),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16 * 16, 10),
    )
    x = rng.normal(size=(b, 3, 32, 32)).astype(numpy.float32)
    return _train_step(model, x, rng.integers(0, 10, b), b)


def _bn(spec: dict, rng: numpy.random.Generator) -> Callable:
    from gpunet import functional as F

    shape = tuple(spec["shape"])
    C = shape[1]
    x = rng.normal(size=shape).astype(numpy.float32)
    dy = numpy.ones(shape, numpy.float32)
    g, b = numpy.ones(C, numpy.float32), numpy.zeros(C, numpy.float32)
    rm, rv = numpy.zeros(C, numpy.float32), numpy.ones(C, numpy.float32)
    act = "relu" if spec["relu"] else None

    def fwd():
        return F.batch_norm_forward(x, g, b, rm, rv, training=True, activation=act)

    def fwdbwd():
        _, cache = fwd()
        return F.batch_norm_backward(dy, cache)

    return fwd if spec["part"] == "fwd" else fwdbwd


def _act(spec: dict, rng: numpy.random.Generator) -> Callable:
    from gpunet import functional as F

    from .activations import FUNCTIONS

    kwargs, public = FUNCTIONS[spec["name"]]
    forward, backward = F.ACTIVATIONS[public]
    x = rng.normal(size=spec["n"]).astype(numpy.float32)
    dy = numpy.ones_like(x)
    if spec["part"] == "fwd":
        return lambda: forward(x, **kwargs)

    def fwdbwd():
        forward(x, **kwargs)
        return backward(dy, x, **kwargs)

    return fwdbwd


def _optim(spec: dict, rng: numpy.random.Generator) -> Callable:
    from gpunet import optim
    from gpunet.nn.module import Parameter

    d, h = spec["d"], spec["h"]
    params = []
    for shape in [(d, h), (h,), (h, h), (h,), (h, 10), (10,)]:
        p = Parameter(rng.normal(size=shape).astype(numpy.float32))
        p.grad = rng.normal(size=shape).astype(numpy.float32)
        params.append(p)
    if spec["opt"] == "sgd":
        return optim.SGD(params, lr=1e-3, momentum=0.9).step
    return optim.Adam(params, lr=1e-3).step


def _conv(spec: dict, rng: numpy.random.Generator) -> Callable:
    from gpunet import functional as F

    shape = (spec["batch"], spec["cin"], spec["hw"], spec["hw"])
    x = rng.normal(size=shape).astype(numpy.float32)
    w = rng.normal(size=(spec["cout"], spec["cin"], spec["k"], spec["k"])) * 0.1
    w = w.astype(numpy.float32)
    pad = spec["k"] // 2
    if spec["part"] == "fwd":
        return lambda: F.conv2d_forward(x, w, None, 1, pad)
    out, cache = F.conv2d_forward(x, w, None, 1, pad)
    d = rng.normal(size=out.shape).astype(numpy.float32)
    return lambda: F.conv2d_backward(d, cache)


def _pool(spec: dict, rng: numpy.random.Generator) -> Callable:
    from gpunet import functional as F

    x = rng.normal(size=tuple(spec["shape"])).astype(numpy.float32)
    if spec["part"] == "fwd":
        return lambda: F.max_pool2d_forward(x, 2)
    out, cache = F.max_pool2d_forward(x, 2)
    d = rng.normal(size=out.shape).astype(numpy.float32)
    return lambda: F.max_pool2d_backward(d, cache)


MAKERS = {
    "mlp": _mlp,
    "convstep": _convstep,
    "bn": _bn,
    "act": _act,
    "optim": _optim,
    "conv": _conv,
    "pool": _pool,
}


def main(argv: list) -> None:
    args = json.loads(argv[1])
    import gpunet
    from gpunet.kernels.shared import cpu_blas

    gpunet.set_backend("numpy")
    _limit_threads(args["threads"])
    times = run_cases(make, args["cases"], args["repeat"])
    version = f"gpunet {gpunet.__version__}, cpu_blas {cpu_blas.active()}"
    print(json.dumps({"times": times, "blas": blas_info(), "version": version}))


if __name__ == "__main__":
    main(sys.argv)
