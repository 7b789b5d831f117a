"""Optimizers (update rules as PyTorch defines them) and learning-rate schedules.

Every optimizer takes a list of ``Parameter`` (``model.parameters()``), updates ``p.data`` in place
from ``p.grad`` in ``step()`` (parameters without a gradient are skipped), and saves its state as a
flat dict of arrays (``state_dict``) that fits in an ``.npz`` checkpoint.

SGD:      g = grad + wd p;  buf = g (first step) else mu buf + (1 - dampening) g;
          g = g + mu buf (nesterov) else buf;   p -= lr g
RMSprop:  v = alpha v + (1 - alpha) g^2;  p -= lr g / (sqrt(v) + eps)
          (centered: v - mean(g)^2 under the root; momentum: buf = mu buf + g / (...), p -= lr buf)
Adam:     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)   (Kingma & Ba 2015)
AdamW:    p *= 1 - lr wd, then Adam with no weight decay in g   (Loshchilov & Hutter 2019)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from types import ModuleType

import numpy

from gpunet.types import Array

from .backend import get_array_module, is_cupy_array, to_numpy
from .kernels.interface import AdamStep, SGDStep
from .nn.module import Parameter


class Optimizer:
    _state_names: tuple = ()
    _hyper: tuple = ("lr",)

    def __init__(self, params: Iterable, lr: float):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"params[{i}] is {type(p).__name__}, expected a gpunet.nn.Parameter"
                )
        if not (isinstance(lr, (int, float)) and lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a non-negative number, got {lr!r}")
        self.params, self.lr, self.t = params, float(lr), 0
        self.state: list[dict] = [dict() for _ in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.t += 1
        for p, st in zip(self.params, self.state):
            if p.grad is None:
                continue
            self._update(p, p.grad, st)

    def _update(self, p: Parameter, g: Array, st: dict) -> None:
        raise NotImplementedError

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Flat dict: hyperparameters, step count and per-parameter state as ``state.i.name``."""
        out = {"t": numpy.asarray(self.t)}
        for h in self._hyper:
            out[h] = numpy.asarray(getattr(self, h))
        for i, st in enumerate(self.state):
            for name, value in st.items():
                out[f"state.{i}.{name}"] = value
        return out

    def load_state_dict(self, state: dict) -> Optimizer:
        self.t = int(to_numpy(state["t"]))
        for h in self._hyper:
            if h in state:
                v = to_numpy(state[h])
                setattr(self, h, tuple(v.tolist()) if v.ndim else float(v))
        self.state = [dict() for _ in self.params]
        for key, value in state.items():
            if key.startswith("state."):
                _, i, name = key.split(".", 2)
                i = int(i)
                if i >= len(self.params):
                    raise ValueError(
                        f"optimizer state has entry {key!r} but only {len(self.params)} parameters"
                    )
                xp = get_array_module(self.params[i].data)
                value = xp.asarray(
                    to_numpy(value) if xp is numpy else value, dtype=self.params[i].data.dtype
                )
                if value.shape != self.params[i].data.shape:
                    raise ValueError(
                        f"optimizer state {key!r} has shape {value.shape}, "
                        f"parameter {i} has shape {self.params[i].data.shape}"
                    )
                self.state[i][name] = value
        return self


def _zeros(st: dict, name: str, like: Array) -> Array:
    """``st[name]``, made zeros like ``like`` the first time only (``dict.setdefault`` would
    allocate and zero a new array on every step)."""
    if name not in st:
        st[name] = get_array_module(like).zeros_like(like)
    return st[name]


def _update_kernels(op: str, p: Array, g: Array) -> ModuleType:
    """The kernel path whose ``op`` (``"sgd"`` or ``"adam"``) updates ``p`` in place: one fused
    launch of kernels/cupy/optim.cuh for CuPy arrays, the fused Numba loop where the CPU kernel
    choice takes it (contiguous arrays of one dtype), else the NumPy expressions."""
    from .dispatch import kernels_for, path_module

    if not is_cupy_array(p) and (
        g.dtype != p.dtype or not (p.flags.c_contiguous and g.flags.c_contiguous)
    ):
        return path_module("numpy")
    return kernels_for(op, p, g)


