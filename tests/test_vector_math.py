"""kernels/numba_cpu/vector_math.py: float32 exp/expm1/tanh/erfc/log1p against float64 references
(NumPy,
SciPy), their limits, and that a loop calling them is vectorized (the reason they exist)."""

import math
import os
import re
import subprocess
import sys

import numba
import numpy
import pytest
import scipy.special
from numba.core.registry import cpu_target

from gpunet.kernels.numba_cpu import activations as cpu_activations
from gpunet.kernels.numba_cpu import vector_math
from gpunet.kernels.shared import activation_math

OPTIONS = cpu_activations.OPTIONS

# name -> (function, float64 reference, range swept, bound in ulp of the float32 result)
CASES = {
    "exp": (vector_math.exp, numpy.exp, (-103.0, 88.72), 1.1),
    "expm1": (vector_math.expm1, numpy.expm1, (-20.0, 88.0), 1.8),
    "tanh": (vector_math.tanh, numpy.tanh, (-12.0, 12.0), 1.9),
    "erfc": (vector_math.erfc, scipy.special.erfc, (-6.0, 6.0), 6.5),
    "log1p": (vector_math.log1p, numpy.log1p, (-0.999, 1e6), 2.5),
}
_LOOPS: dict = {}


def _loop(name):
    """A fresh (uncached, so inspectable) loop y[i] = f(x[i])."""
    if name not in _LOOPS:
        fn = CASES[name][0]

        @numba.njit(**OPTIONS)
        def loop(x, y):
            for i in range(x.size):
                y[i] = fn(x[i])

        _LOOPS[name] = loop
    return _LOOPS[name]


def _apply(name, x):
    x = numpy.ascontiguousarray(x, dtype=numpy.float32)
    y = numpy.empty_like(x)
    _loop(name)(x, y)
    return y


def _ulps(got, ref):
    """|got - ref| in units of the float32 spacing at ref (normal results only)."""
    spacing = numpy.spacing(numpy.abs(ref).astype(numpy.float32)).astype(numpy.float64)
    return numpy.abs(got.astype(numpy.float64) - ref) / spacing


@pytest.mark.parametrize("name", sorted(CASES))
def test_within_the_stated_ulps_of_float64(name):
    _, ref, (lo, hi), bound = CASES[name]
    x = numpy.concatenate(
        [
            numpy.linspace(lo, hi, 1 << 20).astype(numpy.float32),
            numpy.linspace(-1e-3, 1e-3, 1 << 14).astype(numpy.float32),  # where expm1/erf cancel
            numpy.float32(2.0) ** -numpy.arange(10, 120, dtype=numpy.float32),  # tiny x
            # random points between the sweep's: tanh's worst (1.87 ulp in 2^27 normal(0, 3)
            # values) lies off a regular grid
            numpy.random.default_rng(0).uniform(lo, hi, 1 << 22).astype(numpy.float32),
        ]
    )
    got = _apply(name, x)
    want = ref(x.astype(numpy.float64))
    normal = numpy.abs(want) >= numpy.finfo(numpy.float32).tiny
    worst = _ulps(got[normal], want[normal]).max()
    assert worst <= bound, f"{name}: {worst:.2f} ulp"
    # subnormal results (exp far below 0): within two of the smallest subnormal
    assert numpy.all(numpy.abs(got[~normal] - want[~normal]) <= 2 * 2.0**-149)


def test_erfc_tail_keeps_its_ulps_down_to_the_normal_range():
    """erfc's relative accuracy holds far out (6 <= x <= 9.2, erfc down to 1e-38), where
    1 - erf(x) would have nothing left; past float32's normal numbers it is exactly 0."""
    x = numpy.linspace(6.0, 9.2, 1 << 16).astype(numpy.float32)
    got = _apply("erfc", x)
    assert _ulps(got, scipy.special.erfc(x.astype(numpy.float64))).max() <= 6.5
    assert numpy.all(_apply("erfc", numpy.float32([9.5, 30.0, 1e30])) == 0)


