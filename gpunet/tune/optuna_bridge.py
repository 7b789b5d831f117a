"""For those who already use Optuna: the same objective and space as an Optuna study, and a
pruning callback so that Optuna's pruners stop hopeless trials. gpunet's own searches need none
of it; ``pip install 'gpunet[optuna]'``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..train.callbacks import Callback
from .search import Results, Trial
from .space import Choice, Dimension, IntUniform, LogUniform, Uniform

if TYPE_CHECKING:  # Optuna is optional
    import optuna

    from ..train.loop import Trainer

__all__ = ["optuna_objective", "OptunaPruning", "optuna_search"]


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError("the Optuna bridge needs Optuna: pip install 'gpunet[optuna]'") from None
    return optuna


class OptunaPruning(Callback):
    """Reports ``monitor`` (default val_acc) to an ``optuna.Trial`` after each epoch; raises
    ``optuna.TrialPruned`` when the study's pruner says the trial is hopeless."""

    def __init__(self, trial: optuna.trial.Trial, monitor: str = "val_acc"):
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        self.trial.report(float(logs[self.monitor]), epoch)
        if self.trial.should_prune():
            raise _optuna().TrialPruned(
                f"pruned at epoch {epoch} ({self.monitor} {logs[self.monitor]:.4f})"
            )


def _suggest(trial: optuna.trial.Trial, name: str, dim: Dimension) -> object:
    if isinstance(dim, LogUniform):
        return trial.suggest_float(name, dim.low, dim.high, log=True)
    if isinstance(dim, Uniform):
        return trial.suggest_float(name, dim.low, dim.high)
    if isinstance(dim, IntUniform):
        return trial.suggest_int(name, dim.low, dim.high)
    if isinstance(dim, Choice):
        if all(o is None or isinstance(o, (bool, int, float, str)) for o in dim.options):
            return trial.suggest_categorical(name, list(dim.options))
        # Optuna stores only plain values: suggest a label, hand the objective the option
        labels = {repr(o): o for o in dim.options}
        return labels[trial.suggest_categorical(name, list(labels))]
    return dim


def optuna_objective(objective: Callable, space: dict, metric: str = "val_acc") -> Callable:
    """``f(trial) -> float`` for ``study.optimize``: the space sampled by the trial's suggest_*
    (log scale kept), ``objective`` run (given ``trial=`` too if it takes it, for pruning), the
    metric returned and every metric stored as a user attribute."""
    takes_trial = "trial" in inspect.signature(objective).parameters

    def f(trial: optuna.trial.Trial) -> float:
        params = {k: _suggest(trial, k, dim) for k, dim in space.items()}
        result = objective(params, trial=trial) if takes_trial else objective(params)
        metrics = dict(result) if isinstance(result, dict) else {metric: result}
        for k, v in metrics.items():
            trial.set_user_attr(k, float(v))
        return float(metrics[metric])

    return f


def _storage_error(storage: str | None, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"the Optuna storage {storage!r} cannot be used: {first}"


def optuna_search(
    objective: Callable,
    space: dict,
    n_trials: int,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = None,
) -> Results:
    """An Optuna study (TPE sampler, median pruner) over ``space``, resumable through
    ``storage`` (e.g. ``sqlite:///search.db``) and ``study_name``: a rerun loads the study and
    runs only the trials missing to ``n_trials``. Returned as gpunet ``Results`` (same table and
    plots). A storage that cannot be used is a ``ValueError`` in one line."""
    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            direction="maximize" if mode == "max" else "minimize",
            storage=storage,
            study_name=study_name,
            load_if_exists=storage is not None,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(),
        )
    except (ImportError, ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(_storage_error(storage, exc)) from None
    except Exception as exc:  # SQLAlchemy's own errors (a bad URL, a locked database, ...)
        if type(exc).__module__.split(".")[0] != "sqlalchemy":
            raise
        raise ValueError(_storage_error(storage, exc)) from None
    # a resumed study runs only what is missing: n_trials in all, the finished ones counted
    finished = ("COMPLETE", "PRUNED", "FAIL")
    done = sum(t.state.name in finished for t in study.trials)
    if n_trials - done > 0:
        study.optimize(
            optuna_objective(objective, space, metric),
            n_trials=n_trials - done,
            catch=(Exception,),
        )
    status = {"COMPLETE": "ok", "PRUNED": "abandoned", "FAIL": "failed"}
    trials = []
    for t in study.trials:
        value = t.value if t.value is not None else float("nan")
        trials.append(
            Trial(
                t.number,
                dict(t.params),
                status.get(t.state.name, t.state.name.lower()),
                dict(t.user_attrs),
                value,
            )
        )
    return Results(trials, metric, mode, space=space)
