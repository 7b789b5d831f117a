"""float32 exp, expm1, tanh, erfc and log1p that a Numba CPU loop can vectorize.

Numba compiles ``math.exp`` and friends on float32 to calls into the C library, one element at a
time: a loop that calls them is never vectorized, which made sigmoid, tanh, SiLU, ELU and GELU
7-17x slower than PyTorch's SIMD (Sleef) kernels. The functions here are branch-free float32
arithmetic only -- a range reduction, a polynomial, a scaling by 2^n (one ``vscalefps`` on
AVX-512, the exponent bits elsewhere) -- so that LLVM turns the loops of activations.py into
AVX2/AVX-512 code. (Intel's SVML, which Numba
can use instead, needs an llvmlite built with it; the PyPI wheels are not:
``llvmlite.binding.targets.has_svml()`` is False.)

Used by the Numba CPU path for float32 only, in place of the ``math`` module that
activation_math.py's formulas call (``compile_all(..., math_module=vector_math)``); float64
keeps the C library. Every function takes and returns float32, keeps NaN, and gives the
mathematical limits at +-inf. Accuracy, measured against float64 on 2^22 random points and a
2^20-point grid by tests/test_vector_math.py: exp within 1.1 ulp, expm1 1.8, tanh 1.9 (1.87 at
worst in 2^27 random points; the 1.8 stated before came from the grid alone), log1p 2.5, erfc
6.5 ulp (4.4e-7 relative) down to float32's normal range, 0 beyond x = 9.27 (the C library's
float32 functions: about 1 ulp; CUDA's tanhf: 2 ulp). GELU computes its Phi(x) as
erfc(-x / sqrt 2) / 2 -- one exponential, one division, and no cancellation in the negative tail,
where 1 + erf(x / sqrt 2) loses the relative accuracy that PyTorch's float32 GELU loses there.

References: S. L. Moshier, Cephes Math Library (expf.c, logf.c): range reductions and
polynomial coefficients; tanh(x) = expm1(2x) / (expm1(2x) + 2), the form of SLEEF's tanhf;
erfc's rational function: scripts/fit_erfcx.py (a Sanathanan-Koerner fit of scipy.special.erfcx).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..shared import numba_cache

if TYPE_CHECKING:
    from collections.abc import Callable

_F = numpy.float32
_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}, "inline": "always"}


#: LLVM's function attribute that lets the loop vectorizer use 512-bit vectors on AVX-512 CPUs
#: (its default there is 256: "prefer-256-bit" tuning). Measured on the 2-core Xeon (AVX-512),
#: float32, serial: sigmoid on 1M values 727 -> 545 us, gelu 1372 -> 1003 us. Ignored where the
#: CPU has no 512-bit vectors.
WIDE_VECTORS = '"prefer-vector-width"="512"'


def _prefer_wide_vectors(function: ir.Function) -> None:
    """Mark the LLVM function being compiled (the loop that inlines these functions) with
    WIDE_VECTORS. llvmlite's FunctionAttributes only takes attribute names it knows, so the
    key=value string goes into the underlying set, which it prints verbatim; should a later
    llvmlite refuse that, the loops stay at the default width (speed only, never results)."""
    try:
        set.add(function.attributes, WIDE_VECTORS)
    except Exception:  # pragma: no cover - depends on llvmlite's internals
        pass


@intrinsic
def _int32_bits_as_float32(typingctx: object, bits: object) -> tuple:  # noqa: ARG001 (Numba's signature)
    """The float32 whose bit pattern is the int32 ``bits`` (C's memcpy; one register move)."""

    def codegen(context: object, builder: ir.IRBuilder, signature: object, args: tuple) -> object:
        _prefer_wide_vectors(builder.function)
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _float32_bits_as_int32(typingctx: object, value: object) -> tuple:  # noqa: ARG001
    """The int32 with the bit pattern of the float32 ``value``."""

    def codegen(context: object, builder: ir.IRBuilder, signature: object, args: tuple) -> object:
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _fma(typingctx: object, a: object, b: object, c: object) -> tuple:  # noqa: ARG001
    """a * b + c rounded once (LLVM's fma: one instruction on FMA hardware, exact in software
    elsewhere). Written out because the compiler may fold z * z - (z * z) to 0 before it would
    contract it into a fused multiply-add."""

    def codegen(context: object, builder: ir.IRBuilder, signature: object, args: tuple) -> object:
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


def _has_avx512(context: Any) -> bool:
    """Whether the code being compiled targets AVX-512 with its 128/256-bit forms (F and VL: the
    loops' remainders use ``vscalefps`` on xmm registers). Numba's target features are the
    host's, or NUMBA_CPU_FEATURES; Numba keys its disk cache by them, so a kernel compiled one way
    is never loaded on a CPU of the other kind."""
    try:
        features = context.codegen()._tm_features
        return "+avx512f" in features and "+avx512vl" in features
    except Exception:  # pragma: no cover - depends on Numba's internals; the portable code then
        return False


def _scale_bits(builder: ir.IRBuilder, p: ir.Value, n: ir.Value, halves: bool) -> ir.Value:
    """p 2^n with 2^n written into a float32's exponent bits: in one factor (2^n normal,
    -126 <= n <= 127) or in two halves (n1 = n >> 1 and n - n1: down to 2^-252, so that
    results in the subnormal range and 2^128 times a p < 1 come out right)."""
    i32 = ir.IntType(32)

    def power(k: ir.Value) -> ir.Value:
        bits = builder.shl(builder.add(k, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    if not halves:
        return builder.fmul(p, power(n))
    n1 = builder.ashr(n, ir.Constant(i32, 1))
    return builder.fmul(builder.fmul(p, power(n1)), power(builder.sub(n, n1)))


def _ldexp_intrinsic(halves: bool) -> Callable:
    @intrinsic
    def ldexp(typingctx: object, p: object, n: object) -> tuple:  # noqa: ARG001
        def codegen(context: object, builder: ir.IRBuilder, sig: object, args: tuple) -> object:  # noqa: ARG001
            _prefer_wide_vectors(builder.function)
            if not _has_avx512(context):
                p_value, n_value = args
                return _scale_bits(builder, p_value, n_value, halves=halves)
            f32, i32 = ir.FloatType(), ir.IntType(32)
            fn = builder.module.declare_intrinsic(
                "llvm.ldexp", [f32, i32], ir.FunctionType(f32, [f32, i32])
            )
            return builder.call(fn, args)

        return types.float32(types.float32, types.int32), codegen

    return ldexp


#: p 2^n for an int32 n, rounded once (C's ldexpf). On AVX-512 LLVM's ``llvm.ldexp``, which the
#: loop vectorizer widens and the back end turns into one ``vscalefps`` (exact over the whole
#: range: overflow to inf, gradual underflow, NaN kept); sigmoid on 4M values 1.94 -> 1.44 ms.
#: Elsewhere (AVX2: there ``llvm.ldexp`` would be a C-library call per element) the exponent bits,
#: in two halves for -252 <= n <= 254. (Where 2^n is normal, POW2_MAGIC below is cheaper.)
_ldexp = _ldexp_intrinsic(halves=True)


ONE, TWO, HALF, ZERO = _F(1.0), _F(2.0), _F(0.5), _F(0.0)
INF = _F(numpy.inf)
SIGN_BIT = numpy.int32(-(2**31))  # 0x80000000
LOG2E = _F(1.44269504088896341)
# ln 2 in two parts, the first with few bits so that n * LN2_HI is exact (Cody & Waite)
LN2_HI, LN2_LO = _F(0.693359375), _F(-2.12194440e-4)
# exp overflows float32 above 88.72 and is under half the smallest subnormal (2^-149) below
# -103.97; its argument is held at these bounds, just outside: e^89 = 2^128.4 overflows and
# e^-104.5 = 2^-150.8 underflows to 0 by themselves, and n stays in the exponent halves' range
EXP_MAX, EXP_MIN = _F(89.0), _F(-104.5)
# adding then subtracting 1.5 * 2^23 rounds a float32 of magnitude < 2^22 to an integer
ROUND_MAGIC = _F(12582912.0)
# Cephes expf: exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2)/2
EXP_P = tuple(
    _F(c)
    for c in (
        1.9875691500e-4,
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    )
)
TANH_SATURATED = _F(9.1)  # 1 - tanh(9.1) = 2.5e-8 < half an ulp of 1
# The power of two of a range reduction without a float -> int -> float round trip: adding
# 1.5 * 2^23 + k to y (|y| < 2^21) rounds y to an integer n in the float's low mantissa bits,
# which hold 2^22 + k + n; shifted left by 23 (mod 2^32) they are the float32 2^(n + k - 127)
# for 1 <= n + k <= 254. One integer shift instead of two conversions and a scaling: the
# float32 tanh on 4M values 1.53 -> 1.34 ms, 0.90 -> 0.77 cycles per value on 64K (one core).
POW2_MAGIC_HALF = _F(12582912.0 + 126.0)  # k = 126: 2^(n - 1)
POW2_MAGIC = _F(12582912.0 + 127.0)  # k = 127: 2^n
SHIFT_23 = numpy.int32(23)
TWO_LOG2E = _F(2.0 * 1.44269504088896341)
# ln 2 / 2 in two parts (Cody & Waite, as LN2_HI / LN2_LO: halving is exact)
HALF_LN2_HI, HALF_LN2_LO = _F(0.693359375 / 2), _F(-2.12194440e-4 / 2)
# tanh's expm1(2r) / 2 = r + r^2 P'(r) with P'(r) = 2 P(2r): EXP_P's coefficient of r^j times
# 2^(j + 1) (EXP_P is in Horner order, k = 5 - j), exact in float32
TANH_P = tuple(_F(c * 2.0 ** (len(EXP_P) - k)) for k, c in enumerate(EXP_P))
# Cephes logf: log(1 + x) = x - x^2/2 + x^3 P(x) on sqrt(1/2) - 1 <= x < sqrt(2) - 1
SQRT_HALF = _F(0.70710678118654752440)
LOG_P = tuple(
    _F(c)
    for c in (
        7.0376836292e-2,
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    )
)
NAN = _F(numpy.nan)
# erfc(z) = exp(-z^2) R(z) for z >= 0, R = erfcx (the scaled complementary error function) by a
# rational function P(z) / Q(z), degrees 4 and 5 (R ~ 1 / (sqrt(pi) z) far out, as erfcx), fitted
# on 0 <= z <= 10 by scripts/fit_erfcx.py: within 4.1e-7 of erfcx in float32. One exp, one
# division, nine multiply-adds: 22 % faster than the degree-18 polynomial it replaced.
ERFCX_P = tuple(
    _F(c)
    for c in (1.0000000280678871, 1.2495629029348407, 0.7438916926830078, 0.23532220255567965,
              0.034178136774898595)
)  # fmt: skip
ERFCX_Q = tuple(
    _F(c)
    for c in (1.0, 2.3779435055960167, 2.4270958725879135, 1.3484119410366182,
              0.41712138745191535, 0.060578549686189434)
)  # fmt: skip
ERFC_EXP_MIN = _F(86.0)  # exp(-z^2) for z^2 < 86 is normal; beyond, erfc(z) < 1.7e-39 is 0 here


def _expm1_poly(r: float, coefficients: tuple) -> float:
    """r + r^2 P(r), P by Horner's rule from ``coefficients`` (highest power first): Cephes'
    e^r - 1 with EXP_P, tanh's expm1(2r) / 2 with TANH_P."""
    p = coefficients[0]
    for c in coefficients[1:]:
        p = p * r + c
    return p * (r * r) + r


def _expm1_reduced(x: float) -> tuple:
    """(e^r - 1, n) with x = n ln2 + r, |r| <= ln(2)/2 (Cody & Waite's two-part ln 2), e^r - 1 by
    Cephes' polynomial r + r^2 P(r): e^x = 2^n (1 + (e^r - 1)), the scaling left to the caller."""
    n = (LOG2E * x + ROUND_MAGIC) - ROUND_MAGIC
    r = (x - n * LN2_HI) - n * LN2_LO
    return expm1_poly(r, EXP_P), numpy.int32(n)


def _exp_reduced(x: float) -> tuple:
    """(e^r, n) with x = n ln2 + r (expm1_reduced): e^x = 2^n e^r."""
    q, n = expm1_reduced(x)
    return q + ONE, n


def _exp(x: float) -> float:
    """e^x: 2^n e^r (exp_reduced) scaled by _ldexp (n = 128 and subnormal results included). x is
    held in [EXP_MIN, EXP_MAX], just outside float32's range, so that overflow to inf and
    underflow to 0 come out of the arithmetic itself (no selects: 7 % faster in sigmoid); NaN
    passes both comparisons and stays NaN through the arithmetic."""
    xc = EXP_MIN if x < EXP_MIN else x
    xc = EXP_MAX if xc > EXP_MAX else xc
    p, n = exp_reduced(xc)
    return _ldexp(p, n)


def _exp_finite(x: float) -> float:
    """e^x for -87 < x < 88 only (the caller's promise: normal results, no overflow, no NaN):
    _exp without its clamps, n rounded by POW2_MAGIC, which leaves 2^n in its bits (no
    conversions, no ldexp)."""
    t = x * LOG2E + POW2_MAGIC
    n = t - POW2_MAGIC
    r = (x - n * LN2_HI) - n * LN2_LO
    e_r = expm1_poly(r, EXP_P) + ONE
    return e_r * _int32_bits_as_float32(_float32_bits_as_int32(t) << SHIFT_23)


def _expm1(x: float) -> float:
    """e^x - 1: Taylor's series to x^9 near 0, where e^x - 1 would cancel; e^x - 1 elsewhere."""
    p = _F(1.0 / 362880.0)
    for c in (1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0):
        p = p * x + _F(c)
    small = ((p * x + HALF) * x + ONE) * x
    big = exp(x) - ONE
    return small if abs(x) < HALF else big


def _tanh(x: float) -> float:
    """tanh(|x|) = u / (1 + u) with u = (e^(2|x|) - 1) / 2, the sign of x put back into the bits.
    |x| is held at 9.1, past which tanh rounds to 1 in float32 (NaN passes the comparison and
    stays NaN). One range reduction of z = |x|: 2z = n ln2 + 2r with n rounded by
    POW2_MAGIC_HALF, which leaves h = 2^n / 2 in its bits; expm1(2r) / 2 = r + r^2 P'(r), with
    Cephes' expm1 coefficients times 2^(k+1) (exact); then u = 2h (expm1(2r) / 2) + (h - 1/2),
    no cancellation at small x. Below u = 1/2 the quotient's rounding (about an ulp, from
    1 + u) is taken out by one step of y = u (1 - y), which shrinks an error in y by u. 1.9
    ulp; Cephes' two-branch tanhf (an odd polynomial below 0.625, 1 - 2 / (e^(2|x|) + 1)
    above) was 1.3 ulp and 30 % slower: both branches and three selects per element in a
    vector loop."""
    z = abs(x)
    z = TANH_SATURATED if z > TANH_SATURATED else z
    t = z * TWO_LOG2E + POW2_MAGIC_HALF
    n = t - POW2_MAGIC_HALF
    r = (z - n * HALF_LN2_HI) - n * HALF_LN2_LO
    q_half = expm1_poly(r, TANH_P)  # expm1(2r) / 2
    h = _int32_bits_as_float32(_float32_bits_as_int32(t) << SHIFT_23)  # 2^n / 2
    u = (h + h) * q_half + (h - HALF)
    y = u / (u + ONE)
    y = u - u * y if u < HALF else y
    sign = _float32_bits_as_int32(x) & SIGN_BIT
    return _int32_bits_as_float32(_float32_bits_as_int32(y) | sign)


def _erfc_and_gauss(x: float) -> tuple:
    """(erfc(x), exp(-x^2)): erfc(x) = 1 - erf(x) with relative accuracy where it is small,
    exp(-x^2) R(|x|) for x >= 0 (R = P / Q, ERFCX_P and ERFCX_Q), 2 minus that below 0; both 0
    where exp(-x^2) leaves float32's normal range (erfc < 1.7e-39). x^2 is split into hi + lo
    exactly (a fused multiply-add), so that exp(-x^2) keeps its accuracy at large x:
    exp(-hi - lo) = exp(-hi) (1 - lo). The Gaussian comes free, which GELU's backward needs."""
    z = abs(x)
    p = ERFCX_P[4]
    p = p * z + ERFCX_P[3]
    p = p * z + ERFCX_P[2]
    p = p * z + ERFCX_P[1]
    p = p * z + ERFCX_P[0]
    q = ERFCX_Q[5]
    q = q * z + ERFCX_Q[4]
    q = q * z + ERFCX_Q[3]
    q = q * z + ERFCX_Q[2]
    q = q * z + ERFCX_Q[1]
    q = q * z + ERFCX_Q[0]
    hi = z * z
    lo = _fma(z, z, -hi)  # the rounding error of hi, exactly
    e = exp_finite(-(hi if hi < ERFC_EXP_MIN else ERFC_EXP_MIN))
    g = e - e * lo
    y = g * (p / q)
    # both 0 from z^2 = 86 on (P / Q itself is inf / inf past z ~ 1e9); NaN fails the comparison
    # and stays NaN through the arithmetic
    tail = hi >= ERFC_EXP_MIN
    g = ZERO if tail else g
    y = ZERO if tail else y
    return (y if x >= ZERO else TWO - y), g


def _erfc(x: float) -> float:
    """erfc(x) (see erfc_and_gauss)."""
    return erfc_and_gauss(x)[0]


def _isinf(x: float) -> bool:
    return math.isinf(x)


def _log(u: float) -> float:
    """log(u) for normal u > 0 (Cephes logf): u = m 2^e with m in [sqrt(1/2), sqrt(2)) read from
    the bits, log(m) by the polynomial, e ln2 added in two parts."""
    bits = _float32_bits_as_int32(u)
    e = _F((bits >> numpy.int32(23)) - numpy.int32(126))
    m = _int32_bits_as_float32((bits & numpy.int32(0x007FFFFF)) | numpy.int32(0x3F000000))
    low = m < SQRT_HALF  # m in [0.5, 1): fold into [sqrt(1/2), sqrt(2))
    x = (m + m - ONE) if low else (m - ONE)
    e = (e - ONE) if low else e
    z = x * x
    p = LOG_P[0]
    for c in LOG_P[1:]:
        p = p * x + c
    y = p * x * z + e * LN2_LO - HALF * z
    return (x + y) + e * LN2_HI


def _log1p(x: float) -> float:
    """log(1 + x): log(u) x / (u - 1) with u = 1 + x, which cancels the rounding of u
    (Goldberg 1991, Theorem 4); x itself where u rounds to 1."""
    u = ONE + x
    y = log(u) * (x / (u - ONE))
    y = x if u == ONE else y
    y = INF if x == INF else y
    y = -INF if u == ZERO else y
    return NAN if x < -ONE else y  # and NaN stays NaN through the arithmetic


# Compiled in dependency order; each sees the ones before it under its public name, and each
# compiled copy is named vector<name> (``_exp`` -> ``vector_exp``: its own disk-cache entry).
def _compiled(fn: Callable) -> Callable:
    return numba_cache.njit(numba_cache.renamed(fn, f"vector{fn.__name__}"), **_OPTIONS)


expm1_poly = _compiled(_expm1_poly)
expm1_reduced = _compiled(_expm1_reduced)
exp_reduced = _compiled(_exp_reduced)
exp = _compiled(_exp)
exp_finite = _compiled(_exp_finite)
expm1 = _compiled(_expm1)
tanh = _compiled(_tanh)
erfc_and_gauss = _compiled(_erfc_and_gauss)
erfc = _compiled(_erfc)
isinf = _compiled(_isinf)
log = _compiled(_log)
log1p = _compiled(_log1p)