def test_erfc_and_gauss_gives_both_from_one_exponential():
    """The Gaussian that GELU's backward takes from erfc's computation: exp(-x^2) within 3 ulp
    while it is a normal float32, 0 beyond; erfc the same as erfc alone."""

    @numba.njit(**OPTIONS)
    def loop(x, c, g):
        for i in range(x.size):
            c[i], g[i] = vector_math.erfc_and_gauss(x[i])

    x = numpy.linspace(-9.2, 9.2, 1 << 20).astype(numpy.float32)
    c, g = numpy.empty_like(x), numpy.empty_like(x)
    loop(x, c, g)
    want = numpy.exp(-(x.astype(numpy.float64) ** 2))
    assert _ulps(g, want).max() <= 3.0
    numpy.testing.assert_array_equal(c, _apply("erfc", x))
    far = numpy.float32([9.5, -30.0, 1e30, numpy.inf])
    c, g = numpy.empty_like(far), numpy.empty_like(far)
    loop(far, c, g)
    numpy.testing.assert_array_equal(g, 0)
    numpy.testing.assert_array_equal(c, [0, 2, 0, 0])


def test_the_ulp_measure_can_fail():
    """A float32 result rounded one way too far is 1 ulp off, and the check sees it."""
    x = numpy.linspace(-5, 5, 1001).astype(numpy.float32)
    want = numpy.exp(x.astype(numpy.float64))
    off = numpy.nextafter(want.astype(numpy.float32), numpy.float32(numpy.inf))
    off = numpy.nextafter(off, numpy.float32(numpy.inf))
    assert _ulps(off, want).max() > 1.1


