"""kernels/shared/cpu_blas.py: gpunet's CPU matrix products on NumPy's BLAS and on Intel MKL,
against
float64 NumPy references, in every operand layout the layers produce; and the choice itself."""

import json

import numpy
import pytest

import gpunet
from gpunet import functional as F
from gpunet import nn, optim
from gpunet.config import CONFIG
from gpunet.kernels.shared import cpu_blas, cpu_threads

MKL = cpu_blas.mkl_problem() is None
LIBRARIES = [
    "numpy",
    pytest.param("mkl", marks=pytest.mark.skipif(not MKL, reason=f"MKL: {cpu_blas.mkl_problem()}")),
]
TOL = {numpy.float32: 2e-5, numpy.float64: 1e-12}


@pytest.fixture(params=LIBRARIES)
def library(request):
    with gpunet.use_cpu_blas(request.param):
        yield request.param


def _pair(rng, m, k, n, dtype, layout):
    a = rng.normal(size=(m, k)).astype(dtype)
    b = rng.normal(size=(k, n)).astype(dtype)
    if layout == "transposed":  # F-contiguous operands, as x.T and w.T in the backward pass
        a, b = numpy.ascontiguousarray(a.T).T, numpy.ascontiguousarray(b.T).T
    elif layout == "strided":  # neither C nor F contiguous: copied first
        a, b = numpy.repeat(a, 2, axis=1)[:, ::2], numpy.repeat(b, 2, axis=1)[:, ::2]
    return a, b


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize(
    "shape",
    # the last three: weight gradients of layers with few outputs (cpu_blas.SKINNY_COLUMNS)
    [(1, 1, 1), (3, 5, 2), (64, 128, 128), (300, 257, 129), (512, 1024, 10), (700, 600, 16),
     (700, 600, 17)],
)  # fmt: skip
def test_matmul_matches_float64(library, shape, layout, dtype):
    a, b = _pair(numpy.random.default_rng(0), *shape, dtype, layout)
    got = cpu_blas.matmul(a, b)
    want = a.astype(numpy.float64) @ b.astype(numpy.float64)
    assert got.dtype == dtype and got.shape == want.shape and got.flags.c_contiguous
    scale = numpy.abs(a).astype(numpy.float64) @ numpy.abs(b).astype(numpy.float64)
    assert numpy.all(numpy.abs(got - want) <= TOL[dtype] * scale + 1e-30)


@pytest.mark.skipif(not MKL, reason=f"MKL: {cpu_blas.mkl_problem()}")
def test_skinny_transposed_products_go_the_other_way(monkeypatch):
    """X^T dY with few columns is computed as (dY^T X)^T (2-3x faster in MKL), and only then;
    the result is C-contiguous either way (the optimizer's kernels read it flat)."""
    calls = []
    gemm = cpu_blas.mkl_gemm
    monkeypatch.setattr(
        cpu_blas, "mkl_gemm", lambda a, b, bias=None: calls.append(a.shape) or gemm(a, b, bias)
    )
    rng = numpy.random.default_rng(1)
    x, dy = rng.normal(size=(1024, 512)).astype(numpy.float32), rng.normal(size=(1024, 10))
    dy = dy.astype(numpy.float32)
    with gpunet.use_cpu_blas("mkl"):
        got = cpu_blas.matmul(x.T, dy)
        assert calls == [(10, 1024)] and got.flags.c_contiguous and got.shape == (512, 10)
        numpy.testing.assert_allclose(got, x.T.astype(numpy.float64) @ dy, rtol=0, atol=2e-3)
        calls.clear()
        cpu_blas.matmul(x.T, rng.normal(size=(1024, 17)).astype(numpy.float32))
        cpu_blas.matmul(numpy.ascontiguousarray(x.T), dy)
        assert calls == [(512, 1024), (512, 1024)]  # wider, or C-ordered: the direct product


def test_matmul_reference_can_fail(library):
    a, b = _pair(numpy.random.default_rng(0), 64, 128, 128, numpy.float32, "contiguous")
    got = cpu_blas.matmul(a, b)
    got[3, 4] += 1e-2  # the bound there is about 2e-5 * 80
    want = a.astype(numpy.float64) @ b.astype(numpy.float64)
    scale = numpy.abs(a).astype(numpy.float64) @ numpy.abs(b).astype(numpy.float64)
    assert not numpy.all(numpy.abs(got - want) <= TOL[numpy.float32] * scale)


