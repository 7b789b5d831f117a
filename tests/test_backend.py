"""Backend dispatch, kernel-path selection, seeding, and working without CuPy."""

import logging
import subprocess
import sys

import numpy
import pytest
from conftest import GPU

import gpunet
from gpunet import backend
from gpunet.config import CONFIG


def test_numpy_backend_and_helpers():
    assert gpunet.set_backend("numpy") == "numpy"
    assert gpunet.get_backend() == "numpy"
    a = gpunet.asarray([1.0, 2.0], dtype=numpy.float32)
    assert isinstance(a, numpy.ndarray) and a.dtype == numpy.float32
    assert gpunet.get_array_module(a, None, 3.0) is numpy
    numpy.testing.assert_array_equal(gpunet.to_numpy(a), [1.0, 2.0])
    assert gpunet.device_name() == "CPU"


def test_unknown_backend_and_kernels_names():
    with pytest.raises(
        ValueError, match=r"backend must be one of \['auto', 'numpy', 'cupy'\], got 'tpu'"
    ):
        gpunet.set_backend("tpu")
    with pytest.raises(ValueError, match="kernels must be one of"):
        gpunet.set_kernels("triton")


def test_settings_from_the_environment_are_read_once_and_checked(monkeypatch):
    """gpunet.config: an unset choice takes its environment variable on first use, a bad one
    names the variable; ``using`` sets and restores one block's choices."""
    from gpunet import config

    monkeypatch.setattr(CONFIG, "settings", config.Settings())
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "numba-serial")
    assert gpunet.get_cpu_kernels() == "numba-serial"
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "numpy")  # read once: no effect now
    assert gpunet.get_cpu_kernels() == "numba-serial"
    monkeypatch.setattr(CONFIG, "settings", config.Settings())
    monkeypatch.setenv("GPUNET_KERNELS", "opencl")
    with pytest.raises(
        ValueError, match=r"kernels must be one of .*'opencl' \(from GPUNET_KERNELS\)"
    ):
        gpunet.get_kernels()
    gpunet.set_cpu_kernels("auto")
    with config.using(cpu_kernels="numpy", cpu_blas="numpy"):
        assert (gpunet.get_cpu_kernels(), gpunet.get_cpu_blas()) == ("numpy", "numpy")
    assert gpunet.get_cpu_kernels() == "auto"
    with pytest.raises(TypeError, match="unknown settings"):
        with config.using(threads=2):
            pass


@pytest.mark.skipif(GPU, reason="checks the error raised where no GPU is usable")
def test_cupy_requested_without_gpu_says_what_is_missing():
    with pytest.raises(
        gpunet.BackendError, match=r"backend 'cupy' was requested but .*(CuPy|driver|device)"
    ):
        gpunet.set_backend("cupy")


@pytest.mark.skipif(GPU, reason="auto falls back only where no GPU is usable")
def test_auto_falls_back_to_numpy_and_logs_once(caplog):
    with caplog.at_level(logging.INFO, logger="gpunet"):
        assert gpunet.set_backend("auto") == "numpy"
    assert any("gpunet backend: numpy" in r.getMessage() for r in caplog.records)


def test_environment_variable_selects_backend():
    code = "import gpunet; print(gpunet.get_backend())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**_env(), "GPUNET_BACKEND": "numpy"},
        check=True,
    )
    assert out.stdout.strip() == "numpy"
    bad = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**_env(), "GPUNET_BACKEND": "opencl"},
    )
    assert bad.returncode != 0 and "backend must be one of" in bad.stderr


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "GPUNET_BACKEND"}


def test_imports_and_works_with_cupy_absent():
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import numpy, gpunet\n"
        "from gpunet import functional as F\n"
        "print(gpunet.set_backend('auto'), F.relu(numpy.array([-1.0, 2.0])).tolist())\n"
        "try:\n    gpunet.set_backend('cupy')\nexcept gpunet.BackendError as e:\n    "
        "print('ERR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    first, second = out.stdout.strip().splitlines()
    assert first == "numpy [0.0, 2.0]"
    assert second.startswith("ERR backend 'cupy' was requested but CuPy does not import")
    assert "pip install 'gpunet[cuda12]'" in second


def test_seed_makes_host_draws_reproducible():
    gpunet.seed(123)
    a = backend.host_rng().normal(size=5)
    gpunet.seed(123)
    b = backend.host_rng().normal(size=5)
    numpy.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        gpunet.seed(-1)


def test_use_kernels_restores_previous_choice():
    gpunet.set_kernels("cupy")
    with gpunet.use_kernels("numba"):
        assert gpunet.get_kernels() == "numba"
    assert gpunet.get_kernels() == "cupy"


