"""Device code of gpunet: CUDA C sources for CuPy and Numba CUDA kernels.

Shipped inside the installed package as ``gpunet.kernels`` (setuptools ``package-dir``). Kernels
know nothing of layers: they take arrays and sizes. The CUDA C sources are plain text read with
``importlib.resources`` so that the same text is compiled by CuPy (NVRTC) and by ``nvcc`` in tests.
"""
from __future__ import annotations

from importlib import resources

# The translation units CuPy compiles, each a list of source files concatenated in order.
TRANSLATION_UNITS = {
    "activations": ["activations.cuh", "activations_vec.cuh"],
    "batchnorm": ["activations.cuh", "batchnorm.cuh"],
    "optim": ["optim.cuh"],
    "loss": ["loss.cuh"],
}


def read_source(filename: str) -> str:
    """Text of one CUDA source file of this package."""
    return resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")


def unit_source(unit: str) -> str:
    """The full source of a translation unit (see ``TRANSLATION_UNITS``)."""
    if unit not in TRANSLATION_UNITS:
        raise KeyError(f"unknown kernel unit {unit!r}; known: {sorted(TRANSLATION_UNITS)}")
    return "\n".join(read_source(f) for f in TRANSLATION_UNITS[unit])
