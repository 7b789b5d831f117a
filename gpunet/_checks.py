"""Argument checks shared by the functional core: clear errors that name the argument."""

from __future__ import annotations

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
