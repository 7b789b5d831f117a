"""Importing and launching Numba CUDA kernels next to CuPy.

* numba-cuda 0.30.x calls ``numpy.row_stack``, which NumPy 2.5 removed: the alias is restored
  here for exactly those versions, before anything compiles. Only this module touches it.
* Kernels take CuPy arrays through ``__cuda_array_interface__`` without the per-launch stream sync
  (``sync=False``) and run on CuPy's current device and stream, so they stay ordered with CuPy's
  work (and on a multi-GPU machine, on the GPU that holds the arrays).
* Under ``NUMBA_ENABLE_CUDASIM=1`` (CI, no GPU) kernels run in the simulator on NumPy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy

from gpunet.config import CONFIG


def _numba_cuda_needs_row_stack() -> bool:
    """numba-cuda up to 0.30.x (all releases so far; it is in maintenance mode, NVIDIA/numba-cuda
    #907) registers an overload of ``numpy.row_stack`` when its CUDA target loads, and NumPy 2.5
    removed that alias: every kernel launch fails. Numba's own CUDA simulator (numba >= 0.67) is
    fixed. So the alias is restored only with NumPy >= 2.5 and numba-cuda < 0.31."""
    if hasattr(numpy, "row_stack"):
        return False
    try:
        from importlib.metadata import version

        major, minor = (int(v) for v in version("numba-cuda").split(".")[:2])
    except Exception:  # not installed, or a version string we cannot read
        return False
    return (major, minor) < (0, 31)


if _numba_cuda_needs_row_stack():
    numpy.row_stack = numpy.vstack

import numba  # noqa: E402
from numba import cuda  # noqa: E402

# Small test launches would otherwise warn about occupancy (and warnings are errors in our tests).
numba.config.CUDA_LOW_OCCUPANCY_WARNINGS = False

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def _numba_stream(device: int):
    """Numba's view of CuPy's current stream on ``device`` (cached per device and stream)."""
    import cupy

    key, streams = (device, cupy.cuda.get_current_stream().ptr), CONFIG.found.numba_streams
    if key not in streams:
        streams[key] = cuda.default_stream() if key[1] == 0 else cuda.external_stream(key[1])
    return streams[key]


def _as_device(a: object) -> object:
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a, sync=False)
    return a


def launch(kernel: Any, blocks: int, threads: int, *args: object) -> None:
    """Launch ``kernel[blocks, threads]`` on CuPy's stream (or in the simulator on host arrays)."""
    if SIMULATOR:
        kernel[blocks, threads](*args)
        return
    import cupy

    device = cupy.cuda.Device().id  # CuPy's current device, where the arrays live
    with cuda.gpus[device]:
        kernel[blocks, threads, _numba_stream(device)](*(_as_device(a) for a in args))
