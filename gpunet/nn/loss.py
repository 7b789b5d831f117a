"""Losses as modules, and L2 regularization as an explicit loss term."""

from __future__ import annotations

from collections.abc import Callable

from gpunet.types import Array

from ..functional import loss as L
from .module import Module


class Loss:
    #: the functional loss: fn(scores, y, check=...) -> (loss, dscores)
    fn: Callable[..., tuple]

    def __call__(self, scores: Array, y: Array, check: bool = True):
        """Returns ``(loss, dscores)``; ``check=False`` skips the label checks (which read the
        labels back from the device) once the caller has validated them."""
        return type(self).fn(scores, y, check=check)

    forward = __call__


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy, mean over the batch (see gpunet.functional.loss)."""

    fn = staticmethod(L.softmax_cross_entropy)


class MulticlassSVM(Loss):
    """Multiclass hinge loss with margin 1, mean over the batch."""

    def __init__(self, margin: float = 1.0):
        self.margin = margin

    def __call__(self, scores: Array, y: Array, check: bool = True):
        return L.multiclass_svm(scores, y, self.margin, check=check)

    forward = __call__


def regularized_weights(model: Module) -> list:
    """The parameters L2 regularization applies to: weights (2 or more dimensions), not biases,
    BatchNorm scales or PReLU slopes."""
    return [p for name, p in model.named_parameters() if p.data.ndim >= 2]


def l2_penalty(model: Module, reg: float) -> Array:
    """reg * sum(W ** 2) over the model's weights (a 0-d array on the device)."""
    xp_total = None
    for p in regularized_weights(model):
        term = (p.data * p.data).sum()
        xp_total = term if xp_total is None else xp_total + term
    return 0.0 if xp_total is None else reg * xp_total


def l2_penalty_backward(model: Module, reg: float) -> None:
    """Adds d(reg * sum W^2)/dW = 2 reg W to each weight's gradient."""
    if reg:
        for p in regularized_weights(model):
            p.accumulate(2.0 * reg * p.data)
