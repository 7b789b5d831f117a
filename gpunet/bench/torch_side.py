"""The PyTorch side of the process benchmarks (gpunet.bench.vs_torch), and the timer both sides
share. Run by path with any interpreter that has torch and NumPy -- it imports nothing of
gpunet, so a separate torch venv will do:

    python gpunet/bench/torch_side.py '{"threads": 1, "repeat": 20, "cases": [[name, spec], ...]}'

prints one JSON line: {"times": {name: seconds}, "blas": [...], "version": "torch ..."}.

Each case ``spec`` is a dict with a ``kind`` (mlp, bn, act, optim, convstep, conv, pool) and its
sizes; gpunet_side.py builds the same computation from the same spec. What torch runs is what
a user writes: eager modules, autograd, torch.optim.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

#: every case is warmed up for at least this long (and WARM_CALLS calls) before timing: a fresh
#: process runs its first ~200 calls of a 4M-value activation 2.5x slower (page faults, issue #24)
WARM_S = 0.5
WARM_CALLS = 5
#: timing stops after this many seconds once it has MIN_CALLS calls
BUDGET_S = 2.0
MIN_CALLS = 5


def time_fn(fn: Callable, repeat: int) -> float:
    """Median seconds of one call of ``fn`` over up to ``repeat`` calls, after the warm-up."""
    t_end, n = time.perf_counter() + WARM_S, 0
    while n < WARM_CALLS or time.perf_counter() < t_end:
        fn()
        n += 1
    times: list = []
    budget = time.perf_counter() + BUDGET_S
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > budget and len(times) >= MIN_CALLS:
            break
    return statistics.median(times)


def blas_info() -> list:
    """The BLAS libraries loaded in this process: threadpoolctl's internal_api (openblas, mkl),
    architecture (the kernel it picked: SkylakeX, Haswell, Zen...), version, threads."""
    try:
        import threadpoolctl

        keys = ("internal_api", "architecture", "version", "num_threads")
        return [
            {k: d.get(k) for k in keys}
            for d in threadpoolctl.threadpool_info()
            if d.get("user_api") == "blas"
        ]
    except Exception as exc:  # threadpoolctl missing or broken: say so in the header
        return [{"internal_api": f"unknown ({exc})"}]


def torch_blas_info(torch: ModuleType) -> list:
    """The BLAS torch's products run on, from its build configuration: torch links its own
    (MKL in the x86-64 wheels), which threadpoolctl does not list. ``architecture``: the CPU
    kernels torch dispatches to (AVX2, AVX512); oneDNN (its convolutions) as a second entry."""
    import re

    config = torch.__config__.show()

    def found(pattern: str) -> str | None:
        match = re.search(pattern, config)
        return match.group(1) if match else None

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # an older torch: from the build text
        capability = found(r"CPU capability usage: (\S+)")
    blas = found(r"BLAS_INFO=(\w+)") or "unknown BLAS"
    out = [
        {
            "internal_api": f"torch's {blas}",
            "version": found(r"Math Kernel Library Version (\S+)"),
            "architecture": capability,
            "num_threads": torch.get_num_threads(),
        }
    ]
    onednn = found(r"MKL-DNN (v[\d.]+)")
    if onednn:
        out.append({"internal_api": "oneDNN", "version": onednn, "architecture": capability})
    return out


def run_cases(make: Callable, cases: list, repeat: int) -> dict:
    """{name: seconds}; a callable with a ``context`` attribute (gpunet's training step: fit's
    thread policy) is timed inside that context."""
    times = {}
    for name, spec in cases:
        fn = make(spec)
        context = getattr(fn, "context", None)
        if context is None:
            times[name] = time_fn(fn, repeat)
        else:
            with context:
                times[name] = time_fn(fn, repeat)
    return times


# ----------------------------------------------------------------------------- torch's cases
def make(spec: dict) -> Callable:
    """A no-argument callable that runs the case once in PyTorch eager."""
    import torch

    torch.manual_seed(0)
    return maker(MAKERS, spec)(torch, spec)


def maker(makers: dict, spec: dict) -> Callable:
    """The builder of ``spec``'s kind in ``makers`` (both sides share the kinds)."""
    kind = spec["kind"]
    if kind not in makers:
        raise ValueError(f"unknown benchmark case kind {kind!r}")
    return makers[kind]


