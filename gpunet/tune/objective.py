"""Objectives for searches: train a ``gpunet.nn.mlp`` with given hyperparameters (the lecture's
short trials), abandon a trial whose loss explodes, and k-fold cross-validation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy

from gpunet.types import Array

from ..train.callbacks import Callback
from .search import TrialAbandoned

if TYPE_CHECKING:
    import optuna

    from ..run import TrainConfig
    from ..train.loop import Trainer

__all__ = ["AbandonOnExplosion", "MLPObjective", "cross_validate"]


class AbandonOnExplosion(Callback):
    """Stops a trial whose loss passes ``factor`` x its initial loss or goes NaN (the lecture's
    tip: such a run will not recover; do not spend the rest of its epochs on it)."""

    def __init__(self, factor: float = 3.0):
        if not factor > 1:
            raise ValueError(f"factor must be > 1, got {factor!r}")
        self.factor = factor

    def on_losses(self, trainer: Trainer, first_iteration: int, values: list) -> None:
        initial = trainer.history.loss[0]
        for k, v in enumerate(values):
            if not math.isfinite(v) or v > self.factor * initial:
                raise TrialAbandoned(
                    f"loss {v:.4g} at iteration {first_iteration + k} is past {self.factor:g}x the "
                    f"initial {initial:.4g} (or not finite): abandoned"
                )


class MLPObjective:
    """``objective(params) -> {"val_acc", "train_acc", "val_loss"}``: trains the ``base``
    configuration of ``gpunet train`` (a ``TrainConfig``: an MLP or, with ``model="convnet"``,
    a convnet; the class keeps its name, which journals record) with ``params`` set on it (``lr``,
    ``reg``, ``hidden``, ``epochs``, ... -- any of its fields) and returns validation metrics;
    never the test accuracy (a search must not see the test set). Picklable, so it runs on
    process pools and Dask workers; the backend of each trial is chosen where it runs
    (``base.backend="auto"``: the worker's GPU if it has one). ``abandon``: the factor of
    ``AbandonOnExplosion`` (None: off)."""

    def __init__(self, base: TrainConfig | None = None, abandon: float | None = 3.0):
        from ..run import TrainConfig

        self.base = base or TrainConfig(epochs=10)
        self.abandon = abandon

    #: options of the base run that do not change its result (where and how it runs)
    NOT_DEFINING = ("out", "resume", "progress", "plot", "overwrite", "backend", "kernels")

    def definition(self) -> dict:
        """The fixed settings a search's journal is tied to: the data and every option of the
        base run that decides its result, and the abandonment factor."""
        base = {
            k: v for k, v in dataclasses.asdict(self.base).items() if k not in self.NOT_DEFINING
        }
        return {"class": "gpunet.tune.MLPObjective", "base": base, "abandon": self.abandon}

    def __call__(self, params: dict, trial: optuna.trial.Trial | None = None) -> dict:
        from ..run import TrainConfig, run

        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise ValueError(
                f"unknown hyperparameters {unknown}: they must be options of "
                f"gpunet train ({sorted(fields)})"
            )
        cfg = dataclasses.replace(self.base, out=None, resume=False, progress=False, **params)
        callbacks: list[Callback] = [AbandonOnExplosion(self.abandon)] if self.abandon else []
        if trial is not None:  # an Optuna trial: report each epoch, let its pruner stop it
            from .optuna_bridge import OptunaPruning

            callbacks.append(OptunaPruning(trial))
        result = run(cfg, log=lambda message: None, callbacks=callbacks)
        h = result["history"]
        return {
            "val_acc": result["val_acc"],
            "train_acc": h.train_acc[-1],
            "val_loss": h.val_loss[-1],
        }


def cross_validate(
    train_fn: Callable, X: Array, y: Array, k: int = 5, seed: int | None = None
) -> dict:
    """k-fold cross-validation: the examples shuffled once with ``seed`` and cut into ``k``
    folds of (nearly) equal size; ``train_fn(X_train, y_train, X_val, y_val) -> metric`` runs
    once per fold with that fold held out. Returns ``{"mean", "std", "scores", "folds"}``
    (``folds``: the held-out index arrays, which partition the data)."""
    n = len(X)
    if len(y) != n:
        raise ValueError(f"X has {n} examples but y has {len(y)} labels")
    if not isinstance(k, int) or not 2 <= k <= n:
        raise ValueError(f"k must be an integer in [2, {n}] (the number of examples), got {k!r}")
    order = numpy.random.default_rng(seed).permutation(n)
    folds = numpy.array_split(order, k)
    scores = []
    for i, held in enumerate(folds):
        train = numpy.concatenate([f for j, f in enumerate(folds) if j != i])
        scores.append(float(train_fn(X[train], y[train], X[held], y[held])))
    return {
        "mean": float(numpy.mean(scores)),
        "std": float(numpy.std(scores)),
        "scores": scores,
        "folds": folds,
    }
