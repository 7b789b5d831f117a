"""Benchmark of the activation functions: forward and backward, every path, GB/s against the
device-to-device copy rate of the same run (the roof), PyTorch side by side when it imports.

    python -m gpunet.bench activations [--max-mib 256] [--dtype float32] [--functions relu,gelu]

Bytes counted: forward reads x and writes y (2 n itemsize); backward reads dy and x and writes
dx (3 n itemsize). The copy roof reads and writes (2 n itemsize).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy

import gpunet
from gpunet import dispatch
from gpunet import functional as F
from gpunet.types import Array, DTypeLike

from .timing import (
    StreamedRows,
    fmt_table,
    steady,
    time_call,
    time_call_spread,
    time_torch_spread,
    torch_or_none,
)

FUNCTIONS: dict[str, tuple[dict, str]] = {
    "sigmoid": ({}, "sigmoid"),
    "tanh": ({}, "tanh"),
    "relu": ({}, "relu"),
    "leaky_relu": ({"negative_slope": 0.01}, "leaky_relu"),
    "elu": ({}, "elu"),
    "selu": ({}, "selu"),
    "gelu": ({}, "gelu"),
    "gelu_tanh": ({"approximate": "tanh"}, "gelu"),
    "softplus": ({}, "softplus"),
    "silu": ({}, "silu"),
}
_TORCH = {
    "gelu_tanh": lambda F_, x: F_.gelu(x, approximate="tanh"),
    "tanh": lambda F_, x: x.tanh(),
    "sigmoid": lambda F_, x: x.sigmoid(),
}


def _sizes(max_mib: float):
    sizes, b = [], 1024
    while b <= max_mib * 2**20:
        sizes.append(b)
        b *= 16 if b < 2**20 else 4
    return sizes


def _row(
    nbytes: int, name: str, path: str, tf: float, tb: float, copy_gbs: float, spreads: tuple = ()
) -> list:
    """One table row: times, the bytes moved per second (forward reads x and writes y; backward
    reads dy and x and writes dx) and that rate over the copy rate; a row whose repeats spread
    past timing.UNSTEADY_IQR says so in place of its times (they would mislead: on a loaded
    2-core machine a row read 0.15x torch in one run and 112x in the next)."""
    worst = max(spreads, default=0.0)
    if not steady(worst):
        return [_human(nbytes), name, path, f"UNSTEADY (spread {worst:.0%})"] + [""] * 6
    gf, gb = 2 * nbytes / tf / 1e9, 3 * nbytes / tb / 1e9
    return [
        _human(nbytes),
        name,
        path,
        f"{tf * 1e6:.1f}",
        f"{gf:.0f}",
        f"{100 * gf / copy_gbs:.0f}%",
        f"{tb * 1e6:.1f}",
        f"{gb:.0f}",
        f"{100 * gb / copy_gbs:.0f}%",
        f"{copy_gbs:.0f}",
    ]


#: the CPU kernel choice behind each CPU row (the "cpu" row is the default, ``auto``)
_CPU_CHOICE = {"numpy-ref": "numpy", "numba-cpu": "numba"}


def _paths(xp: ModuleType):
    if xp is numpy:  # the default CPU dispatch (Numba where it wins), each kernel path alone
        return ["cpu", "numba-cpu", "numpy-ref"]
    from gpunet.dispatch import numba_cuda_problem

    return ["cupy"] + (["numba"] if numba_cuda_problem() is None else [])


def _torch_case(torch: ModuleType, name: str, kwargs: dict, x_np: Array, device: str) -> tuple:
    import torch.nn.functional as TF

    x = torch.as_tensor(x_np, device=device).requires_grad_(True)
    op = _TORCH.get(name, lambda F_, t: getattr(F_, FUNCTIONS[name][1])(t, **kwargs))
    dy = torch.ones_like(x)

    def fwd() -> None:
        with torch.no_grad():
            op(TF, x)

    def bwd() -> None:  # forward + autograd backward, minus the forward time, is the backward
        y = op(TF, x)
        torch.autograd.grad(y, x, dy)

    return fwd, bwd


def run(
    max_mib: float = 256,
    dtype: DTypeLike = "float32",
    functions: Sequence[str] | None = None,
    repeat: int = 30,
    save_table: bool = False,
) -> str:
    """The table as text; with ``save_table`` (GPU), also writes ``auto``'s size -> path table
    (gpunet.dispatch) from the fwd+bwd times summed over the functions measured."""
    xp = gpunet.get_xp()
    dtype = numpy.dtype(dtype)
    names = functions or list(FUNCTIONS)
    torch = torch_or_none()
    device = "cuda" if xp is not numpy else "cpu"
    if torch is not None and device == "cuda" and not torch.cuda.is_available():
        torch = None
    rows = StreamedRows()
    totals: dict[tuple[int, str], float] = {}  # (elements, path) -> summed fwd + bwd seconds
    for nbytes in _sizes(max_mib):
        n = nbytes // dtype.itemsize
        x_host = numpy.random.default_rng(0).normal(size=n).astype(dtype)
        x, dy = xp.asarray(x_host), xp.ones(n, dtype)
        buf = xp.empty_like(x)
        copy_s = time_call(lambda: xp.copyto(buf, x), xp=xp, repeat=repeat)
        copy_gbs = 2 * nbytes / copy_s / 1e9
        for name in names:
            kwargs, public = FUNCTIONS[name]
            fwd, bwd = F.ACTIVATIONS[public]
            for path in _paths(xp):
                with (
                    gpunet.use_kernels("numba" if path == "numba" else "cupy"),
                    gpunet.use_cpu_kernels(_CPU_CHOICE.get(path, "auto")),
                ):
                    tf, sf = time_call_spread(lambda: fwd(x, **kwargs), xp=xp, repeat=repeat)
                    tb, sb = time_call_spread(lambda: bwd(dy, x, **kwargs), xp=xp, repeat=repeat)
                totals[(n, path)] = totals.get((n, path), 0.0) + tf + tb
                rows.append(_row(nbytes, name, path, tf, tb, copy_gbs, (sf, sb)))
            if torch is not None:
                tfwd, tfb = _torch_case(torch, name, kwargs, x_host, device)
                tf, sf = time_torch_spread(torch, device, tfwd, repeat=repeat)
                tfb_s, sb = time_torch_spread(torch, device, tfb, repeat=repeat)
                tb = max(tfb_s - tf, 1e-9)
                rows.append(_row(nbytes, name, "torch", tf, tb, copy_gbs, (sf, sb)))
    headers = [
        "size",
        "function",
        "path",
        "fwd us",
        "fwd GB/s",
        "fwd/copy",
        "bwd us",
        "bwd GB/s",
        "bwd/copy",
        "copy GB/s",
    ]
    text = fmt_table(headers, rows)
    if save_table and xp is not numpy:
        table = auto_table(totals)
        where = dispatch.save_table(table)
        text += f"\nauto kernel table ({len(table)} rows) written to {where}: {table}"
    return text


def auto_table(totals: dict) -> list:
    """Rows (max_elements, faster path) from {(elements, path): seconds}: each measured size up to
    the next one takes the path that was faster there; the largest size's choice extends beyond."""
    sizes = sorted({n for n, _ in totals})
    rows: list[tuple[int, str]] = []
    for k, n in enumerate(sizes):
        measured = {p: t for (m, p), t in totals.items() if m == n and p in ("cupy", "numba")}
        best = min(measured, key=lambda p: measured[p]) if measured else "cupy"
        upper = sizes[k + 1] - 1 if k + 1 < len(sizes) else 2**62
        if rows and rows[-1][1] == best:
            rows[-1] = (upper, best)
        else:
            rows.append((upper, best))
    return rows


def _human(nbytes: int) -> str:
    for unit, k in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= k:
            return f"{nbytes // k} {unit}"
    return f"{nbytes} B"
