"""Run one test body on every kernel path and compare, in the spirit of
``cupy.testing.numpy_cupy_allclose``.

``PATHS`` lists the paths as pytest params; the GPU ones carry the ``gpu`` mark, which conftest
turns into a clean skip on machines without a GPU:

* ``numpy``        -- the NumPy reference (Numba CPU kernels switched off)
* ``cpu-kernels``  -- NumPy arrays through the Numba CPU kernels, whatever their size
* ``cpu-parallel`` -- the same kernels' parallel builds (kernels/shared/cpu_threads.py), any size
* ``cupy``         -- CuPy arrays, vectorized RawKernels where the layout allows
* ``cupy-strided`` -- CuPy arrays as non-contiguous views: the ElementwiseKernel path
* ``numba``        -- CuPy arrays through the Numba CUDA kernels
* ``emulated-cupy`` / ``emulated-cupy-strided`` -- the ``cupy`` paths with the CUDA C kernels run
  on the CPU by the emulator (tests/emulator): no GPU needed, so these run everywhere

(The Numba kernels also run without a GPU, in the simulator: tests/test_numba_sim.py.)
"""

import numpy
import pytest

import gpunet

PATHS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cpu-kernels", id="cpu-kernels"),
    pytest.param("cpu-parallel", id="cpu-parallel"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
    pytest.param("cupy-strided", id="cupy-strided", marks=pytest.mark.gpu),
    pytest.param("numba", id="numba", marks=pytest.mark.gpu),
    pytest.param("emulated-cupy", id="emulated-cupy"),
    pytest.param("emulated-cupy-strided", id="emulated-cupy-strided"),
]

#: the CPU kernel path each host path runs (gpunet.set_cpu_kernels): "numpy" whatever the size,
#: "cpu-kernels" every function through the Numba CPU kernels whatever its size, "cpu-parallel"
#: their parallel builds
CPU_CHOICE = {"numpy": "numpy", "cpu-kernels": "numba", "cpu-parallel": "numba-parallel"}

#: per-dtype tolerances (rtol, atol) between a path and a float64 reference
TOL = {numpy.float32: (2e-5, 1e-6), numpy.float64: (1e-12, 1e-13), "default": (1e-5, 1e-6)}


def tol(dtype):
    return TOL.get(numpy.dtype(dtype).type, TOL["default"])


def _strided_copy(xp, a):
    """A non-contiguous view with the values of ``a`` (every other element of a larger buffer)."""
    if a.ndim == 0:
        return xp.asarray(a)
    big = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    view = big[..., ::2]
    view[...] = xp.asarray(a)
    return view


def to_path(path, *arrays):
    """Put NumPy ``arrays`` where ``path`` computes; anything else (None, a Python int such as
    maxout's ``pieces``) passes through."""
    if path in CPU_CHOICE:
        return arrays
    import cupy

    if path.endswith("-strided"):
        return tuple(_strided_copy(cupy, a) if isinstance(a, numpy.ndarray) else a for a in arrays)
    return tuple(cupy.asarray(a) if isinstance(a, numpy.ndarray) else a for a in arrays)


def run(path, fn, *arrays, **kwargs):
    """``fn(*arrays, **kwargs)`` on ``path``; results come back as NumPy (tuples stay tuples)."""
    if path.startswith("emulated-"):
        from emulator import emulation

        with emulation():
            return run(path[len("emulated-") :], fn, *arrays, **kwargs)
    kernels = "numba" if path == "numba" else "cupy"
    if path == "numba":
        from gpunet.dispatch import numba_cuda_problem

        problem = numba_cuda_problem()
        if problem is not None:  # else every "numba" test would quietly run the CuPy kernels
            pytest.fail(f"the Numba CUDA path is unusable here ({problem})", pytrace=False)
    with gpunet.use_kernels(kernels), gpunet.use_cpu_kernels(CPU_CHOICE.get(path, "numpy")):
        out = fn(*to_path(path, *arrays), **kwargs)
    if isinstance(out, tuple):
        return tuple(None if o is None else gpunet.to_numpy(o) for o in out)
    return gpunet.to_numpy(out)


def assert_allclose(actual, desired, dtype, scale=1.0):
    rtol, atol = tol(dtype)
    numpy.testing.assert_allclose(actual, desired, rtol=rtol * scale, atol=atol * scale)
