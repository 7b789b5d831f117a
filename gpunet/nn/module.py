"""The Module base: explicit forward and backward, parameters with gradients, state dicts.

A module computes ``forward(x)`` (keeping what its backward needs) and ``backward(dout)``, which
returns the gradient of the input and *accumulates* the gradients of its parameters into
``Parameter.grad``. There is no autograd tape: every layer's backward sits next to its forward,
which is what makes each step visible (and what the babysitting tools hook into).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy

from gpunet.types import Array

from ..backend import get_array_module, is_cupy_array, to_numpy

T = TypeVar("T")


def saved(value: T | None, layer: Module) -> T:
    """What ``layer``'s forward kept for its backward; a backward before any forward is a
    RuntimeError naming the layer (instead of an error deep in the functional code)."""
    if value is None:
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward")
    return value


class Parameter:
    """A trainable array ``data`` and its gradient ``grad`` (None until a backward runs)."""

    def __init__(self, data: Array):
        self.data = data
        self.grad: Array | None = None

    def accumulate(self, g: Array) -> None:
        """grad += g (the first gradient is stored as is)."""
        if self.grad is None:
            self.grad = g
        else:
            self.grad += g

    @property
    def shape(self) -> tuple:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


def _checked_forward(forward: Callable) -> Callable:
    """Every module's forward: the dtype policy at its entry, and the output's shape kept for
    the check in backward."""

    @functools.wraps(forward)
    def wrapper(self: Module, x: Array) -> Array:
        x = self._input_in_param_dtype(x)
        out = forward(self, x)
        object.__setattr__(self, "_forward_out", (tuple(out.shape), out.dtype))
        return out

    return wrapper


def _checked_backward(backward: Callable) -> Callable:
    """Every module's backward: refuses to run before a forward, or on a ``dout`` that is not
    shaped like the forward's output, with a message instead of an error deep in a kernel."""

    @functools.wraps(backward)
    def wrapper(self: Module, dout: Array) -> Array:
        seen = self.__dict__.get("_forward_out")
        if seen is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward was called before forward: run forward on a "
                "batch first (backward needs what forward keeps)"
            )
        if tuple(getattr(dout, "shape", ())) != seen[0]:
            raise ValueError(
                f"{type(self).__name__}.backward: dout has shape {tuple(dout.shape)}, expected "
                f"the shape of the forward output {seen[0]}"
            )
        return backward(self, dout)

    return wrapper


