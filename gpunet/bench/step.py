"""Benchmark of a whole training step: mlp([D, H, H, 10], batchnorm=True) (Linear -> BN+ReLU fused
-> Linear -> BN+ReLU -> Linear; with ``--no-batchnorm`` Linear -> ReLU), softmax cross-entropy,
SGD with momentum 0.9 -- against the same net in PyTorch eager when torch imports.

    python -m gpunet.bench step [--configs 256x3072x1024,4096x3072x4096] [--no-batchnorm]
    python -m gpunet.bench step --sweep
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy

import gpunet
from gpunet import nn, optim

from .timing import (
    StreamedRows,
    fmt_ratio,
    fmt_table,
    fmt_time,
    time_call_spread,
    time_torch_spread,
    torch_or_none,
)

CONFIGS = [(64, 64, 128), (256, 3072, 1024), (4096, 3072, 4096)]  # (batch, inputs, hidden)
#: the sweep of issue #13: batch 64..4096 at width 1024, then width 256..2048 at batch 256
SWEEP = [(b, 3072, 1024) for b in (64, 256, 1024, 4096)] + [
    (256, 3072, h) for h in (256, 512, 2048)
]


def _ours(xp: ModuleType, batch: int, d: int, h: int, batchnorm: bool = True):
    gpunet.seed(0)
    model = nn.mlp([d, h, h, 10], batchnorm=batchnorm).to(gpunet.get_backend())
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.SoftmaxCrossEntropy()
    model.input_grad = False  # as fit does: no gradient for the data (torch's x has none either)
    rng = numpy.random.default_rng(0)
    x = xp.asarray(rng.normal(size=(batch, d)).astype(numpy.float32))
    y = xp.asarray(rng.integers(0, 10, batch))

    def step() -> None:
        _, dscores = loss_fn(model.forward(x), y, check=False)
        model.zero_grad()
        model.backward(dscores)
        opt.step()

    return step


def _torch(torch: ModuleType, device: str, batch: int, d: int, h: int, batchnorm: bool = True):
    tnn = torch.nn
    torch.manual_seed(0)
    if batchnorm:
        layers = [tnn.Linear(d, h, bias=False), tnn.BatchNorm1d(h), tnn.ReLU()]
        layers += [tnn.Linear(h, h, bias=False), tnn.BatchNorm1d(h), tnn.ReLU()]
    else:
        layers = [tnn.Linear(d, h), tnn.ReLU(), tnn.Linear(h, h), tnn.ReLU()]
    model = tnn.Sequential(*layers, tnn.Linear(h, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, d, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = tnn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def run(configs: Sequence | None = None, repeat: int = 30, batchnorm: bool = True) -> str:
    xp = gpunet.get_xp()
    device = "cuda" if xp is not numpy else "cpu"
    torch = torch_or_none()
    if torch is not None and device == "cuda" and not torch.cuda.is_available():
        torch = None
    if configs is None:
        configs = CONFIGS if device == "cuda" else CONFIGS[:2]
    rows = StreamedRows()
    for batch, d, h in configs:
        ours = time_call_spread(_ours(xp, batch, d, h, batchnorm), xp=xp, repeat=repeat)
        net = f"{d}->{h}->{h}->10" + ("" if batchnorm else " no BN")
        row = [f"{batch}", net, fmt_time(*ours)]
        if torch is not None:
            step = _torch(torch, device, batch, d, h, batchnorm)
            theirs = time_torch_spread(torch, device, step, repeat=repeat)
            row += [fmt_time(*theirs), fmt_ratio(ours, theirs)]
        else:
            row += ["-", "-"]
        rows.append(row)
    return fmt_table(["batch", "net", "gpunet ms/step", "torch ms/step", "gpunet/torch"], rows)
