"""Monitors: callbacks of the training loop that watch what the lecture says to watch, record it
into the ``History`` (``history.monitors``) and say so when something is off.

* ``UpdateRatioMonitor``: ||update|| / ||weights|| per parameter tensor (around 1e-3 is healthy);
  alerts when it stays far above or below for several records in a row.
* ``GradientNormMonitor``: the norm of each parameter's gradient; alerts on NaN/Inf, vanishing.
* ``ActivationMonitor``: dead-ReLU and saturation fractions per layer on a fixed sample, each epoch.
* ``GapMonitor``: train - val accuracy per epoch: a growing gap -> overfitting (more
  regularization); no gap at a low accuracy -> too little capacity.
* ``LossMonitor``: the loss past 3x its initial value (exploding) or NaN.

Alerts are one line each, collected in ``monitor.alerts`` and printed to stderr once per kind
(``verbose=False`` keeps them quiet). Every monitor can plot its series (``plot(path)``).
``default_monitors(X_sample)`` gives all of them, as ``gpunet train --monitor`` uses.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import numpy

from gpunet.types import Array, PathLike

from ..backend import get_array_module, to_numpy
from ..train.callbacks import Callback
from ..train.history import History
from .activations import activation_stats

if TYPE_CHECKING:
    from ..train.loop import Trainer

__all__ = [
    "Monitor",
    "UpdateRatioMonitor",
    "GradientNormMonitor",
    "ActivationMonitor",
    "GapMonitor",
    "LossMonitor",
    "default_monitors",
]


class Monitor(Callback):
    """Base: ``prefix`` names the monitor's series in ``history.monitors``."""

    prefix = "monitor"

    def __init__(self, verbose: bool = True):
        self.alerts: list = []
        self.verbose = verbose
        self._said: set = set()

    def alert(self, kind: str, message: str) -> None:
        """Say it once per kind (the first time it happens), keep it in ``alerts``."""
        if kind in self._said:
            return
        self._said.add(kind)
        self.alerts.append(message)
        if self.verbose:
            print(f"monitor: {message}", file=sys.stderr)

    def series(self, trainer_or_history: Trainer | History) -> dict:
        h = (
            trainer_or_history
            if isinstance(trainer_or_history, History)
            else trainer_or_history.history
        )
        return {
            k[len(self.prefix) + 1 :]: v
            for k, v in h.monitors.items()
            if k.startswith(self.prefix + "/")
        }

    def plot(self, history: Trainer | History, path: PathLike, log: bool = True) -> None:
        """Every series of this monitor against its step, in one PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, s in self.series(history).items():
            values = numpy.asarray(s["value"], dtype=float)
            if log:
                values = numpy.where(values > 0, values, numpy.nan)
            ax.plot(s["step"], values, label=name, lw=1)
        if log:
            ax.set_yscale("log")
        ax.set(title=self.prefix.replace("_", " "), xlabel="step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        from ..outputs import save_figure

        save_figure(fig, path, dpi=100)
        plt.close(fig)


def _norm(a: Array) -> float:
    xp = get_array_module(a)
    return float(xp.sqrt((a.astype("float64") ** 2).sum()))


class UpdateRatioMonitor(Monitor):
    """||W_after - W_before|| / ||W_before|| per parameter tensor, every ``every`` iterations
    (the update of one step; the weights are copied the step before). The lecture's rule of
    thumb: about 1e-3; ``low``/``high`` bound what passes; ``patience`` records in a row outside
    raise an alert (learning rate too low or too high). The rule of thumb is about the base
    learning rate: while a schedule anneals the rate, the ratio is judged as the base rate would
    have made it (``ratio * base_lr / lr``), so that the annealing itself raises no alert. The
    rate is one number for all layers: the median ratio over the weight matrices is judged."""

    prefix = "update_ratio"

    def __init__(
        self,
        every: int = 10,
        low: float = 1e-4,
        high: float = 1e-2,
        patience: int = 3,
        verbose: bool = True,
    ):
        super().__init__(verbose)
        self.every, self.low, self.high, self.patience = every, low, high, patience
        self._before: dict | None = None
        self._streak: dict = {}

    def on_batch_end(self, trainer: Trainer, iteration: int, logs: dict) -> None:
        params = dict(trainer.model.named_parameters())
        if self._before is not None:
            judged = {}
            scale = _annealing(trainer)
            for name, p in params.items():
                w0 = self._before[name]
                ratio = _norm(p.data - w0) / max(_norm(w0), 1e-12)
                trainer.history.record(f"{self.prefix}/{name}", iteration, ratio)
                if p.data.ndim >= 2:  # the rule of thumb is for weight matrices (biases start at 0)
                    judged[name] = ratio * scale
            self._judge(judged, scale)
            self._before = None
        if (iteration + 1) % self.every == 0:  # copy now: the next step's update is measured
            self._before = {name: p.data.copy() for name, p in params.items()}

    def _judge(self, judged: dict, scale: float) -> None:
        """The learning rate is one number for every layer: it is judged on the median ratio
        over the weight matrices (one layer off the rule, e.g. a small classifier layer, says
        nothing about the rate); the alert names the layers outside the healthy range."""
        if not judged:
            return
        median = float(numpy.median(list(judged.values())))
        side = "low" if median < self.low else "high" if median > self.high else None
        streak = self._streak.get("median", (None, 0))
        self._streak["median"] = (
            side,
            streak[1] + 1 if side and side == streak[0] else int(bool(side)),
        )
        if not side or self._streak["median"][1] < self.patience:
            return
        hint = "too low: raise it" if side == "low" else "too high: lower it"
        outside = [
            n for n, r in judged.items() if (r < self.low if side == "low" else r > self.high)
        ]
        at_base = " at the base learning rate" if scale != 1 else ""
        self.alert(
            f"ratio-{side}",
            f"update/weight ratio of {', '.join(outside)} is {median:.1e} (median over "
            f"{len(judged)} weight matrices{at_base}) for {self.patience} records in a row "
            f"(healthy: ~1e-3): the learning rate looks {hint}",
        )


def _annealing(trainer: Trainer) -> float:
    """base_lr / lr while a schedule has lowered the rate (else 1): a measured update ratio
    times this is what the base rate would have made."""
    schedule = getattr(trainer, "lr_schedule", None)
    base, lr = getattr(schedule, "base_lr", None), trainer.optimizer.lr
    if base and lr and lr < base:
        return float(base) / float(lr)
    return 1.0


class GradientNormMonitor(Monitor):
    """The norm of each parameter's gradient every ``every`` iterations; alerts when one is NaN
    or Inf, or smaller than ``vanishing`` (no signal reaches that layer)."""

    prefix = "grad_norm"

    def __init__(self, every: int = 10, vanishing: float = 1e-8, verbose: bool = True):
        super().__init__(verbose)
        self.every, self.vanishing = every, vanishing

    def on_batch_end(self, trainer: Trainer, iteration: int, logs: dict) -> None:
        if iteration % self.every:
            return
        for name, p in trainer.model.named_parameters():
            if p.grad is None:
                continue
            g = _norm(p.grad)
            trainer.history.record(f"{self.prefix}/{name}", iteration, g)
            if not math.isfinite(g):
                self.alert("grad-nan", f"the gradient of {name} is {g} at iteration {iteration}")
            elif g < self.vanishing:
                self.alert(
                    "grad-vanishing",
                    f"the gradient of {name} has vanished ({g:.1e}) at "
                    f"iteration {iteration}: check the initialization / saturation",
                )


class ActivationMonitor(Monitor):
    """Each epoch, ``activation_stats`` on a fixed sample (in eval mode): the dead-ReLU fraction
    and the saturated fraction of every layer that has one; alerts above ``limit``."""

    prefix = "activations"

    def __init__(self, X_sample: Array, limit: float = 0.5, verbose: bool = True):
        super().__init__(verbose)
        self.X, self.limit = X_sample, limit

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        model = trainer.model
        was = model.training
        model.eval()
        try:
            stats = activation_stats(model, self.X)
        finally:
            model.train(was)
        for s in stats:
            for what, value in (("dead", s.dead), ("saturated", s.saturated)):
                if value is None:
                    continue
                trainer.history.record(f"{self.prefix}/{s.name}.{what}", epoch, value)
                if value > self.limit:
                    advice = (
                        "dead ReLUs: lower the learning rate, check the initialization"
                        if what == "dead"
                        else "saturated units: smaller weights (Xavier), "
                        "BatchNorm, or a non-saturating activation"
                    )
                    self.alert(
                        f"{what}-{s.name}",
                        f"{value:.0%} of layer {s.name} ({s.kind}) "
                        f"{'are' if what == 'dead' else 'is'} {what} at epoch {epoch}: {advice}",
                    )

    def plot(self, history: Trainer | History, path: PathLike, log: bool = False) -> None:
        super().plot(history, path, log=log)


class GapMonitor(Monitor):
    """train - val accuracy each epoch. A gap above ``overfit`` that grew over the last
    ``window`` epochs -> overfitting ("increase regularization"); a gap below ``none`` while the
    training accuracy is under ``low_accuracy`` -> "increase model capacity"."""

    prefix = "gap"

    def __init__(
        self,
        overfit: float = 0.1,
        none: float = 0.01,
        low_accuracy: float = 0.9,
        window: int = 3,
        verbose: bool = True,
    ):
        super().__init__(verbose)
        self.overfit, self.none, self.low_accuracy, self.window = (
            overfit,
            none,
            low_accuracy,
            window,
        )

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        if math.isnan(logs.get("val_acc", float("nan"))):
            return
        gap = logs["train_acc"] - logs["val_acc"]
        trainer.history.record(f"{self.prefix}/train-val", epoch, gap)
        gaps = self.series(trainer)["train-val"]["value"]
        if len(gaps) > self.window and gap > self.overfit and gap > gaps[-1 - self.window]:
            self.alert(
                "overfit",
                f"train/val accuracy gap {gap:.2f} and growing at epoch {epoch}: "
                "overfitting -- increase regularization (reg, weight decay, dropout)",
            )
        if (
            len(gaps) >= self.window
            and abs(gap) < self.none
            and logs["train_acc"] < self.low_accuracy
        ):
            self.alert(
                "capacity",
                f"no train/val gap ({gap:+.3f}) at train accuracy "
                f"{logs['train_acc']:.2f}: the model underfits -- increase its capacity",
            )

    def plot(self, history: Trainer | History, path: PathLike, log: bool = False) -> None:
        super().plot(history, path, log=log)


class LossMonitor(Monitor):
    """Records each read-back loss against the initial one; alerts when it passes ``explode``
    times the initial loss (the search heuristic) or goes NaN."""

    prefix = "loss"

    def __init__(self, explode: float = 3.0, verbose: bool = True):
        super().__init__(verbose)
        self.explode = explode

    def on_losses(self, trainer: Trainer, first_iteration: int, values: list) -> None:
        initial = trainer.history.loss[0] if trainer.history.loss else values[0]
        for k, v in enumerate(values):
            trainer.history.record(f"{self.prefix}/relative", first_iteration + k, v / initial)
            if not math.isfinite(v):
                self.alert("nan", f"the loss is {v} at iteration {first_iteration + k}")
            elif v > self.explode * initial:
                self.alert(
                    "explode",
                    f"the loss {v:.3g} at iteration {first_iteration + k} is "
                    f"past {self.explode:g}x the initial {initial:.3g}: exploding -- lower "
                    "the learning rate",
                )


def default_monitors(X_sample: Array | None = None, verbose: bool = True) -> list:
    """Every monitor, with the defaults (``X_sample``: a few hundred training examples for the
    activation monitor; None leaves it out)."""
    monitors = [
        UpdateRatioMonitor(verbose=verbose),
        GradientNormMonitor(verbose=verbose),
        GapMonitor(verbose=verbose),
        LossMonitor(verbose=verbose),
    ]
    if X_sample is not None:
        monitors.append(ActivationMonitor(to_numpy(X_sample), verbose=verbose))
    return monitors
