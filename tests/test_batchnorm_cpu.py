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