def _multi_path(op: str, live: list) -> ModuleType | None:
    """The kernel path module that updates every (parameter, state) of ``live`` in one launch
    (a path's ``sgd_many``/``adam_many``: the CuPy path's for contiguous CuPy arrays of one
    dtype; the Numba CPU path's for small contiguous ones, MANY a call), else None (one update
    per parameter)."""
    if len(live) < 2:
        return None
    p0 = live[0][0]
    module = _update_kernels(op, p0.data, p0.grad)
    if not hasattr(module, f"{op}_many"):
        return None
    arrays = [a for p, st in live for a in (p.data, p.grad, *st.values())]
    return module if module.multi_ready(*arrays) else None


def _check_below_one(**values: float | None) -> None:
    """A momentum of 1 or more never forgets a gradient: the updates grow without bound."""
    for name, v in values.items():
        if v is not None and v >= 1:
            raise ValueError(f"{name} must be in [0, 1), got {v!r}")


def _check_nonneg(**values) -> None:
    for k, v in values.items():
        if not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"{k} must be a non-negative number, got {v!r}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay."""

    _hyper = ("lr", "momentum", "weight_decay", "dampening")

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float | None = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ):
        super().__init__(params, lr)
        _check_nonneg(momentum=momentum, weight_decay=weight_decay, dampening=dampening)
        _check_below_one(momentum=momentum)
        if nesterov and (not momentum or momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")
        self.momentum, self.nesterov, self.weight_decay, self.dampening = (
            momentum,
            nesterov,
            weight_decay,
            dampening,
        )

    def step(self) -> None:
        """One update of every parameter with a gradient: on a GPU, one launch for all."""
        live = [(p, st) for p, st in zip(self.params, self.state) if p.grad is not None]
        module = _multi_path("sgd", live)
        if module is None:
            return super().step()
        self.t += 1
        firsts = []
        for p, st in live:
            first = bool(self.momentum) and "momentum_buffer" not in st
            if first:
                st["momentum_buffer"] = get_array_module(p.data).empty_like(p.data)
            firsts.append(first)
        step = SGDStep(
            self.lr, self.momentum or 0.0, self.dampening, self.weight_decay, self.nesterov, False
        )
        items = [(p.grad, p.data, st.get("momentum_buffer")) for p, st in live]
        module.sgd_many(items, step, firsts)

    def _update(self, p: Parameter, g: Array, st: dict) -> None:
        first = bool(self.momentum) and "momentum_buffer" not in st
        if first:
            st["momentum_buffer"] = get_array_module(p.data).empty_like(p.data)
        step = SGDStep(
            self.lr, self.momentum or 0.0, self.dampening, self.weight_decay, self.nesterov, first
        )
        _update_kernels("sgd", p.data, g).sgd(g, p.data, st.get("momentum_buffer"), step)


class RMSprop(Optimizer):
    """Hinton's RMSprop (PyTorch's form, eps outside the root)."""

    _hyper = ("lr", "alpha", "eps", "weight_decay", "momentum")

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float | None = 0.0,
        centered: bool = False,
    ):
        super().__init__(params, lr)
        _check_nonneg(alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
        _check_below_one(momentum=momentum)
        self.alpha, self.eps, self.weight_decay, self.momentum, self.centered = (
            alpha,
            eps,
            weight_decay,
            momentum,
            centered,
        )

    def _update(self, p: Parameter, g: Array, st: dict) -> None:
        xp = get_array_module(p.data)
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        sq = _zeros(st, "square_avg", p.data)
        sq *= self.alpha
        sq += (1 - self.alpha) * g * g
        if self.centered:
            ga = _zeros(st, "grad_avg", p.data)
            ga *= self.alpha
            ga += (1 - self.alpha) * g
            avg = xp.sqrt(sq - ga * ga) + self.eps
        else:
            avg = xp.sqrt(sq) + self.eps
        if self.momentum:
            buf = _zeros(st, "momentum_buffer", p.data)
            buf *= self.momentum
            buf += g / avg
            p.data -= self.lr * buf
        else:
            p.data -= self.lr * g / avg


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` adds wd * p to the gradient (L2, as PyTorch)."""

    _hyper = ("lr", "betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        _check_nonneg(eps=eps, weight_decay=weight_decay)
        self.betas, self.eps, self.weight_decay = tuple(float(b) for b in betas), eps, weight_decay

    def _step_args(self) -> AdamStep:
        b1, b2 = self.betas
        return AdamStep(
            self.lr,
            b1,
            b2,
            self.eps,
            self.weight_decay,
            1 - b1**self.t,
            1 - b2**self.t,
            self._decoupled,
        )

    def step(self) -> None:
        """One update of every parameter with a gradient: on a GPU, one launch for all."""
        live = [(p, st) for p, st in zip(self.params, self.state) if p.grad is not None]
        for p, st in live:  # the moments start at zero
            _zeros(st, "exp_avg", p.data)
            _zeros(st, "exp_avg_sq", p.data)
        module = _multi_path("adam", live)
        if module is None:
            return super().step()
        self.t += 1
        items = [(p.grad, p.data, st["exp_avg"], st["exp_avg_sq"]) for p, st in live]
        module.adam_many(items, self._step_args())

    def _update(self, p: Parameter, g: Array, st: dict) -> None:
        m, v = _zeros(st, "exp_avg", p.data), _zeros(st, "exp_avg_sq", p.data)
        _update_kernels("adam", p.data, g).adam(g, p.data, m, v, self._step_args())


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as PyTorch)."""

    _decoupled = True

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


# ----------------------------------------------------------------------------- schedules
class Schedule:
    """Sets ``optimizer.lr = base_lr * factor(t)``; call ``step()`` once per epoch (or per
    iteration, as you define t). ``state_dict`` holds t and base_lr."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer, self.base_lr, self.t = optimizer, optimizer.lr, 0
        self.optimizer.lr = self.base_lr * self.factor(0)

    def factor(self, t: int) -> float:
        raise NotImplementedError

    def step(self) -> float:
        """Advance one epoch; returns the new learning rate."""
        self.t += 1
        self.optimizer.lr = self.base_lr * self.factor(self.t)
        return self.optimizer.lr

    def state_dict(self) -> dict:
        return {"t": numpy.asarray(self.t), "base_lr": numpy.asarray(self.base_lr)}

    def load_state_dict(self, state: dict) -> None:
        self.t, self.base_lr = int(to_numpy(state["t"])), float(to_numpy(state["base_lr"]))
        self.optimizer.lr = self.base_lr * self.factor(self.t)


class StepDecay(Schedule):
    """lr = base * gamma ** (t // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), gamma
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class ExponentialDecay(Schedule):
    """lr = base * gamma ** t."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        self.gamma = gamma
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        return self.gamma**t


class CosineAnnealing(Schedule):
    """lr = eta_min + (base - eta_min) (1 + cos(pi t / T_max)) / 2, constant eta_min after T_max."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        if T_max < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = int(T_max), eta_min
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        t = min(t, self.T_max)
        lr = (
            self.eta_min
            + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
        )
        return lr / self.base_lr if self.base_lr else 0.0


class LinearWarmup(Schedule):
    """lr rises linearly from start_factor * base to base over ``warmup`` steps, then follows
    ``after`` (another schedule's factor, shifted by ``warmup``) or stays at base."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup: int,
        start_factor: float = 0.1,
        after: Schedule | None = None,
    ):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        self.warmup, self.start_factor, self.after = int(warmup), start_factor, after
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        if t < self.warmup:
            return self.start_factor + (1 - self.start_factor) * t / self.warmup
        return self.after.factor(t - self.warmup) if self.after is not None else 1.0
