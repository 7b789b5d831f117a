"""Test set-up: GPU detection, Numba's CUDA simulator on machines without a GPU, the `gpu` mark.

The simulator must be switched on before Numba is first imported, so this runs at the very top,
before anything imports gpunet.
"""

import os
import shutil
import subprocess

# no compile-ahead helper processes while the suite trains (tests/test_startup.py tests it)
os.environ.setdefault("GPUNET_PRECOMPILE", "0")


def _gpu_present() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _gpu_expected() -> bool:
    """True where a GPU test must not skip: GPUNET_REQUIRE_GPU=1 (scripts/gpu_check.sh sets it),
    or a machine whose nvidia-smi answers. There a broken CuPy is a failure, not a quiet skip."""
    if os.environ.get("GPUNET_REQUIRE_GPU") == "1":
        return True
    if not shutil.which("nvidia-smi"):
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


GPU = _gpu_present()
GPU_EXPECTED = _gpu_expected()
if not GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    # BatchNorm's CPU-implementation fixture multiplies every case by 3; on the GPU paths the CPU
    # implementation does not run, so one copy of each GPU case is enough.
    redundant = [item for item in items if _gpu_copy_of_cpu_variant(item)]
    if redundant:
        config.hook.pytest_deselected(items=redundant)
        items[:] = [item for item in items if not _gpu_copy_of_cpu_variant(item)]
    if GPU or GPU_EXPECTED:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _gpu_copy_of_cpu_variant(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return params.get("cpu_implementation", "cpu-serial") != "cpu-serial" and params.get(
        "path", "numpy"
    ) not in ("numpy", "cpu-kernels", "cpu-parallel")


@pytest.fixture(autouse=True)
def _numpy_backend_by_default():
    """Each test starts on the NumPy backend with the default kernel path and a fixed seed, and
    gpunet's whole configuration (gpunet.config.CONFIG) is put back after it."""
    import gpunet
    from gpunet.config import CONFIG

    saved = CONFIG.snapshot()
    CONFIG.found.thread_watch = None  # a stall seen under load in one test stays in that test
    gpunet.set_backend("numpy")
    gpunet.set_kernels("auto")
    gpunet.set_cpu_kernels("auto")
    gpunet.set_cpu_blas(os.environ.get("GPUNET_CPU_BLAS", "auto"))
    gpunet.seed(0)
    yield
    CONFIG.restore(saved)


def pytest_runtest_setup(item):
    if GPU_EXPECTED and not GPU and "gpu" in item.keywords:
        pytest.fail(
            "a GPU is expected here (nvidia-smi answers or GPUNET_REQUIRE_GPU=1) but CuPy "
            "cannot use it: see `python -m gpunet info`",
            pytrace=False,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where a GPU is expected, a GPU test that skips itself has failed."""
    outcome = yield
    report = outcome.get_result()
    if GPU_EXPECTED and report.skipped and "gpu" in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"GPU test skipped on a GPU machine: {report.longrepr}"
