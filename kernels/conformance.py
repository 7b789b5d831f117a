"""For the type checker only: the complete kernel paths satisfy ``KernelPath`` as modules.

mypy (scripts/typecheck.sh, run in CI) holds each entry module to the Protocol of
kernels/interface.py: a missing operation or a changed signature is a type error here. The
partial Numba paths are held to the Protocol's signatures by tests/test_kernel_interface.py.
Importing this module at run time does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cupy import path as cupy_path
    from .interface import KernelPath
    from .numpy import path as numpy_path

    NUMPY_PATH: KernelPath = numpy_path
    CUPY_PATH: KernelPath = cupy_path
