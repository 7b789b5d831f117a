"""Random, grid and coarse-to-fine search, run in process, on a local process pool, or on a Dask
cluster; every finished trial in a journal; resumable.

The lecture's method: tune on a validation set (never the test set), sample learning rate and
regularization on a log scale, prefer random search to grid search (Bergstra & Bengio 2012: when
few hyperparameters matter, random search tries more distinct values of each), run short trials
first and narrow the ranges (coarse to fine), widen a range whose best value sits at its edge,
and abandon a trial whose loss explodes.

``objective(params) -> float or dict of metrics``; the search maximizes ``metric`` (or minimizes
with ``mode="min"``). An objective may raise ``TrialAbandoned`` (recorded as abandoned); any
other exception, or a NaN metric, records the trial as failed and the search goes on, until
``max_failures`` failures stop it.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy

from gpunet.types import PathLike

from .._checks import interrupted
from ..train.loop import ProgressBar
from .journal import Journal, JournalMismatch
from .space import at_edge, describe, narrow, sample

__all__ = [
    "Trial",
    "Results",
    "TrialAbandoned",
    "SearchStopped",
    "random_search",
    "grid_search",
    "coarse_to_fine",
    "run_trials",
    "JournalMismatch",
    "search_definition",
]

FINISHED = ("ok", "failed", "abandoned")


class TrialAbandoned(Exception):
    """Raised by an objective that gives a trial up early (its loss exploded)."""


class SearchStopped(RuntimeError):
    """More trials failed than ``max_failures`` allows; ``results`` holds what finished."""

    def __init__(self, message: str, results: Results):
        super().__init__(message)
        self.results = results


@dataclass
class Trial:
    """One configuration and what became of it."""

    id: int
    params: dict
    status: str = "pending"  # ok | failed | abandoned | interrupted
    metrics: dict = field(default_factory=dict)
    value: float = float("nan")
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    stage: int = 0
    attempts: int = 1

    def record(self) -> dict:
        return {
            "id": self.id,
            "params": self.params,
            "status": self.status,
            "metrics": self.metrics,
            "value": self.value,
            "error": self.error,
            "traceback": self.traceback,
            "seconds": self.seconds,
            "stage": self.stage,
            "attempts": self.attempts,
        }

    @classmethod
    def from_record(cls, r: dict) -> Trial:
        value = r.get("value")
        value = float(value) if value is not None else float("nan")
        return cls(
            r["id"],
            r["params"],
            r["status"],
            r.get("metrics", {}),
            value,
            r.get("error"),
            r.get("traceback"),
            r.get("seconds", 0.0),
            r.get("stage", 0),
            r.get("attempts", 1),
        )


@dataclass
class Results:
    """The trials of a search, with the best one, a table and the lecture's scatter plot."""

    trials: list
    metric: str = "val_acc"
    mode: str = "max"
    notes: list = field(default_factory=list)
    space: dict = field(default_factory=dict)

    def finished(self) -> list:
        return [t for t in self.trials if t.status == "ok" and math.isfinite(t.value)]

    def sorted(self) -> list:
        sign = -1 if self.mode == "max" else 1
        return sorted(self.finished(), key=lambda t: sign * t.value)

    @property
    def best(self) -> Trial | None:
        ranked = self.sorted()
        return ranked[0] if ranked else None

    def table(self, limit: int | None = None) -> str:
        """Trials sorted by the metric (best first), then the ones that did not finish."""
        keys = sorted({k for t in self.trials for k in t.params})
        header = ["#", "stage", self.metric, "status", *keys, "seconds"]
        rows = []
        others = [t for t in self.trials if t not in self.finished()]
        for t in (self.sorted() + others)[:limit]:
            rows.append(
                [
                    str(t.id),
                    str(t.stage),
                    f"{t.value:.4f}" if math.isfinite(t.value) else "-",
                    t.status,
                    *[_fmt(t.params.get(k)) for k in keys],
                    f"{t.seconds:.1f}",
                ]
            )
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + rows]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def plot(self, path: PathLike, x: str | None = None, y: str | None = None) -> None:
        """The lecture's picture: the metric over two hyperparameters (default lr and reg if
        searched, else the first two numeric ones), log axes for log-scale ones, colour = metric;
        one panel per coarse-to-fine stage."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .space import LogUniform

        ok = self.finished()
        numeric = [
            k
            for k in sorted({k for t in ok for k in t.params})
            if all(isinstance(t.params.get(k), (int, float)) for t in ok)
            and len({t.params.get(k) for t in ok}) > 1
        ]
        x = x or ("lr" if "lr" in numeric else (numeric[0] if numeric else None))
        y = y or (
            "reg" if "reg" in numeric and x != "reg" else next((k for k in numeric if k != x), None)
        )
        stages = sorted({t.stage for t in ok}) or [0]
        fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4.2), squeeze=False)
        values = [t.value for t in ok]
        vmin, vmax = (min(values), max(values)) if values else (0, 1)
        for ax, stage in zip(axes[0], stages):
            ts = [t for t in ok if t.stage == stage]
            if x is None:
                ax.text(0.5, 0.5, "no numeric hyperparameter to plot", ha="center")
                continue
            xs = [t.params[x] for t in ts]
            ys = [t.params[y] for t in ts] if y else [t.value for t in ts]
            sc = ax.scatter(
                xs,
                ys,
                c=[t.value for t in ts],
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                s=40,
                edgecolors="k",
                linewidths=0.3,
            )
            if self.best is not None and self.best.stage == stage:
                ax.scatter(
                    [self.best.params[x]],
                    [self.best.params[y] if y else self.best.value],
                    marker="*",
                    s=250,
                    c="red",
                    label="best",
                )
                ax.legend(loc="best", fontsize=8)
            if isinstance(self.space.get(x), LogUniform) or (
                xs and min(xs) > 0 and max(xs) / min(xs) > 100
            ):
                ax.set_xscale("log")
            if y and (
                isinstance(self.space.get(y), LogUniform)
                or (ys and min(ys) > 0 and max(ys) / min(ys) > 100)
            ):
                ax.set_yscale("log")
            ax.set(
                xlabel=x,
                ylabel=y or self.metric,
                title=f"stage {stage}" if len(stages) > 1 else f"{self.metric} of each trial",
            )
            fig.colorbar(sc, ax=ax, label=self.metric)
        fig.tight_layout()
        from ..outputs import save_figure

        save_figure(fig, path, dpi=100)
        plt.close(fig)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ----------------------------------------------------------------------------- running trials
def _call(objective: Callable, params: dict, metric: str) -> dict:
    """Run one trial (in this process or a worker); never raises for the objective's errors."""
    start = time.perf_counter()
    out: dict[str, Any] = {
        "status": "ok",
        "metrics": {},
        "value": float("nan"),
        "error": None,
        "traceback": None,
    }
    try:
        result = objective(dict(params))
        metrics = dict(result) if isinstance(result, dict) else {metric: result}
        if metric not in metrics:
            raise KeyError(f"the objective returned {sorted(metrics)}, not the metric {metric!r}")
        out["metrics"] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        out["value"] = float(metrics[metric])
        if not math.isfinite(out["value"]):
            out.update(status="failed", error=f"the metric {metric} is {out['value']}")
    except TrialAbandoned as exc:
        out.update(status="abandoned", error=str(exc))
    except Exception as exc:  # the trial failed; the search goes on
        if interrupted(exc):  # Ctrl-C inside a Numba kernel: the search stops, not the trial
            raise KeyboardInterrupt from None
        out.update(
            status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
    out["seconds"] = time.perf_counter() - start
    return out


def _executor(executor: object) -> tuple[str, Any]:
    """(kind, object): "inline", ("processes", pool) or ("dask", client)."""
    if executor is None:
        return "inline", None
    if executor == "processes" or isinstance(executor, int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        n = os.cpu_count() if executor == "processes" else int(executor)
        # spawn: a fresh interpreter per worker (no forked Numba/BLAS thread state)
        return "processes", ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
    if isinstance(executor, str):
        try:
            from dask.distributed import Client
        except ImportError:
            raise ImportError(
                "a Dask scheduler address needs dask.distributed: pip install 'gpunet[distributed]'"
            ) from None
        return "dask", Client(executor)
    if type(executor).__module__.startswith("distributed"):
        return "dask", executor
    raise TypeError(
        f"executor must be None, 'processes', a number of processes, a "
        f"dask.distributed.Client or its address; got {executor!r}"
    )


def run_trials(
    objective: Callable,
    configs: list,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    executor: object = None,
    journal: PathLike | None = None,
    resume: bool = True,
    max_failures: int | None = None,
    stage: int = 0,
    first_id: int | None = None,
    retries: int = 2,
    gpu_per_trial: bool = False,
    progress: bool | None = None,
    space: dict | None = None,
    definition: dict | None = None,
) -> Results:
    """Run ``objective`` on each configuration; the engine of every search. Trials already
    finished in ``journal`` (same stage and configuration) are not run again; the ones a crash
    or Ctrl-C interrupted are. ``retries``: how many times a trial whose worker died (a process
    pool's or Dask's) is run again before it is recorded as failed. ``definition``: the
    search's identity (``search_definition``) kept in the journal's header; a journal of
    another search raises ``JournalMismatch``."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if max_failures is not None and max_failures < 0:
        raise ValueError(f"max_failures must be >= 0 or None, got {max_failures}")
    log = Journal(journal)
    log.claim(definition or search_definition(objective, "trials", {}, metric, mode))
    previous = [Trial.from_record(r) for r in log.read()] if resume else []
    done = {(t.stage, _key(t.params)): t for t in previous if t.status in FINISHED}
    ids = itertools.count(max(first_id or 0, max((t.id for t in previous), default=-1) + 1))
    trials, todo = [], []
    for params in configs:
        old = done.get((stage, _key(params)))
        if old is not None:
            trials.append(old)
        else:
            t = Trial(next(ids), params, stage=stage)
            trials.append(t)
            todo.append(t)
    results = Results(trials, metric, mode, space=space or {})
    if not todo:
        return results
    kind, runner = _executor(executor)
    if kind == "processes":
        runner = [runner]  # more pools join it when a worker dies
    failures = sum(t.status == "failed" for t in trials if t not in todo)
    bar = _bar(len(todo), progress)
    try:
        for t, out in _dispatch(kind, runner, objective, todo, metric, retries, gpu_per_trial):
            t.status, t.metrics, t.value = out["status"], out["metrics"], out["value"]
            t.error, t.traceback, t.seconds = out["error"], out["traceback"], out["seconds"]
            t.attempts = out.get("attempts", 1)
            log.append(t.record())
            bar.update(1)
            if t.status == "failed":
                failures += 1
                if max_failures is not None and failures > max_failures:
                    raise SearchStopped(
                        f"{failures} trials failed (max_failures={max_failures}); "
                        f"the last: {t.error}",
                        results,
                    )
    except KeyboardInterrupt:
        for t in todo:
            if t.status == "pending":
                t.status = "interrupted"
                log.append(t.record())
        raise
    finally:
        bar.close()
        if kind == "processes":
            for pool in runner:
                pool.shutdown(wait=False, cancel_futures=True)
    return results


def search_definition(
    objective: Callable, kind: str, space: dict, metric: str, mode: str, **more: object
) -> dict:
    """What makes a search this search (the journal's identity): the objective's fixed
    settings (``objective.definition()`` where it has one, e.g. ``MLPObjective``: the data and
    every option of the run; else its qualified name), the space (or grid), the kind and its
    settings (stages), the metric and mode. Not in it: how many trials (a rerun with more
    extends the search), the seed, where trials run."""
    ident = getattr(objective, "definition", None)
    obj = (
        ident()
        if callable(ident)
        else ".".join(
            (
                getattr(objective, "__module__", "?"),
                getattr(objective, "__qualname__", type(objective).__qualname__),
            )
        )
    )
    if isinstance(obj, dict) and isinstance(obj.get("base"), dict):
        # a searched option's base value is never used; coarse-to-fine stages set the epochs
        searched = set(space) | ({"epochs"} if "stages" in more else set())
        obj = {**obj, "base": {k: v for k, v in obj["base"].items() if k not in searched}}
    dims = {k: describe(v) for k, v in space.items()}
    return {"kind": kind, "objective": obj, "space": dims, "metric": metric, "mode": mode, **more}


def _key(params: dict) -> str:
    import json

    return json.dumps(params, sort_keys=True, default=str)


def _dispatch(
    kind: str,
    runner: Any,  # a concurrent.futures pool or a dask.distributed Client
    objective: Callable,
    todo: list,
    metric: str,
    retries: int,
    gpu_per_trial: bool,
):
    """Yield (trial, outcome) as trials finish."""
    if kind == "inline":
        for t in todo:
            yield t, _call(objective, t.params, metric)
        return
    if kind == "processes":
        yield from _pool_dispatch(runner, objective, todo, metric, retries)
        return
    from dask.distributed import as_completed as dask_as_completed

    resources = {"GPU": 1} if gpu_per_trial else None
    futures = {
        runner.submit(
            _call,
            objective,
            t.params,
            metric,
            pure=False,
            retries=retries,
            resources=resources,
            key=f"gpunet-trial-{t.id}-{os.getpid()}",
        ): t
        for t in todo
    }
    for f in dask_as_completed(futures):
        t = futures[f]
        try:
            out = f.result()
        except Exception as exc:  # the worker died more often than retries allow (KilledWorker)
            out = {
                "status": "failed",
                "metrics": {},
                "value": float("nan"),
                "error": f"{type(exc).__name__}: {exc} (its worker died; retried {retries} times)",
                "traceback": None,
                "seconds": 0.0,
            }
            out["attempts"] = retries + 1
        yield t, out


def _died(retries: int, attempts: int) -> dict:
    return {
        "status": "failed",
        "metrics": {},
        "value": float("nan"),
        "error": f"its worker process died {attempts} times (run alone, retried {retries} times)",
        "traceback": None,
        "seconds": 0.0,
        "attempts": attempts,
    }


def _pool_dispatch(pools: list, objective: Callable, todo: list, metric: str, retries: int):
    """A process pool's trials; when a worker dies (a crash, the OOM killer), the pool breaks and
    every trial in flight fails with BrokenProcessPool. Those are run again one at a time in a
    fresh one-worker pool, where a death is the trial's own: after ``retries`` reruns it is
    recorded as failed, and the search goes on. ``pools``: [the pool], new ones appended (the
    caller shuts them down)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    broken = []
    futures = {pools[-1].submit(_call, objective, t.params, metric): t for t in todo}
    for f in as_completed(futures):
        try:
            yield futures[f], f.result()
        except BrokenProcessPool:
            broken.append(futures[f])
    for t in broken:  # alone, so that a death is this trial's
        for attempt in range(1, retries + 2):
            pools.append(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
            try:
                out = pools[-1].submit(_call, objective, t.params, metric).result()
            except BrokenProcessPool:
                if attempt == retries + 1:
                    yield t, _died(retries, attempt)
                continue
            out["attempts"] = attempt + 1
            yield t, out
            break


class _NoBar:
    n = 0

    def update(self, k: int) -> None:
        self.n += k

    def set_postfix(self, **kw: object) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, progress: bool | None) -> ProgressBar:
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="trials", file=sys.stderr)


# ----------------------------------------------------------------------------- the searches
def random_search(
    objective: Callable,
    space: dict,
    n_trials: int,
    *,
    seed: int | None = None,
    metric: str = "val_acc",
    mode: str = "max",
    executor: object = None,
    journal: PathLike | None = None,
    resume: bool = True,
    max_failures: int | None = None,
    **kwargs,
) -> Results:
    """``n_trials`` configurations drawn from ``space`` with ``seed`` (the same list whatever
    the executor), each run once. Returns ``Results``."""
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    rng = numpy.random.default_rng(seed)
    configs = [sample(space, rng) for _ in range(n_trials)]
    kwargs.setdefault("definition", search_definition(objective, "random", space, metric, mode))
    results = run_trials(
        objective,
        configs,
        metric=metric,
        mode=mode,
        executor=executor,
        journal=journal,
        resume=resume,
        max_failures=max_failures,
        space=space,
        **kwargs,
    )
    _edge_notes(results, space)
    return results


def grid_search(
    objective: Callable,
    grid: dict,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    executor: object = None,
    journal: PathLike | None = None,
    resume: bool = True,
    max_failures: int | None = None,
    **kwargs,
) -> Results:
    """Every combination of the listed values (``{"lr": [1e-3, 1e-2], "reg": [0, 1e-4]}``); a
    value that is not a list is fixed."""
    keys = list(grid)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in grid.values()]
    configs = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    kwargs.setdefault(
        "definition", search_definition(objective, "grid", dict(zip(keys, values)), metric, mode)
    )
    return run_trials(
        objective,
        configs,
        metric=metric,
        mode=mode,
        executor=executor,
        journal=journal,
        resume=resume,
        max_failures=max_failures,
        **kwargs,
    )


def coarse_to_fine(
    objective: Callable,
    space: dict,
    stages: Sequence,
    *,
    keep_top: int | float = 0.2,
    seed: int | None = None,
    metric: str = "val_acc",
    mode: str = "max",
    executor: object = None,
    journal: PathLike | None = None,
    resume: bool = True,
    max_failures: int | None = None,
    **kwargs,
) -> Results:
    """Stages of ``(n_trials, epochs)``: each stage samples its space (the objective gets
    ``params["epochs"]``), then every numeric dimension is narrowed to the range of the best
    ``keep_top`` trials (a count, or a fraction) -- on a log scale where the dimension is
    log-scaled -- for the next. Notes say when a stage's best value sits at the edge of its
    range ("widen the range"). Returns the ``Results`` of all stages (``trial.stage``)."""
    if not stages:
        raise ValueError("stages must list (n_trials, epochs) pairs")
    rng = numpy.random.default_rng(seed)
    kwargs.setdefault(
        "definition",
        search_definition(
            objective,
            "coarse_to_fine",
            space,
            metric,
            mode,
            stages=[[int(n), int(e)] for n, e in stages],
            keep_top=keep_top,
        ),
    )
    all_trials: list[Trial] = []
    notes: list[str] = []
    current = dict(space)
    for stage, (n, epochs) in enumerate(stages):
        configs = [{**sample(current, rng), "epochs": int(epochs)} for _ in range(int(n))]
        res = run_trials(
            objective,
            configs,
            metric=metric,
            mode=mode,
            executor=executor,
            journal=journal,
            resume=resume,
            max_failures=max_failures,
            stage=stage,
            space=current,
            first_id=max((t.id for t in all_trials), default=-1) + 1,
            **kwargs,
        )
        all_trials += res.trials
        ranked = res.sorted()
        if not ranked:
            notes.append(f"stage {stage}: no trial finished; the search stops here")
            break
        for name, side in at_edge(current, ranked[0].params):
            notes.append(
                f"stage {stage}: the best {name} ({ranked[0].params[name]:.3g}) sits at "
                f"the {side} edge of {describe(current[name])}: widen the range"
            )
        k = keep_top if isinstance(keep_top, int) else max(2, int(round(keep_top * len(ranked))))
        current = narrow(current, [t.params for t in ranked[:k]])
    out = Results(all_trials, metric, mode, notes, space)
    return out


def _edge_notes(results: Results, space: dict) -> None:
    best = results.best
    if best is None:
        return
    for name, side in at_edge(space, best.params):
        results.notes.append(
            f"the best {name} ({best.params[name]:.3g}) sits at the {side} edge "
            f"of {describe(space[name])}: widen the range"
        )
