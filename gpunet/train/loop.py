"""The training loop: ``fit`` (or ``Trainer``), ``evaluate``, ``predict``.

One epoch: a seeded shuffle into mini-batches, forward, loss, backward, optimizer step; then the
train and validation accuracy, the schedule step, the callbacks (the checkpoint is one). Training
data is moved to the device once (if it fits: ``backend.fits_on_device``). Losses stay on the
device and are read back every
``sync_every`` iterations (a host sync per step would make small GPU steps launch-bound).

Babysitting hooks (CS231n): the per-iteration loss history, train vs val accuracy per epoch (the
overfitting picture), a divergence stop that names the iteration, and callbacks that see the
trainer (model, optimizer, history) after every batch and epoch -- what monitors and
hyperparameter searches stand on.

Reproducibility: the shuffle and every random draw of epoch e come from a generator of its own,
seeded with (seed, e) (``backend.local_rng``; the caller's generator is left as it was), so a run
resumed from the checkpoint of epoch k reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import numpy

from gpunet.types import Array, PathLike

from .. import backend
from .._checks import ctrl_c_came, interrupted
from ..backend import fits_on_device, get_array_module, get_xp, to_numpy
from ..checkpoint import flatten, group, load_checkpoint, save_checkpoint
from ..datasets import minibatches
from ..kernels.shared import cpu_threads
from ..metrics import accuracy
from ..nn import loss as loss_mod
from .callbacks import Checkpoint, StopOnDivergence
from .history import History

if TYPE_CHECKING:
    from gpunet.nn.module import Module
    from gpunet.optim import Optimizer, Schedule

__all__ = ["Trainer", "fit", "evaluate", "predict"]


def _progress_enabled(progress: bool | None) -> bool | None:
    """True: a bar per epoch; None: one line per epoch (not a terminal: logs, nohup); False:
    silent."""
    if progress is None:
        return True if sys.stderr.isatty() else None
    return bool(progress)


def _largest_product(model: Module, batch_size: int) -> int:
    """Batch size x the largest weight (2+ dims): a Linear's multiply-adds per step. A Conv2d's
    product is Ho Wo times larger, and is counted by its weight alone on purpose: the digits
    convnet (conv 32, 64 at 8x8, batch 64; its largest conv product 19M multiply-adds) trained in
    3.9 s with one BLAS thread and 5.6 s with two on the 2-core development machine."""
    sizes = [p.data.size for _, p in model.named_parameters() if p.data.ndim >= 2]
    return batch_size * max(sizes, default=0)


def _check_int(value: object, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_finite(model: Module) -> None:
    """Refuse NaN/Inf weights before training (a loaded checkpoint, a bad init): the divergence
    they cause would otherwise be blamed on the learning rate."""
    for name, p in model.named_parameters():
        xp = get_array_module(p.data)
        if not bool(xp.isfinite(p.data).all()):
            raise ValueError(f"model parameter {name!r} holds NaN or Inf values before training")


def _check_finite_data(X: Array, name: str) -> None:
    xp = get_array_module(X)
    if X.dtype.kind == "f":
        bad = ~xp.isfinite(X)
        if bool(bad.any()):
            row = int(xp.argwhere(bad.reshape(len(X), -1).any(axis=1))[0, 0])
            raise ValueError(
                f"{name} holds {int(bad.sum())} NaN/Inf values (first in row {row}): clean or "
                "impute the data before training"
            )


def _as_arrays(a: object, name: str) -> Array:
    """Lists and other sequences as NumPy arrays, as NumPy and PyTorch take them."""
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return a
    try:
        return numpy.asarray(a)
    except ValueError as exc:
        raise ValueError(f"{name} must be an array or a rectangular list ({exc})") from None


def _check_data(X: Array, y: Array, name: str) -> int:
    if len(X) != len(y):
        raise ValueError(f"{name}: X has {len(X)} examples but y has {len(y)} labels")
    if len(X) == 0:
        raise ValueError(f"{name}: no examples")
    ya = to_numpy(y)
    if ya.dtype.kind not in "iu" or ya.ndim != 1:
        raise TypeError(
            f"{name}: y must be a 1-D array of integer class labels, got dtype {ya.dtype}, "
            f"shape {ya.shape}"
        )
    if ya.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {int(ya.min())}")
    _check_finite_data(X, f"{name}: X")
    return int(ya.max())


#: ``Trainer(checkpoint_interval=)``: at most one checkpoint write per this many seconds; the
#: epochs in between are kept in memory and the last one is written when ``fit`` ends. On the
#: quickstart's digits run (30 epochs of ~20 ms) a write per epoch took 80-100 ms of the 0.85 s.
CHECKPOINT_INTERVAL_S = 1.0
#: states larger than this are written every epoch instead of copied (their epochs are long)
PENDING_MAX_BYTES = 64 << 20


def _state_bytes(trainer: Trainer) -> int:
    return sum(int(p.data.nbytes) for p in trainer.model.parameters()) * 3  # + optimizer state


class Trainer:
    """Holds what a training run needs; ``fit`` runs it. See ``fit`` for the arguments."""

    def __init__(
        self,
        model: Module,
        loss: Callable,
        optimizer: Optimizer,
        lr_schedule: Schedule | None = None,
        callbacks: Sequence = (),
        checkpoint: PathLike | None = None,
        seed: int | None = None,
        progress: bool | None = None,
        reg: float = 0.0,
        sync_every: int | None = None,
        checkpoint_interval: float = CHECKPOINT_INTERVAL_S,
    ):
        self.model, self.loss, self.optimizer, self.lr_schedule = (
            model,
            loss,
            optimizer,
            lr_schedule,
        )
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        if not (isinstance(checkpoint_interval, (int, float)) and checkpoint_interval >= 0):
            raise ValueError(
                f"checkpoint_interval must be a number of seconds >= 0, got {checkpoint_interval!r}"
            )
        self.checkpoint_interval = float(checkpoint_interval)
        #: the epoch whose state the checkpoint file holds (0: none written by this trainer)
        self.saved_epoch = 0
        self._pending: tuple | None = None  # (epoch, arrays, meta) not written yet
        self._last_write = float("-inf")
        # the loop's own duties as callbacks, after the user's: stop on NaN, checkpoint each epoch
        self.callbacks = (
            list(callbacks) + [StopOnDivergence()] + ([Checkpoint()] if self.checkpoint else [])
        )
        self.seed = (
            int(seed) if seed is not None else int(numpy.random.default_rng().integers(2**63))
        )
        self.progress, self.reg = _progress_enabled(progress), float(reg)
        self.sync_every = sync_every
        self.history = History()
        #: more groups of arrays saved with every checkpoint ({"preprocess": {...}}), and meta
        self.extra_state: dict[str, dict] = {}
        self.extra_meta: dict[str, object] = {}
        self.stop_training = False
        self.failed = False
        self.epoch = 0
        # labels are validated once in fit; per-step checks would read them back from the GPU
        self._loss_kwargs = {"check": False} if isinstance(loss, loss_mod.Loss) else {}

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: PathLike | None = None) -> None:
        """Atomically write model, optimizer, schedule, history, RNG state and epoch, now."""
        to_trainers_file = path is None or os.fspath(path) == self.checkpoint
        path = self._checkpoint_path(path)
        save_checkpoint(path, *self._state())
        if to_trainers_file:
            self._written(self.epoch)

    def _written(self, epoch: int) -> None:
        """The trainer's checkpoint file now holds ``epoch``: nothing is pending."""
        self._pending, self.saved_epoch = None, epoch
        self._last_write = time.monotonic()

    def _state(self, copy: bool = False) -> tuple:
        """(arrays, meta) of a checkpoint of this moment; ``copy``: host copies that the next
        steps cannot change (the in-place updates would, through views)."""
        arrays = flatten(
            model=self.model.state_dict(),
            optim=self.optimizer.state_dict(),
            schedule=self.lr_schedule.state_dict() if self.lr_schedule else None,
            history=self.history.to_arrays(),
            **self.extra_state,
        )
        if copy:
            arrays = {
                k: a.copy() if isinstance(a, numpy.ndarray) else to_numpy(a)
                for k, a in arrays.items()
            }
        meta = {
            **self.extra_meta,
            "epoch": self.epoch,
            "seed": self.seed,
            "gpunet_version": _version(),
            "rng_state": _rng_state_to_json(backend.host_rng()),
        }
        return arrays, meta

    def checkpoint_epoch(self) -> None:
        """The end of an epoch (the Checkpoint callback): written now if it is the first of this
        ``fit`` (so that a run folder's files all belong to the run from its first good epoch)
        or ``checkpoint_interval`` seconds have passed since the last write, else kept in memory
        -- written by the next epoch that is due, or when ``fit`` ends, however it ends (Ctrl-C,
        divergence, an error: the last completed epoch is not lost; a killed process loses at
        most the interval). Large states (over PENDING_MAX_BYTES) are written every epoch: no
        copy of them is kept."""
        due = time.monotonic() - self._last_write >= self.checkpoint_interval
        if due or _state_bytes(self) > PENDING_MAX_BYTES:
            self.save()
            return
        self._pending = (self.epoch, *self._state(copy=True))

    def write_pending(self) -> None:
        """Write the checkpoint kept in memory by ``checkpoint_epoch``, if any."""
        if self._pending is None:
            return
        epoch, arrays, meta = self._pending
        save_checkpoint(self._checkpoint_path(None), arrays, meta)
        self._written(epoch)

    def checkpointed_epoch(self) -> int:
        """The epoch the checkpoint file holds, or will once ``fit`` returns (0: none)."""
        return self._pending[0] if self._pending is not None else self.saved_epoch

    def _checkpoint_path(self, path: PathLike | None) -> PathLike:
        chosen = path or self.checkpoint
        if chosen is None:
            raise ValueError("no checkpoint path: pass one, or give the Trainer checkpoint=")
        return chosen

    def restore(self, path: PathLike | None = None) -> dict:
        """Load a checkpoint written by ``save``; training continues after its epoch."""
        arrays, meta = load_checkpoint(self._checkpoint_path(path))
        self.model.load_state_dict(group(arrays, "model"))
        self.optimizer.load_state_dict(group(arrays, "optim"))
        if self.lr_schedule is not None:
            self.lr_schedule.load_state_dict(group(arrays, "schedule"))
        self.history = History.from_arrays(group(arrays, "history"))
        self.epoch, self.seed = int(meta["epoch"]), int(meta["seed"])
        backend.host_rng().bit_generator.state = json.loads(meta["rng_state"])
        # a run that EarlyStopping ended stays ended (its checkpoint holds the best epoch)
        self.stopped_early = meta.get("stopped_early")
        if self.stopped_early is not None:
            self.extra_meta["stopped_early"] = self.stopped_early
        return meta

    # -- the loop ------------------------------------------------------------------------------
    def fit(
        self,
        X_train: Array,
        y_train: Array,
        val: tuple | None = None,
        epochs: int = 10,
        batch_size: int = 64,
        resume: bool = False,
    ) -> History:
        X_train, y_train = _as_arrays(X_train, "X_train"), _as_arrays(y_train, "y_train")
        if val is not None:
            val = (_as_arrays(val[0], "val X"), _as_arrays(val[1], "val y"))
        self._max_label = _check_data(X_train, y_train, "training data")
        if val is not None:
            self._max_label = max(self._max_label, _check_data(val[0], val[1], "validation data"))
            if tuple(val[0].shape[1:]) != tuple(X_train.shape[1:]):
                raise ValueError(
                    f"validation data: X has examples of shape {tuple(val[0].shape[1:])}, the "
                    f"training data {tuple(X_train.shape[1:])}: they must match"
                )
        _check_int(epochs, "epochs", 0)
        _check_int(batch_size, "batch_size", 1)
        if resume and self.checkpoint and os.path.exists(self.checkpoint):
            self.restore()
            self.saved_epoch = self.epoch  # the file holds the epoch it restored
        _check_finite(self.model)
        self.model.trained_with = self.loss  # what evaluate() reports by default
        xp = get_xp()
        X, y = _to_device(xp, X_train), _to_device(xp, y_train)  # once, when it fits
        Xv, yv = (
            (_to_device(xp, val[0]), _to_device(xp, val[1])) if val is not None else (None, None)
        )
        sync_every = self.sync_every or (1 if xp is numpy else 50)
        self.stop_training = getattr(self, "stopped_early", None) is not None
        self.failed = False
        self._last_write = float("-inf")  # the first epoch is written at once (checkpoint_epoch)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        self.model.input_grad = False  # the data needs no gradient: one GEMM less per step
        threads = (
            backend.cpu_threads(_largest_product(self.model, batch_size))
            if xp is numpy
            else contextlib.nullcontext()
        )
        try:
            with threads:
                while self.epoch < epochs and not self.stop_training:
                    self._run_epoch(X, y, Xv, yv, epochs, batch_size, sync_every)
        except SystemError as exc:  # Ctrl-C inside a Numba kernel surfaces as a SystemError
            self.failed = True
            if interrupted(exc):
                raise KeyboardInterrupt from None
            raise
        except BaseException:  # divergence, Ctrl-C: the callbacks must not save over good state
            self.failed = True
            raise
        finally:
            self.model.input_grad = True
            self._write_pending_at_the_end()
            for cb in self.callbacks:
                cb.on_train_end(self)
        return self.history

    def _write_pending_at_the_end(self) -> None:
        """``write_pending`` when ``fit`` ends: a failed write raises after a completed run; after
        a failure (Ctrl-C, divergence) that failure goes on, and ``saved_epoch`` says what the
        file holds."""
        try:
            self.write_pending()
        except Exception:
            if not self.failed:
                raise

    def _run_epoch(
        self,
        X: Array,
        y: Array,
        Xv: Array | None,
        yv: Array | None,
        epochs: int,
        batch_size: int,
        sync_every: int,
    ) -> None:
        e = self.epoch + 1
        epoch_seed = int(
            numpy.random.SeedSequence([self.seed, e]).generate_state(1, numpy.uint64)[0] % 2**63
        )
        with backend.local_rng(epoch_seed) as rng:
            start = time.perf_counter()
            self._train_batches(
                minibatches(len(X), batch_size, shuffle=True, rng=rng, min_size=2),
                X,
                y,
                e,
                epochs,
                sync_every,
            )
            # a diverged model's overflow shows as a non-finite loss, which the divergence stop
            # reports: no warning from whichever BLAS made the product (MKL never warns, NumPy's
            # matmul does)
            with numpy.errstate(all="ignore"):
                train_acc = _accuracy(self.model, X, y, max_examples=10000)
            logs = {
                "train_acc": train_acc,
                "lr": self.optimizer.lr,
                "time": time.perf_counter() - start,
            }
        if Xv is not None:
            with numpy.errstate(all="ignore"):
                logs["val_loss"], logs["val_acc"] = evaluate(self.model, Xv, yv, loss=self.loss)
        else:
            logs["val_loss"] = logs["val_acc"] = float("nan")
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        h = self.history
        h.epoch.append(e)
        for k in ("train_acc", "val_acc", "val_loss", "lr", "time"):
            getattr(h, k).append(float(logs[k]))
        self.epoch = e
        if self.progress is not False:  # a bar on a terminal, else one line per epoch (logs)
            print(
                f"epoch {e}/{epochs}: loss {h.loss[-1]:.4f}  train acc {logs['train_acc']:.4f}  "
                f"val acc {logs['val_acc']:.4f}  lr {logs['lr']:.3g}  ({logs['time']:.1f} s)",
                file=sys.stderr,
            )
        for cb in self.callbacks:
            cb.on_epoch_end(self, e, logs)

    def _train_batches(
        self, batches: list, X: Array, y: Array, e: int, epochs: int, sync_every: int
    ) -> None:
        xp, data_xp = get_xp(), get_array_module(X)
        self.model.train()
        pending, first_iteration = [], len(self.history.loss)
        bar = _bar(len(batches), f"epoch {e}/{epochs}", bool(self.progress))
        try:
            for i, idx in enumerate(batches):
                idx = idx if data_xp is numpy else data_xp.asarray(idx)
                xb, yb = X[idx], y[idx]
                if data_xp is not xp:  # data too large for the device: batch by batch
                    xb, yb = xp.asarray(xb), xp.asarray(yb)
                with numpy.errstate(
                    all="ignore"
                ):  # overflow shows as a non-finite loss: reported below
                    loss, scores = self._step(xb, yb)
                pending.append(loss)
                if ctrl_c_came():  # one lost on the way (gpunet._checks.catch_lost_ctrl_c)
                    raise KeyboardInterrupt
                iteration = first_iteration + i + 1
                for cb in self.callbacks:
                    cb.on_batch_end(self, iteration, {"loss": loss})
                if len(pending) >= sync_every or i == len(batches) - 1:
                    self._record(pending)
                    bar.update(len(pending))
                    if self.progress:
                        bar.set_postfix(
                            loss=f"{self.history.loss[-1]:.4f}",
                            batch_acc=f"{float(accuracy(scores, yb)):.3f}",
                        )
                    pending = []
        finally:
            bar.close()

    def _step(self, xb: Array, yb: Array) -> tuple:
        scores = self.model(xb)
        if self._max_label >= scores.shape[1]:
            raise ValueError(
                f"labels go up to {self._max_label} but the model outputs {scores.shape[1]} "
                f"class scores (labels must be in [0, {scores.shape[1]}))"
            )
        loss, dscores = self.loss(scores, yb, **self._loss_kwargs)
        self.model.zero_grad()
        self.model.backward(dscores)
        if self.reg:
            loss = loss + loss_mod.l2_penalty(self.model, self.reg)
            loss_mod.l2_penalty_backward(self.model, self.reg)
        self.optimizer.step()
        return loss, scores

    def _record(self, pending: list) -> None:
        """Read back a group of losses (one sync) into the history; then the callbacks see them
        (the divergence stop raises on a non-finite one)."""
        first_iteration = len(self.history.loss) + 1
        values = [float(v) for v in pending]
        self.history.loss.extend(values)  # a NaN too: a diverged run's history shows it
        for cb in self.callbacks:
            cb.on_losses(self, first_iteration, values)


