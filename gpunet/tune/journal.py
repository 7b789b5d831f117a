"""The journal of a search: one JSON line per finished trial, appended, flushed and fsynced, so a
crash loses at most the trial that was running. A half-written last line (a kill mid-write) is
skipped with a warning, never fatal; only the search process writes it."""

from __future__ import annotations

import json
import math
import os
import warnings

from gpunet.types import PathLike

__all__ = ["Journal", "JournalWarning"]


class JournalWarning(UserWarning):
    """A line of the journal could not be read (a crash while writing it); it is ignored."""


def _clean(value: object) -> object:
    """JSON has no NaN: non-finite floats are written as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Journal:
    """Append-only JSON lines at ``path`` (None: kept in memory only)."""

    def __init__(self, path: PathLike | None):
        self.path = None if path is None else os.fspath(path)
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def read(self) -> list:
        """The records written so far, in order; unreadable lines skipped with a warning."""
        if not self.path or not os.path.exists(self.path):
            return []
        records = []
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(
                    f"{self.path}: line {n} is not a complete record (a crash while "
                    "writing it?); it is ignored",
                    JournalWarning,
                    stacklevel=2,
                )
        return records

    def append(self, record: dict) -> None:
        if not self.path:
            return
        line = json.dumps(_clean(record), sort_keys=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():  # a half-written last line stays on its own line, not glued to ours
                f.seek(f.tell() - 1)
                if f.read(1) != "\n":
                    f.write("\n")
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
