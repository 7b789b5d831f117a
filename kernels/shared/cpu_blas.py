"""gpunet's CPU matrix products: NumPy's BLAS, or Intel MKL's when it is installed.

Every matrix product gpunet makes on NumPy arrays (Linear, Conv2d, the bias gradients) goes
through ``matmul`` / ``tensordot`` / ``column_sums`` here, which run on one of two libraries:

* ``numpy`` -- NumPy's own BLAS (OpenBLAS in the PyPI wheels). Always there.
* ``mkl`` -- Intel MKL's ``cblas_?gemm``/``cblas_?gemv`` through its C interface (ctypes), when
  the ``mkl`` package is installed (``pip install "gpunet[mkl]"``, Linux x86-64), running on GNU
  OpenMP: the same thread pool as Numba's parallel kernels.

``set_cpu_blas("auto" | "numpy" | "mkl")`` (``GPUNET_CPU_BLAS``) chooses; ``auto`` takes MKL when it
loads. Why MKL, measured on the 2-core development machine (Intel Xeon, AVX-512; BENCHMARKS.md):

* MKL's sgemm is 5-12 % faster than OpenBLAS's on the products of a training step -- the products
  of one MLP step (batch 1024, 784-512-512-10): 9.95 ms against 11.25 ms -- and matrix products
  are 75-90 % of a CPU training step, so they decide the step's speed against PyTorch (which links
  MKL).
* One thread pool. OpenBLAS's own threads spin for ~0.1 s after each product and fight any other
  thread pool for the cores, so that gpunet's Numba kernels must run serially inside a step
  (cpu_threads.py). MKL on GNU OpenMP hands the cores straight to Numba's OpenMP threads: the
  kernels of a step may then use every core too (the step above: 14.1 ms with OpenBLAS, 12.3 ms
  with MKL, and less with parallel kernels -- BENCHMARKS.md).

The two results differ by rounding only (float32 products: a few ulp of the sum); the tests hold
both to the same float64 references. Every other NumPy array operation stays NumPy's.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys

import numpy

from gpunet import config
from gpunet.config import CONFIG, checked
from gpunet.types import Array

from . import cpu_threads

__all__ = [
    "CHOICES",
    "set_cpu_blas",
    "get_cpu_blas",
    "active",
    "mkl_problem",
    "shares_numba_threads",
    "matmul",
    "tensordot",
    "column_sums",
]

CHOICES = config.CHOICES["cpu_blas"]
#: Products of at most this many multiply-adds stay NumPy's even when MKL is active: a ctypes call
#: costs ~6 us (MKL 6.4 us against NumPy's 0.6 us at 8x4x3), and OpenBLAS runs products this small
#: on the calling thread (its threshold, 4 x 65536), so none of its threads is left spinning.
#: Larger ones go to MKL even where NumPy's is faster alone (64x64x128: 14 against 7 us): OpenBLAS
#: threads some shapes from here on (64x1024x10 = 655K), and one spinning OpenBLAS thread inside a
#: step cost 5x (batch 64, 3072-1024-1024-10 with a 1M limit: 38.6 ms against 7.2 ms).
SMALL_PRODUCT = 1 << 18
#: MKL's product A^T B with few columns (a weight gradient X^T dY of a layer with <= 16 outputs)
#: runs 2-3x faster computed as (B^T A)^T: (512, 1024)^T-layout x (1024, 10) 185 -> 84 us,
#: (1024, 256)^T x (256, 10) 97 -> 32 us on the development machine (a skinny product with a
#: C-ordered left operand showed no such rule, so it is left alone).
SKINNY_COLUMNS = 16
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_MKL_THREADING_GNU = 3  # mkl_service.h: INTEL 0, SEQUENTIAL 1, PGI 2, GNU 3, TBB 4


def set_cpu_blas(name: str = "auto") -> None:
    """Choose the library of gpunet's CPU matrix products: ``"auto"`` (MKL when installed, else
    NumPy's), ``"numpy"`` or ``"mkl"`` (an error if MKL cannot load)."""
    name = checked("cpu_blas", name)
    if name == "mkl" and mkl_problem() is not None:
        raise RuntimeError(
            f"MKL cannot be used here ({mkl_problem()}); install it with "
            "pip install 'gpunet[mkl]' (Linux x86-64) or choose 'numpy'"
        )
    CONFIG.settings.cpu_blas = name