def test_integer_and_empty_operands_fall_back_to_numpy(library):
    a = numpy.arange(6).reshape(2, 3)
    numpy.testing.assert_array_equal(cpu_blas.matmul(a, a.T), a @ a.T)
    e = cpu_blas.matmul(numpy.ones((0, 4), "f4"), numpy.ones((4, 3), "f4"))
    assert e.shape == (0, 3)
    z = cpu_blas.matmul(numpy.ones((2, 0), "f4"), numpy.ones((0, 3), "f4"))
    numpy.testing.assert_array_equal(z, numpy.zeros((2, 3), "f4"))


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1024, 512), (2000, 600)])
def test_column_sums_match_float64(library, shape, dtype):
    d = numpy.random.default_rng(1).normal(size=shape).astype(dtype)
    got = cpu_blas.column_sums(d)
    want = d.astype(numpy.float64).sum(axis=0)
    assert got.dtype == dtype and got.shape == (shape[1],)
    bound = TOL[dtype] * numpy.abs(d).astype(numpy.float64).sum(axis=0)
    assert numpy.all(numpy.abs(got - want) <= bound)


@pytest.mark.parametrize(
    "shapes, axes",
    [
        (((4, 3, 2, 2), (3, 2, 2, 5, 6, 6)), ([1, 2, 3], [0, 1, 2])),
        (((4, 3, 2, 2), (5, 3, 2, 2, 6, 6)), ([1, 2, 3], [1, 2, 3])),  # conv forward
        (((5, 4, 6, 6), (5, 3, 2, 2, 6, 6)), ([0, 2, 3], [0, 4, 5])),  # conv weight gradient
        (((4, 3, 2, 2), (5, 4, 6, 6)), ([0], [1])),  # conv input gradient
    ],
)
def test_tensordot_equals_numpy(library, shapes, axes):
    rng = numpy.random.default_rng(2)
    a, b = (rng.normal(size=s) for s in shapes)
    numpy.testing.assert_allclose(
        cpu_blas.tensordot(a, b, axes), numpy.tensordot(a, b, axes=axes), rtol=1e-12, atol=1e-12
    )


def test_a_training_run_agrees_across_libraries():
    """Ten SGD steps of a BatchNorm MLP on NumPy's BLAS and on MKL: the same losses to float32
    rounding (the libraries differ in summation order only)."""
    if not MKL:
        pytest.skip(f"MKL: {cpu_blas.mkl_problem()}")
    rng = numpy.random.default_rng(3)
    x = rng.normal(size=(256, 300)).astype("f4")
    y = rng.integers(0, 10, 256)
    losses = {}
    for library in ("numpy", "mkl"):
        with gpunet.use_cpu_blas(library):
            gpunet.seed(0)
            model = nn.mlp([300, 200, 200, 10])
            opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            run = []
            for _ in range(10):
                loss, d = F.loss.softmax_cross_entropy(model.forward(x), y)
                model.zero_grad()
                model.backward(d)
                opt.step()
                run.append(float(loss))
            losses[library] = run
    assert losses["mkl"][-1] < losses["mkl"][0]
    numpy.testing.assert_allclose(losses["mkl"], losses["numpy"], rtol=1e-4)


def test_the_choice_is_checked_and_reported(monkeypatch):
    with pytest.raises(ValueError, match="cpu blas must be one of"):
        gpunet.set_cpu_blas("openblas")
    monkeypatch.setattr(CONFIG.found, "mkl_problem", "not here")
    monkeypatch.setattr(CONFIG.found, "mkl", None)
    with pytest.raises(RuntimeError, match="MKL cannot be used here \\(not here\\)"):
        gpunet.set_cpu_blas("mkl")
    gpunet.set_cpu_blas("auto")
    assert cpu_blas.active() == "numpy"  # auto without MKL: NumPy's BLAS
    assert not cpu_blas.shares_numba_threads()
    with gpunet.use_cpu_blas("numpy"):
        assert gpunet.get_cpu_blas() == "numpy"
    assert gpunet.get_cpu_blas() == "auto"


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("shape", [(2, 3, 4), (300, 257, 129)])
def test_matmul_with_bias_matches_float64(library, shape, dtype):
    rng = numpy.random.default_rng(4)
    a, b = _pair(rng, *shape, dtype, "contiguous")
    bias = rng.normal(size=shape[2]).astype(dtype)
    got = cpu_blas.matmul(a, b, bias=bias)
    want = a.astype(numpy.float64) @ b.astype(numpy.float64) + bias
    scale = numpy.abs(a).astype(numpy.float64) @ numpy.abs(b).astype(numpy.float64) + abs(bias)
    assert got.dtype == dtype
    assert numpy.all(numpy.abs(got - want) <= TOL[dtype] * scale)


