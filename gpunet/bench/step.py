"""Benchmark of a whole training step: mlp([D, H, H, 10], batchnorm=True) (Linear -> BN+ReLU fused
-> Linear -> BN+ReLU -> Linear), softmax cross-entropy, SGD with momentum 0.9 -- against the same
net in PyTorch eager when torch imports.

    python -m gpunet.bench step [--configs 256x3072x1024,4096x3072x4096]
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy

import gpunet
from gpunet import nn, optim

from .timing import StreamedRows, fmt_table, time_call, time_torch, torch_or_none

CONFIGS = [(64, 64, 128), (256, 3072, 1024), (4096, 3072, 4096)]  # (batch, inputs, hidden)


def _ours(xp: ModuleType, batch: int, d: int, h: int):
    gpunet.seed(0)
    model = nn.mlp([d, h, h, 10], batchnorm=True).to(gpunet.get_backend())
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


def _torch(torch: ModuleType, device: str, batch: int, d: int, h: int):
    tnn = torch.nn
    torch.manual_seed(0)
    model = tnn.Sequential(
        tnn.Linear(d, h, bias=False),
        tnn.BatchNorm1d(h),
        tnn.ReLU(),
        tnn.Linear(h, h, bias=False),
        tnn.BatchNorm1d(h),
        tnn.ReLU(),
        tnn.Linear(h, 10),
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, d, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = tnn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def run(configs: Sequence | None = None, repeat: int = 30) -> str:
    xp = gpunet.get_xp()
    device = "cuda" if xp is not numpy else "cpu"
    torch = torch_or_none()
    if torch is not None and device == "cuda" and not torch.cuda.is_available():
        torch = None
    if configs is None:
        configs = CONFIGS if device == "cuda" else CONFIGS[:2]
    rows = StreamedRows()
    for batch, d, h in configs:
        ours = time_call(_ours(xp, batch, d, h), xp=xp, repeat=repeat)
        row = [f"{batch}", f"{d}->{h}->{h}->10", f"{ours * 1e3:.3f}"]
        if torch is not None:
            theirs = time_torch(torch, device, _torch(torch, device, batch, d, h), repeat=repeat)
            row += [f"{theirs * 1e3:.3f}", f"{ours / theirs:.2f}x"]
        else:
            row += ["-", "-"]
        rows.append(row)
    return fmt_table(["batch", "net", "gpunet ms/step", "torch ms/step", "gpunet/torch"], rows)