def get_cpu_blas() -> str:
    """The choice (``GPUNET_CPU_BLAS`` on first use, else ``"auto"``)."""
    choice = CONFIG.settings.cpu_blas
    if choice is None:
        choice = CONFIG.get("cpu_blas")
        set_cpu_blas(choice)
    return choice


def active() -> str:
    """The library that runs the products now: ``"mkl"`` or ``"numpy"``."""
    choice = get_cpu_blas()
    if choice == "numpy" or (choice == "auto" and mkl_problem() is not None):
        return "numpy"
    return "mkl"


def shares_numba_threads() -> bool:
    """Whether the products run on Numba's OpenMP threads (MKL on GNU OpenMP, Numba on its OpenMP
    layer): then nothing spins after a product and gpunet's kernels may use every core inside a
    training step. Otherwise the products are noted like OpenBLAS's (cpu_threads.py)."""
    return active() == "mkl" and CONFIG.found.mkl_gnu and _numba_on_openmp()


def _numba_on_openmp() -> bool:
    """Numba's threading layer is OpenMP -- or not chosen yet, with OpenMP first in line
    (``_load_mkl`` put it there; a layer is chosen at the first parallel kernel). Asked after
    every product: once the layer is chosen, the answer is kept."""
    found = CONFIG.found
    if found.numba_openmp is not None:
        return found.numba_openmp
    import numba

    try:
        found.numba_openmp = numba.threading_layer() == "omp"
        return found.numba_openmp
    except ValueError:  # no parallel kernel has run yet
        layer = numba.config.THREADING_LAYER
        return layer == "omp" or (
            layer == "default" and numba.config.THREADING_LAYER_PRIORITY[0] == "omp"
        )


def mkl_problem() -> str | None:
    """None if MKL's C interface loads here, else why not."""
    if CONFIG.found.mkl is None and CONFIG.found.mkl_problem is None:
        _load_mkl()
    return CONFIG.found.mkl_problem


def _load_mkl() -> None:
    path = _find_mkl_rt()
    if path is None:
        CONFIG.found.mkl_problem = "the mkl package is not installed (libmkl_rt not found)"
        return
    try:
        lib = ctypes.CDLL(path)
        # GNU OpenMP (Numba's threading layer), unless the user asked for another one
        if "MKL_THREADING_LAYER" not in os.environ:
            lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
            lib.MKL_Set_Threading_Layer(ctypes.c_int(_MKL_THREADING_GNU))
        CONFIG.found.mkl_gnu = os.environ.get("MKL_THREADING_LAYER", "GNU").upper() == "GNU"
        _prefer_numba_openmp()
        p, i = ctypes.c_void_p, ctypes.c_int
        for prefix, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            gemm = getattr(lib, f"cblas_{prefix}gemm")
            gemm.restype = None
            gemm.argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
            gemv = getattr(lib, f"cblas_{prefix}gemv")
            gemv.restype = None
            gemv.argtypes = [i, i, i, i, real, p, i, p, i, real, p, i]
        CONFIG.found.mkl = lib
    except (OSError, AttributeError) as exc:
        CONFIG.found.mkl_problem = f"libmkl_rt did not load: {exc}"


def _prefer_numba_openmp() -> None:
    """Put OpenMP first among Numba's threading layers (its default order tries TBB first), so
    that Numba's parallel kernels and MKL's products share one pool; unless the user chose a
    layer, or a parallel kernel already ran (the layer is then fixed)."""
    import numba

    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    try:
        numba.threading_layer()
    except ValueError:
        order = [layer for layer in numba.config.THREADING_LAYER_PRIORITY if layer != "omp"]
        numba.config.THREADING_LAYER_PRIORITY = ["omp", *order]


def _find_mkl_rt() -> str | None:
    """libmkl_rt of the ``mkl`` wheel (installed into the environment's lib/)."""
    for root in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for name in ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"):
            path = os.path.join(root, "lib", name)
            if os.path.exists(path):
                return path
    return None


# ----------------------------------------------------------------------------- the products
def _operand(a: Array) -> tuple | None:
    """(transpose flag, leading dimension) for a 2-D operand that BLAS reads without a copy:
    C-contiguous (row-major) or F-contiguous (a transposed row-major array)."""
    if a.flags.c_contiguous:
        return _NO_TRANS, max(1, a.shape[1])
    if a.flags.f_contiguous:
        return _TRANS, max(1, a.shape[0])
    return None


