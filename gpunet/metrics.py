"""Metrics of a classifier's scores, computed on the scores' device (0-d arrays: no host sync).

Shapes: scores (N, C); y (N,) integer labels.
"""

from __future__ import annotations

from gpunet.types import Array

from .backend import get_array_module

__all__ = ["accuracy", "error_rate", "top_k_accuracy"]


def accuracy(scores: Array, y: Array) -> Array:
    """Fraction of rows whose arg-max score is the label (a 0-d array on the device)."""
    return (scores.argmax(axis=1) == y).mean()


def error_rate(scores: Array, y: Array) -> Array:
    """1 - accuracy."""
    return 1 - accuracy(scores, y)


def top_k_accuracy(scores: Array, y: Array, k: int = 5) -> Array:
    """Fraction of rows whose label is among the ``k`` highest scores (ties count as hits)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    xp = get_array_module(scores, y)
    label_score = scores[xp.arange(len(y)), y]
    higher = (scores > label_score[:, None]).sum(axis=1)
    return (higher < k).mean()
