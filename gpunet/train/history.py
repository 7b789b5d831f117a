"""``History``: what a training run did, the raw material of babysitting (CS231n): the loss of every
iteration, and per epoch the train/val accuracy and loss, the learning rate and the wall time."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import IO

import numpy

from gpunet.types import PathLike

__all__ = ["History"]


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
    #: what the monitors record: name -> {"step": [iteration or epoch], "value": [float]}
    monitors: dict = field(default_factory=dict)

    _EPOCH_FIELDS = ("epoch", "train_acc", "val_acc", "val_loss", "lr", "time")

    def record(self, name: str, step: int, value: float) -> None:
        """Append one value of a monitored series (``"update_ratio/0.weight"``) at ``step``."""
        series = self.monitors.setdefault(name, {"step": [], "value": []})
        series["step"].append(int(step))
        series["value"].append(float(value))

    def to_arrays(self) -> dict:
        arrays = {
            k: numpy.asarray(getattr(self, k), dtype=numpy.float64)
            for k in ("loss",) + self._EPOCH_FIELDS
        }
        for name, series in self.monitors.items():
            arrays[f"monitor:{name}:step"] = numpy.asarray(series["step"], dtype=numpy.int64)
            arrays[f"monitor:{name}:value"] = numpy.asarray(series["value"], dtype=numpy.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict) -> History:
        h = cls()
        for k in ("loss",) + cls._EPOCH_FIELDS:
            values = [float(v) for v in numpy.asarray(arrays.get(k, []))]
            setattr(h, k, [int(v) for v in values] if k == "epoch" else values)
        for key in arrays:
            if key.startswith("monitor:") and key.endswith(":step"):
                name = key[len("monitor:") : -len(":step")]
                h.monitors[name] = {
                    "step": [int(v) for v in arrays[key]],
                    "value": [float(v) for v in arrays[f"monitor:{name}:value"]],
                }
        return h

    def to_dict(self) -> dict:
        d: dict[str, object] = {k: list(getattr(self, k)) for k in ("loss",) + self._EPOCH_FIELDS}
        if self.monitors:
            d["monitors"] = self.monitors
        return d

    def save_json(self, path: PathLike) -> None:
        """Written atomically (a temporary file, then a rename)."""
        from ..outputs import atomic_write

        atomic_write(os.fspath(path), lambda f: json.dump(self.to_dict(), f))

    def save_csv(self, path: PathLike) -> None:
        """One row per epoch (the per-iteration loss is in the JSON); written atomically."""
        from ..outputs import atomic_write

        def write(f: IO) -> None:
            f.write(",".join(self._EPOCH_FIELDS) + "\n")
            for row in zip(*(getattr(self, k) for k in self._EPOCH_FIELDS)):
                f.write(
                    ",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n"
                )

        atomic_write(os.fspath(path), write)

    def plot(self, path: PathLike, title: str | None = None) -> None:
        """Save the loss curve and the train-vs-val accuracy curves as a PNG (headless)."""
        from .plots import plot_histories

        plot_histories({"": self}, path, title=title)