def fit(
    model: Module,
    loss: Callable,
    optimizer: Optimizer,
    X_train: Array,
    y_train: Array,
    val: tuple | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr_schedule: Schedule | None = None,
    callbacks: Sequence = (),
    checkpoint: PathLike | None = None,
    seed: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
    reg: float = 0.0,
    checkpoint_interval: float = CHECKPOINT_INTERVAL_S,
) -> History:
    """Train ``model`` and return its ``History``.

    Args:
        model: a gpunet ``Module`` producing class scores (N, C).
        loss: ``(scores, y) -> (loss, dscores)``: ``nn.SoftmaxCrossEntropy()``,
        ``nn.MulticlassSVM()``.
        optimizer: an optimizer over ``model.parameters()`` (``gpunet.optim``).
        X_train: training inputs (N, ...), NumPy or CuPy; moved to the active backend once.
        y_train: integer class labels (N,).
        val: ``(X_val, y_val)`` for the validation accuracy and loss of every epoch, or None.
        epochs: the epoch to stop after (a resumed run counts the epochs already done).
        batch_size: examples per mini-batch (a last batch of one example joins the one before).
        lr_schedule: an ``optim`` schedule, stepped once per epoch, or None.
        callbacks: ``Callback`` objects (EarlyStopping, monitors), called in order.
        checkpoint: a path holding every completed epoch, or None: written atomically at most
            once per ``checkpoint_interval`` seconds (0: after every epoch), the last completed
            epoch always written when ``fit`` ends, also by Ctrl-C or divergence.
        seed: makes the run reproducible (shuffles, dropout); None draws one.
        resume: continue from ``checkpoint`` if it exists.
        progress: a tqdm bar per epoch; None: when stderr is a terminal.
        reg: L2 strength, added as an explicit loss term on the weights.
        checkpoint_interval: seconds between checkpoint writes (above).
    """
    trainer = Trainer(
        model,
        loss,
        optimizer,
        lr_schedule,
        callbacks,
        checkpoint,
        seed,
        progress,
        reg,
        checkpoint_interval=checkpoint_interval,
    )
    return trainer.fit(X_train, y_train, val, epochs, batch_size, resume)


