"""The journal of a search: one JSON line per finished trial, appended, flushed and fsynced, so a
crash loses at most the trial that was running. A half-written last line (a kill mid-write) is
skipped with a warning, never fatal; only the search process writes it (``gpunet search`` holds
its lock).

The first line is the search's identity: ``{"header": {"definition": ..., "hash": ...}}``, the
search's full definition (space, stages, the objective's fixed settings and data, metric and
mode). A rerun with another definition is refused with what differs (``JournalMismatch``)
instead of reusing another search's trials as its own."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings

from gpunet.types import PathLike

__all__ = ["Journal", "JournalWarning", "JournalMismatch", "definition_hash"]


class JournalWarning(UserWarning):
    """A line of the journal could not be read (a crash while writing it); it is ignored."""


class JournalMismatch(ValueError):
    """The journal belongs to another search; ``differences``: (key, there, here) triples."""

    def __init__(self, path: str, differences: list):
        self.path, self.differences = path, differences
        what = "; ".join(f"{k}: {a!r} there, {b!r} here" for k, a, b in differences)
        super().__init__(f"the journal {path} belongs to another search ({what})")


def definition_hash(definition: dict) -> str:
    return hashlib.sha256(json.dumps(_clean(definition), sort_keys=True).encode()).hexdigest()[:16]


def _flat(d: object, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


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

    def header(self) -> dict | None:
        """The definition the journal was started with (None: no header, or no journal)."""
        for record in self._records():
            return record.get("header") if "header" in record else None
        return None

    def claim(self, definition: dict) -> None:
        """This search's journal: write the header if the journal is new; ``JournalMismatch``
        if it holds another search (or trials with no definition)."""
        if not self.path:
            return
        mine = json.loads(json.dumps(_clean(definition), sort_keys=True))
        records = self._records()
        if not records:
            self.append({"header": {"definition": mine, "hash": definition_hash(definition)}})
            return
        header = records[0].get("header")
        if header is None:
            raise JournalMismatch(
                self.path, [("definition", "none (an older journal)", "this search")]
            )
        theirs = header.get("definition", {})
        if definition_hash(theirs) == definition_hash(mine):
            return
        a, b = _flat(theirs), _flat(mine)
        diffs = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise JournalMismatch(self.path, diffs)

    def read(self) -> list:
        """The trial records written so far, in order (the header left out); unreadable lines
        skipped with a warning."""
        return [r for r in self._records() if "header" not in r]

    def _records(self) -> list:
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
            size = f.tell()
            try:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:  # a full disk: take the partial line back, say which file
                try:
                    f.truncate(size)
                except OSError:
                    pass
                raise OSError(exc.errno, f"cannot write {self.path}: {exc.strerror}") from None
