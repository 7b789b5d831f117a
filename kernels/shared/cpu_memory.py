"""How the process's C allocator treats the large arrays a training step frees and allocates
again: kept for reuse, not returned to the kernel after every step.

glibc's malloc serves a request above its mmap threshold (128 KiB, rising to at most 32 MiB as
such blocks are freed) with a fresh ``mmap``, and unmaps it on free; it also trims the top of its
heap back to the kernel. A training step allocates the same activation- and gradient-sized arrays
every time (8 MB for 32 channels at 32x32, batch 64), so each one came back as new pages: a page
fault per 4 KiB on first touch, every step. On the 2-core development machine that was more than
half of a small convnet's step (3x3 conv, batch 64: 25.3 -> 11.2 ms; BatchNorm2d's forward alone
3.9 -> 0.8 ms), and the warm-up of a fresh process's activations (issue #24: 79 page faults per
call for ~200 calls).

``keep_freed_memory()`` (gpunet's import calls it) turns that off with ``mallopt``: no mmap for
large blocks (M_MMAP_MAX = 0: glibc still falls back to mmap where the heap cannot grow) and no
trimming below 1 GiB of free heap (M_TRIM_THRESHOLD) -- what PyTorch's caching allocator does for
GPU memory. A process's resident size then stays at its peak. ``GPUNET_CPU_MALLOC=system`` (set
before ``import gpunet``) keeps the C library's defaults; on other C libraries (macOS, Windows,
musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory", "state"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
#: free heap kept before glibc returns any to the kernel
TRIM_THRESHOLD = 1 << 30
#: extra heap asked for at each growth (fewer brk calls while a step's arrays first appear)
TOP_PAD = 64 << 20

_state = {"applied": False, "why": "not applied yet"}


def keep_freed_memory() -> bool:
    """Set glibc's allocator to keep freed large blocks (see the module docstring); True if it
    was set. Idempotent."""
    if _state["applied"]:
        return True
    if os.environ.get("GPUNET_CPU_MALLOC", "keep").lower() == "system":
        _state["why"] = "GPUNET_CPU_MALLOC=system: the C library's defaults"
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _ = libc.gnu_get_libc_version  # glibc only: musl has mallopt too, other meanings
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _state["why"] = "not glibc: the C library's defaults"
        return False
    ok = (
        mallopt(_M_MMAP_MAX, 0) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        and mallopt(_M_TOP_PAD, TOP_PAD) == 1
    )
    _state["applied"] = ok
    _state["why"] = (
        "freed large blocks kept for reuse (glibc mallopt; GPUNET_CPU_MALLOC=system before "
        "import gpunet keeps the C library's defaults)"
        if ok
        else "mallopt refused: the C library's defaults"
    )
    return ok


def state() -> str:
    """What ``keep_freed_memory`` did, in words (``gpunet info``)."""
    return str(_state["why"])
