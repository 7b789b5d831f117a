"""gpunet: train neural networks well, on an NVIDIA GPU (CuPy) or a CPU (NumPy), with the same code.

Pick the device with ``gpunet.set_backend("auto" | "numpy" | "cupy")`` (or ``GPUNET_BACKEND``),
the GPU kernel path with ``gpunet.set_kernels("auto" | "cupy" | "numba")``, the CPU matrix-product
library with ``gpunet.set_cpu_blas("auto" | "numpy" | "mkl")``, and make every random
draw reproducible with ``gpunet.seed(n)``.
"""

from . import functional  # noqa: F401
from .backend import (  # noqa: F401
    BackendError,
    asarray,
    device_name,
    get_array_module,
    get_backend,
    get_xp,
    seed,
    set_backend,
    to_numpy,
)
from .dispatch import (  # noqa: F401
    KernelFallbackWarning,
    get_cpu_blas,
    get_cpu_kernels,
    get_kernels,
    set_cpu_blas,
    set_cpu_kernels,
    set_kernels,
    use_cpu_blas,
    use_cpu_kernels,
    use_kernels,
)
from .kernels.shared.cpu_memory import keep_freed_memory as _keep_freed_memory
from .kernels.shared.cpu_threads import short_openmp_spin as _short_openmp_spin

__version__ = "0.1.0"

_keep_freed_memory()  # a training step's large arrays reused, not page-faulted in every step
_short_openmp_spin()  # OpenMP's threads give the cores back sooner after a parallel region

#: submodules reachable as attributes after a plain ``import gpunet`` (``gpunet.nn.mlp(...)``, as
#: ``numpy.linalg`` and ``torch.nn``), imported on first use so that ``import gpunet`` stays light
_SUBMODULES = (
    "backend",
    "checkpoint",
    "cli",
    "datasets",
    "diagnose",
    "dispatch",
    "functional",
    "init",
    "kernels",
    "metrics",
    "nn",
    "optim",
    "preprocess",
    "run",
    "train",
    "tune",
    "types",
)


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'gpunet' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_SUBMODULES))
