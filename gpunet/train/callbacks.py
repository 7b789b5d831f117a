"""Callbacks of the training loop: hooks that see the trainer (model, optimizer, history) after
every batch, every read-back of losses and every epoch. EarlyStopping, the divergence stop and
checkpointing are callbacks; so are the babysitting monitors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..backend import get_array_module

if TYPE_CHECKING:
    from .loop import Trainer

__all__ = ["Callback", "EarlyStopping", "StopOnDivergence", "Checkpoint", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Callback:
    """Hooks; set ``trainer.stop_training = True`` to stop after the current epoch."""

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_batch_end(self, trainer: Trainer, iteration: int, logs: dict) -> None:
        """``logs["loss"]`` is the step's loss as a 0-d device array (reading it syncs)."""

    def on_losses(self, trainer: Trainer, first_iteration: int, values: list) -> None:
        """A group of losses read back to the host (floats), the first at ``first_iteration``
        (already appended to ``trainer.history.loss``)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        """``logs``: train_acc, val_acc, val_loss, lr, time of this epoch."""

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` (default val_acc, higher is better) has not improved for
    ``patience`` epochs; with ``restore_best`` the model ends with the best epoch's weights."""

    def __init__(
        self,
        monitor: str = "val_acc",
        patience: int = 5,
        mode: str = "max",
        min_delta: float = 0.0,
        restore_best: bool = True,
    ):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.patience, self.mode, self.min_delta, self.restore_best = (
            monitor,
            patience,
            mode,
            min_delta,
            restore_best,
        )
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.wait = 0

    def _better(self, v: float) -> bool:
        if self.best is None:
            return True
        return (
            v > self.best + self.min_delta if self.mode == "max" else v < self.best - self.min_delta
        )

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        if self.monitor not in logs:
            raise ValueError(
                f"EarlyStopping: unknown monitor {self.monitor!r}; the epoch logs have "
                f"{sorted(logs)}"
            )
        v = logs[self.monitor]
        if math.isnan(v):
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which this run does not report "
                f"(pass val=(X_val, y_val) to fit for val_acc / val_loss)"
            )
        if self._better(v):
            self.best, self.best_epoch, self.wait = v, epoch, 0
            if self.restore_best:
                self.best_state = {k: a.copy() for k, a in trainer.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        """The best epoch's weights become the model's, and (with a checkpoint) the run folder's:
        what ``fit`` returns and what is kept are the same model. A stopped run is marked
        stopped in the checkpoint, so that resuming it does not train on. After a failure
        (divergence, Ctrl-C) nothing is written: the last good checkpoint stays as it was."""
        if trainer.failed:
            return
        stopped = trainer.stop_training and self.wait >= self.patience
        best_state = self.best_state if self.restore_best else None
        restored = best_state is not None
        if best_state is not None:
            trainer.model.load_state_dict(best_state)
            trainer.extra_meta["best_epoch"] = self.best_epoch
        if stopped:
            trainer.extra_meta["stopped_early"] = trainer.epoch
        if trainer.checkpoint and (stopped or restored):
            trainer.save()


class StopOnDivergence(Callback):
    """Stops the run at the first NaN or infinite loss, naming the iteration and the last good
    checkpoint (the lecture: loss exploding or NaN -> the learning rate is too high)."""

    def on_losses(self, trainer: Trainer, first_iteration: int, values: list) -> None:
        for k, v in enumerate(values):
            if not math.isfinite(v):
                raise TrainingDiverged(
                    f"loss became {v} at iteration {first_iteration + k} (epoch "
                    f"{trainer.epoch + 1}); training stopped. {_divergence_cause(trainer)}"
                )


def _divergence_cause(trainer: Trainer) -> str:
    """The likely cause, from what can be checked: weights gone non-finite after updates mean
    the steps were too large (the inputs and the initial weights were checked finite before
    training); and where the last good state is, if any."""
    bad = [
        name
        for name, p in trainer.model.named_parameters()
        if not bool(get_array_module(p.data).isfinite(p.data).all())
    ]
    cause = (
        f"The weights became NaN/Inf ({', '.join(bad[:3])}{'...' if len(bad) > 3 else ''}): "
        if bad
        else "The loss overflowed: "
    )
    cause += (
        f"the learning rate ({trainer.optimizer.lr:g}) is probably too high (the inputs and the "
        "initial weights were checked finite); try lr / 10."
    )
    saved = trainer.checkpointed_epoch() if trainer.checkpoint else 0
    if saved > 0:
        cause += f" The last good checkpoint, epoch {saved}, is {trainer.checkpoint!r}."
    else:
        cause += " No epoch was completed, so no checkpoint was written."
    return cause


class Checkpoint(Callback):
    """Checkpoints every epoch: written atomically at most once per ``checkpoint_interval``
    seconds, the epochs in between kept in memory until then or until ``fit`` ends
    (``Trainer.checkpoint_epoch``)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        trainer.checkpoint_epoch()
