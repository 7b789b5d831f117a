"""Hyperparameter optimization, the lecture's way: cross-validate, sample the learning rate and
the regularization on a log scale, prefer random search to grid search, run short trials first and
narrow the ranges (coarse to fine), look at the results as a picture. In process, on a process
pool, or on a Dask cluster (``pip install 'gpunet[distributed]'``); journaled and resumable.

    space = {"lr": LogUniform(1e-4, 1), "reg": LogUniform(1e-6, 1e-2),
             "hidden": Choice([[64], [128, 64]])}
    results = random_search(MLPObjective(TrainConfig(epochs=5)), space, n_trials=30, seed=0,
                            journal="runs/search/journal.jsonl")
    print(results.table()); results.plot("runs/search/search.png")
"""

from typing import Any

from .journal import JournalMismatch  # noqa: F401
from .objective import AbandonOnExplosion, MLPObjective, cross_validate  # noqa: F401
from .search import (  # noqa: F401
    Results,
    SearchStopped,
    Trial,
    TrialAbandoned,
    coarse_to_fine,
    grid_search,
    random_search,
    run_trials,
    search_definition,
)
from .space import Choice, IntUniform, LogUniform, Uniform  # noqa: F401


def __getattr__(name: str) -> Any:  # the lazily imported names
    if name in ("optuna_objective", "optuna_search", "OptunaPruning"):
        from . import optuna_bridge

        return getattr(optuna_bridge, name)
    raise AttributeError(f"module 'gpunet.tune' has no attribute {name!r}")
