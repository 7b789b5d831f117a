"""Time to the first step: nothing compiles at import, no process compiles what an earlier one
compiled, an unwritable cache is a warning, the plot is optional and never half-written."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEP = r"""
import numpy, gpunet
from gpunet import functional as F
x = numpy.random.default_rng(0).normal(size=(64, 32)).astype(numpy.float32)
g, b = numpy.ones(32, numpy.float32), numpy.zeros(32, numpy.float32)
y, c = F.batch_norm_forward(x, g, b, None, None, activation="relu")
F.batch_norm_backward(y, c)
with gpunet.use_cpu_kernels("numba-parallel"):
    y, c = F.batch_norm_forward(x.reshape(8, 32, 8), None, None, None, None)
    F.batch_norm_backward(y, c)
with gpunet.use_cpu_kernels("numba"):
    F.gelu_backward(x, F.gelu(x))
from gpunet.kernels.numba_cpu import activations as cpu_activations
from gpunet.kernels.numba_cpu import batchnorm as cpu_batchnorm
dispatchers = [*cpu_activations.loops("gelu", numpy.float32), *cpu_batchnorm._ROWS["stats"],
               *cpu_batchnorm._STATS, *cpu_batchnorm._ROWS["bwd_sums"],
               cpu_batchnorm._forward_rows_serial, cpu_batchnorm._backward_rows_serial]
used = [d for d in dispatchers if d.signatures]
print(sum(sum(d.stats.cache_misses.values()) for d in used),
      sum(sum(d.stats.cache_hits.values()) for d in used), len(used))
