"""The CUDA C sources compile with the machine's nvcc (skipped with a reason when nvcc is absent).

CuPy compiles the same text with NVRTC at run time; this catches syntax and type errors on
machines without a GPU.
"""

import shutil
import subprocess

import pytest

from gpunet.kernels.cupy import sources as kernels

NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")
@pytest.mark.parametrize("unit", sorted(kernels.TRANSLATION_UNITS))
def test_translation_unit_compiles(unit, tmp_path):
    src = tmp_path / f"{unit}.cu"
    src.write_text(kernels.unit_source(unit))
    proc = subprocess.run(
        [
            NVCC,
            "-std=c++14",
            "-arch=sm_90",
            "-DGPUNET_INSTANTIATE_FOR_TESTS",
            "-c",
            str(src),
            "-o",
            str(tmp_path / "o.o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr


def test_sources_ship_with_the_package():
    for files in kernels.TRANSLATION_UNITS.values():
        for f in files:
            assert "__global__" in kernels.read_source(f) or "__device__" in kernels.read_source(f)


_C_TYPES = {"float64": "double", "float32": "float", "int32": "int", "int64": "long long"}


def _emulated_elementwise(definition, ctype):
    """The shape of the code CuPy generates for an ElementwiseKernel (preamble, then a kernel whose
    body declares the typedef, each input as a const value, each output as a reference)."""
    in_params, out_params, operation, name, files = definition
    params, body = [], [f"typedef {ctype} T;"]
    for decl in in_params.split(","):
        typ, var = decl.split()
        c = "T" if typ == "T" else _C_TYPES[typ]
        if typ == "T":
            params.append(f"const {ctype}* _raw_{var}")
            body.append(f"const T {var} = _raw_{var}[i];")
        else:
            params.append(f"const {c} {var}")
    for decl in out_params.split(","):
        _, var = decl.split()
        params.append(f"{ctype}* _raw_{var}")
        body.append(f"T &{var} = _raw_{var}[i];")
    body.append(operation + ";")
    source = "\n".join(kernels.read_source(f) for f in files)
    return (
        source + f'\nextern "C" __global__ void {name}({", ".join(params)}, long long n) {{\n'
        f"  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; "
        f"i += (long long)blockDim.x * gridDim.x) {{\n    " + "\n    ".join(body) + "\n  }\n}\n"
    )


@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")
@pytest.mark.parametrize("ctype", ["float", "double"])
def test_elementwise_operations_compile(ctype, tmp_path):
    """Every ElementwiseKernel operation with its preamble, under its real kernel name, in one file
    per type (the preambles' include guards keep one copy of each)."""
    from gpunet.kernels.cupy import elementwise_ops

    src = tmp_path / "elementwise.cu"
    src.write_text("\n".join(_emulated_elementwise(d, ctype) for d in elementwise_ops.all_ops()))
    proc = subprocess.run(
        [NVCC, "-std=c++14", "-arch=sm_90", "-c", str(src), "-o", str(tmp_path / "e.o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning" not in proc.stderr.lower(), proc.stderr[-3000:]


import nvrtc  # noqa: E402


@pytest.mark.skipif(
    not nvrtc.available(), reason="NVRTC not installed (the nvidia-cuda-nvrtc wheel)"
)
@pytest.mark.parametrize("unit", sorted(kernels.TRANSLATION_UNITS))
def test_translation_unit_compiles_with_nvrtc(unit):
    """Exactly what cupy.RawModule compiles at run time: no host headers, no nvcc defaults."""
    ok, log = nvrtc.compile_ptx(kernels.unit_source(unit))
    assert ok, log
    assert "warning" not in log.lower(), log


@pytest.mark.skipif(
    not nvrtc.available(), reason="NVRTC not installed (the nvidia-cuda-nvrtc wheel)"
)
@pytest.mark.parametrize("ctype", ["float", "double"])
def test_elementwise_operations_compile_with_nvrtc(ctype):
    from gpunet.kernels.cupy import elementwise_ops

    ok, log = nvrtc.compile_ptx(
        "\n".join(_emulated_elementwise(d, ctype) for d in elementwise_ops.all_ops())
    )
    assert ok, log