class Module:
    """Base class. Subclasses set ``Parameter`` and ``Module`` attributes (registered
    automatically), register non-trainable state with ``register_buffer``, and implement
    ``forward`` and ``backward``.

    The dtype policy (one for the whole library): a module's parameter dtype decides. Input of
    another numeric dtype (float64 NumPy data into a float32 model, uint8 pixels) is converted at
    the module's entry, as Keras does; anything else is refused there with a message.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _checked_forward(cls.__dict__["forward"])
        if "backward" in cls.__dict__:
            cls.backward = _checked_backward(cls.__dict__["backward"])

    _parameters: OrderedDict[str, Parameter]
    _buffers: OrderedDict[str, Array]
    _modules: OrderedDict[str, Module]
    training: bool
    input_grad: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_out", None)
        #: False: backward need not return the gradient of the input (None instead): the first
        #: layer of a model that ``fit`` trains, whose input is data (Sequential passes it on)
        object.__setattr__(self, "input_grad", True)

    def _input_in_param_dtype(self, x: Array) -> Array:
        # a module's own parameters decide; a container (no parameters of its own) leaves it to
        # its first child -- and costs nothing per step
        dtype = next((p.data.dtype for p in self._parameters.values()), None)
        if dtype is None or getattr(x, "dtype", dtype) == dtype:
            return x
        if not hasattr(x, "dtype") or x.dtype.kind not in "biuf":
            raise TypeError(
                f"{type(self).__name__} takes numeric arrays (its parameters are {dtype}); got "
                f"{getattr(x, 'dtype', type(x).__name__)}: convert with x.astype('{dtype}')"
            )
        return x.astype(dtype)

    # -- registration ----------------------------------------------------------------------
    def __setattr__(self, name: str, value: object) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # a buffer (an array)
        buffers = self.__dict__.get("_buffers", {})
        if name in buffers:
            return buffers[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def register_buffer(self, name: str, array: Array) -> None:
        """Non-trainable state saved in ``state_dict`` (e.g. BatchNorm's running statistics)."""
        self._buffers[name] = array

    # -- computation -----------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, dout: Array) -> Array:
        raise NotImplementedError

    def __call__(self, x: Array):
        return self.forward(x)

    # -- traversal -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator:
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self) -> list:
        return list(self._modules.values())

    def named_parameters(self, prefix: str = "") -> Iterator:
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> Iterator:
        for mod_name, m in self.named_modules():
            for name, b in m._buffers.items():
                yield (f"{mod_name}.{name}" if mod_name else name), m, name, b

    # -- modes and gradients ---------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Parameters and buffers by name (``"0.weight"``, ``"1.running_mean"``), as arrays on
        the module's device (not copies)."""
        state = OrderedDict((name, p.data) for name, p in self.named_parameters())
        for name, _, _, b in self.named_buffers():
            state[name] = b
        return state

    def load_state_dict(self, state: dict, strict: bool = True) -> Module:
        """Copy values from ``state`` (NumPy or CuPy arrays) into this module, on its device,
        keeping each array's dtype. ``strict``: the names must match exactly."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        params = dict(self.named_parameters())
        buffers = {name: (m, bname) for name, m, bname, _ in self.named_buffers()}
        for name, value in state.items():
            if name not in own:
                continue
            target = own[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"state_dict[{name!r}] has shape {tuple(value.shape)}, "
                    f"the module expects {tuple(target.shape)}"
                )
            xp = get_array_module(target)
            new = xp.array(
                to_numpy(value) if xp is numpy else xp.asarray(value), dtype=target.dtype
            )
            if name in params:
                params[name].data = new
            else:
                m, bname = buffers[name]
                m._buffers[bname] = new
        return self

    def to(self, backend: str) -> Module:
        """Move every parameter, gradient and buffer to ``"numpy"`` or ``"cupy"``."""
        if backend not in ("numpy", "cupy"):
            raise ValueError(f"backend must be 'numpy' or 'cupy', got {backend!r}")
        if backend == "cupy":
            from ..backend import BackendError, cupy_or_none, probe_cupy

            cupy = cupy_or_none()
            if cupy is None:
                raise BackendError(f"cannot move the module to 'cupy': {probe_cupy()[1]}")
            move = cupy.asarray
        else:
            move = to_numpy
        for p in self.parameters():
            p.data = move(p.data)
            if p.grad is not None:
                p.grad = move(p.grad)
        for _, m, bname, b in list(self.named_buffers()):
            if b.dtype.kind == "f":  # counters (num_batches_tracked) stay on the host: no syncs
                m._buffers[bname] = move(b)
        for _, m in self.named_modules():
            m._on_move()
        return self

    def _on_move(self) -> None:
        """Hook for modules that keep device-specific state (caches, generators)."""

    def device(self) -> str:
        ps = self.parameters()
        return "cupy" if ps and is_cupy_array(ps[0].data) else "numpy"

    # -- display ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in self._modules.items():
            lines.append("  (" + name + "): " + repr(m).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse. Names "0", "1", ..."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, argument {i} is {type(m).__name__}")
            setattr(self, str(i), m)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i: int):
        return list(self._modules.values())[i]

    def forward(self, x: Array) -> Array:
        for m in self._modules.values():
            x = m.forward(x)
        return x

    def backward(self, dout: Array) -> Array | None:
        modules = list(self._modules.values())
        if not modules:
            return dout
        object.__setattr__(modules[0], "input_grad", self.input_grad)
        try:
            for m in reversed(modules):
                dout = m.backward(dout)
        finally:
            object.__setattr__(modules[0], "input_grad", True)
        return dout
