"""Checkpoints: one ``.npz`` of plain arrays, written atomically, read without unpickling.

* Write: temp file in the same folder, flush, fsync, ``os.replace`` over the old file, fsync the
  folder -- a crash at any point leaves either the old checkpoint or the new one, never half.
* Read: ``numpy.load(allow_pickle=False)`` (no code runs, object arrays are refused), then a
  SHA-256 over every array's name, dtype, shape and bytes must match the digest stored at write
  time, so a truncated, corrupted or edited file is an error, not silently wrong weights.

Layout: arrays by group (``model/0.weight``, ``optim/t``, ...), ``__meta__`` (JSON text) and
``__sha256__``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
import zipfile

import numpy

from gpunet.types import PathLike

from .backend import to_numpy

META_KEY, DIGEST_KEY = "__meta__", "__sha256__"
FORMAT = "gpunet-checkpoint-1"


class CheckpointError(ValueError):
    """The checkpoint is missing, truncated, corrupt, tampered with, or not a gpunet checkpoint."""


def _digest(arrays: dict):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = numpy.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path: PathLike, arrays: dict, meta: dict) -> None:
    """Atomically write ``arrays`` (name -> array, any device) and ``meta`` (JSON-able) to
    ``path``."""
    path = os.fspath(path)
    host = {}
    for name, a in arrays.items():
        if name in (META_KEY, DIGEST_KEY):
            raise ValueError(f"{name!r} is a reserved checkpoint key")
        arr = numpy.asarray(to_numpy(a))
        if arr.dtype.kind == "O":
            raise TypeError(
                f"checkpoint entry {name!r} is an object array; only plain arrays are saved"
            )
        host[name] = arr
    host[META_KEY] = numpy.asarray(json.dumps({"format": FORMAT, **meta}))
    host[DIGEST_KEY] = numpy.asarray(_digest(host))
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path!r} is a directory; give a file name (.npz)")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = f".{os.path.basename(path)}."
    for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*.tmp")):
        try:  # left by a save that was killed midway: never a checkpoint, only disk space
            os.unlink(stale)
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            # (the stub types ** as savez's own allow_pickle; our keys are dotted names)
            numpy.savez(f, **host)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk, a read-only folder: say which file
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def load_checkpoint(path: PathLike) -> tuple:
    """Returns ``(arrays, meta)``; raises ``CheckpointError`` with the reason on any problem."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path!r} is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise CheckpointError(
            f"{path!r} is a single .npy array, not a gpunet checkpoint (.npz archive); "
            "pickled objects are refused, never loaded"
        )
    if head[:4] != b"PK\x03\x04":  # every .npz is a zip archive
        raise CheckpointError(
            f"{path!r} is not a readable gpunet checkpoint: not an .npz (zip) archive"
        )
    try:
        with open(path, "rb") as f:
            z = numpy.load(f, allow_pickle=False)
            if not isinstance(z, numpy.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with z:
                arrays = {k: z[k] for k in z.files}
    except (
        zipfile.BadZipFile,
        ValueError,
        OSError,
        EOFError,
        KeyError,
        zipfile.LargeZipFile,
    ) as exc:
        raise CheckpointError(
            f"{path!r} is not a readable gpunet checkpoint ({type(exc).__name__}: {exc}); "
            "it may be truncated, corrupt, or contain pickled objects (refused)"
        ) from None
    if META_KEY not in arrays or DIGEST_KEY not in arrays:
        raise CheckpointError(
            f"{path!r} is an .npz file but not a gpunet checkpoint (no {META_KEY}/{DIGEST_KEY})"
        )
    stored = str(arrays.pop(DIGEST_KEY))
    if _digest(arrays) != stored:
        raise CheckpointError(
            f"{path!r} failed its integrity check (SHA-256 mismatch): it was modified or "
            "corrupted after gpunet wrote it"
        )
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path!r}: metadata is not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path!r}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}"
        )
    return arrays, meta


def group(arrays: dict, prefix: str) -> dict:
    """The entries of one group (``"model"`` -> {"0.weight": ...}), prefix removed."""
    p = prefix + "/"
    return {k[len(p) :]: v for k, v in arrays.items() if k.startswith(p)}


def flatten(**groups) -> dict:
    """{"model": {...}, "optim": {...}} -> {"model/...": ..., "optim/...": ...}."""
    return {f"{g}/{k}": v for g, d in groups.items() if d for k, v in d.items()}