def _to_device(xp: ModuleType, a: Array):
    """``a`` on the active device if it fits there (the device memory policy of
    ``backend.fits_on_device``); else it stays on the host and moves batch by batch."""
    if xp is numpy or not fits_on_device(xp, a.size * a.dtype.itemsize):
        return to_numpy(a)
    return xp.asarray(a)


def _batched_scores(model: Module, X: Array, batch_size: int, what: str) -> Array:
    """The model's scores on X in eval mode, batch by batch (the model's mode is restored)."""
    if getattr(X, "ndim", 0) < 1 or len(X) == 0:
        raise ValueError(
            f"{what}: X has no rows (shape {getattr(X, 'shape', None)}): nothing to {what}"
        )
    xp = get_xp()
    was_training = model.training
    model.eval()
    try:
        with cpu_threads.product_loop(serial=True):  # a few forward passes: serial kernels
            out = [model(xp.asarray(X[i : i + batch_size])) for i in range(0, len(X), batch_size)]
    finally:
        model.train(was_training)
    return xp.concatenate(out)


def _accuracy(model: Module, X: Array, y: Array, max_examples: int | None = None) -> float:
    if max_examples is not None:
        X, y = X[:max_examples], y[:max_examples]
    return float(accuracy(_batched_scores(model, X, 1024, "evaluate"), get_xp().asarray(y)))


