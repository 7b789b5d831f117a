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
    if GPU:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _numpy_backend_by_default():
    """Each test starts on the NumPy backend with the default kernel path and a fixed seed."""
    import gpunet
    gpunet.set_backend("numpy")
    gpunet.set_kernels("auto")
    gpunet.seed(0)
    yield
