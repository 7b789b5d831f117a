"""The Numba CUDA kernels, run in Numba's CUDA simulator on machines without a GPU, held to the
NumPy reference. (On a GPU the same kernels are tested through tests/parity.py's "numba" path.)"""

import os

import numpy
import pytest

from gpunet import functional as F

pytestmark = pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
    reason="runs in Numba's CUDA simulator (no-GPU machines)",
)

from parity import assert_allclose  # noqa: E402

PARAMS = {"leaky_relu": (0.2, 0.0), "elu": (1.3, 0.0), "softplus": (2.0, 5.0)}
KWARGS = {
    "leaky_relu": {"negative_slope": 0.2},
    "elu": {"alpha": 1.3},
    "softplus": {"beta": 2.0, "threshold": 5.0},
    "gelu_tanh": {"approximate": "tanh"},
}
NAMES = [
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "gelu_tanh",
    "softplus",
    "silu",
]


def _public(name):
    return ("gelu" if name == "gelu_tanh" else name), KWARGS.get(name, {})


def _x(dtype, n=70):
    # 70 elements: not a multiple of the block, so the bounds checks are exercised
    x = numpy.linspace(-6, 6, n).astype(dtype)
    return numpy.concatenate(
        [x, numpy.array([-numpy.inf, -1000, 1000, numpy.inf, numpy.nan], dtype)]
    )


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("name", NAMES)
def test_numba_kernels_match_reference(name, dtype):
    from gpunet.kernels.numba_cuda import activations as nk

    public, kwargs = _public(name)
    fwd, bwd = F.ACTIVATIONS[public]
    a, b = PARAMS.get(name, (0.0, 0.0))
    x = _x(dtype)
    dy = numpy.random.default_rng(0).normal(size=x.shape).astype(dtype)
    y, dx = numpy.empty_like(x), numpy.empty_like(x)
    nk.forward(name, x, y, a, b)
    nk.backward(name, dy, x, dx, a, b)
    assert_allclose(y, fwd(x, **kwargs).astype(numpy.float64), dtype, scale=4)
    assert_allclose(dx, bwd(dy, x, **kwargs).astype(numpy.float64), dtype, scale=4)


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_numba_prelu_and_maxout(dtype):
    from gpunet.kernels.numba_cuda import activations as nk

    rng = numpy.random.default_rng(1)
    x = rng.normal(size=(3, 4, 5)).astype(dtype)
    w = numpy.array([0.1, 0.2, -0.3, 0.4], dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    y, dx, dw_elem = numpy.empty_like(x), numpy.empty_like(x), numpy.empty_like(x)
    nk.prelu_forward(x.ravel(), w, y.ravel(), 4, 5)
    nk.prelu_backward(dy.ravel(), x.ravel(), w, dx.ravel(), dw_elem.ravel(), 4, 5)
    ref_dx, ref_dw = F.prelu_backward(dy, x, w)
    numpy.testing.assert_allclose(y, F.prelu(x, w), rtol=1e-6)
    numpy.testing.assert_allclose(dx, ref_dx, rtol=1e-6)
    numpy.testing.assert_allclose(dw_elem.sum(axis=(0, 2)), ref_dw, rtol=1e-5)

    xm = rng.permutation(48).reshape(2, 12, 2).astype(dtype)  # (outer 2, C 4, pieces 3, inner 2)
    ym = numpy.empty((2, 4, 2), dtype)
    dym = rng.normal(size=ym.shape).astype(dtype)
    dxm = numpy.full_like(xm, 99)  # every element must be written
    nk.maxout_forward(xm.ravel(), ym.ravel(), 3, 2)
    nk.maxout_backward(dym.ravel(), xm.ravel(), dxm.ravel(), 3, 2)
    numpy.testing.assert_array_equal(ym, F.maxout(xm, 3))
    numpy.testing.assert_array_equal(dxm, F.maxout_backward(dym, xm, 3))


@pytest.mark.parametrize("shape", [(9, 3), (5, 2, 7), (3, 2, 3, 4)])
@pytest.mark.parametrize("act", [0, 1, 4, 6])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_numba_batchnorm_matches_reference(shape, act, dtype, monkeypatch):
    from gpunet.kernels.activation_table import ACTIVATION_CODES
    from gpunet.kernels.interface import BNParams, BNSpec, BNStats
    from gpunet.kernels.numba_cuda import batchnorm as nb
    from gpunet.kernels.shared.batchnorm_stats import invstd_of, update_running

    monkeypatch.setattr(nb, "MIN_PER_BLOCK", 8)  # several partial blocks per channel: Chan merges
    monkeypatch.setattr(nb, "THREADS", 16)  # the simulator pays per thread; a power of 2 still
    monkeypatch.setattr(nb, "ROWS_Y", 2)  # rows kernels: 32 x 2 threads, several row groups
    name = {v: k for k, v in ACTIVATION_CODES.items()}[act]
    rng = numpy.random.default_rng(7)
    x = (rng.normal(size=shape) * 3 + 5).astype(dtype)
    N, C = shape[:2]
    x3 = x.reshape(N, C, -1)
    gamma, beta = rng.uniform(0.5, 1.5, C).astype(dtype), rng.normal(size=C).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    rm, rv = numpy.zeros(C, dtype), numpy.ones(C, dtype)
    ref_rm, ref_rv = rm.copy(), rv.copy()
    y_ref, cache = F.batch_norm_forward(x, gamma, beta, ref_rm, ref_rv, activation=name)
    dx_ref, dg_ref, db_ref = F.batch_norm_backward(dy, cache)

    params = BNParams(gamma, beta, rm, rv)
    spec = BNSpec(batch_stats=True, update=True, factor=0.1, eps=1e-5, act=name)
    mean, invstd, stats64 = nb.stats(x3, 1e-5)
    update_running(rm, rv, stats64[:, 0], stats64[:, 1], 0.1)
    y = nb.apply(x3, mean, invstd, params, spec)
    dx, dg, db = nb.backward(dy.reshape(x3.shape), x3, BNStats(mean, invstd), params, spec)
    for got, want in (
        (y.reshape(shape), y_ref),
        (rm, ref_rm),
        (rv, ref_rv),
        (dx.reshape(shape), dx_ref),
        (dg, dg_ref),
        (db, db_ref),
    ):
        assert_allclose(got, want.astype(numpy.float64), dtype, scale=50)

    # inference: running statistics as constants
    eval_spec = BNSpec(batch_stats=False, update=False, factor=0.0, eps=1e-5, act=name)
    y_eval = nb.apply(x3, rm, invstd_of(rv, 1e-5, dtype), params, eval_spec)
    y_eval_ref, _ = F.batch_norm_forward(
        x, gamma, beta, rm.copy(), rv.copy(), training=False, activation=name
    )
    assert_allclose(y_eval.reshape(shape), y_eval_ref.astype(numpy.float64), dtype, scale=50)
