"""CUDA C on the CPU: gpunet's CuPy kernels executed without a GPU (tests only).

``with emulation():`` installs tests/emulator/fake_cupy.py as ``cupy`` for the duration of the
block, so that gpunet's real host glue (kernels/cupy/*.py, the functional layer, the optimizers)
runs and launches the real CUDA C sources, compiled by g++ against cuda_emu.h. Everything it
replaced is put back afterwards: on a machine with a GPU, the real CuPy tests run beside these.
"""

from __future__ import annotations

import contextlib
import sys

#: the packages that hold a CuPy reference: every module below them is imported afresh inside
#: ``emulation()`` (so that it binds the fake CuPy) and put back afterwards
SWAPPED_PACKAGES = ("cupy", "gpunet.kernels.cupy", "gpunet.kernels.numba_cuda")


def _is_swapped(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in SWAPPED_PACKAGES)


def _parent_attrs() -> dict:
    """(parent module, attribute) -> value for every swapped module bound on its parent package
    (``from . import batchnorm`` reads the parent's attribute before sys.modules)."""
    found = {}
    for name, module in list(sys.modules.items()):
        if _is_swapped(name) and "." in name:
            parent_name, _, attr = name.rpartition(".")
            parent = sys.modules.get(parent_name)
            if parent is not None and getattr(parent, attr, None) is module:
                found[(parent, attr)] = module
    return found


def _drop_swapped() -> None:
    for (parent, attr), _ in _parent_attrs().items():
        delattr(parent, attr)
    for k in [k for k in sys.modules if _is_swapped(k)]:
        del sys.modules[k]


@contextlib.contextmanager
def emulation():
    """Run the block with the emulated CuPy as ``cupy`` and the CuPy kernel path chosen."""
    from gpunet import dispatch
    from gpunet.config import CONFIG

    from . import fake_cupy

    saved_modules = {k: v for k, v in sys.modules.items() if _is_swapped(k)}
    saved_attrs = _parent_attrs()
    saved_config = CONFIG.snapshot()
    _drop_swapped()
    sys.modules["cupy"] = fake_cupy
    CONFIG.found.cupy.clear()  # asked again: the fake answers
    CONFIG.found.numba_cuda.clear()
    CONFIG.found.numba_streams.clear()
    CONFIG.found.backend = None
    dispatch.set_kernels("cupy")
    try:
        yield fake_cupy
    finally:
        _drop_swapped()
        sys.modules.update(saved_modules)
        for (parent, attr), module in saved_attrs.items():
            setattr(parent, attr, module)
        CONFIG.restore(saved_config)
