"""The one table of gpunet's elementwise activations: every list about them is derived from it.

One row per activation that the kernels compute from ``x`` alone (PReLU and Maxout, which take a
tensor parameter, have kernels of their own and no row here). From this table come:

* the dispatch's Numba CPU rules (``cpu_min``, ``cpu_float32_only``; gpunet/dispatch.py),
* the codes of the activations that BatchNorm fuses (``fuses_with_batchnorm``), the CUDA C switch
  and the vector RawKernels of ``kernels/cupy/generated.cuh``, and the Numba CUDA switch of
  ``kernels/numba_cuda/fused_switch.py`` (both written by ``python -m gpunet.kernels.generate``
  and checked against this table by tests/test_kernel_interface.py),
* the layer registry (``gpunet.nn.ACTIVATION_LAYERS``) and the CLI's ``--activation`` choices,
* the named parameters a kernel path receives (``activation_forward(name, x, **params)``) and the
  order in which they become the kernels' two scalars ``a``, ``b``.

The formulas themselves are written once per language: NumPy (kernels/numpy/activations.py),
Numba (kernels/shared/activation_math.py, both Numba targets) and CUDA C
(kernels/cupy/activations.cuh); the public function with its formula in the docstring is in
gpunet/functional/activations.py. README.md, "Adding an activation", lists the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Activation",
    "Param",
    "ACTIVATIONS",
    "BY_NAME",
    "NAMES",
    "FUSED_ACTIVATIONS",
    "ACTIVATION_CODES",
    "FUSED_ACTIVATION_DEFAULTS",
    "scalars",
]


@dataclass(frozen=True)
class Param:
    """A scalar parameter of an activation: its keyword name and default."""

    name: str
    default: float


@dataclass(frozen=True)
class Activation:
    """One activation. ``name`` is its kernel name (``gpunet_NAME_fwd`` in CUDA C, ``NAME_fwd`` in
    the Numba math); ``layer`` the gpunet.nn class and ``layer_args`` what it is built with;
    ``params`` at most two scalars, in the order of the kernels' ``a``, ``b``; ``cpu_min`` the
    number of contiguous values from which ``auto`` runs the Numba CPU kernel (None: never);
    ``cpu_float32_only`` keeps float64 on NumPy (its Numba kernel calls the C library per value
    and loses); ``fuses_with_batchnorm``: the BatchNorm kernels apply it in their passes."""

    name: str
    layer: str
    params: tuple[Param, ...] = ()
    layer_args: dict = field(default_factory=dict)
    cpu_min: int | None = 4096
    cpu_float32_only: bool = False
    fuses_with_batchnorm: bool = False

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}


# Measured for the Numba CPU rules (1M values, 2-core EPYC, ms forward/backward, NumPy -> Numba):
# relu 4.5/8.9 -> 0.7/0.8, leaky_relu 4.9/9.0 -> 0.7/0.9, float32 sigmoid 5.6/6.9 -> 0.64/0.72,
# elu 5.0/9.6 -> 0.68/0.54, selu 5.4/10.1 -> 0.84/0.55, gelu 12.0/17.5 -> 7.8/11.4, gelu_tanh
# 58/66 -> 1.1/1.2, silu 11.7/18.0 -> 8.0/8.4; float64 softplus 10.9 -> 12.8 and tanh 2.4 -> 17.2
# fwd+bwd (the C library per value: NumPy kept), float32 softplus 9.5 -> 1.6, tanh 1.49 -> 1.29.
ACTIVATIONS = (
    Activation("relu", "ReLU", fuses_with_batchnorm=True),
    Activation(
        "leaky_relu", "LeakyReLU", (Param("negative_slope", 0.01),), fuses_with_batchnorm=True
    ),
    Activation("elu", "ELU", (Param("alpha", 1.0),), fuses_with_batchnorm=True),
    Activation("tanh", "Tanh", cpu_float32_only=True, fuses_with_batchnorm=True),
    Activation("sigmoid", "Sigmoid", fuses_with_batchnorm=True),
    Activation("gelu", "GELU", layer_args={"approximate": "none"}, fuses_with_batchnorm=True),
    Activation("silu", "SiLU", fuses_with_batchnorm=True),
    Activation("selu", "SELU"),
    Activation("gelu_tanh", "GELU", layer_args={"approximate": "tanh"}),
    Activation(
        "softplus",
        "Softplus",
        (Param("beta", 1.0), Param("threshold", 20.0)),
        cpu_float32_only=True,
    ),
)
BY_NAME = {a.name: a for a in ACTIVATIONS}
NAMES = tuple(BY_NAME)
#: each activation's (a, b) with its default parameters (scalars() of a call without keywords)
_DEFAULT_SCALARS: dict[str, tuple[float, float]] = {}
for _a in ACTIVATIONS:
    _values = [float(p.default) for p in _a.params] + [0.0, 0.0]
    _DEFAULT_SCALARS[_a.name] = (_values[0], _values[1])
del _a, _values

#: The activations that BatchNorm fuses, in code order (code 0: none); the CUDA C and Numba CUDA
#: switches are generated from these codes.
FUSED_ACTIVATIONS = (None,) + tuple(a.name for a in ACTIVATIONS if a.fuses_with_batchnorm)
ACTIVATION_CODES = {name: code for code, name in enumerate(FUSED_ACTIVATIONS)}
#: The parameter of a fused activation and its default (leaky_relu's slope, elu's alpha): the
#: fused kernels take one scalar.
FUSED_ACTIVATION_DEFAULTS = {
    a.name: a.params[0].default for a in ACTIVATIONS if a.fuses_with_batchnorm and a.params
}


def scalars(name: str, params: dict) -> tuple[float, float]:
    """The kernels' two scalars ``(a, b)`` for activation ``name`` called with the keyword
    ``params`` (defaults filled in from the table). An unknown keyword is a TypeError."""
    row = BY_NAME[name]
    if not params:  # the defaults: every call of a parameterless activation
        return _DEFAULT_SCALARS[name]
    unknown = set(params) - {p.name for p in row.params}
    if unknown:
        raise TypeError(f"activation {name!r} takes no parameter {sorted(unknown)}")
    values = [float(params.get(p.name, p.default)) for p in row.params]
    values += [0.0] * (2 - len(values))
    return values[0], values[1]
