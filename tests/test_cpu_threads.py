"""kernels/shared/cpu_threads.py: the CPU thread policy -- which build (serial or parallel) of the
Numba
CPU kernels runs, and that gpunet's matrix products switch it to serial while BLAS threads spin.
(The parallel builds' numerics: the ``cpu-parallel`` path of tests/parity.py, and the optimizer
and BatchNorm tests.)"""

import os
import subprocess
import sys

import numba
import numpy
import pytest

import gpunet
from gpunet import functional as F
from gpunet.config import CONFIG
from gpunet.kernels.numba_cpu import activations as cpu_activations
from gpunet.kernels.shared import cpu_threads


@pytest.fixture(autouse=True)
def _fresh_policy(monkeypatch):
    monkeypatch.setattr(CONFIG.found, "last_matmul", float("-inf"))
    yield


def test_forced_modes_win_whatever_the_size_and_the_last_product():
    cpu_threads.note_matmul()
    with gpunet.use_cpu_kernels("numba-parallel"):
        assert cpu_threads.parallel(1)
    with gpunet.use_cpu_kernels("numba-serial"):
        assert not cpu_threads.parallel(1 << 30)
    assert cpu_threads.get_mode() == "auto"  # the switch is restored


def test_auto_is_parallel_for_large_kernels_away_from_products(monkeypatch):
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: auto is always serial (tested below)")
    assert cpu_threads.parallel(cpu_threads.PARALLEL_MIN)
    assert not cpu_threads.parallel(cpu_threads.PARALLEL_MIN - 1)
    cpu_threads.note_matmul()
    assert not cpu_threads.parallel(1 << 30)  # BLAS threads are spinning now
    clock = cpu_threads.time.perf_counter()
    monkeypatch.setattr(
        cpu_threads.time, "perf_counter", lambda: clock + cpu_threads.QUIET_S + 0.01
    )
    assert cpu_threads.parallel(1 << 30)  # ... and quiet again after QUIET_S


def test_auto_is_serial_on_one_thread(monkeypatch):
    monkeypatch.setattr(numba, "get_num_threads", lambda: 1)
    assert not cpu_threads.parallel(1 << 30)


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="cpu kernels must be one of"):
        gpunet.set_cpu_kernels("both")
    assert cpu_threads.get_mode() == "auto"


@pytest.mark.parametrize("layer", ["linear", "conv2d"])
def test_gpunet_matrix_products_are_noted(layer):
    """On NumPy's BLAS (OpenBLAS, whose threads spin) every product is noted."""
    gpunet.set_cpu_blas("numpy")  # conftest restores the default
    rng = numpy.random.default_rng(0)
    before = cpu_threads.last_matmul()
    if layer == "linear":
        out, cache = F.linear_forward(
            rng.normal(size=(4, 3)).astype("f4"), rng.normal(size=(3, 2)).astype("f4")
        )
        forward_time = cpu_threads.last_matmul()
        assert forward_time > before
        F.linear_backward(numpy.ones_like(out), cache)
    else:
        x = rng.normal(size=(2, 1, 4, 4)).astype("f4")
        out, cache = F.conv2d_forward(x, rng.normal(size=(3, 1, 3, 3)).astype("f4"))
        forward_time = cpu_threads.last_matmul()
        assert forward_time > before
        F.conv2d_backward(numpy.ones_like(out), cache)
    assert cpu_threads.last_matmul() > forward_time


def test_an_activation_right_after_a_linear_layer_runs_serially(monkeypatch):
    """The policy as the kernels see it: which build cpu_activations asks for (NumPy's BLAS)."""
    if numba.get_num_threads() < 2:
        pytest.skip("needs two Numba threads")
    asked = []
    real = cpu_activations._loop
    monkeypatch.setattr(cpu_activations, "_loop", lambda *a: asked.append(a[2]) or real(*a))
    x = numpy.random.default_rng(0).normal(size=(256, 512)).astype("f4")
    with gpunet.use_cpu_kernels("numba"), gpunet.use_cpu_blas("numpy"):
        F.relu(x)  # on its own: parallel
        h, _ = F.linear_forward(x, numpy.eye(512, dtype="f4"))
        F.relu(h)  # in a forward pass: serial
    assert asked == [True, False]