def mkl_gemm(a: Array, b: Array, bias: Array | None = None) -> Array | None:
    """a @ b (+ bias, a row added to every row: MKL's beta = 1 on an output that starts as the
    broadcast bias, which saves a pass over the output), or None where MKL cannot take it."""
    if not (a.dtype == b.dtype and a.dtype in (numpy.float32, numpy.float64)):
        return None
    if 0 in a.shape or 0 in b.shape or (bias is not None and bias.dtype != a.dtype):
        return None
    op_a = _operand(a) or _operand(a := numpy.ascontiguousarray(a))
    op_b = _operand(b) or _operand(b := numpy.ascontiguousarray(b))
    assert op_a is not None and op_b is not None  # a contiguous copy always qualifies
    (ta, lda), (tb, ldb) = op_a, op_b
    (M, K), N = a.shape, b.shape[1]
    out = numpy.empty((M, N), a.dtype)
    beta = 0.0
    if bias is not None:
        out[...] = bias
        beta = 1.0
    mkl = CONFIG.found.mkl
    gemm = mkl.cblas_sgemm if a.dtype == numpy.float32 else mkl.cblas_dgemm
    gemm(_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, beta,
         out.ctypes.data, N)  # fmt: skip
    return out


def _noted(out: Array) -> Array:
    if not shares_numba_threads():
        cpu_threads.note_matmul()  # BLAS threads that are not Numba's now spin
    return out


def matmul(a: Array, b: Array, bias: Array | None = None) -> Array:
    """a @ b for 2-D NumPy arrays a (M, K) and b (K, N), plus ``bias`` (N,) on every row if given
    (a Linear layer's x @ W + b)."""
    small = a.ndim == 2 and b.ndim == 2 and a.shape[0] * a.shape[1] * b.shape[-1] <= SMALL_PRODUCT
    if active() == "mkl":
        if small:
            return _plus(a @ b, bias)  # NumPy's, on this thread (SMALL_PRODUCT)
        if a.ndim == 2 and b.ndim == 2:
            if _skinny_transposed(a, b, bias):
                out = mkl_gemm(b.T, a.T)  # (A^T B)^T's transpose: the same dot products
                if out is not None:
                    return _noted(numpy.ascontiguousarray(out.T))
            out = mkl_gemm(a, b, bias)
            if out is not None:
                return _noted(out)
    out = a @ b
    cpu_threads.note_matmul()
    return _plus(out, bias)


def _skinny_transposed(a: Array, b: Array, bias: Array | None) -> bool:
    """a is a transposed row-major array (F-contiguous only) and b has SKINNY_COLUMNS or fewer."""
    return (
        bias is None
        and b.shape[1] <= SKINNY_COLUMNS
        and a.flags.f_contiguous
        and not a.flags.c_contiguous
    )


def _plus(out: Array, bias: Array | None) -> Array:
    if bias is not None:
        out += bias
    return out


def tensordot(a: Array, b: Array, axes: tuple) -> Array:
    """numpy.tensordot(a, b, axes) with explicit axis lists, as NumPy computes it: both operands
    transposed and reshaped to 2-D (a copy where needed), then one matrix product."""
    axes_a, axes_b = list(axes[0]), list(axes[1])
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]
    k = math.prod(a.shape[i] for i in axes_a)
    a2 = a.transpose(free_a + axes_a).reshape(-1, k)
    b2 = b.transpose(axes_b + free_b).reshape(k, -1)
    shape = tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b)
    return matmul(a2, b2).reshape(shape)


def column_sums(a: Array) -> Array:
    """The sum over the rows of a 2-D array a (N, M) (a bias gradient), for floats as the product
    ones(N) @ a: BLAS's matrix-vector kernel, 3x faster than NumPy's axis-0 sum at (1024, 512)."""
    d = a
    N, M = d.shape
    if d.dtype not in (numpy.float32, numpy.float64) or not N or not M:
        return d.sum(axis=0)
    if active() == "mkl":
        if N * M <= SMALL_PRODUCT:
            return d.sum(axis=0)  # no BLAS call at all: nothing left spinning
        d = numpy.ascontiguousarray(d)
        ones, out = numpy.ones(N, d.dtype), numpy.empty(M, d.dtype)
        mkl = CONFIG.found.mkl
        gemv = mkl.cblas_sgemv if d.dtype == numpy.float32 else mkl.cblas_dgemv
        gemv(_ROW_MAJOR, _TRANS, N, M, 1.0, d.ctypes.data, M, ones.ctypes.data, 1, 0.0,
             out.ctypes.data, 1)  # fmt: skip
        return _noted(out)
    out = numpy.ones(N, d.dtype) @ d
    cpu_threads.note_matmul()
    return out
