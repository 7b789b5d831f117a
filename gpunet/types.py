"""Type aliases of gpunet's signatures.

``Array`` is a NumPy or a CuPy array: gpunet's functions take either (one code path, ``xp``). CuPy
is optional, so the alias names ``cupy.ndarray`` only for the type checker (where CuPy is not
installed, mypy takes that half as ``Any``); at run time annotations are strings
(``from __future__ import annotations``) and ``Array`` is ``numpy.ndarray``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

import numpy

if TYPE_CHECKING:
    import cupy

    #: a numpy.ndarray or a cupy.ndarray
    Array = Union[numpy.ndarray, cupy.ndarray]  # noqa: UP007 (a runtime alias, Python 3.10)
else:
    Array = numpy.ndarray
#: anything numpy.dtype() takes: numpy.float32, "float64", ...
DTypeLike = Union[type, str, numpy.dtype]  # noqa: UP007
#: a path: str or os.PathLike
PathLike = Union[str, os.PathLike]  # noqa: UP007

__all__ = ["Array", "DTypeLike", "PathLike"]