# x -> expected value per function (inf, -inf, NaN, signed zeros, overflow and underflow)
SPECIAL = numpy.array(
    [numpy.nan, numpy.inf, -numpy.inf, 0.0, -0.0, 1000.0, -1000.0, 88.73, -104.0],
    dtype=numpy.float32,
)
EXPECTED = {
    "exp": [numpy.nan, numpy.inf, 0.0, 1.0, 1.0, numpy.inf, 0.0, numpy.inf, 0.0],
    "expm1": [numpy.nan, numpy.inf, -1.0, 0.0, -0.0, numpy.inf, -1.0, numpy.inf, -1.0],
    "tanh": [numpy.nan, 1.0, -1.0, 0.0, -0.0, 1.0, -1.0, 1.0, -1.0],
    "erfc": [numpy.nan, 0.0, 2.0, 1.0, 1.0, 0.0, 2.0, 0.0, 2.0],
    # log(1001) and log(89.73) from the float64 C library; below -1 no real log
    "log1p": [numpy.nan, numpy.inf, numpy.nan, 0.0, -0.0, *numpy.log([1001.0]), numpy.nan]
    + [*numpy.log1p(numpy.float32([88.73]).astype(numpy.float64)), numpy.nan],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_special_values(name):
    got = _apply(name, SPECIAL)
    want = numpy.array(EXPECTED[name], dtype=numpy.float32)
    numpy.testing.assert_allclose(got, want, rtol=3e-7, atol=0)  # exact for 0, +-1, inf
    numpy.testing.assert_array_equal(numpy.signbit(got), numpy.signbit(want))


def _vector_types(llvm_ir):
    return set(re.findall(r"<(\d+) x float>", llvm_ir))


#: LLVM's ldexp becomes one instruction (vscalefps) on AVX-512 and a C call per element elsewhere
#: -- where vector_math does not emit it (test_without_avx512_the_loops_stay_vectorized).
AVX512 = vector_math._has_avx512(cpu_target.target_context)


def _math_calls(llvm_ir):
    """Calls into the C library's math (``expf``, or LLVM's ``llvm.exp.v8f32``, which without a
    vector math library becomes eight ``expf`` calls)."""
    targets = set(re.findall(r"call[^@\n]*@([\w.]+)\(", llvm_ir))
    calls = {t for t in targets if re.search(r"exp|tanh|erf|log", t)}
    return {t for t in calls if not (AVX512 and t.startswith("llvm.ldexp."))}


def _vectorized_without_libm(llvm_ir):
    return bool(_vector_types(llvm_ir)) and not _math_calls(llvm_ir)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_loop_over_them_is_vectorized(name):
    _apply(name, numpy.zeros(64))
    (llvm_ir,) = _loop(name).inspect_llvm().values()
    assert _vectorized_without_libm(llvm_ir), (_vector_types(llvm_ir), _math_calls(llvm_ir))


def _activation_loop(fwd):
    @numba.njit(**OPTIONS)
    def loop(x, y, a, b):
        for i in range(x.size):
            y[i] = fwd(x[i], a, b)  # a closure variable: Numba inlines it like cpu_activations'

    return loop


def test_the_activation_formulas_vectorize_with_them():
    """sigmoid, tanh, silu, elu, softplus and both GELUs as compiled for the float32 CPU path:
    one loop each, vectorized, no call into the C library's math."""
    device = activation_math.compile_all(
        numba.njit(inline="always", **OPTIONS), numpy.float32, math_module=vector_math
    )
    for name in ("sigmoid", "tanh", "silu", "elu", "gelu", "gelu_tanh", "softplus"):
        loop = _activation_loop(device[f"{name}_fwd"])
        x = numpy.linspace(-3, 3, 64, dtype=numpy.float32)
        loop(x, numpy.empty_like(x), numpy.float32(1), numpy.float32(0))
        (llvm_ir,) = loop.inspect_llvm().values()
        assert _vectorized_without_libm(llvm_ir), (name, _math_calls(llvm_ir))


def test_the_vectorization_check_can_fail():
    """The same sigmoid loop with the C library's math (what float64 uses) calls expf per
    element, and the check above says so."""
    device = activation_math.compile_all(
        numba.njit(inline="always", **OPTIONS), numpy.float32, math_module=math
    )
    loop = _activation_loop(device["sigmoid_fwd"])
    x = numpy.linspace(-3, 3, 64, dtype=numpy.float32)
    loop(x, numpy.empty_like(x), numpy.float32(1), numpy.float32(0))
    (llvm_ir,) = loop.inspect_llvm().values()
    assert _math_calls(llvm_ir)
    assert not _vectorized_without_libm(llvm_ir)


def test_loops_use_512_bit_vectors_where_the_cpu_has_them():
    """vector_math marks the loops ``prefer-vector-width=512``: 16 float32 lanes on AVX-512."""
    import llvmlite.binding as llvm

    if "+avx512f" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("this CPU has no AVX-512: the loops stay at 8 lanes")
    _apply("exp", numpy.zeros(64))
    (llvm_ir,) = _loop("exp").inspect_llvm().values()
    assert vector_math.WIDE_VECTORS in llvm_ir
    assert "16" in _vector_types(llvm_ir)
    if AVX512:  # F and VL (vector_math._has_avx512): 2^n by an instruction, no C call
        (asm,) = _loop("exp").inspect_asm().values()
        assert "vscalefps" in asm and "ldexp" not in asm


_WITHOUT_AVX512 = """
import math, re, sys
import numba, numpy
from gpunet.kernels.numba_cpu import activations as cpu_activations
from gpunet.kernels.numba_cpu import vector_math
from gpunet.kernels.shared import activation_math
device = activation_math.compile_all(
    numba.njit(inline="always", **cpu_activations.OPTIONS), numpy.float32, math_module=vector_math
)
x = numpy.concatenate([numpy.linspace(-110, 100, 1 << 20, dtype=numpy.float32),
                       numpy.array([0.0, -0.0, numpy.inf, -numpy.inf, numpy.nan], numpy.float32)])
for name, ref in (("sigmoid", lambda v: 1 / (1 + numpy.exp(-v))), ("tanh", numpy.tanh)):
    fwd = device[name + "_fwd"]

    @numba.njit(**cpu_activations.OPTIONS)
    def loop(x, y, a, b):
        for i in range(x.size):
            y[i] = fwd(x[i], a, b)

    y = numpy.empty_like(x)
    loop(x, y, numpy.float32(0), numpy.float32(0))
    (ir,) = loop.inspect_llvm().values()
    assert "ldexp" not in ir and "<8 x float>" in ir and "<16 x float>" not in ir, name
    with numpy.errstate(over="ignore"):
        want = ref(x.astype(numpy.float64))
    numpy.testing.assert_allclose(y, want, rtol=4e-7, atol=1e-44)
    assert numpy.signbit(y[-4]) == (name == "tanh"), name
print("ok")
"""


def test_without_avx512_the_loops_stay_vectorized(tmp_path):
    """On an AVX2 CPU (most laptops) LLVM's ldexp would be a C call per element, so vector_math
    writes 2^n into the exponent bits there instead. Compiled in a subprocess for an AVX2 target
    (Numba's NUMBA_CPU_NAME / NUMBA_CPU_FEATURES): 8-lane loops, no ldexp, the same results."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if not features.get("avx2") or not features.get("fma"):
        pytest.skip("this CPU has no AVX2 + FMA to compile the AVX2 code for")
    flags = [("-" if k.startswith("avx512") or not on else "+") + k for k, on in features.items()]
    env = dict(
        os.environ,
        NUMBA_CPU_NAME="haswell",
        NUMBA_CPU_FEATURES=",".join(flags),
        NUMBA_CACHE_DIR=str(tmp_path),
    )
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_AVX512], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
