"""CUDA C on the CPU: gpunet's CuPy kernels executed without a GPU (tests only).

``with emulation():`` installs tests/emulator/fake_cupy.py as ``cupy`` for the duration of the
block, so that gpunet's real host glue (kernels/cupy_*.py, the functional layer, the optimizers)
runs and launches the real CUDA C sources, compiled by g++ against cuda_emu.h. Everything it
replaced is put back afterwards: on a machine with a GPU, the real CuPy tests run beside these.
"""

from __future__ import annotations

import contextlib
import sys


def _is_swapped(name: str) -> bool:
    return name == "cupy" or name.startswith("cupy.") or name.startswith("gpunet.kernels.cupy_")


@contextlib.contextmanager
def emulation():
    """Run the block with the emulated CuPy as ``cupy`` and the CuPy kernel path chosen."""
    import gpunet.kernels
    from gpunet import backend
    from gpunet import dispatch as kernel_path

    from . import fake_cupy

    saved_modules = {k: v for k, v in sys.modules.items() if _is_swapped(k)}
    saved_attrs = {k: v for k, v in vars(gpunet.kernels).items() if k.startswith("cupy_")}
    saved_probe = dict(backend._cupy_probe)
    saved_backend = dict(backend._state)
    saved_kernels = kernel_path.get_kernels()
    saved_numba_probe = dict(kernel_path._numba_probe)
    for k in saved_modules:
        del sys.modules[k]
    for k in saved_attrs:
        delattr(gpunet.kernels, k)
    sys.modules["cupy"] = fake_cupy
    backend._cupy_probe.clear()
    kernel_path._numba_probe.clear()
    kernel_path.set_kernels("cupy")
    try:
        yield fake_cupy
    finally:
        for k in [k for k in sys.modules if _is_swapped(k)]:
            del sys.modules[k]
        for k in [k for k in vars(gpunet.kernels) if k.startswith("cupy_")]:
            delattr(gpunet.kernels, k)
        sys.modules.update(saved_modules)
        for k, v in saved_attrs.items():
            setattr(gpunet.kernels, k, v)
        backend._cupy_probe.clear()
        backend._cupy_probe.update(saved_probe)
        backend._state.clear()
        backend._state.update(saved_backend)
        kernel_path.set_kernels(saved_kernels)
        kernel_path._numba_probe.clear()
        kernel_path._numba_probe.update(saved_numba_probe)
