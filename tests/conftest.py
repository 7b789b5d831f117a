"""Test set-up: GPU detection, Numba's CUDA simulator on machines without a GPU, the `gpu` mark.

The simulator must be switched on before Numba is first imported, so this runs at the very top,
before anything imports gpunet.
"""
import os


def _gpu_present() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


GPU = _gpu_present()
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
    if GPU:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _gpu_copy_of_cpu_variant(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return (params.get("cpu_implementation", "cpu-serial") != "cpu-serial"
            and params.get("path", "numpy") not in ("numpy", "cpu-kernels"))


@pytest.fixture(autouse=True)
def _numpy_backend_by_default():
    """Each test starts on the NumPy backend with the default kernel path and a fixed seed."""
    import gpunet
    gpunet.set_backend("numpy")
    gpunet.set_kernels("auto")
    gpunet.seed(0)
    yield
