"""Pictures of training runs (matplotlib, headless Agg): the loss per iteration and the train vs
validation accuracy per epoch -- the lecture's two curves to watch."""

from __future__ import annotations

import math

import numpy

from gpunet.types import PathLike

__all__ = ["plot_histories"]


def plot_histories(histories: dict, path: PathLike, title: str | None = None) -> None:
    """Loss per iteration (and the validation loss per epoch) and train/val accuracy per epoch of
    one or several runs, in one figure."""
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
            ax_loss.plot(
                numpy.arange(k, len(loss) + 1), smooth, color=color, label=f"{label}loss".strip()
            )
        val_loss = numpy.asarray(h.val_loss, dtype=float)
        if len(h.epoch) and numpy.isfinite(val_loss).any():
            # the validation loss of each epoch, placed at the epoch's last iteration
            per_epoch = len(loss) / max(len(h.epoch), 1)
            ax_loss.plot(
                numpy.asarray(h.epoch, dtype=float) * per_epoch,
                val_loss,
                "o--",
                color=color,
                ms=3,
                label=f"{label}val loss".strip(),
            )
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
        if ax.get_legend_handles_labels()[0]:  # a short run draws no empty legend
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
