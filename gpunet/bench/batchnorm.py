"""Benchmark of fused BatchNorm (training mode): forward, forward+backward, and with fused ReLU,
against the bandwidth floor of the same run and PyTorch (cuDNN and native) when it imports.

    python -m gpunet.bench batchnorm [--dtype float32] [--shapes 4096x4096,64x256x32x32]

Floor: the bytes that must move at the copy rate measured in the same run -- forward 3 passes
over x (read for statistics, read + write y), forward+backward 8 (3 + backward's 5: read x, dy
for the sums; read x, dy, write dx).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy

import gpunet
from gpunet import functional as F
from gpunet.types import DTypeLike

from .timing import (
    StreamedRows,
    fmt_table,
    fmt_time,
    steady,
    time_call,
    time_call_spread,
    time_torch_spread,
    torch_or_none,
)

SHAPES = [
    (4096, 4096),
    (256, 1024),
    (64, 256, 32, 32),
    (128, 64, 56, 56),
    (32, 512, 14, 14),
    (128, 2048, 4, 4),
    (64, 250, 7, 7),
    (512, 1001),
]


def _paths(xp: ModuleType):
    if xp is numpy:
        return ["numba-cpu", "numpy-ref"]
    from gpunet.dispatch import numba_cuda_problem

    return ["cupy"] + (["numba"] if numba_cuda_problem() is None else [])


def _ours(xp: ModuleType, shape: tuple, dtype: DTypeLike, act: str | None, path: str) -> tuple:
    rng = numpy.random.default_rng(0)
    C = shape[1]
    x = xp.asarray(rng.normal(size=shape).astype(dtype))
    dy = xp.asarray(rng.normal(size=shape).astype(dtype))
    g, b = xp.ones(C, dtype), xp.zeros(C, dtype)
    rm, rv = xp.zeros(C, dtype), xp.ones(C, dtype)

    def fwd():
        return F.batch_norm_forward(x, g, b, rm, rv, training=True, activation=act)

    def fwd_bwd():
        _, cache = fwd()
        return F.batch_norm_backward(dy, cache)

    return fwd, fwd_bwd


def _torch(
    torch: ModuleType, device: str, shape: tuple, dtype: DTypeLike, relu: bool, cudnn: bool
) -> tuple:
    import torch.nn.functional as TF

    rng = numpy.random.default_rng(0)
    C = shape[1]
    x = torch.as_tensor(rng.normal(size=shape).astype(dtype), device=device).requires_grad_(True)
    dy = torch.as_tensor(rng.normal(size=shape).astype(dtype), device=device)
    g = torch.ones(C, dtype=x.dtype, device=device, requires_grad=True)
    b = torch.zeros(C, dtype=x.dtype, device=device, requires_grad=True)
    rm, rv = (
        torch.zeros(C, dtype=x.dtype, device=device),
        torch.ones(C, dtype=x.dtype, device=device),
    )

    def fwd():
        with torch.backends.cudnn.flags(enabled=cudnn), torch.no_grad():
            y = TF.batch_norm(x, rm, rv, g, b, training=True)
            return TF.relu(y) if relu else y

    def fwd_bwd() -> None:
        with torch.backends.cudnn.flags(enabled=cudnn):
            y = TF.batch_norm(x, rm, rv, g, b, training=True)
            if relu:
                y = TF.relu(y)
            torch.autograd.grad(y, (x, g, b), dy)

    return fwd, fwd_bwd


def run(
    dtype: DTypeLike = "float32", shapes: Sequence[tuple] | None = None, repeat: int = 30
) -> str:
    xp = gpunet.get_xp()
    dtype = numpy.dtype(dtype)
    torch = torch_or_none()
    device = "cuda" if xp is not numpy else "cpu"
    if torch is not None and device == "cuda" and not torch.cuda.is_available():
        torch = None
    rows = StreamedRows()
    for shape in shapes or SHAPES:
        n = int(numpy.prod(shape))
        nbytes = n * dtype.itemsize
        a, buf = xp.ones(n, dtype), xp.empty(n, dtype)
        copy_s = time_call(lambda: xp.copyto(buf, a), xp=xp, repeat=repeat)
        rate = 2 * nbytes / copy_s  # bytes per second, read + write
        floor_f, floor_fb = 3 * nbytes / rate, 8 * nbytes / rate
        label = "x".join(map(str, shape))

        def add(impl: str, f: tuple, fb: tuple, fr: tuple, fbr: tuple) -> None:
            """One row from four (seconds, spread) measurements; an unsteady one reads UNSTEADY
            (and no fraction of the floor)."""
            rows.append(
                [
                    label,
                    impl,
                    fmt_time(*f),
                    f"{100 * floor_f / f[0]:.0f}%" if steady(f[1]) else "",
                    fmt_time(*fb),
                    f"{100 * floor_fb / fb[0]:.0f}%" if steady(fb[1]) else "",
                    fmt_time(*fr),
                    fmt_time(*fbr),
                ]
            )

        for path in _paths(xp):
            with (
                gpunet.use_kernels("numba" if path == "numba" else "cupy"),
                gpunet.use_cpu_kernels("numpy" if path == "numpy-ref" else "auto"),
            ):
                f, fb = _ours(xp, shape, dtype, None, path)
                fr, fbr = _ours(xp, shape, dtype, "relu", path)
                add(
                    f"gpunet-{path}",
                    *(time_call_spread(t, xp=xp, repeat=repeat) for t in (f, fb, fr, fbr)),
                )
        if torch is not None:
            for cudnn in (True, False) if device == "cuda" else (False,):
                f, fb = _torch(torch, device, shape, dtype, False, cudnn)
                fr, fbr = _torch(torch, device, shape, dtype, True, cudnn)
                name = (
                    "torch-cudnn"
                    if cudnn
                    else ("torch-native" if device == "cuda" else "torch-cpu")
                )
                add(name, *(time_torch_spread(torch, device, t, repeat) for t in (f, fb, fr, fbr)))
        rows.append(
            [f"(floor {floor_f * 1e3:.3f} / {floor_fb * 1e3:.3f} ms at {rate / 1e9:.0f} GB/s)"]
            + [""] * 7
        )
    headers = [
        "shape",
        "impl",
        "fwd ms",
        "fwd/floor",
        "fwd+bwd ms",
        "fwd+bwd/floor",
        "BN+ReLU fwd ms",
        "BN+ReLU fwd+bwd ms",
    ]
    return fmt_table(headers, rows)
