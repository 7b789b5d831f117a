"""Softmax cross-entropy in NumPy (the NumPy path; formula: gpunet/functional/loss.py)."""

from __future__ import annotations

import numpy

from gpunet.types import Array


def softmax_xent(scores: Array, y: Array) -> tuple:
    """(mean loss, dscores) of softmax cross-entropy (gpunet/functional/loss.py), max-shifted."""
    N = scores.shape[0]
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = numpy.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    rows = numpy.arange(N)
    loss = (numpy.log(sum_exp[:, 0]) - shifted[rows, y]).mean()
    dscores = exp / sum_exp
    dscores[rows, y] -= 1
    dscores /= N
    return loss, dscores
