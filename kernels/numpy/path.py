"""The NumPy kernel path (complete: every operation of kernels/interface.py).

The reference the other paths are held to in the tests, and the path for NumPy arrays wherever
the Numba CPU kernels do not run (gpunet/dispatch.py). Matrix products go to the CPU BLAS that
kernels/shared/cpu_blas.py chooses (NumPy's OpenBLAS or Intel MKL).
"""

from __future__ import annotations

from gpunet.types import Array

from ..activation_table import scalars
from ..shared.cpu_blas import column_sums, matmul, tensordot
from . import OPS, activations
from .activations import maxout_backward, maxout_forward, prelu_backward, prelu_forward
from .batchnorm import backward as bn_backward
from .batchnorm import forward as bn_forward
from .conv import (  # noqa: F401
    conv2d_backward,
    conv2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from .loss import softmax_xent
from .optim import adam, sgd

NAME = "numpy"


def activation_forward(name: str, x: Array, **params: float) -> Array:
    return activations.forward(name, x, *scalars(name, params))


def activation_backward(name: str, dy: Array, x: Array, **params: float) -> Array:
    return activations.backward(name, dy, x, *scalars(name, params))
