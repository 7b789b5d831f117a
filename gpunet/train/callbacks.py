"""Callbacks of the training loop: hooks that see the trainer (model, optimizer, history) after
every batch, every read-back of losses and every epoch. EarlyStopping, the divergence stop and
checkpointing are callbacks; so are the babysitting monitors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpunet.types import Array

if TYPE_CHECKING:
    from gpunet.train.loop import Trainer

import math

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
        """A group of losses read back to the host (floats), the first at ``first_iteration``;
        called before they join ``trainer.history.loss``."""

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
        self.best, self.best_epoch, self.best_state, self.wait = None, None, None, 0

    def _better(self, v: Array):
        if self.best is None:
            return True
        return (
            v > self.best + self.min_delta if self.mode == "max" else v < self.best - self.min_delta
        )

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        v = logs.get(self.monitor)
        if v is None or math.isnan(v):
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
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class StopOnDivergence(Callback):
    """Stops the run at the first NaN or infinite loss, naming the iteration and the last good
    checkpoint (the lecture: loss exploding or NaN -> the learning rate is too high)."""

    def on_losses(self, trainer: Trainer, first_iteration: int, values: list) -> None:
        for k, v in enumerate(values):
            if not math.isfinite(v):
                where = (
                    f" (last good checkpoint: {trainer.checkpoint!r}, epoch {trainer.epoch})"
                    if trainer.checkpoint
                    else ""
                )
                raise TrainingDiverged(
                    f"loss became {v} at iteration {first_iteration + k} (epoch "
                    f"{trainer.epoch + 1}); "
                    f"training stopped. The learning rate ({trainer.optimizer.lr:g}) is "
                    f"probably too "
                    f"high: try lr / 10{where}."
                )


class Checkpoint(Callback):
    """Writes the trainer's checkpoint atomically after every epoch (``Trainer.save``)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        trainer.save()
