"""Defects of the GPU path that need no GPU to show: float32 Numba math, the GPU test run that
looked cleaner than it was, installs that could not compile a kernel, the Numba launch device.
(The defects that need a kernel to run are in test_emulated.py.)"""

import os
import re
import subprocess
import sys
import types

import numba
import numpy
import pytest
import tomllib

from gpunet.config import CONFIG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _native_ir(dispatcher, signature):
    """The LLVM IR of the compiled function itself (not the CPython wrapper, which boxes floats
    through doubles whatever the function computes in)."""
    ir = dispatcher.inspect_llvm(signature)
    functions = re.split(r"\n(?=define )", ir)
    return "\n".join(
        f for f in functions if f.startswith("define") and "cpython" not in f.splitlines()[0]
    )


def test_float32_activation_math_stays_float32():
    """Defect 5: Python float literals promoted the float32 kernels to float64 (e.g. hundreds of
    double instructions in GELU). The shared math (activation_math.py, compiled for Numba CUDA
    and CPU alike) now has no double in its float32 code."""
    from gpunet.kernels.shared import activation_math

    # compiled afresh (not from the disk cache, whose code Numba cannot show), as the kernels do
    compiled = activation_math.compile_all(numba.njit, numpy.float32)
    for name in activation_math.ORDER:
        if name == "kink":
            continue
        arity = 4 if name.endswith("_bwd") else 3 if name.endswith("_fwd") else 1  # helpers: 1
        signature = (numba.float32,) * arity
        compiled[name].compile(signature)
        ir = _native_ir(compiled[name], signature)
        assert "double" not in ir, f"{name} computes in float64 for float32 input"
    # the check can fail: a float64 literal in a float32 function shows up as double
    promoted = numba.njit(lambda x, a, b: 0.5 * x)
    promoted.compile((numba.float32,) * 3)
    assert "double" in _native_ir(promoted, (numba.float32,) * 3)


def test_cuda_extras_bring_nvrtc_and_headers():
    """Defect 7: cupy-cuda1Nx 14 takes NVRTC and the CUDA headers from its `ctk` extra."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert any(r.startswith("cupy-cuda12x[ctk]") for r in extras["cuda12"])
    assert any(r.startswith("cupy-cuda13x[ctk]") for r in extras["cuda13"])


def test_nvrtc_helper_finds_both_wheel_layouts(tmp_path):
    """Defect 7: the CUDA 13 wheels put every library in nvidia/cu13/lib."""
    import nvrtc

    cu12 = tmp_path / "a" / "cuda_nvrtc" / "lib"
    cu13 = tmp_path / "b" / "cu13" / "lib"
    for folder, name in ((cu12, "libnvrtc.so.12"), (cu13, "libnvrtc.so.13")):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b"")
    assert nvrtc.find_library([str(tmp_path / "a")]) == str(cu12 / "libnvrtc.so.12")
    assert nvrtc.find_library([str(tmp_path / "b")]) == str(cu13 / "libnvrtc.so.13")
    assert nvrtc.find_library([str(tmp_path / "a"), str(tmp_path / "b")]).endswith("libnvrtc.so.13")
    assert nvrtc.find_library([str(tmp_path / "nothing")]) is None


def test_numba_launch_uses_cupys_current_device(monkeypatch):
    """Defect 8: on a multi-GPU machine the Numba path launched on Numba's default device, not on
    CuPy's current one (where the arrays are)."""
    from gpunet.kernels.numba_cuda import support as numba_support

    entered = []

    class Gpu:
        def __init__(self, i):
            self.i = i

        def __enter__(self):
            entered.append(self.i)

        def __exit__(self, *exc):
            return False

    class Kernel:
        def __getitem__(self, config):
            def run(*args):
                entered.append(("launch", config[2]))

            return run

    class Gpus:
        def __getitem__(self, i):
            return Gpu(i)

    fake_cuda = types.SimpleNamespace(
        gpus=Gpus(),
        default_stream=lambda: "stream-on-current",
        external_stream=lambda ptr: f"stream-{ptr}",
        as_cuda_array=lambda a, sync: a,
    )
    fake_cupy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(
            Device=lambda: types.SimpleNamespace(id=1),
            get_current_stream=lambda: types.SimpleNamespace(ptr=0),
        )
    )
    monkeypatch.setattr(numba_support, "SIMULATOR", False)
    monkeypatch.setattr(numba_support, "cuda", fake_cuda)
    monkeypatch.setattr(CONFIG.found, "numba_streams", {})
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    numba_support.launch(Kernel(), 1, 32)
    assert entered == [1, ("launch", "stream-on-current")]


def test_a_numba_test_fails_instead_of_running_cupy(monkeypatch):
    """Defect 6: once the Numba path had fallen back, every later "numba" test ran the CuPy
    kernels and passed. The parity harness now fails such a test."""
    import parity

    monkeypatch.setitem(CONFIG.found.numba_cuda, "problem", "numba-cuda is broken (planted)")
    with pytest.raises(pytest.fail.Exception, match="Numba CUDA path is unusable here .*planted"):
        parity.run("numba", lambda x: x, numpy.ones(3))


def test_gpu_tests_fail_where_a_gpu_is_expected():
    """Defect 6: with GPUNET_REQUIRE_GPU=1 (set by scripts/gpu_check.sh) or an answering
    nvidia-smi, a GPU test that cannot run is a failure, not a skip."""
    env = dict(os.environ, GPUNET_REQUIRE_GPU="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "gpu",
            "tests/test_backend.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    last = done.stdout.splitlines()[-1]
    assert re.search(r"\b\d+ (failed|errors?)\b", last) and "skipped" not in last
    assert "a GPU is expected here" in done.stdout


def test_gpu_check_script_keeps_every_summary_line():
    """Defect 6: the GPU script cut its log and did not fail on skips; now each part has its own
    limit, log and summary line, and it exits non-zero when any part fails or has no summary."""
    with open(os.path.join(ROOT, "scripts", "gpu_check.sh")) as f:
        script = f.read()
    assert "GPUNET_REQUIRE_GPU=1" in script and "tail -60" not in script
    for part in ("cupy", "numba", "e2e"):
        assert re.search(rf"run_pytest {part} \d+", script)
    assert "exit $status" in script
    assert (
        subprocess.run(["bash", "-n", os.path.join(ROOT, "scripts", "gpu_check.sh")]).returncode
        == 0
    )
