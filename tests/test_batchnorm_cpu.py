"""Property tests of the Numba CPU BatchNorm kernels against the NumPy reference (no fixture
switching implementations here: each example runs all three itself)."""

import numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import gpunet
from gpunet import functional as F

_bn_shapes = st.one_of(
    st.tuples(st.integers(2, 40), st.integers(1, 9)),
    st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 9)),
    st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
).filter(lambda s: s[0] * int(numpy.prod(s[2:])) > 1)


@settings(max_examples=40, deadline=None)
@given(
    shape=_bn_shapes,
    act=st.sampled_from([None, "relu"]),
    flip=st.booleans(),
    dtype=st.sampled_from([numpy.float32, numpy.float64]),
    seed=st.integers(0, 2**16),
)
def test_cpu_kernels_match_reference_on_any_shape(shape, act, flip, dtype, seed):
    """Hypothesis: the Numba CPU kernels (serial and parallel) against the NumPy reference, on any
    layout and size, non-contiguous input included."""
    rng = numpy.random.default_rng(seed)
    x = (rng.normal(size=shape) * rng.uniform(0.1, 10) + rng.normal() * 5).astype(dtype)
    if flip:
        x = x[::-1]  # a negative-stride view
    dy = rng.normal(size=shape).astype(dtype)
    C = shape[1]
    g, b = rng.uniform(0.5, 1.5, C).astype(dtype), rng.normal(size=C).astype(dtype)
    results = {}
    for impl, choice in {
        "ref": "numpy",
        "serial": "numba-serial",
        "parallel": "numba-parallel",
    }.items():
        with gpunet.use_cpu_kernels(choice):
            rm, rv = numpy.zeros(C, dtype), numpy.ones(C, dtype)
            y, cache = F.batch_norm_forward(x, g, b, rm, rv, activation=act)
            results[impl] = (y, rm, rv) + F.batch_norm_backward(dy, cache)
    tol = 2e-4 if dtype == numpy.float32 else 1e-9
    for impl in ("serial", "parallel"):
        for got, want in zip(results[impl], results["ref"]):
            numpy.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_a_serial_batch_in_one_call_equals_the_separate_kernels(monkeypatch):
    """An (N, C) training batch that runs serially does its forward (statistics, finish,
    normalize) and its backward (sums, dx) as one compiled call each (numba_cpu/batchnorm.py,
    ``_one_call``): the same kernels, so the same bits as calling them one by one from Python --
    outputs, statistics, running statistics and gradients, with and without ReLU and the
    running update, small batches and one of PARALLEL_MIN values or more; where the parallel
    builds run, or without affine, the separate kernels."""
    from gpunet.kernels.interface import BNParams, BNSpec, BNStats
    from gpunet.kernels.numba_cpu import batchnorm as B

    rng = numpy.random.default_rng(0)
    with gpunet.use_cpu_kernels("numba-serial"):
        for dtype in (numpy.float32, numpy.float64):
            for relu, update in ((False, False), (True, True), (True, False)):
                for N, C in ((64, 128), (7, 3), (2, 1000), (5, 1), (256, 1024)):
                    x3 = (rng.normal(size=(N, C, 1)) * 3 + 1).astype(dtype)
                    g, b = rng.normal(size=C).astype(dtype), rng.normal(size=C).astype(dtype)
                    rm1, rv1 = rng.normal(size=C).astype(dtype), rng.random(C).astype(dtype)
                    rm2, rv2 = rm1.copy(), rv1.copy()
                    assert B._one_call(x3, g, b)
                    spec = BNSpec(True, update, 0.1, 1e-5, "relu" if relu else None)
                    one = B.forward_one_call(x3, BNParams(g, b, rm1, rv1), spec)
                    mean, invstd = B.batch_statistics(x3, 1e-5, rm2, rv2, 0.1, update)
                    apart = (B.apply(x3, mean, invstd, g, b, relu), mean, invstd)
                    dy = rng.normal(size=(N, C, 1)).astype(dtype)
                    stats, params = BNStats(*one[1:]), BNParams(g, b, None, None)
                    one += (rm1, rv1, *B.backward(dy, x3, stats, params, spec))
                    with monkeypatch.context() as m:
                        m.setattr(B, "_one_call", lambda *a: False)
                        apart += (rm2, rv2, *B.backward(dy, x3, stats, params, spec))
                    for got, want in zip(one, apart, strict=True):
                        assert got.dtype == want.dtype and numpy.array_equal(got, want)
        assert not B._one_call(numpy.zeros((64, 8, 1), "f4"), None, None)  # no affine
    large, ones = numpy.zeros((256, 256, 1), "f4"), numpy.ones(256, "f4")
    with gpunet.use_cpu_kernels("numba-parallel"):
        assert not B._one_call(large, ones, ones)
        assert not B._one_call(large[:64, :8], ones[:8], ones[:8])
