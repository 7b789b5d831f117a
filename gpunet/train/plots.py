"""Pictures of training runs: the loss per iteration (with the validation loss per epoch) and the
train vs validation accuracy per epoch -- the lecture's two curves to watch.

Drawn with Pillow (which matplotlib itself depends on) rather than matplotlib: ``gpunet train``
draws these after every run, and matplotlib's import alone (0.4 s on the 2-core development
machine) cost more than the whole training of the default job; this takes under 0.1 s. The PNG is
written atomically, after the last checkpoint: a run killed while drawing loses nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy

from gpunet.types import PathLike

if TYPE_CHECKING:  # Pillow loads with the first plot, not with gpunet
    from PIL import ImageDraw, ImageFont

__all__ = ["plot_histories"]

COLORS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
]
WIDTH, HEIGHT = 1100, 430
MARGIN = dict(left=70, right=20, top=64, bottom=52)


def _faded(color: tuple) -> tuple:
    return tuple(int(c + (255 - c) * 0.65) for c in color)


def _nice_ticks(low: float, high: float, n: int = 5) -> list:
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = (high - low) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step + 1e-9) + 1)]


class _Panel:
    """One axes: data ranges mapped to a pixel box; lines, markers, ticks, legend."""

    def __init__(
        self,
        draw: ImageDraw.ImageDraw,
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
        box: tuple,
        title: str,
        xlabel: str,
        ylabel: str,
        xs: Sequence[float] | numpy.ndarray,
        ys: Sequence[float] | numpy.ndarray,
        log_y: bool = False,
    ):
        self.draw, self.font, self.box, self.log_y = draw, font, box, log_y
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        x = numpy.asarray([v for v in xs if math.isfinite(v)] or [0, 1], dtype=float)
        y = numpy.asarray(
            [v for v in ys if math.isfinite(v) and (v > 0 or not log_y)] or [0, 1], dtype=float
        )
        y = numpy.log10(y) if log_y else y
        pad = 0.05 * (y.max() - y.min() or 1)
        self.xr = (x.min(), x.max() if x.max() > x.min() else x.min() + 1)
        self.yr = (y.min() - pad, y.max() + pad)
        self.legend: list = []

    def _px(self, x: float, y: float) -> tuple:
        (left, t, r, b), (x0, x1), (y0, y1) = self.box, self.xr, self.yr
        y = math.log10(y) if self.log_y else y
        return left + (x - x0) / (x1 - x0) * (r - left), b - (y - y0) / (y1 - y0) * (b - t)

    def line(
        self,
        xs: Sequence[float] | numpy.ndarray,
        ys: Sequence[float] | numpy.ndarray,
        color: tuple,
        label: str | None = None,
        width: int = 2,
        dashed: bool = False,
    ) -> None:
        run: list = []
        for x, y in list(zip(xs, ys)) + [(float("nan"), float("nan"))]:
            if math.isfinite(x) and math.isfinite(y) and (y > 0 or not self.log_y):
                run.append(self._px(x, y))
                continue
            if len(run) > 1 and not dashed:
                self.draw.line(run, fill=color, width=width)
            elif len(run) > 1:
                for p0, p1 in zip(run, run[1:]):
                    self._dashes(p0, p1, color, width)
            run = []
        if label:
            self.legend.append((label, color, dashed))

    def _dashes(self, p0: tuple, p1: tuple, color: tuple, width: int, dash: float = 7.0) -> None:
        length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
        for k in range(int(length // (2 * dash)) + 1):
            a, b = 2 * k * dash / max(length, 1e-9), min((2 * k + 1) * dash / max(length, 1e-9), 1)
            if a < 1:
                self.draw.line(
                    [
                        (p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1])),
                        (p0[0] + b * (p1[0] - p0[0]), p0[1] + b * (p1[1] - p0[1])),
                    ],
                    fill=color,
                    width=width,
                )

    def markers(
        self,
        xs: Sequence[float] | numpy.ndarray,
        ys: Sequence[float] | numpy.ndarray,
        color: tuple,
        label: str | None = None,
    ) -> None:
        for x, y in zip(xs, ys):
            if math.isfinite(x) and math.isfinite(y) and (y > 0 or not self.log_y):
                px, py = self._px(x, y)
                self.draw.ellipse((px - 3, py - 3, px + 3, py + 3), outline=color, width=2)
        if label:
            self.legend.append((label, color, "marker"))

    def finish(self) -> None:
        d, f = self.draw, self.font
        left, t, r, b = self.box
        for x in _nice_ticks(*self.xr):
            px, _ = self._px(x, self.yr[0] if not self.log_y else 10 ** self.yr[0])
            d.line([(px, t), (px, b)], fill=(235, 235, 235))
            d.text((px, b + 4), f"{x:g}", fill="black", font=f, anchor="ma")
        ticks = _nice_ticks(*self.yr)
        if self.log_y:  # a log axis: ticks at powers of ten (every k-th over a wide range)
            low, high = math.ceil(self.yr[0]), math.floor(self.yr[1])
            step = max(1, (high - low) // 6)
            if high - low >= 1:
                ticks = list(range(low, high + 1, step))
        for v in ticks:
            y = 10**v if self.log_y else v
            _, py = self._px(self.xr[0], y)
            d.line([(left, py), (r, py)], fill=(235, 235, 235))
            d.text((left - 6, py), f"{y:.3g}", fill="black", font=f, anchor="rm")
        d.rectangle(self.box, outline="black")
        d.text(((left + r) / 2, t - 8), self.title, fill="black", font=f, anchor="md")
        d.text(((left + r) / 2, b + 22), self.xlabel, fill="black", font=f, anchor="ma")
        d.text((left - 62, (t + b) / 2), self.ylabel, fill="black", font=f, anchor="lm")
        if self.legend:  # a short run with nothing labelled draws no empty legend
            w = 12 + max(int(d.textlength(s, font=f)) for s, _, _ in self.legend) + 30
            x0, y0 = r - w - 6, t + 6
            d.rectangle(
                (x0, y0, r - 6, y0 + 8 + 16 * len(self.legend)),
                fill="white",
                outline=(200, 200, 200),
            )
            for k, (label, color, style) in enumerate(self.legend):
                yy = y0 + 12 + 16 * k
                if style == "marker":
                    d.ellipse((x0 + 12, yy - 3, x0 + 18, yy + 3), outline=color, width=2)
                elif style:  # dashed
                    for a in (6, 17):
                        d.line([(x0 + a, yy), (x0 + a + 6, yy)], fill=color, width=2)
                else:
                    d.line([(x0 + 6, yy), (x0 + 24, yy)], fill=color, width=2)
                d.text((x0 + 30, yy), label, fill="black", font=f, anchor="lm")


def plot_histories(histories: dict, path: PathLike, title: str | None = None) -> dict:
    """Loss per iteration (faded, with a smoothed line and the validation loss per epoch as
    circles) and train (solid) / val (dashed) accuracy per epoch of one or several runs, one PNG.
    Returns what was drawn (each panel's title and legend), for tests and callers."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)  # a scalable font (Pillow >= 10.1)
    half = WIDTH // 2
    boxes = [
        (MARGIN["left"], MARGIN["top"], half - MARGIN["right"], HEIGHT - MARGIN["bottom"]),
        (half + MARGIN["left"], MARGIN["top"], WIDTH - MARGIN["right"], HEIGHT - MARGIN["bottom"]),
    ]
    losses = [v for h in histories.values() for v in list(h.loss) + list(h.val_loss)]
    finite = [v for v in losses if math.isfinite(v)]
    log_y = bool(finite) and min(finite) > 0 and max(finite) > 20 * float(numpy.median(finite))
    iters = [float(i) for h in histories.values() for i in range(1, len(h.loss) + 1)]
    loss_panel = _Panel(
        draw, font, boxes[0], "training loss", "iteration", "loss", iters, losses, log_y
    )
    epochs = [float(e) for h in histories.values() for e in h.epoch]
    accs = [v for h in histories.values() for v in list(h.train_acc) + list(h.val_acc)]
    acc_panel = _Panel(
        draw,
        font,
        boxes[1],
        "train vs val accuracy (gap = overfitting)",
        "epoch",
        "accuracy",
        epochs,
        accs,
    )
    for i, (name, h) in enumerate(histories.items()):
        color, label = COLORS[i % len(COLORS)], f"{name} " if name else ""
        loss = numpy.asarray(h.loss, dtype=float)
        steps = numpy.arange(1, len(loss) + 1, dtype=float)
        loss_panel.line(steps, loss, _faded(color), width=1)
        if len(loss) >= 10:
            k = max(1, len(loss) // 50)
            smooth = numpy.convolve(loss, numpy.ones(k) / k, mode="valid")
            loss_panel.line(steps[k - 1 :], smooth, color, f"{label}loss".strip())
        val_loss = numpy.asarray(h.val_loss, dtype=float)
        if len(h.epoch) and numpy.isfinite(val_loss).any():
            per_epoch = len(loss) / max(len(h.epoch), 1)  # at each epoch's last iteration
            loss_panel.markers(
                numpy.asarray(h.epoch, dtype=float) * per_epoch,
                val_loss,
                color,
                f"{label}val loss".strip(),
            )
        acc_panel.line([float(e) for e in h.epoch], h.train_acc, color, f"{label}train")
        if any(math.isfinite(v) for v in h.val_acc):
            acc_panel.line(
                [float(e) for e in h.epoch], h.val_acc, color, f"{label}val", dashed=True
            )
    for panel in (loss_panel, acc_panel):
        panel.finish()
    if title:
        draw.text((WIDTH / 2, 12), title, fill="black", font=font, anchor="ma")
    from ..outputs import atomic_write

    atomic_write(os.fspath(path), lambda f: img.save(f, format="PNG"), mode="wb")
    return {
        "panels": [
            {"title": p.title, "legend": [s for s, _, _ in p.legend], "log_y": p.log_y}
            for p in (loss_panel, acc_panel)
        ]
    }
