"""Timing helpers shared by the benchmarks: CUDA events on the GPU, perf_counter on the CPU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from types import ModuleType

import numpy

#: a measurement whose interquartile range passes this fraction of its median is unsteady: on a
#: 2-core machine with another busy process, two-thread regions stall in 8 ms scheduler slices and
#: a row read 0.15x torch in one run and 112x in the next (issue #24)
UNSTEADY_IQR = 0.5


def spread(times: list) -> float:
    """(third quartile - first quartile) / median of a list of times."""
    q1, med, q3 = statistics.quantiles(times, n=4) if len(times) >= 2 else (times[0],) * 3
    return (q3 - q1) / med if med > 0 else 0.0


def steady(times_spread: float) -> bool:
    return times_spread <= UNSTEADY_IQR


def fmt_time(seconds: float, times_spread: float, scale: float = 1e3, digits: int = 3) -> str:
    """A time for a table cell (milliseconds by default), or UNSTEADY with the spread where the
    repeats scattered past UNSTEADY_IQR: such a number would mislead."""
    if not steady(times_spread):
        return f"UNSTEADY ({times_spread:.0%})"
    return f"{seconds * scale:.{digits}f}"


def fmt_ratio(ours: tuple, theirs: tuple) -> str:
    """ours / theirs for two (seconds, spread) measurements, "-" where either is unsteady."""
    if not (steady(ours[1]) and steady(theirs[1])):
        return "-"
    return f"{ours[0] / theirs[0]:.2f}x"


def time_call(
    fn: Callable,
    *,
    xp: ModuleType = numpy,
    repeat: int = 30,
    warmup: int = 3,
    max_seconds: float = 2.0,
) -> float:
    """Median seconds of ``fn()`` over up to ``repeat`` runs after ``warmup`` (GPU: CUDA events)."""
    return time_call_spread(fn, xp=xp, repeat=repeat, warmup=warmup, max_seconds=max_seconds)[0]


def time_call_spread(
    fn: Callable,
    *,
    xp: ModuleType = numpy,
    repeat: int = 30,
    warmup: int = 3,
    max_seconds: float = 2.0,
) -> tuple:
    """(median seconds, spread) of ``fn()`` as ``time_call`` measures it."""
    for _ in range(warmup):
        fn()
    times = []
    budget_end = time.perf_counter() + max_seconds
    if xp is not numpy:
        start, stop = xp.cuda.Event(), xp.cuda.Event()
        xp.cuda.get_current_stream().synchronize()
        for _ in range(repeat):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(xp.cuda.get_elapsed_time(start, stop) / 1e3)
            if time.perf_counter() > budget_end and len(times) >= 3:
                break
    else:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() > budget_end and len(times) >= 3:
                break
    return statistics.median(times), spread(times)


def torch_or_none() -> ModuleType | None:
    try:
        import torch

        return torch
    except Exception:
        return None


def torch_sync(torch: ModuleType, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_torch(
    torch: ModuleType,
    device: str,
    fn: Callable,
    repeat: int = 30,
    warmup: int = 3,
    max_seconds: float = 2.0,
) -> float:
    """Median seconds of a torch callable (CUDA events on the GPU)."""
    return time_torch_spread(torch, device, fn, repeat, warmup, max_seconds)[0]


def time_torch_spread(
    torch: ModuleType,
    device: str,
    fn: Callable,
    repeat: int = 30,
    warmup: int = 3,
    max_seconds: float = 2.0,
) -> tuple:
    """(median seconds, spread) of a torch callable, as ``time_torch`` measures it."""
    for _ in range(warmup):
        fn()
    torch_sync(torch, device)
    times = []
    budget_end = time.perf_counter() + max_seconds
    for _ in range(repeat):
        if device == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if time.perf_counter() > budget_end and len(times) >= 3:
            break
    return statistics.median(times), spread(times)


def fmt_table(headers: list, rows: list) -> str:
    """A plain text table with right-aligned columns."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class StreamedRows(list):
    """Rows of a table that are also printed to stderr as they are measured, so that a benchmark
    cut short by a time limit still leaves its numbers behind."""

    def append(self, row: list) -> None:
        super().append(row)
        import sys

        print("  ".join(str(c) for c in row), file=sys.stderr, flush=True)
