"""Matrix products called from Numba code: cblas_?gemm of the library cpu_blas.py chose, by its
address, so that a ``prange`` loop can make one single-threaded product per iteration on Numba's
own threads (Winograd's (m + 2)^2 products per chunk: kernels/numba_cpu/winograd.py).

    C (M x N) = alpha op(A) op(B) + beta C,  row-major, op(X) = X or X^T   (BLAS's ?gemm)

Why: NumPy (or ctypes) products from Python run one at a time, each on the BLAS's own threads;
for Winograd's 36 small products per chunk that left the second core idle between them and,
with OpenBLAS, its threads spinning against Numba's during the transforms that follow (64
channels at 32x32, batch 64, two threads: 29 ms where one thread took 35). Called from Numba, the
36 products split over Numba's threads like any loop.

The address is an argument, not a constant, so the kernels that call it stay cacheable
(numba_cache.py); ``gemm_function(dtype)`` gives (address, ilp64) for the active library:
MKL's ``cblas_?gemm`` (32-bit integers), or NumPy's own OpenBLAS (``scipy_cblas_?gemm64_``: its
wheels are built with 64-bit integers, and the suffix says so). None where neither is found (a
NumPy built on another BLAS): the callers then make their products from Python.
"""

from __future__ import annotations

import ctypes

import numpy
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from gpunet.config import CONFIG

from . import numba_cache

#: CBLAS's enums (cblas.h): CblasRowMajor, CblasNoTrans, CblasTrans
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _gemm_intrinsic(int_bits: int):  # noqa: ANN202 - a Numba intrinsic
    """An intrinsic calling ``void cblas_?gemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb,
    beta, C, ldc)`` at an address, with ``int_bits``-bit integer sizes (the enums stay 32-bit
    ints in both ABIs); alpha's type (float32 or float64) picks the float width."""

    @intrinsic
    def call(typingctx, fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc):  # noqa: ANN001, ANN202
        sig = types.void(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            i32, iN = ir.IntType(32), ir.IntType(int_bits)
            real = context.get_value_type(signature.args[6])
            ptr = ir.IntType(8).as_pointer()
            params = [i32, i32, i32, iN, iN, iN, real, ptr, iN, ptr, iN, real, ptr, iN]
            f = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), params).as_pointer())

            def cast(v, t):  # noqa: ANN001, ANN202
                return builder.trunc(v, t) if t.width < v.type.width else v

            fn_, ta_, tb_, M_, N_, K_, alpha_, A_, lda_, B_, ldb_, beta_, C_, ldc_ = args
            builder.call(f, [ir.Constant(i32, ROW_MAJOR), cast(ta_, i32), cast(tb_, i32),
                             cast(M_, iN), cast(N_, iN), cast(K_, iN), alpha_,
                             builder.inttoptr(A_, ptr), cast(lda_, iN),
                             builder.inttoptr(B_, ptr), cast(ldb_, iN), beta_,
                             builder.inttoptr(C_, ptr), cast(ldc_, iN)])  # fmt: skip
            return context.get_dummy_value()

        return sig, codegen

    return call


_gemm32 = _gemm_intrinsic(32)
_gemm64 = _gemm_intrinsic(64)


def _gemm(fn, ilp64, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc):  # noqa: ANN001, ANN202
    """C = alpha op(A) op(B) + beta C by the gemm at address ``fn``; A, B, C addresses
    (``arr.ctypes.data``), integers int64."""
    if ilp64:
        _gemm64(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
    else:
        _gemm32(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)


gemm = numba_cache.njit(_gemm, inline="always")


def _address(lib: ctypes.CDLL, names: tuple) -> int | None:
    for name in names:
        try:
            return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        except AttributeError:
            continue
    return None


def _numpy_openblas() -> ctypes.CDLL | None:
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas" and "numpy" in str(lib.get("filepath", "")):
            return ctypes.CDLL(lib["filepath"])
    return None


def gemm_function(dtype: numpy.dtype, library: str) -> tuple | None:
    """(address, ilp64) of ``library``'s ("mkl" or "numpy") cblas gemm for ``dtype`` (float32:
    sgemm, float64: dgemm), or None (found once per process)."""
    if dtype not in (numpy.float32, numpy.float64):
        return None
    p = "s" if dtype == numpy.float32 else "d"
    key = (library, p)
    cache = CONFIG.found.gemm_functions
    if key not in cache:
        found = None
        if library == "mkl" and CONFIG.found.mkl is not None:
            address = _address(CONFIG.found.mkl, (f"cblas_{p}gemm",))
            found = None if address is None else (address, False)
        elif library == "numpy":
            lib = _numpy_openblas()
            if lib is not None:
                address = _address(lib, (f"scipy_cblas_{p}gemm64_", f"cblas_{p}gemm64_"))
                found = None if address is None else (address, True)
        cache[key] = found
    return cache[key]