def test_threads_are_shared_only_with_numba_on_openmp(monkeypatch):
    """MKL's products count as 'on Numba's threads' only when Numba runs its OpenMP layer too;
    with TBB or the workqueue the products are noted like OpenBLAS's
    (kernels/shared/cpu_threads.py)."""
    import numba

    if not MKL:
        pytest.skip(f"MKL: {cpu_blas.mkl_problem()}")
    gpunet.set_cpu_blas("mkl")
    monkeypatch.setattr(CONFIG.found, "mkl_gnu", True)
    for layer, shared in (("omp", True), ("tbb", False), ("workqueue", False)):
        CONFIG.found.numba_openmp = None  # the kept answer: asked afresh for each layer
        monkeypatch.setattr(numba, "threading_layer", lambda layer=layer: layer)
        assert cpu_blas.shares_numba_threads() is shared

    def not_chosen():
        raise ValueError("no threading layer yet")

    CONFIG.found.numba_openmp = None
    monkeypatch.setattr(numba, "threading_layer", not_chosen)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["tbb", "omp", "workqueue"])
    assert not cpu_blas.shares_numba_threads()
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER_PRIORITY", raising=False)
    cpu_blas._prefer_numba_openmp()
    assert numba.config.THREADING_LAYER_PRIORITY == ["omp", "tbb", "workqueue"]
    assert cpu_blas.shares_numba_threads()


