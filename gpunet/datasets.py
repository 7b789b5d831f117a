"""Data sets: the lecture's spiral toy data, the bundled handwritten digits, and loaders for
CIFAR-10 and MNIST files a user already has on disk; plus seeded mini-batching."""
from __future__ import annotations

import numpy

from .backend import host_rng


def make_spiral(n_per_class=100, n_classes=3, noise=0.2, seed=None):
    """CS231n's spiral: ``n_classes`` interleaved arms of ``n_per_class`` 2-D points each.

    Arm k: r = t, theta = 4 (k + t) + noise * N(0, 1), t in [0, 1]; (x, y) = r (sin theta, cos theta).
    Returns X (n_per_class * n_classes, 2) float32 and y (same length,) int64. Not linearly separable.
    """
    if n_per_class < 1 or n_classes < 2:
        raise ValueError(f"need n_per_class >= 1 and n_classes >= 2, got {n_per_class}, {n_classes}")
    rng = host_rng() if seed is None else numpy.random.default_rng(seed)
    X = numpy.zeros((n_per_class * n_classes, 2))
    y = numpy.zeros(n_per_class * n_classes, dtype=numpy.int64)
    for k in range(n_classes):
        ix = slice(n_per_class * k, n_per_class * (k + 1))
        r = numpy.linspace(0.0, 1, n_per_class)
        t = numpy.linspace(k * 4, (k + 1) * 4, n_per_class) + rng.normal(size=n_per_class) * noise
        X[ix] = numpy.c_[r * numpy.sin(t), r * numpy.cos(t)]
        y[ix] = k
    return X.astype(numpy.float32), y
