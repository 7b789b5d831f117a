"""Argument checks shared by the functional core: clear errors that name the argument."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

import numpy

from gpunet.types import Array

from .backend import get_array_module, is_cupy_array

FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def check_array(a: Array, name: str) -> None:
    if not (isinstance(a, numpy.ndarray) or is_cupy_array(a)):
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(a).__name__}")


def check_float(a: Array, name: str) -> None:
    """``a`` must be a float32/float64 NumPy or CuPy array."""
    check_array(a, name)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")


def check_like(a: Array, name: str, ref: Array, ref_name: str) -> None:
    """``a`` must be a float array of the same shape and dtype as ``ref``."""
    check_float(a, name)
    if a.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {a.shape}, expected the shape of {ref_name} {ref.shape}"
        )
    if a.dtype != ref.dtype:
        raise TypeError(
            f"{name} has dtype {a.dtype}, expected the dtype of {ref_name} ({ref.dtype})"
        )


def float_input(x: Array, name: str):
    """``float_inputs`` for one array, without building a keyword dict: a NumPy float32/float64
    array is answered first (an activation's forward on the CPU, per call)."""
    if type(x) is numpy.ndarray and x.dtype in FLOAT_DTYPES:
        return numpy
    check_float(x, name)
    return get_array_module(x)


def float_inputs(**arrays):
    """Check every named array is float32/64 and all share one device and dtype; return xp."""
    names = list(arrays)
    for n in names:
        check_float(arrays[n], n)
    try:
        xp = get_array_module(*arrays.values())
    except TypeError as exc:
        raise TypeError(f"{', '.join(names)}: {exc}") from None
    return xp


#: whether Ctrl-C came (set by the command line's handler, ``catch_lost_ctrl_c``)
_ctrl_c = [False]


def _note_ctrl_c(signum: int, frame: object) -> None:
    _ctrl_c[0] = True
    signal.default_int_handler(signum, frame)  # type: ignore[arg-type]


@contextlib.contextmanager
def catch_lost_ctrl_c() -> Iterator[None]:
    """Remember every Ctrl-C while it lasts, for ``ctrl_c_came``: the command line runs inside
    it (never the library alone, whose SIGINT belongs to its program). A KeyboardInterrupt
    raised while llvmlite calls back into Python from C (its object cache, as Numba compiles a
    kernel: a first run's cold start) is printed as "Exception ignored" and lost -- a Ctrl-C in
    the first seconds of a `gpunet train` then let the run go on to its end."""
    import threading

    mine = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    _ctrl_c[0] = False
    hook = sys.unraisablehook

    def quiet_ctrl_c(unraisable: Any) -> None:  # the lost one: noted, not printed as a traceback
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _ctrl_c[0] = True
        else:
            hook(unraisable)

    if mine:
        signal.signal(signal.SIGINT, _note_ctrl_c)
        sys.unraisablehook = quiet_ctrl_c
    try:
        yield
    finally:
        if mine:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.unraisablehook = hook
        _ctrl_c[0] = False


def ctrl_c_came() -> bool:
    """Whether a Ctrl-C came since ``catch_lost_ctrl_c`` (loops check it between batches, so
    that one lost on the way is still obeyed)."""
    return _ctrl_c[0]


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C: a KeyboardInterrupt, or the SystemError CPython raises when a
    signal arrives inside a compiled (Numba) function ("returned a result with an exception
    set"), whose cause or context is the KeyboardInterrupt."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return True
        if not isinstance(exc, SystemError):
            return False
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False
