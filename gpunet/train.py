"""The training loop: ``fit`` (or ``Trainer``), ``evaluate``, ``predict``, ``History``, callbacks.

One epoch: a seeded shuffle into mini-batches, forward, loss, backward, optimizer step; then the
train and validation accuracy, the schedule step, callbacks, and an atomic checkpoint. Training
data is moved to the device once. Losses stay on the device and are read back every
``sync_every`` iterations (a host sync per step would make small GPU steps launch-bound).

Babysitting hooks (CS231n): the per-iteration loss history, train vs val accuracy per epoch (the
overfitting picture), a divergence stop that names the iteration, and callbacks that see the
trainer (model, optimizer, history) after every batch and epoch -- what monitors and
hyperparameter searches stand on.

Reproducibility: the shuffle and every random draw of epoch e come from a generator seeded with
(seed, e), so a run resumed from the checkpoint of epoch k reaches the same weights as an
uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy

from . import backend
from .backend import get_array_module, get_xp, to_numpy
from .checkpoint import flatten, group, load_checkpoint, save_checkpoint
from .datasets import minibatches
from .functional.loss import accuracy
from .nn import loss as loss_mod

__all__ = ["History", "Callback", "EarlyStopping", "TrainingDiverged", "Trainer", "fit", "evaluate", "predict"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    """What happened: the loss of every iteration, and per epoch the train/val accuracy and loss,
    learning rate and wall time."""
    loss: list = field(default_factory=list)
    epoch: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    time: list = field(default_factory=list)

    _EPOCH_FIELDS = ("epoch", "train_acc", "val_acc", "val_loss", "lr", "time")

    def to_arrays(self):
        return {k: numpy.asarray(getattr(self, k), dtype=numpy.float64) for k in ("loss",) + self._EPOCH_FIELDS}

    @classmethod
    def from_arrays(cls, arrays):
        h = cls()
        for k in ("loss",) + cls._EPOCH_FIELDS:
            values = [float(v) for v in numpy.asarray(arrays.get(k, []))]
            setattr(h, k, [int(v) for v in values] if k == "epoch" else values)
        return h

    def to_dict(self):
        return {k: list(getattr(self, k)) for k in ("loss",) + self._EPOCH_FIELDS}

    def save_json(self, path):
        with open(path, "w") as f:
            json.dump(self.to_dict(), f)

    def save_csv(self, path):
        """One row per epoch (the per-iteration loss is in the JSON)."""
        with open(path, "w") as f:
            f.write(",".join(self._EPOCH_FIELDS) + "\n")
            for row in zip(*(getattr(self, k) for k in self._EPOCH_FIELDS)):
                f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")

    def plot(self, path, title=None):
        """Save the loss curve and the train-vs-val accuracy curves as a PNG (headless)."""
        plot_histories({"": self}, path, title=title)


def plot_histories(histories, path, title=None):
    """Loss per iteration and train/val accuracy per epoch of one or several runs, in one figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, h) in enumerate(histories.items()):
        color = f"C{i}"
        label = f"{name} " if name else ""
        loss = numpy.asarray(h.loss, dtype=float)
        ax_loss.plot(numpy.arange(1, len(loss) + 1), loss, color=color, alpha=0.3, lw=0.8)
        if len(loss) >= 10:
            k = max(1, len(loss) // 50)
            smooth = numpy.convolve(loss, numpy.ones(k) / k, mode="valid")
            ax_loss.plot(numpy.arange(k, len(loss) + 1), smooth, color=color, label=f"{label}loss".strip())
        ax_acc.plot(h.epoch, h.train_acc, "-", color=color, label=f"{label}train")
        if any(not math.isnan(v) for v in h.val_acc):
            ax_acc.plot(h.epoch, h.val_acc, "--", color=color, label=f"{label}val")
    ax_loss.set(xlabel="iteration", ylabel="loss", title="training loss")
    finite = [v for h in histories.values() for v in h.loss if math.isfinite(v)]
    if finite and max(finite) > 20 * numpy.median(finite):
        ax_loss.set_yscale("log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="train vs val accuracy (gap = overfitting)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class Callback:
    """Hooks; set ``trainer.stop_training = True`` to stop after the current epoch."""

    def on_train_begin(self, trainer):
        pass

    def on_batch_end(self, trainer, iteration, logs):
        """``logs["loss"]`` is the step's loss as a 0-d device array (reading it syncs)."""

    def on_epoch_end(self, trainer, epoch, logs):
        """``logs``: train_acc, val_acc, val_loss, lr, time of this epoch."""

    def on_train_end(self, trainer):
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` (default val_acc, higher is better) has not improved for
    ``patience`` epochs; with ``restore_best`` the model ends with the best epoch's weights."""

    def __init__(self, monitor="val_acc", patience=5, mode="max", min_delta=0.0, restore_best=True):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.patience, self.mode, self.min_delta, self.restore_best = monitor, patience, mode, min_delta, restore_best
        self.best, self.best_epoch, self.best_state, self.wait = None, None, None, 0

    def _better(self, v):
        if self.best is None:
            return True
        return v > self.best + self.min_delta if self.mode == "max" else v < self.best - self.min_delta

    def on_epoch_end(self, trainer, epoch, logs):
        v = logs.get(self.monitor)
        if v is None or math.isnan(v):
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which this run does not report "
                             f"(pass val=(X_val, y_val) to fit for val_acc / val_loss)")
        if self._better(v):
            self.best, self.best_epoch, self.wait = v, epoch, 0
            if self.restore_best:
                self.best_state = {k: a.copy() for k, a in trainer.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True

    def on_train_end(self, trainer):
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


def _progress_enabled(progress):
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


def _check_data(X, y, name):
    if len(X) != len(y):
        raise ValueError(f"{name}: X has {len(X)} examples but y has {len(y)} labels")
    if len(X) == 0:
        raise ValueError(f"{name}: no examples")
    ya = to_numpy(y)
    if ya.dtype.kind not in "iu" or ya.ndim != 1:
        raise TypeError(f"{name}: y must be a 1-D array of integer class labels, got dtype {ya.dtype}, shape {ya.shape}")
    if ya.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {int(ya.min())}")
    return int(ya.max())


class Trainer:
    """Holds what a training run needs; ``fit`` runs it. See ``fit`` for the arguments."""

    def __init__(self, model, loss, optimizer, lr_schedule=None, callbacks=(), checkpoint=None, seed=None,
                 progress=None, reg=0.0, sync_every=None):
        self.model, self.loss, self.optimizer, self.lr_schedule = model, loss, optimizer, lr_schedule
        self.callbacks = list(callbacks)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.seed = int(seed) if seed is not None else int(numpy.random.SeedSequence().entropy % 2 ** 63)
        self.progress, self.reg = _progress_enabled(progress), float(reg)
        self.sync_every = sync_every
        self.history = History()
        #: more groups of arrays saved with every checkpoint ({"preprocess": {...}}), and meta
        self.extra_state, self.extra_meta = {}, {}
        self.stop_training = False
        self.epoch = 0
        # labels are validated once in fit; per-step checks would read them back from the GPU
        self._loss_kwargs = {"check": False} if isinstance(loss, loss_mod._Loss) else {}

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path=None):
        """Atomically write model, optimizer, schedule, history, RNG state and epoch."""
        path = path or self.checkpoint
        arrays = flatten(model=self.model.state_dict(), optim=self.optimizer.state_dict(),
                         schedule=self.lr_schedule.state_dict() if self.lr_schedule else None,
                         history=self.history.to_arrays(), **self.extra_state)
        meta = {**self.extra_meta, "epoch": self.epoch, "seed": self.seed, "gpunet_version": _version(),
                "rng_state": _rng_state_to_json(backend.host_rng())}
        save_checkpoint(path, arrays, meta)

    def restore(self, path=None):
        """Load a checkpoint written by ``save``; training continues after its epoch."""
        arrays, meta = load_checkpoint(path or self.checkpoint)
        self.model.load_state_dict(group(arrays, "model"))
        self.optimizer.load_state_dict(group(arrays, "optim"))
        if self.lr_schedule is not None:
            self.lr_schedule.load_state_dict(group(arrays, "schedule"))
        self.history = History.from_arrays(group(arrays, "history"))
        self.epoch, self.seed = int(meta["epoch"]), int(meta["seed"])
        backend.host_rng().bit_generator.state = json.loads(meta["rng_state"])
        return meta

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, X_train, y_train, val=None, epochs=10, batch_size=64, resume=False):
        self._max_label = _check_data(X_train, y_train, "training data")
        if val is not None:
            self._max_label = max(self._max_label, _check_data(val[0], val[1], "validation data"))
        if epochs < 0 or batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
        if resume and self.checkpoint and os.path.exists(self.checkpoint):
            self.restore()
        xp = get_xp()
        X, y = _to_device(xp, X_train), _to_device(xp, y_train)       # once, when it fits
        Xv, yv = (_to_device(xp, val[0]), _to_device(xp, val[1])) if val is not None else (None, None)
        sync_every = self.sync_every or (1 if xp is numpy else 50)
        self.stop_training = False
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            while self.epoch < epochs and not self.stop_training:
                self._run_epoch(X, y, Xv, yv, epochs, batch_size, sync_every)
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self)
        return self.history

    def _run_epoch(self, X, y, Xv, yv, epochs, batch_size, sync_every):
        e = self.epoch + 1
        xp, data_xp = get_xp(), get_array_module(X)
        backend.seed(int(numpy.random.SeedSequence([self.seed, e]).generate_state(1, numpy.uint64)[0] % 2 ** 63))
        batches = minibatches(len(X), batch_size, shuffle=True, rng=backend.host_rng())
        if len(batches) > 1 and len(batches[-1]) == 1:   # BatchNorm cannot train on one example
            batches[-2:] = [numpy.concatenate(batches[-2:])]
        self.model.train()
        start = time.perf_counter()
        pending, first_iteration = [], len(self.history.loss)
        bar = _bar(len(batches), f"epoch {e}/{epochs}", self.progress)
        try:
            for i, idx in enumerate(batches):
                idx = idx if data_xp is numpy else data_xp.asarray(idx)
                xb, yb = X[idx], y[idx]
                if data_xp is not xp:                # data too large for the device: batch by batch
                    xb, yb = xp.asarray(xb), xp.asarray(yb)
                with numpy.errstate(all="ignore"):   # overflow shows as a non-finite loss: reported below
                    loss, scores = self._step(xb, yb)
                pending.append(loss)
                iteration = first_iteration + i + 1
                for cb in self.callbacks:
                    cb.on_batch_end(self, iteration, {"loss": loss})
                if len(pending) >= sync_every or i == len(batches) - 1:
                    self._record(pending, e)
                    bar.update(len(pending))
                    if self.progress:
                        bar.set_postfix(loss=f"{self.history.loss[-1]:.4f}",
                                        batch_acc=f"{float(accuracy(scores, yb)):.3f}")
                    pending = []
        finally:
            bar.close()
        logs = {"train_acc": evaluate(self.model, X, y, max_examples=10000)[1],
                "lr": self.optimizer.lr, "time": time.perf_counter() - start}
        if Xv is not None:
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
        if self.progress:
            print(f"epoch {e}/{epochs}: loss {h.loss[-1]:.4f}  train acc {logs['train_acc']:.4f}  "
                  f"val acc {logs['val_acc']:.4f}  lr {logs['lr']:.3g}  ({logs['time']:.1f} s)", file=sys.stderr)
        for cb in self.callbacks:
            cb.on_epoch_end(self, e, logs)
        if self.checkpoint:
            self.save()

    def _step(self, xb, yb):
        scores = self.model.forward(xb)
        if self._max_label >= scores.shape[1]:
            raise ValueError(f"labels go up to {self._max_label} but the model outputs {scores.shape[1]} "
                             f"class scores (labels must be in [0, {scores.shape[1]}))")
        loss, dscores = self.loss(scores, yb, **self._loss_kwargs)
        self.model.zero_grad()
        self.model.backward(dscores)
        if self.reg:
            loss = loss + loss_mod.l2_penalty(self.model, self.reg)
            loss_mod.l2_penalty_backward(self.model, self.reg)
        self.optimizer.step()
        return loss, scores

    def _record(self, pending, epoch):
        """Read back a group of losses (one sync), stop on the first non-finite one."""
        first_iteration = len(self.history.loss) + 1
        values = [float(v) for v in pending]
        for k, v in enumerate(values):
            if not math.isfinite(v):
                where = f" (last good checkpoint: {self.checkpoint!r}, epoch {self.epoch})" if self.checkpoint else ""
                raise TrainingDiverged(
                    f"loss became {v} at iteration {first_iteration + k} (epoch {epoch}); training stopped. "
                    f"The learning rate ({self.optimizer.lr:g}) is probably too high: try lr / 10{where}.")
        self.history.loss.extend(values)


def fit(model, loss, optimizer, X_train, y_train, val=None, epochs=10, batch_size=64, lr_schedule=None,
        callbacks=(), checkpoint=None, seed=None, resume=False, progress=None, reg=0.0):
    """Train ``model`` and return its ``History``.

    model: a gpunet Module producing class scores (N, C); loss: ``(scores, y) -> (loss, dscores)``
    (``nn.SoftmaxCrossEntropy()``, ``nn.MulticlassSVM()``); optimizer: over ``model.parameters()``;
    X_train, y_train: arrays (NumPy or CuPy; moved to the active backend once); val: ``(X_val,
    y_val)`` or None; lr_schedule: an ``optim.Schedule`` stepped once per epoch; callbacks:
    ``Callback`` objects; checkpoint: a path written atomically after every epoch; seed: makes the
    run reproducible (shuffles, dropout); resume: continue from ``checkpoint`` if it exists;
    progress: a tqdm bar per epoch (default: when stderr is a terminal); reg: L2 strength added
    as an explicit loss term on the weights.
    """
    trainer = Trainer(model, loss, optimizer, lr_schedule, callbacks, checkpoint, seed, progress, reg)
    return trainer.fit(X_train, y_train, val, epochs, batch_size, resume)


#: training data larger than this fraction of the free GPU memory stays on the host
DEVICE_DATA_FRACTION = 0.5


def _to_device(xp, a):
    """``a`` on the active device, unless it would take more than DEVICE_DATA_FRACTION of the free
    GPU memory: then it stays on the host and moves batch by batch."""
    if xp is numpy:
        return to_numpy(a)
    nbytes = a.size * a.dtype.itemsize
    free, _ = xp.cuda.runtime.memGetInfo()
    if nbytes > DEVICE_DATA_FRACTION * free:
        return to_numpy(a)
    return xp.asarray(a)


def _batched_scores(model, X, batch_size):
    xp = get_xp()
    out = [model.forward(xp.asarray(X[i:i + batch_size])) for i in range(0, len(X), batch_size)]
    return xp.concatenate(out) if out else None


def evaluate(model, X, y, loss=None, batch_size=1024, max_examples=None):
    """``(mean loss or nan, accuracy)`` of ``model`` in eval mode on (X, y); the model's mode is
    restored afterwards. ``max_examples`` evaluates on the first that many only."""
    if max_examples is not None:
        X, y = X[:max_examples], y[:max_examples]
    was_training = model.training
    model.eval()
    try:
        scores = _batched_scores(model, X, batch_size)
    finally:
        model.train(was_training)
    y = get_xp().asarray(y)
    acc = float(accuracy(scores, y))
    value = float(loss(scores, y)[0]) if loss is not None else float("nan")
    return value, acc


def predict(model, X, batch_size=1024):
    """Predicted class of each row of X (eval mode; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return _batched_scores(model, X, batch_size).argmax(axis=1)
    finally:
        model.train(was_training)


class _NoBar:
    n = 0

    def update(self, k):
        self.n += k

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _bar(total, desc, enabled):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr)


def _rng_state_to_json(rng):
    return json.dumps(rng.bit_generator.state)


def _version():
    from . import __version__
    return __version__
