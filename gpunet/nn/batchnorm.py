"""BatchNorm layers over gpunet.functional.batch_norm_forward / batch_norm_backward (formulas
there)."""

from __future__ import annotations

import numpy

from gpunet.types import Array, DTypeLike

from .. import functional as F
from .. import init as initializers
from .module import Module, Parameter


class _BatchNorm(Module):
    _ndims: tuple[int, ...] = ()
    num_batches_tracked: Array  # a buffer (register_buffer)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        activation: str | None = None,
        activation_arg: float | None = None,
        dtype: DTypeLike = numpy.float32,
    ):
        super().__init__()
        if (
            isinstance(num_features, bool)
            or not isinstance(num_features, (int, numpy.integer))
            or num_features < 1
        ):
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        if activation not in F.batchnorm.ACTIVATION_CODES:
            raise ValueError(
                f"activation must be one of {list(F.batchnorm.ACTIVATION_CODES)}, got "
                f"{activation!r}"
            )
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats, self.activation = (
            affine,
            track_running_stats,
            activation,
        )
        self.activation_arg = activation_arg  # leaky_relu's slope / elu's alpha (None: the default)
        self.weight = (
            Parameter(initializers.constant(num_features, 1.0, dtype=dtype)) if affine else None
        )
        self.bias = Parameter(initializers.zeros(num_features, dtype=dtype)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", initializers.zeros(num_features, dtype=dtype))
            self.register_buffer(
                "running_var", initializers.constant(num_features, 1.0, dtype=dtype)
            )
            self.register_buffer("num_batches_tracked", numpy.zeros((), dtype=numpy.int64))
        self._cache: F.batchnorm.BatchNormCache | None = None

    def forward(self, x: Array) -> Array:
        if x.ndim not in self._ndims:
            raise ValueError(
                f"{type(self).__name__} expects {' or '.join(f'{d}-D' for d in self._ndims)} "
                f"input, "
                f"got shape {x.shape}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) got {x.shape[1]} channels (axis 1)"
            )
        track = self.track_running_stats
        seen = int(self.num_batches_tracked) if track else 0
        y, self._cache = F.batch_norm_forward(
            x,
            None if self.weight is None else self.weight.data,
            None if self.bias is None else self.bias.data,
            self.running_mean if track else None,
            self.running_var if track else None,
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
            activation=self.activation,
            activation_arg=self.activation_arg,
            num_batches_tracked=seen,
        )
        if self.training and track:
            self.num_batches_tracked = numpy.asarray(seen + 1, dtype=numpy.int64)
        return y

    def backward(self, dout: Array) -> Array:
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        dx, dgamma, dbeta = F.batch_norm_backward(dout, self._cache)
        if self.weight is not None and self.bias is not None:
            self.weight.accumulate(dgamma)
            self.bias.accumulate(dbeta)
        return dx

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation else ""
        if self.activation_arg is not None:
            act += f", activation_arg={self.activation_arg!r}"
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}{act}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) input, statistics per channel."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) input, statistics per channel over N, H, W."""

    _ndims = (4,)
