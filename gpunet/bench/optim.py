"""Benchmark of the optimizer update alone: one ``step()`` over the parameters of
mlp([D, H, H, 10]) (weights and biases, float32, gradients already there), against
``torch.optim`` on tensors of the same shapes when torch imports.

    python -m gpunet.bench optim [--nets 3072x1024,784x512] [--optimizers sgd,adam]
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy

import gpunet
from gpunet import optim
from gpunet.nn.module import Parameter

from .timing import (
    StreamedRows,
    fmt_ratio,
    fmt_table,
    fmt_time,
    time_call_spread,
    time_torch_spread,
    torch_or_none,
)

NETS = [(3072, 1024), (784, 512)]  # (inputs, hidden): mlp([D, H, H, 10])
OPTIMIZERS = ("sgd", "adam")


def _shapes(d: int, h: int) -> list:
    return [(d, h), (h,), (h, h), (h,), (h, 10), (10,)]


def _arrays(xp: ModuleType, d: int, h: int) -> list:
    rng = numpy.random.default_rng(0)
    return [
        (
            xp.asarray(rng.normal(size=s).astype(numpy.float32)),
            xp.asarray(rng.normal(size=s).astype(numpy.float32)),
        )
        for s in _shapes(d, h)
    ]


def _ours(xp: ModuleType, name: str, d: int, h: int):
    params = []
    for data, grad in _arrays(xp, d, h):
        p = Parameter(data)
        p.grad = grad
        params.append(p)
    opt: optim.Optimizer
    if name == "sgd":
        opt = optim.SGD(params, lr=1e-3, momentum=0.9)
    else:
        opt = optim.Adam(params, lr=1e-3)
    return opt.step


def _torch(torch: ModuleType, device: str, name: str, d: int, h: int):
    params = []
    for data, grad in _arrays(numpy, d, h):
        p = torch.nn.Parameter(torch.from_numpy(data).to(device))
        p.grad = torch.from_numpy(grad).to(device)
        params.append(p)
    if name == "sgd":
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    else:
        opt = torch.optim.Adam(params, lr=1e-3)
    return opt.step


def run(nets: Sequence | None = None, optimizers: Sequence = OPTIMIZERS, repeat: int = 30) -> str:
    xp = gpunet.get_xp()
    device = "cuda" if xp is not numpy else "cpu"
    torch = torch_or_none()
    if torch is not None and device == "cuda" and not torch.cuda.is_available():
        torch = None
    rows = StreamedRows()
    for d, h in nets or NETS:
        n = sum(int(numpy.prod(s)) for s in _shapes(d, h))
        for name in optimizers:
            ours = time_call_spread(_ours(xp, name, d, h), xp=xp, repeat=repeat)
            row = [f"{d}->{h}->{h}->10", f"{n / 1e6:.2f}M", name, fmt_time(*ours)]
            if torch is not None:
                step = _torch(torch, device, name, d, h)
                theirs = time_torch_spread(torch, device, step, repeat=repeat)
                row += [fmt_time(*theirs), fmt_ratio(ours, theirs)]
            else:
                row += ["-", "-"]
            rows.append(row)
    headers = ["net", "values", "optimizer", "gpunet ms", "torch ms", "gpunet/torch"]
    return fmt_table(headers, rows)
