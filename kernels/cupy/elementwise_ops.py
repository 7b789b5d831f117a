"""The ElementwiseKernel definitions of gpunet, as plain data (no CuPy import), so that the tests
can compile each operation with nvcc the way CuPy would, on machines without a GPU.

Each entry: (in_params, out_params, operation, kernel name, preamble source files). The math
lives in the .cuh files; an operation only calls it. Kernel names differ from the device
functions they call (an extern "C" kernel of the same name would clash with the template).
"""

from __future__ import annotations

from types import ModuleType

from gpunet.types import Array

from ..activation_table import NAMES

ACTIVATION_KERNELS = NAMES  # every activation of kernels/activation_table.py


def activation_ops(name: str) -> tuple:
    """(forward, backward) definitions for activation ``name``."""
    fwd = (
        "T x, float64 a, float64 b",
        "T y",
        f"y = gpunet_{name}_fwd(x, (T)a, (T)b)",
        f"gpunet_ew_{name}_fwd",
        ("generated.cuh", "activations.cuh"),
    )
    bwd = (
        "T dy, T x, float64 a, float64 b",
        "T dx",
        f"dx = gpunet_{name}_bwd(dy, x, (T)a, (T)b)",
        f"gpunet_ew_{name}_bwd",
        ("generated.cuh", "activations.cuh"),
    )
    return fwd, bwd


OPTIM_OPS = {
    "sgd": (
        "T g, float64 lr, float64 mu, float64 damp, float64 wd, int32 nesterov, int32 first",
        "T p, T buf",
        "gpunet_sgd_update(g, p, buf, lr, mu, damp, wd, nesterov, first)",
        "gpunet_sgd_kernel",
        ("optim.cuh",),
    ),
    "sgd_plain": (
        "T g, float64 lr, float64 wd",
        "T p",
        "gpunet_sgd_plain_update(g, p, lr, wd)",
        "gpunet_sgd_plain_kernel",
        ("optim.cuh",),
    ),
    "adam": (
        "T g, float64 lr, float64 b1, float64 b2, float64 eps, float64 wd, float64 bc1, float64 "
        "bc2, "
        "int32 decoupled",
        "T p, T m, T v",
        "gpunet_adam_update(g, p, m, v, lr, b1, b2, eps, wd, bc1, bc2, decoupled)",
        "gpunet_adam_kernel",
        ("optim.cuh",),
    ),
}


def all_ops() -> list:
    """Every ElementwiseKernel definition, for the compile test."""
    ops = [op for name in ACTIVATION_KERNELS for op in activation_ops(name)]
    return ops + list(OPTIM_OPS.values())


def make_kernel(cupy: ModuleType, definition: tuple) -> Array:
    """A cupy.ElementwiseKernel from one definition."""
    from .sources import read_source

    in_params, out_params, operation, name, files = definition
    return cupy.ElementwiseKernel(
        in_params, out_params, operation, name, preamble="\n".join(read_source(f) for f in files)
    )
