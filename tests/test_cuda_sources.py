"""The CUDA C sources compile with the machine's nvcc (skipped with a reason when nvcc is absent).

CuPy compiles the same text with NVRTC at run time; this catches syntax and type errors on
machines without a GPU.
"""
import shutil
import subprocess

import pytest

from gpunet import kernels

NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")
@pytest.mark.parametrize("unit", sorted(kernels.TRANSLATION_UNITS))
def test_translation_unit_compiles(unit, tmp_path):
    src = tmp_path / f"{unit}.cu"
    src.write_text(kernels.unit_source(unit))
    proc = subprocess.run([NVCC, "-std=c++14", "-arch=sm_90", "-DGPUNET_INSTANTIATE_FOR_TESTS", "-c", str(src),
                           "-o", str(tmp_path / "o.o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr


def test_sources_ship_with_the_package():
    for files in kernels.TRANSLATION_UNITS.values():
        for f in files:
            assert "__global__" in kernels.read_source(f) or "__device__" in kernels.read_source(f)