def evaluate(
    model: Module,
    X: Array,
    y: Array,
    loss: Callable | None = None,
    batch_size: int = 1024,
    max_examples: int | None = None,
) -> tuple:
    """``(mean loss, accuracy)`` of ``model`` in eval mode on (X, y); the model's mode is
    restored afterwards. ``loss``: the loss to report; None: the one the model was trained with
    (``model.trained_with``, set by ``fit``), else softmax cross-entropy. ``max_examples``
    evaluates on the first that many only."""
    if max_examples is not None:
        X, y = X[:max_examples], y[:max_examples]
    if len(X) != len(y):
        raise ValueError(f"evaluate: X has {len(X)} rows but y has {len(y)} labels")
    scores = _batched_scores(model, X, batch_size, "evaluate")
    y = get_xp().asarray(y)
    loss = loss or getattr(model, "trained_with", None) or loss_mod.SoftmaxCrossEntropy()
    return float(loss(scores, y)[0]), float(accuracy(scores, y))


def predict(model: Module, X: Array, batch_size: int = 1024) -> Array:
    """Predicted class of each row of X (eval mode; the model's mode is restored)."""
    return _batched_scores(model, X, batch_size, "predict").argmax(axis=1)


class ProgressBar(Protocol):
    """What the loop uses of a tqdm bar."""

    n: int

    def update(self, k: int) -> object: ...

    def set_postfix(self, **kw: object) -> None: ...

    def close(self) -> None: ...


class _NoBar:
    n = 0

    def update(self, k: int) -> None:
        self.n += k

    def set_postfix(self, **kw) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool) -> ProgressBar:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr)


def _rng_state_to_json(rng: numpy.random.Generator):
    return json.dumps(rng.bit_generator.state)


def _version():
    from .. import __version__

    return __version__