def _train_step(torch: ModuleType, model: Any, x: Any, y: Any) -> Callable:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def _mlp(torch: ModuleType, spec: dict) -> Callable:
    tnn = torch.nn
    b, d, h = spec["batch"], spec["d"], spec["h"]
    if spec["bn"]:
        layers = [tnn.Linear(d, h, bias=False), tnn.BatchNorm1d(h), tnn.ReLU()]
        layers += [tnn.Linear(h, h, bias=False), tnn.BatchNorm1d(h), tnn.ReLU()]
    else:
        layers = [tnn.Linear(d, h), tnn.ReLU(), tnn.Linear(h, h), tnn.ReLU()]
    model = tnn.Sequential(*layers, tnn.Linear(h, 10))
    return _train_step(torch, model, torch.randn(b, d), torch.randint(0, 10, (b,)))


def _convstep(torch: ModuleType, spec: dict) -> Callable:
    tnn = torch.nn
    k, pad, b = spec["k"], spec["pad"], spec["batch"]
    model = tnn.Sequential(
        tnn.Conv2d(3, 32, k, padding=pad, bias=False),
        tnn.BatchNorm2d(32),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Flatten(),
        tnn.Linear(32 * 16 * 16, 10),
    )
    return _train_step(torch, model, torch.randn(b, 3, 32, 32), torch.randint(0, 10, (b,)))


def _fwd_or_grad(torch: ModuleType, forward: Callable, inputs: tuple) -> tuple:
    """``part`` fwd: forward under no_grad; fwdbwd: forward, then autograd to ``inputs``."""

    def fwd() -> None:
        with torch.no_grad():
            forward()

    def fwdbwd() -> None:
        y = forward()
        torch.autograd.grad(y, inputs, torch.ones_like(y))

    return fwd, fwdbwd


def _bn(torch: ModuleType, spec: dict) -> Callable:
    import torch.nn.functional as TF

    shape = tuple(spec["shape"])
    C = shape[1]
    x = torch.randn(*shape, requires_grad=True)
    g = torch.ones(C, requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    rm, rv = torch.zeros(C), torch.ones(C)

    def forward():
        y = TF.batch_norm(x, rm, rv, g, b, training=True)
        return TF.relu(y) if spec["relu"] else y

    fwd, fwdbwd = _fwd_or_grad(torch, forward, (x, g, b))
    return fwd if spec["part"] == "fwd" else fwdbwd


_TORCH_ACT = {
    "gelu_tanh": lambda TF, x: TF.gelu(x, approximate="tanh"),
    "leaky_relu": lambda TF, x: TF.leaky_relu(x, 0.01),
    "tanh": lambda TF, x: x.tanh(),
    "sigmoid": lambda TF, x: x.sigmoid(),
}


def _act(torch: ModuleType, spec: dict) -> Callable:
    import torch.nn.functional as TF

    name = spec["name"]
    x = torch.randn(spec["n"], requires_grad=True)
    op = _TORCH_ACT.get(name, lambda TF_, t: getattr(TF_, name)(t))
    fwd, fwdbwd = _fwd_or_grad(torch, lambda: op(TF, x), (x,))
    return fwd if spec["part"] == "fwd" else fwdbwd


def _optim(torch: ModuleType, spec: dict) -> Callable:
    d, h = spec["d"], spec["h"]
    params = []
    for shape in [(d, h), (h,), (h, h), (h,), (h, 10), (10,)]:
        p = torch.nn.Parameter(torch.randn(*shape))
        p.grad = torch.randn(*shape)
        params.append(p)
    if spec["opt"] == "sgd":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9).step
    return torch.optim.Adam(params, lr=1e-3).step


def _conv(torch: ModuleType, spec: dict) -> Callable:
    x = torch.randn(spec["batch"], spec["cin"], spec["hw"], spec["hw"], requires_grad=True)
    k = spec["k"]
    conv = torch.nn.Conv2d(spec["cin"], spec["cout"], k, padding=k // 2, bias=False)
    if spec["part"] == "fwd":

        def fwd() -> None:
            with torch.no_grad():
                conv(x)

        return fwd
    out = conv(x)
    d = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, [x, conv.weight], d, retain_graph=True)


def _pool(torch: ModuleType, spec: dict) -> Callable:
    import torch.nn.functional as TF

    x = torch.randn(*spec["shape"], requires_grad=True)
    if spec["part"] == "fwd":

        def fwd() -> None:
            with torch.no_grad():
                TF.max_pool2d(x, 2)

        return fwd
    out = TF.max_pool2d(x, 2)
    d = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, [x], d, retain_graph=True)


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
    import torch

    args = json.loads(argv[1])
    torch.set_num_threads(args["threads"])
    times = run_cases(make, args["cases"], args["repeat"])
    version = "torch " + torch.__version__
    print(json.dumps({"times": times, "blas": torch_blas_info(torch), "version": version}))


if __name__ == "__main__":
    main(sys.argv)
