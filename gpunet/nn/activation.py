"""One layer class per activation function of gpunet.functional (the formulas are there)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy

from gpunet.types import Array, DTypeLike

from .. import functional as F
from ..kernels.activation_table import ACTIVATIONS
from .module import Module, Parameter, saved


class _Elementwise(Module):
    """forward(x) = f(x, **params); backward(dout) = f_backward(dout, x, **params)."""

    fn = staticmethod(F.relu)
    fn_backward = staticmethod(F.relu_backward)

    def __init__(self, **params):
        super().__init__()
        self.params = params
        self._x: Array | None = None

    def forward(self, x: Array):
        self._x = x
        return self.fn(x, **self.params)

    def backward(self, dout: Array):
        return self.fn_backward(dout, saved(self._x, self), **self.params)

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


def _layer(name: str, fn: Callable, fn_backward: Callable, doc: str, **defaults) -> type:
    def __init__(self: _Elementwise, **params: object) -> None:
        unknown = set(params) - set(defaults)
        if unknown:
            raise TypeError(f"{name} got unexpected arguments {sorted(unknown)}")
        _Elementwise.__init__(self, **{**defaults, **params})

    return type(
        name,
        (_Elementwise,),
        {
            "fn": staticmethod(fn),
            "fn_backward": staticmethod(fn_backward),
            "__init__": __init__,
            "__doc__": doc,
        },
    )


ReLU = _layer("ReLU", F.relu, F.relu_backward, "max(x, 0).")
Sigmoid = _layer("Sigmoid", F.sigmoid, F.sigmoid_backward, "1 / (1 + exp(-x)).")
Tanh = _layer("Tanh", F.tanh, F.tanh_backward, "tanh(x).")
LeakyReLU = _layer(
    "LeakyReLU",
    F.leaky_relu,
    F.leaky_relu_backward,
    "x if x > 0 else slope x.",
    negative_slope=0.01,
)
ELU = _layer("ELU", F.elu, F.elu_backward, "x if x > 0 else alpha (exp(x) - 1).", alpha=1.0)
SELU = _layer("SELU", F.selu, F.selu_backward, "scale * elu(x, alpha), self-normalizing constants.")
GELU = _layer(
    "GELU", F.gelu, F.gelu_backward, "x Phi(x) (or its tanh approximation).", approximate="none"
)
Softplus = _layer(
    "Softplus",
    F.softplus,
    F.softplus_backward,
    "log(1 + exp(beta x)) / beta.",
    beta=1.0,
    threshold=20.0,
)
SiLU = _layer("SiLU", F.silu, F.silu_backward, "x sigmoid(x).")


class PReLU(Module):
    """Leaky ReLU with a learned slope: one per channel (``num_parameters=C``) or one shared."""

    def __init__(
        self, num_parameters: int = 1, init: float = 0.25, dtype: DTypeLike = numpy.float32
    ):
        super().__init__()
        from .. import init as initializers

        self.weight = Parameter(initializers.constant(num_parameters, init, dtype=dtype))
        self._x: Array | None = None

    def forward(self, x: Array) -> Array:
        self._x = x
        return F.prelu(x, self.weight.data)

    def backward(self, dout: Array) -> Array:
        dx, dw = F.prelu_backward(dout, saved(self._x, self), self.weight.data)
        self.weight.accumulate(dw)
        return dx

    def extra_repr(self) -> str:
        return f"num_parameters={self.weight.data.size}"


class Maxout(Module):
    """Max over ``pieces`` consecutive features of axis 1: (N, C * pieces, *) -> (N, C, *)."""

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces
        self._x: Array | None = None

    def forward(self, x: Array) -> Array:
        self._x = x
        return F.maxout(x, self.pieces)

    def backward(self, dout: Array) -> Array:
        return F.maxout_backward(dout, saved(self._x, self), self.pieces)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


_LAYER_CLASSES = {
    cls.__name__: cls for cls in (ReLU, Sigmoid, Tanh, LeakyReLU, ELU, SELU, GELU, Softplus, SiLU)
}
#: activation name (as in mlp(activation=...) and the CLI's --activation) -> a callable that makes
#: its layer: every row of kernels/activation_table.py (its ``layer`` and ``layer_args``), and
#: PReLU (a learned slope, no row there)
ACTIVATION_LAYERS: dict[str, Callable[[], Module]] = {"prelu": PReLU}
for _row in ACTIVATIONS:
    if _row.layer not in _LAYER_CLASSES:  # a new row: its layer made from functional's pair
        _LAYER_CLASSES[_row.layer] = _layer(
            _row.layer,
            getattr(F, _row.name),
            getattr(F, f"{_row.name}_backward"),
            f"gpunet.functional.{_row.name} as a layer.",
            **_row.defaults(),
        )
    ACTIVATION_LAYERS[_row.name] = functools.partial(_LAYER_CLASSES[_row.layer], **_row.layer_args)
