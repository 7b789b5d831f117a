"""Importing and launching Numba CUDA kernels next to CuPy.

* numba-cuda 0.30.x calls ``numpy.row_stack``, which NumPy 2.5 removed: the alias is restored
  here for exactly those versions, before anything compiles. Only this module touches it.
* Kernels take CuPy arrays through ``__cuda_array_interface__`` without the per-launch stream sync
  (``sync=False``) and run on CuPy's current device and stream, so they stay ordered with CuPy's
  work (and on a multi-GPU machine, on the GPU that holds the arrays).
* Under ``NUMBA_ENABLE_CUDASIM=1`` (CI, no GPU) kernels run in the simulator on NumPy arrays.
* A CuPy array's Numba view is made once and kept (``_as_device``): converting through the
  interface at every launch cost ~40 of a launch's ~60 us (docs/gpu-notes.md).
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


#: (pointer, shape, strides, dtype) -> Numba's view of that memory, most recent last. A view
#: keeps its CuPy array alive, so the cache is bounded; a view of the same memory, shape and
#: type is the same view whoever owns the memory now.
_VIEWS: dict = {}
MAX_VIEWS = 256


def _as_device(a: object) -> object:
    if not hasattr(a, "__cuda_array_interface__"):
        return a
    face = a.__cuda_array_interface__
    key = (face["data"][0], face["shape"], face.get("strides"), face["typestr"])
    view = _VIEWS.pop(key, None)
    if view is None:
        view = cuda.as_cuda_array(a, sync=False)
        if len(_VIEWS) >= MAX_VIEWS:
            del _VIEWS[next(iter(_VIEWS))]
    _VIEWS[key] = view
    return view


def device_sms() -> int:
    """The current device's SM count (132, an H100/H200's, where there is no device to ask)."""
    if SIMULATOR:
        return 132
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # no driver, no device (the PTX compile in tests)
        return 132


def launch(kernel: Any, blocks: int, threads: int, *args: object) -> None:
    """Launch ``kernel[blocks, threads]`` on CuPy's stream (or in the simulator on host arrays)."""
    if SIMULATOR:
        kernel[blocks, threads](*args)
        return
    import cupy

    device = cupy.cuda.Device().id  # CuPy's current device, where the arrays live
    with cuda.gpus[device]:
        kernel[blocks, threads, _numba_stream(device)](*(_as_device(a) for a in args))
