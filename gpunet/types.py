"""Type aliases of gpunet's signatures.

``Array`` is a NumPy or a CuPy array: gpunet's functions take either (one code path, ``xp``), and
CuPy is optional, so the alias cannot name ``cupy.ndarray`` without importing it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy

#: a numpy.ndarray or a cupy.ndarray
Array = Any
#: anything numpy.dtype() takes: numpy.float32, "float64", ...
DTypeLike = type | str | numpy.dtype
#: a path: str or os.PathLike
PathLike = str | os.PathLike

__all__ = ["Array", "DTypeLike", "PathLike"]