# ----------------------------------------------------------------------------- auto: measured
@pytest.fixture
def blas_cache(tmp_path, monkeypatch):
    """A fresh place for the measured choice (GPUNET_CACHE_DIR), nothing measured yet."""
    monkeypatch.setenv("GPUNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(CONFIG.found, "blas_measured", None)
    monkeypatch.setattr(cpu_blas, "PROBE_PRODUCTS", ((64, 96, 80, "NN"), (96, 64, 80, "TN")))
    gpunet.set_cpu_blas("auto")  # conftest restores the default
    return tmp_path / "cpu_blas.json"


def _slowed(product, seconds):
    import time

    def slow(a, b):
        time.sleep(seconds)
        return product(a, b)

    slow.__wrapped__ = product
    return slow


needs_mkl = pytest.mark.skipif(not MKL, reason=f"MKL: {cpu_blas.mkl_problem()}")


@needs_mkl
@pytest.mark.parametrize("slow_side, expected", [("mkl_gemm", "numpy"), ("numpy_product", "mkl")])
def test_auto_takes_the_library_that_measures_faster(blas_cache, monkeypatch, slow_side, expected):
    """Each library's products slowed by 5 ms each (far past either one's own time on these
    shapes): ``auto`` takes the other one, says so, and keeps the result for this machine."""
    monkeypatch.setattr(cpu_blas, slow_side, _slowed(getattr(cpu_blas, slow_side), 5e-3))
    assert cpu_blas.active() == expected
    m = CONFIG.found.blas_measured
    slow_ms, fast_ms = (m["mkl_ms"], m["numpy_ms"]) if expected == "numpy" else (
        m["numpy_ms"], m["mkl_ms"])  # fmt: skip
    assert slow_ms >= 2 * 5.0 and fast_ms < slow_ms  # two products, 5 ms each at least
    reason = cpu_blas.choice_reason()
    assert reason.startswith(f"{expected}: measured faster on this machine")
    assert f"{m['mkl_ms']:.2f} ms with MKL" in reason and str(blas_cache) in reason
    kept = json.loads(blas_cache.read_text())
    assert [v["choice"] for v in kept.values()] == [expected]


@needs_mkl
def test_the_kept_choice_is_read_not_measured_again(blas_cache, monkeypatch):
    monkeypatch.setattr(cpu_blas, "mkl_gemm", _slowed(cpu_blas.mkl_gemm, 5e-3))
    assert cpu_blas.active() == "numpy"
    CONFIG.found.blas_measured = None  # a new process: only the file is left

    def no_measuring():
        raise AssertionError("measured again although this machine's choice is kept")

    monkeypatch.setattr(cpu_blas, "measure", no_measuring)
    assert cpu_blas.active() == "numpy"
    # another setting of the libraries (here OpenBLAS pinned to a kernel) is another machine
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    CONFIG.found.blas_measured = None
    with pytest.raises(AssertionError, match="measured again"):
        cpu_blas.active()


@needs_mkl
@pytest.mark.parametrize("content", ["{torn", "[1, 2]", '{"x": 1}'])
def test_a_torn_or_foreign_cache_file_is_measured_over(blas_cache, content):
    blas_cache.write_text(content)
    assert cpu_blas.active() in ("mkl", "numpy")
    kept = json.loads(blas_cache.read_text())
    assert any(isinstance(v, dict) and v.get("choice") == cpu_blas.active() for v in kept.values())


@needs_mkl
def test_forget_measurement_measures_again(blas_cache, monkeypatch):
    monkeypatch.setattr(cpu_blas, "mkl_gemm", _slowed(cpu_blas.mkl_gemm, 5e-3))
    assert cpu_blas.active() == "numpy"
    cpu_blas.forget_measurement()
    assert json.loads(blas_cache.read_text()) == {}
    monkeypatch.setattr(cpu_blas, "mkl_gemm", cpu_blas.mkl_gemm.__wrapped__)
    monkeypatch.setattr(cpu_blas, "numpy_product", _slowed(cpu_blas.numpy_product, 5e-3))
    assert cpu_blas.active() == "mkl"


def test_a_chosen_library_is_not_measured(blas_cache, monkeypatch):
    monkeypatch.setattr(cpu_blas, "measure", lambda: pytest.fail("measured a chosen library"))
    with gpunet.use_cpu_blas("numpy"):
        assert cpu_blas.active() == "numpy"
        assert (
            cpu_blas.choice_reason() == "numpy: chosen ('numpy' by set_cpu_blas or GPUNET_CPU_BLAS)"
        )
    monkeypatch.setattr(CONFIG.found, "mkl_problem", "not here")
    monkeypatch.setattr(CONFIG.found, "mkl", None)
    assert cpu_blas.choice_reason() == "numpy: the only one installed (MKL: not here)"
    assert not blas_cache.exists()


def test_measure_needs_mkl(monkeypatch):
    monkeypatch.setattr(CONFIG.found, "mkl_problem", "not here")
    monkeypatch.setattr(CONFIG.found, "mkl", None)
    with pytest.raises(RuntimeError, match="MKL: not here"):
        cpu_blas.measure()


@pytest.mark.skipif(not MKL, reason=f"MKL: {cpu_blas.mkl_problem()}")
def test_small_products_go_to_numpy_where_the_blas_has_one_thread(monkeypatch):
    """Inside ``one_blas_thread`` (a small net's training loop: cpu_threads.blas_threads) no
    OpenBLAS thread is left spinning, so NumPy makes the products up to
    SMALL_PRODUCT_ONE_THREAD multiply-adds (MKL's call costs more than they take); larger ones,
    and those outside the block above SMALL_PRODUCT, go to MKL. Results match float64 anyway."""
    calls = []
    gemm = cpu_blas._gemm
    monkeypatch.setattr(cpu_blas, "_gemm", lambda *a: calls.append(a[2].shape) or gemm(*a))
    rng = numpy.random.default_rng(3)
    mid = rng.normal(size=(64, 64)).astype(numpy.float32), rng.normal(size=(64, 128))
    big = rng.normal(size=(128, 128)).astype(numpy.float32), rng.normal(size=(128, 256))
    mid, big = (mid[0], mid[1].astype(numpy.float32)), (big[0], big[1].astype(numpy.float32))
    assert 64 * 64 * 128 <= cpu_blas.SMALL_PRODUCT_ONE_THREAD < 128 * 128 * 256
    with gpunet.use_cpu_blas("mkl"):
        with cpu_threads.blas_threads(1):
            got = [cpu_blas.matmul(*mid), cpu_blas.matmul(*big)]
        assert calls == [(128, 128)]
        got.append(cpu_blas.matmul(*mid))
        assert calls == [(128, 128), (64, 64)]
    for out, (a, b) in zip(got, [mid, big, mid]):
        numpy.testing.assert_allclose(out, a.astype(numpy.float64) @ b, rtol=1e-5, atol=1e-4)
