"""The kernel-path interface: the whole set of operations a kernel path runs, with their types.

A kernel path is a subpackage of ``gpunet.kernels`` (``numpy``, ``numba_cpu``, ``cupy``,
``numba_cuda``) whose ``__init__`` exports the functions below under these names and signatures,
plus ``NAME`` (its name in gpunet.dispatch) and ``OPS`` (the operation keys it runs). The two
complete paths, ``numpy`` and ``cupy``, run every operation and satisfy ``KernelPath`` as modules
(mypy checks ``kernels/conformance.py``); the two Numba paths run the subset in their ``OPS`` and
gpunet.dispatch sends every other operation to the complete path of the same device. Every
function present in a path has exactly the Protocol's signature: tests/test_kernel_interface.py
holds each path to it.

Operation keys (what ``gpunet.dispatch.kernels_for(op, x)`` is asked for): an activation name of
kernels/activation_table.py, ``"prelu"``, ``"maxout"``, ``"batchnorm"`` or ``"batchnorm+ACT"``,
``"softmax_xent"``, ``"matmul"`` (matmul, tensordot, column_sums), ``"conv2d"``,
``"max_pool2d"``, ``"sgd"``, ``"adam"``.

Every function returns new arrays, except the optimizer updates (in place) and ``bn_forward``'s
running statistics (updated in place when ``spec.update``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from gpunet.types import Array

__all__ = ["KernelPath", "BNSpec", "BNParams", "BNStats", "SGDStep", "AdamStep", "OP_FUNCTIONS"]


@dataclass(frozen=True)
class BNSpec:
    """What a BatchNorm call does (gpunet/functional/batchnorm.py has the formulas).

    ``batch_stats``: normalize with this batch's statistics (else the running ones);
    ``update``: update the running statistics in place, ``r = (1 - factor) r + factor batch``
    (unbiased variance); ``eps``; ``act``: the fused activation (None or a name with
    ``fuses_with_batchnorm``) and ``act_param`` its parameter (leaky_relu's slope, elu's alpha)."""

    batch_stats: bool
    update: bool
    factor: float
    eps: float
    act: str | None = None
    act_param: float = 0.0


class BNStats(NamedTuple):
    """The per-channel statistics a BatchNorm forward normalized with, (C,) in x's dtype: the
    batch's, or the running ones (inference); what backward needs."""

    mean: Array
    invstd: Array


class BNParams(NamedTuple):
    """BatchNorm's per-channel arrays, each (C,) and contiguous, or None (no affine / no running
    statistics)."""

    gamma: Array | None
    beta: Array | None
    running_mean: Array | None
    running_var: Array | None


@dataclass(frozen=True)
class SGDStep:
    """One SGD update (gpunet/optim.py has the formula). ``first``: the momentum buffer is
    uninitialized and takes the gradient."""

    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    first: bool


@dataclass(frozen=True)
class AdamStep:
    """One Adam(W) update; ``bias1 = 1 - beta1^t``, ``bias2 = 1 - beta2^t``; ``decoupled``:
    AdamW's weight decay."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    bias1: float
    bias2: float
    decoupled: bool


class KernelPath(Protocol):
    """The operations of a kernel path (see the module docstring)."""

    NAME: str
    OPS: frozenset[str]

    def activation_forward(self, name: str, x: Array, **params: float) -> Array:
        """f(x) of activation ``name`` with its named parameters (defaults from the table)."""
        ...

    def activation_backward(self, name: str, dy: Array, x: Array, **params: float) -> Array:
        """dy * f'(x)."""
        ...

    def prelu_forward(self, x: Array, w: Array, channels: int, inner: int) -> Array:
        """x where x > 0 else w[c] x, x viewed as (outer, channels, inner)."""
        ...

    def prelu_backward(
        self, dy: Array, x: Array, w: Array, channels: int, inner: int
    ) -> tuple[Array, Array]:
        """(dx, dw_elem), dw_elem = x dy where x <= 0 (summed per channel by the caller)."""
        ...

    def maxout_forward(self, x: Array, out_shape: tuple, pieces: int, inner: int) -> Array:
        """Max over each group of ``pieces`` consecutive features of axis 1."""
        ...

    def maxout_backward(
        self, dy: Array, x: Array, out_shape: tuple, pieces: int, inner: int
    ) -> Array:
        """dy routed to each group's first maximum (a NaN wins), 0 elsewhere."""
        ...

    def bn_forward(self, x3: Array, params: BNParams, spec: BNSpec) -> tuple[Array, BNStats]:
        """(y, the statistics used) for (N, C, S) x."""
        ...

    def bn_backward(
        self, dy3: Array, x3: Array, stats: BNStats, params: BNParams, spec: BNSpec
    ) -> tuple[Array, Array, Array]:
        """(dx, dgamma, dbeta); sums in float64."""
        ...

    def softmax_xent(self, scores: Array, y: Array) -> tuple[Array, Array]:
        """(mean loss, dscores) of softmax cross-entropy, max-shifted."""
        ...

    def matmul(self, a: Array, b: Array, bias: Array | None = None) -> Array:
        """a @ b (+ bias on every row)."""
        ...

    def tensordot(self, a: Array, b: Array, axes: tuple) -> Array:
        """numpy.tensordot(a, b, axes)."""
        ...

    def column_sums(self, a: Array) -> Array:
        """a.sum(axis=0) of a 2-D array."""
        ...

    def conv2d_forward(self, x: Array, w: Array, stride: tuple, padding: tuple) -> tuple:
        """(out, kept): out (N, F, Ho, Wo) the cross-correlation of x (N, C, H, W) with w
        (F, C, kh, kw), no bias; ``kept`` what the path keeps for backward (its im2col matrix,
        or None), opaque to the caller."""
        ...

    def conv2d_backward(
        self,
        dout: Array,
        x: Array,
        w: Array,
        kept: object,
        stride: tuple,
        padding: tuple,
        input_grad: bool,
    ) -> tuple[Array | None, Array]:
        """(dx, or None without input_grad; dw). ``kept`` from conv2d_forward (any path's: one
        that is not this path's own is ignored and the im2col matrix rebuilt)."""
        ...

    def max_pool2d_forward(
        self, x: Array, kernel: tuple, stride: tuple, padding: tuple
    ) -> tuple[Array, Array]:
        """(out, arg): each window's maximum and its flat index h W + w in the (n, c) plane
        (int32; the first NaN, else the first maximum in row-major window order)."""
        ...

    def max_pool2d_backward(
        self, dout: Array, arg: Array, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple
    ) -> Array:
        """dx: each output gradient added at its ``arg``."""
        ...

    def sgd(self, g: Array, p: Array, buf: Array | None, step: SGDStep) -> None:
        """In place: p, and the momentum buffer (None without momentum)."""
        ...

    def adam(self, g: Array, p: Array, m: Array, v: Array, step: AdamStep) -> None:
        """In place: p, m, v."""
        ...


#: operation key -> the functions that key selects (for the tests and the partial paths' OPS)
OP_FUNCTIONS = {
    "activation": ("activation_forward", "activation_backward"),
    "prelu": ("prelu_forward", "prelu_backward"),
    "maxout": ("maxout_forward", "maxout_backward"),
    "batchnorm": ("bn_forward", "bn_backward"),
    "softmax_xent": ("softmax_xent",),
    "matmul": ("matmul", "tensordot", "column_sums"),
    "conv2d": ("conv2d_forward", "conv2d_backward"),
    "max_pool2d": ("max_pool2d_forward", "max_pool2d_backward"),
    "sgd": ("sgd",),
    "adam": ("adam",),
}