def test_numba_unusable_falls_back_with_one_warning(monkeypatch):
    from gpunet import dispatch as kernel_path

    monkeypatch.setattr(CONFIG.found, "numba_cuda", {"problem": "no CUDA target"})
    monkeypatch.setattr(CONFIG.found, "warned", set())
    gpunet.set_kernels("numba")
    with pytest.warns(
        gpunet.KernelFallbackWarning,
        match=r"Numba CUDA kernels are unusable here \(no CUDA target\)",
    ):
        assert kernel_path.gpu_path(10) == "cupy"
    assert kernel_path.gpu_path(10) == "cupy"  # once: no second warning (warnings are errors)


@pytest.mark.gpu
def test_cupy_round_trip_and_same_seed_same_values():
    import cupy

    gpunet.set_backend("cupy")
    a = gpunet.asarray(numpy.arange(4.0))
    assert isinstance(a, cupy.ndarray) and gpunet.get_array_module(a) is cupy
    numpy.testing.assert_array_equal(gpunet.to_numpy(a), numpy.arange(4.0))
    gpunet.set_backend("numpy")
    assert isinstance(gpunet.asarray(a), numpy.ndarray)


@pytest.mark.gpu
def test_numba_path_really_runs_numba_on_gpu():
    from gpunet.dispatch import numba_cuda_problem

    assert numba_cuda_problem() is None


@pytest.mark.skipif(GPU, reason="checks the error raised where no GPU is usable")
def test_module_to_cupy_without_gpu_is_a_clear_error():
    from gpunet import nn

    with pytest.raises(gpunet.BackendError, match="cannot move the module to 'cupy'"):
        nn.Linear(2, 3).to("cupy")
    with pytest.raises(ValueError, match="backend must be 'numpy' or 'cupy'"):
        nn.Linear(2, 3).to("tpu")


def test_auto_follows_a_measured_table_for_this_device(tmp_path, monkeypatch):
    from gpunet import dispatch as kernel_path
    from gpunet.bench.activations import auto_table

    monkeypatch.setenv("GPUNET_KERNEL_TABLE", str(tmp_path / "table.json"))
    monkeypatch.setattr(kernel_path, "current_device", lambda: "Test GPU")
    monkeypatch.setattr(CONFIG.found, "numba_cuda", {"problem": None})
    monkeypatch.setattr(CONFIG.found, "kernel_table", None)
    # measured: numba faster at 1M values only
    totals = {
        (256, "cupy"): 1.0,
        (256, "numba"): 2.0,
        (4096, "cupy"): 1.0,
        (4096, "numba"): 3.0,
        (1 << 20, "cupy"): 2.0,
        (1 << 20, "numba"): 1.0,
    }
    rows = auto_table(totals)
    assert rows == [((1 << 20) - 1, "cupy"), (2**62, "numba")]
    kernel_path.save_table(rows)
    gpunet.set_kernels("auto")
    assert kernel_path.gpu_path(1000) == "cupy"
    assert kernel_path.gpu_path(1 << 21) == "numba"
    gpunet.set_kernels("cupy")  # an explicit choice wins over the table
    assert kernel_path.gpu_path(1 << 21) == "cupy"
    # a table measured on another card is ignored
    kernel_path.save_table(rows, device="Other GPU")
    gpunet.set_kernels("auto")
    assert kernel_path.gpu_path(1 << 21) == "cupy"
    # and numba unusable: auto stays on CuPy without a warning
    kernel_path.save_table(rows)
    monkeypatch.setattr(CONFIG.found, "numba_cuda", {"problem": "broken"})
    assert kernel_path.gpu_path(1 << 21) == "cupy"


def test_cpu_auto_routes_as_documented():
    """The ``auto`` rules of gpunet/dispatch.py's docstring, for NumPy arrays."""
    from gpunet.dispatch import path_name

    big32 = numpy.zeros(10_000, numpy.float32)
    big64 = big32.astype(numpy.float64)
    with gpunet.use_cpu_kernels("auto"):
        for op in ("relu", "sigmoid", "elu", "selu", "gelu", "gelu_tanh", "silu"):
            assert path_name(op, big32) == "numba-cpu", op
            assert path_name(op, big64) == "numba-cpu", op
            assert path_name(op, big32[:10]) == "numpy", op  # under 4096 values
            assert path_name(op, big32[::2]) == "numpy", op  # not contiguous
        for op in ("softplus", "tanh"):  # float32 only
            assert path_name(op, big32) == "numba-cpu", op
            assert path_name(op, big64) == "numpy", op
        assert path_name("batchnorm", big32[:10]) == "numba-cpu"  # any size
    with gpunet.use_cpu_kernels("numpy"):
        assert path_name("sigmoid", big32) == "numpy"
    with gpunet.use_cpu_kernels("numba"):
        assert path_name("tanh", big32[:10]) == "numba-cpu"