def test_mkl_products_on_numba_threads_leave_the_kernels_parallel():
    """MKL on GNU OpenMP shares Numba's threads: nothing spins after its products, so they are not
    noted (kernels/shared/cpu_blas.py)."""
    from gpunet.kernels.shared import cpu_blas

    if cpu_blas.mkl_problem() is not None:
        pytest.skip(f"MKL unavailable: {cpu_blas.mkl_problem()}")
    gpunet.set_cpu_blas("mkl")
    assert cpu_blas.shares_numba_threads() == (
        cpu_blas.os.environ.get("MKL_THREADING_LAYER", "GNU").upper() == "GNU"
    )
    x = numpy.ones((256, 512), "f4")
    F.linear_forward(x, numpy.ones((512, 512), "f4"))
    noted = cpu_threads.last_matmul() != float("-inf")
    assert noted == (not cpu_blas.shares_numba_threads())


def test_a_lazily_loaded_mkl_obeys_the_single_thread_limit():
    """fit's one-thread BLAS region (small products) must hold MKL too: MKL is loaded at the first
    product, which came after the limit was set, and kept 2 threads inside it (issue #24). In a
    fresh process, so that MKL is not loaded yet."""
    import os
    import subprocess
    import sys

    from gpunet.kernels.shared import cpu_blas

    if cpu_blas.mkl_problem() is not None:
        pytest.skip(f"MKL unavailable: {cpu_blas.mkl_problem()}")
    code = (
        "import numpy\n"
        "from gpunet.config import CONFIG\n"
        "from gpunet.kernels.shared import cpu_threads, cpu_blas\n"
        "assert CONFIG.found.mkl is None  # not loaded yet\n"
        "with cpu_threads.blas_threads(1):\n"
        "    cpu_blas.matmul(numpy.ones((64, 64), 'f4'), numpy.ones((64, 64), 'f4'))\n"
        "    print(CONFIG.found.mkl.MKL_Get_Max_Threads())  # as the first product left it\n"
        "print(CONFIG.found.mkl.MKL_Get_Max_Threads())\n"
    )
    env = {**os.environ, "MKL_NUM_THREADS": "2", "GPUNET_CPU_BLAS": "mkl"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    inside, after = (int(v) for v in done.stdout.split())
    assert inside == 1 and after == 2  # limited inside, given back after


# ----------------------------------------------------------------------------- the stall watch
class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(cpu_threads.time, "perf_counter", c)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    return c


def _call(clock, key, n, seconds):
    """One kernel call through choose() that takes ``seconds`` on the fake clock; its build."""
    with cpu_threads.choose(key, n) as par:
        clock.now += seconds
    return par


N = 1 << 22  # 4M values: parallel in auto away from products


def test_stalled_parallel_calls_send_kernels_serial_then_back(clock):
    """A kernel's serial time known (1 ms per 4M values here), parallel calls that take a time
    slice longer (9 ms, a stall) twice in a row send every kernel serial for BACKOFF_S; the
    next stall episode backs off twice as long; a parallel call that keeps its time resets it."""
    w = cpu_threads.watch()
    w.seen.update({("k", True), ("k", False)})  # builds loaded: calls are timed
    w.serial["k"] = 1e-3 / N
    assert _call(clock, "k", N, 0.6e-3)  # parallel, quicker than serial: fine
    assert _call(clock, "k", N, 9e-3) and w.strikes == 1
    assert cpu_threads.parallel(N)  # one stall is not yet a pattern
    assert _call(clock, "k", N, 9e-3) and w.episodes == 1
    assert not cpu_threads.parallel(N) and not _call(clock, "other", N, 1e-3)
    clock.now += cpu_threads.BACKOFF_S
    assert cpu_threads.parallel(N)  # tries the cores again ...
    _call(clock, "k", N, 9e-3)
    _call(clock, "k", N, 9e-3)  # ... still taken: twice as long now
    assert w.episodes == 2
    clock.now += cpu_threads.BACKOFF_S
    assert not cpu_threads.parallel(N)
    clock.now += cpu_threads.BACKOFF_S
    assert _call(clock, "k", N, 0.6e-3) and w.backoff == cpu_threads.BACKOFF_S


def test_a_kernel_without_a_serial_time_probes_one(clock):
    """A parallel call far past its own best (x threads) with no serial time to compare runs the
    kernel's next call serially; that call's time is then the reference."""
    w = cpu_threads.watch()
    assert _call(clock, "k", N, 5.0)  # the first call of a build compiles: not a time
    assert _call(clock, "k", N, 0.5e-3)
    assert _call(clock, "k", N, 9e-3) and "k" in w.probe
    assert not _call(clock, "k", N, 5.0)  # the serial build's first call: compiles
    assert _call(clock, "k", N, 9e-3) and "k" in w.probe
    assert not _call(clock, "k", N, 1e-3) and w.serial["k"] == pytest.approx(1e-3 / N)
    assert w.episodes == 0 and _call(clock, "k", N, 0.6e-3)


def test_the_margin_keeps_small_calls_and_cache_effects_out(clock):
    w = cpu_threads.watch()
    w.seen.update({("k", True)})
    w.serial["k"] = 20e-6 / (1 << 16)  # 64K values in 20 us serial
    for _ in range(5):  # 0.5 ms over, 25x the serial time: jitter, not a scheduler slice
        _call(clock, "k", 1 << 16, 0.5e-3)
    assert w.strikes == 0 and w.episodes == 0


def test_real_kernels_report_their_calls():
    """Every Numba CPU kernel family goes through choose(): after a few calls each has its
    serial time recorded (names carry the dtype)."""
    import gpunet.functional as F

    x = numpy.random.default_rng(0).normal(size=(64, 32)).astype(numpy.float32)
    with gpunet.use_cpu_kernels("numba-serial"):
        for _ in range(2):
            F.sigmoid(x)
            F.sigmoid_backward(x, x)
            y, c = F.batch_norm_forward(x, None, None, None, None)
            F.batch_norm_backward(y, c)
    assert {"sigmoid/float32", "sigmoid'/float32", "bn_stats/float32", "bn_apply/float32",
            "bn_backward/float32"} <= set(cpu_threads.watch().serial)  # fmt: skip


def test_serial_calls_are_timed_while_sampling_then_one_in_serial_every(clock, monkeypatch):
    """A serial call's time only lowers a minimum: after SERIAL_SAMPLES timed calls a kernel's
    serial calls run untimed, except one in SERIAL_EVERY (the dispatch of a 256K-value ReLU
    is then ~1 us shorter)."""
    monkeypatch.setattr(numba, "get_num_threads", lambda: 1)  # every call serial
    w = cpu_threads.watch()
    w.seen.add(("k", False))
    for _ in range(cpu_threads.SERIAL_SAMPLES):
        assert not _call(clock, "k", N, 2e-3)
    assert w.serial["k"] == pytest.approx(2e-3 / N)
    for _ in range(cpu_threads.SERIAL_EVERY - cpu_threads.SERIAL_SAMPLES):
        _call(clock, "k", N, 1e-3)  # untimed: the reference stays
    assert w.serial["k"] == pytest.approx(2e-3 / N)
    _call(clock, "k", N, 1e-3)  # call number SERIAL_EVERY: timed
    assert w.serial["k"] == pytest.approx(1e-3 / N)


def _env_after_import(**env):
    """GOMP_SPINCOUNT in a fresh process after ``import gpunet``, and in the environment it hands
    the torch side of a benchmark."""
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = (
        "import os, gpunet; from gpunet.kernels.shared import cpu_threads; "
        "print(os.environ.get('GOMP_SPINCOUNT'), "
        "cpu_threads.user_environment().get('GOMP_SPINCOUNT'))"
    )
    env = {**base, **env}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_shortens_openmp_spin_unless_the_user_chose():
    """gpunet's import sets GOMP_SPINCOUNT (cpu_threads.OPENMP_SPIN) for the OpenMP it loads
    later, keeps it out of the torch side's environment, and leaves a user's choice alone."""
    assert _env_after_import() == [cpu_threads.OPENMP_SPIN, "None"]
    assert _env_after_import(GOMP_SPINCOUNT="77") == ["77", "77"]
    assert _env_after_import(OMP_WAIT_POLICY="passive") == ["None", "None"]


def test_openmp_already_loaded_keeps_its_spin(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(cpu_threads, "_spin_state", dict(cpu_threads._spin_state))
    monkeypatch.setattr(cpu_threads, "_openmp_loaded", lambda: True)
    assert not cpu_threads.short_openmp_spin()
    assert "GOMP_SPINCOUNT" not in os.environ
    assert "loaded before gpunet" in cpu_threads.openmp_spin_state()
