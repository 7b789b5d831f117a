"""Search spaces: a dict of names to dimensions (or fixed values).

The lecture: sample the learning rate and the regularization on a log scale
(``lr = 10 ** uniform(-6, -3)``): ``LogUniform(1e-6, 1e-3)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

import numpy

__all__ = [
    "LogUniform",
    "Uniform",
    "IntUniform",
    "Choice",
    "sample",
    "describe",
    "narrow",
    "at_edge",
]


@dataclass(frozen=True)
class Uniform:
    """A float uniform in [low, high]."""

    low: float
    high: float

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"{type(self).__name__} needs finite low < high, got {self.low}, {self.high}"
            )

    def draw(self, rng: numpy.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def position(self, v: float) -> float:
        """Where v sits in the range, 0 (low) to 1 (high), on the dimension's own scale."""
        return (v - self.low) / (self.high - self.low)

    def within(self, low: float, high: float) -> Uniform:
        return type(self)(low, high) if low < high else self


@dataclass(frozen=True)
class LogUniform(Uniform):
    """A float whose logarithm is uniform: 10 ** uniform(log10 low, log10 high)."""

    def __post_init__(self):
        super().__post_init__()
        if self.low <= 0:
            raise ValueError(f"LogUniform needs 0 < low < high, got {self.low}, {self.high}")

    def draw(self, rng: numpy.random.Generator) -> float:
        return float(10 ** rng.uniform(math.log10(self.low), math.log10(self.high)))

    def position(self, v: float) -> float:
        return (math.log10(v) - math.log10(self.low)) / (
            math.log10(self.high) - math.log10(self.low)
        )


@dataclass(frozen=True)
class IntUniform:
    """An integer uniform in [low, high] (both included)."""

    low: int
    high: int

    def __post_init__(self):
        if int(self.low) != self.low or int(self.high) != self.high or self.low > self.high:
            raise ValueError(f"IntUniform needs integers low <= high, got {self.low}, {self.high}")

    def draw(self, rng: numpy.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def position(self, v: float) -> float:
        return 0.5 if self.high == self.low else (v - self.low) / (self.high - self.low)

    def within(self, low: float, high: float) -> IntUniform:
        return IntUniform(int(math.floor(low)), int(math.ceil(high)))


@dataclass(frozen=True)
class Choice:
    """One of ``options``, each equally likely."""

    options: tuple

    def __init__(self, options: Iterable):
        options = tuple(options)
        if not options:
            raise ValueError("Choice needs at least one option")
        object.__setattr__(self, "options", options)

    def draw(self, rng: numpy.random.Generator) -> object:
        value = self.options[int(rng.integers(len(self.options)))]
        return value.item() if isinstance(value, numpy.generic) else value


DIMENSIONS = (Uniform, IntUniform, Choice)
#: a dimension of a search space (anything else in a space is a fixed value)
Dimension = Union[Uniform, IntUniform, Choice]  # noqa: UP007 (a runtime alias, Python 3.10)


def sample(space: dict, rng: numpy.random.Generator) -> dict:
    """One configuration: each dimension drawn in the order of ``space``; fixed values kept."""
    return {k: (v.draw(rng) if isinstance(v, DIMENSIONS) else v) for k, v in space.items()}


def describe(dim: object) -> str:
    if isinstance(dim, LogUniform):
        return f"log-uniform [{dim.low:g}, {dim.high:g}]"
    if isinstance(dim, Uniform):
        return f"uniform [{dim.low:g}, {dim.high:g}]"
    if isinstance(dim, IntUniform):
        return f"integer [{dim.low}, {dim.high}]"
    if isinstance(dim, Choice):
        return f"one of {list(dim.options)}"
    return f"fixed {dim!r}"


def narrow(space: dict, best: list) -> dict:
    """The space of the next coarse-to-fine stage: each numeric dimension shrunk to the range
    of the ``best`` configurations (on its own scale: a LogUniform stays log-uniform); a Choice
    keeps the options the best ones used."""
    out: dict = {}
    for k, dim in space.items():
        values = [b[k] for b in best if k in b]
        if isinstance(dim, (Uniform, IntUniform)) and values:
            out[k] = dim.within(min(values), max(values))
        elif isinstance(dim, Choice) and values:
            out[k] = Choice([o for o in dim.options if o in values])
        else:
            out[k] = dim
    return out


def at_edge(space: dict, best: dict, margin: float = 0.1) -> list:
    """Names of the numeric dimensions where ``best`` sits within ``margin`` of an end of its
    range (the lecture: the best value at the edge -> widen the range)."""
    edges = []
    for k, dim in space.items():
        if isinstance(dim, (Uniform, IntUniform)) and k in best:
            pos = dim.position(best[k])
            if pos <= margin:
                edges.append((k, "low"))
            elif pos >= 1 - margin:
                edges.append((k, "high"))
    return edges
