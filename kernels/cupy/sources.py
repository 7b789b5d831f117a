"""The CUDA C sources of the CuPy path, as text: no CuPy needed (the tests compile them too).

Every source file is read with ``importlib.resources`` so that the same text is compiled by CuPy
(NVRTC), by ``nvcc`` and by the emulator in tests. ``generated.cuh``, ``vector_kernels.cuh`` and
``fused_switch.cuh`` are written from kernels/activation_table.py by ``python -m
gpunet.kernels.generate`` and checked in.
"""

from __future__ import annotations

from importlib import resources

#: The translation units CuPy compiles, each a list of source files concatenated in order.
TRANSLATION_UNITS = {
    "activations": [
        "generated.cuh",
        "vector.cuh",
        "activations.cuh",
        "activations_vec.cuh",
        "vector_kernels.cuh",
    ],
    "batchnorm": [
        "generated.cuh",
        "vector.cuh",
        "activations.cuh",
        "fused_switch.cuh",
        "batchnorm.cuh",
    ],
    "optim": ["optim.cuh", "optim_multi.cuh"],
    "loss": ["loss.cuh"],
    "conv": ["conv.cuh"],
}


def read_source(filename: str) -> str:
    """Text of one CUDA source file of this package."""
    return resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")


def unit_source(unit: str) -> str:
    """The full source of a translation unit (see ``TRANSLATION_UNITS``)."""
    if unit not in TRANSLATION_UNITS:
        raise KeyError(f"unknown kernel unit {unit!r}; known: {sorted(TRANSLATION_UNITS)}")
    return "\n".join(read_source(f) for f in TRANSLATION_UNITS[unit])