"""


def _run(code, env, *args):
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def test_import_compiles_nothing_and_does_not_load_numba():
    done = _run(
        "import sys, gpunet, gpunet.functional, gpunet.nn, gpunet.train\n"
        "print('numba' in sys.modules, 'matplotlib' in sys.modules)",
        dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_a_second_process_compiles_nothing(tmp_path):
    env = dict(os.environ, GPUNET_CACHE_DIR=str(tmp_path / "cache"))
    first = _run(STEP, env)
    assert first.returncode == 0, first.stderr
    misses, hits, used = (int(v) for v in first.stdout.split())
    assert misses == used and hits == 0  # an empty cache: every kernel compiled
    second = _run(STEP, env)
    assert second.returncode == 0, second.stderr
    misses, hits, used = (int(v) for v in second.stdout.split())
    assert misses == 0 and hits == used and used >= 5  # serial, parallel, activation kernels


def test_an_unwritable_cache_compiles_in_memory_with_one_warning():
    env = dict(os.environ, GPUNET_CACHE_DIR="/proc/gpunet-cannot-write-here")
    done = _run(STEP, env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("CacheWarning: gpunet's kernel cache cannot be written") == 1


def test_no_plot_and_the_info_command(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "gpunet", "train", "--out", str(out), "--epochs", "2", "--no-plot"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert not (out / "curves.png").exists() and (out / "history.json").exists()
    assert "curves.png" not in done.stdout
    env = dict(os.environ, GPUNET_CACHE_DIR=str(tmp_path / "c"))
    info = subprocess.run(
        [sys.executable, "-m", "gpunet", "info"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert info.returncode == 0 and f"kernel cache: {tmp_path / 'c'}:" in info.stdout


@pytest.mark.parametrize("module", ["gpunet.kernels.shared.numba_cache"])
def test_cache_names_keep_dtypes_and_builds_apart(module):
    import numpy

    from gpunet.kernels.numba_cpu import activations as cpu_activations
    from gpunet.kernels.numba_cpu import batchnorm as cpu_batchnorm
    from gpunet.kernels.numba_cpu import vector_math
    from gpunet.kernels.shared import activation_math

    f32 = cpu_activations.DEVICE_BY_DTYPE[numpy.float32]["gelu_fwd"].py_func.__qualname__
    f64 = cpu_activations.DEVICE_BY_DTYPE[numpy.float64]["gelu_fwd"].py_func.__qualname__
    assert f32 != f64 and "float32" in f32 and "float64" in f64
    from gpunet.kernels.shared.numba_cache import source_hash

    # a change of the math: new names (float32 also calls vector_math's functions)
    assert f32.endswith(source_hash(activation_math, vector_math))
    assert f64.endswith(source_hash(activation_math))
    serial, parallel = cpu_batchnorm._STATS
    assert parallel.py_func.__qualname__ == serial.py_func.__qualname__ + "__parallel"


def test_first_run_compiles_the_backward_kernels_in_a_helper(tmp_path):
    """kernels/numba_cpu/warm.py: with an empty kernel cache, start() has the helper compile the
    forward half (BatchNorm forward, the loss) and compiles the backward half itself, with the
    signatures a training step uses -- so the training run then compiles none of them (compiles
    counted); with them cached it starts no process."""
    import subprocess
    import sys

    env = {**os.environ, "GPUNET_CACHE_DIR": str(tmp_path / "cache"), "GPUNET_PRECOMPILE": "1"}
    code = (
        "import sys\n"
        "from gpunet.kernels.numba_cpu import warm\n"
        "assert warm.needed()\n"
        "p = warm.start()\n"
        "assert p is not None and p.wait(timeout=300) == 0\n"
        "assert not warm.needed() and warm.start() is None\n"
        "from numba.core import dispatcher\n"
        "compiled = []\n"
        "orig = dispatcher.Dispatcher._compile_for_args\n"
        "def count(self, *a, **k):\n"
        "    misses = sum(self._cache_misses.values())\n"
        "    out = orig(self, *a, **k)\n"
        "    if sum(self._cache_misses.values()) > misses:  # compiled, not loaded\n"
        "        compiled.append(self.py_func.__name__)\n"
        "    return out\n"
        "dispatcher.Dispatcher._compile_for_args = count\n"
        "from gpunet.cli import main\n"
        "argv = ['train', '--no-progress', '--no-plot', '--epochs', '1', '--out', sys.argv[1]]\n"
        "assert main(argv) == 0\n"
        "print('COMPILED', sorted(set(compiled)))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(v for v in p.stdout.splitlines() if v.startswith("COMPILED"))
    assert line == "COMPILED []"  # every kernel of the run came from the cache


def test_a_convnets_parallel_builds_compile_in_a_helper_meanwhile_kernels_run_serially(
    monkeypatch,
):
    """kernels/numba_cpu/warm.py's start_parallel: while its helper runs, the CPU thread policy
    picks serial builds (so the training process never compiles a parallel build the helper is
    compiling); once it exits, the policy is as before. warm_parallel compiles the net's parallel
    builds and writes a marker naming their cache entries: with it in place (and the entries),
    start_parallel starts nothing; without it, it starts the helper on the spec."""
    import json

    from gpunet.config import CONFIG
    from gpunet.kernels.numba_cpu import batchnorm, warm
    from gpunet.kernels.shared import cpu_threads

    monkeypatch.setattr(CONFIG.found, "parallel_helper", None)
    monkeypatch.setattr(CONFIG.found, "last_matmul", float("-inf"))
    n = 1 << 22
    before = cpu_threads.parallel(n)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        CONFIG.found.parallel_helper = sleeper
        assert warm.parallel_pending() and not cpu_threads.parallel(n)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cpu_threads.parallel(n) == before and CONFIG.found.parallel_helper is None

    spec = {
        "convnet": {"channels": [4], "input_shape": [1, 8, 8], "hidden": [], "classes": 3,
                    "kernel_size": 3, "activation": "relu", "batchnorm": True},
        "batch": 4,
        "optimizer": "sgd",
    }  # fmt: skip
    monkeypatch.setenv("GPUNET_PRECOMPILE", "1")
    started = []
    monkeypatch.setattr(warm.subprocess, "Popen", lambda args, **kw: started.append(args) or 1)
    marker = warm._marker(spec)
    if marker is None:
        pytest.skip("the kernel cache cannot be written here")
    try:
        indexes = warm.warm_parallel(spec)
        assert warm._index_path(batchnorm._STATS[1]) in indexes  # BatchNorm's parallel stats
        assert cpu_threads.get_mode() == "auto"  # the block's choice did not outlive it
        assert warm.start_parallel(spec) is None and not started
        os.remove(marker)
        assert warm.start_parallel(spec) == 1 and CONFIG.found.parallel_helper == 1
        assert started[0][-2:] == ["--parallel", json.dumps(spec)]
    finally:
        if os.path.exists(marker):
            os.remove(marker)
