"""Importing and launching Numba CUDA kernels next to CuPy.

* numba-cuda 0.30.4 calls ``numpy.row_stack``, which NumPy 2.5 removed: the alias is restored
  here, before anything compiles (shared/GPU_NOTES.md). Only this module touches it.
* Kernels take CuPy arrays through ``__cuda_array_interface__`` without the per-launch stream sync
  (``sync=False``) and run on CuPy's current stream, so they stay ordered with CuPy's work.
* Under ``NUMBA_ENABLE_CUDASIM=1`` (CI, no GPU) kernels run in the simulator on NumPy arrays.
"""
from __future__ import annotations

import numpy

if not hasattr(numpy, "row_stack"):  # removed in NumPy 2.5, still called by numba-cuda 0.30
    numpy.row_stack = numpy.vstack

import numba  # noqa: E402
from numba import cuda  # noqa: E402

# Small test launches would otherwise warn about occupancy (and warnings are errors in our tests).
numba.config.CUDA_LOW_OCCUPANCY_WARNINGS = False

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
_streams: dict = {}


def _numba_stream():
    """Numba's view of CuPy's current stream (cached per stream pointer)."""
    import cupy
    ptr = cupy.cuda.get_current_stream().ptr
    if ptr not in _streams:
        _streams[ptr] = cuda.default_stream() if ptr == 0 else cuda.external_stream(ptr)
    return _streams[ptr]


def _as_device(a):
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a, sync=False)
    return a


def launch(kernel, blocks: int, threads: int, *args):
    """Launch ``kernel[blocks, threads]`` on CuPy's stream (or in the simulator on host arrays)."""
    if SIMULATOR:
        kernel[blocks, threads](*args)
        return
    kernel[blocks, threads, _numba_stream()](*(_as_device(a) for a in args))
