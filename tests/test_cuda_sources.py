"""The CUDA C sources compile with the machine's nvcc (skipped with a reason when nvcc is absent).

CuPy compiles the same text with NVRTC at run time; this catches syntax and type errors on
machines without a GPU.
"""

import functools
import json
import os
import shutil
import subprocess
import sys

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
@pytest.mark.parametrize("arch", nvrtc.ARCHITECTURES)
@pytest.mark.parametrize("unit", sorted(kernels.TRANSLATION_UNITS))
def test_translation_unit_compiles_with_nvrtc(unit, arch):
    """Exactly what cupy.RawModule compiles at run time, with CuPy's options (-ftz=true,
    -arch=sm_XX, --device-as-default-execution-space): no host headers, no nvcc defaults."""
    ok, log = nvrtc.compile_ptx(kernels.unit_source(unit), nvrtc.cupy_options(arch))
    assert ok, log
    assert "warning" not in log.lower(), log


@pytest.mark.skipif(
    not nvrtc.available(), reason="NVRTC not installed (the nvidia-cuda-nvrtc wheel)"
)
@pytest.mark.parametrize("arch", nvrtc.ARCHITECTURES)
@pytest.mark.parametrize("ctype", ["float", "double"])
def test_elementwise_operations_compile_with_nvrtc(ctype, arch):
    from gpunet.kernels.cupy import elementwise_ops

    ok, log = nvrtc.compile_ptx(
        "\n".join(_emulated_elementwise(d, ctype) for d in elementwise_ops.all_ops()),
        nvrtc.cupy_options(arch, options=()),
    )
    assert ok, log


def test_nvrtc_options_are_cupys_and_fail_a_bad_kernel():
    """The options reach NVRTC (an unknown architecture is refused) and a kernel that does not
    type-check fails: the compile test above can fail."""
    if not nvrtc.available():
        pytest.skip("NVRTC not installed (the nvidia-cuda-nvrtc wheel)")
    assert nvrtc.cupy_options("sm_90") == (
        "-std=c++14",
        "-ftz=true",
        "-arch=sm_90",
        "--device-as-default-execution-space",
    )
    good = 'extern "C" __global__ void k(float *y) { y[threadIdx.x] = 1.0f; }'
    assert nvrtc.compile_ptx(good, nvrtc.cupy_options("sm_90"))[0]
    assert not nvrtc.compile_ptx(good, nvrtc.cupy_options("sm_1"))[0]
    bad = 'extern "C" __global__ void k(float *y) { y[threadIdx.x] = undeclared; }'
    ok, log = nvrtc.compile_ptx(bad, nvrtc.cupy_options("sm_90"))
    assert not ok and "undeclared" in log


NUMBA_PTX = os.path.join(os.path.dirname(__file__), "numba_ptx.py")


@functools.cache
def _numba_cuda_compiles():
    """None when numba-cuda and NVVM are there, else why not."""
    try:
        import importlib.metadata

        importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        return "numba-cuda not installed (test extra, Linux x86-64)"
    probe = subprocess.run(
        [sys.executable, "-c", "from numba.cuda.cudadrv import nvvm; nvvm.NVVM()"],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"NVVM not found: {probe.stderr[-300:]}"


@pytest.mark.parametrize("cc", ["8.0", "9.0"])
def test_numba_cuda_kernels_compile_to_ptx(cc):
    """Every Numba CUDA kernel, with the argument types of its real launches, compiled to PTX by
    numba-cuda's real CUDA target (tests/numba_ptx.py) -- the simulator never compiles them."""
    why = _numba_cuda_compiles()
    if why:
        pytest.skip(why)
    from gpunet.kernels.activation_table import ACTIVATIONS

    done = subprocess.run(
        [sys.executable, NUMBA_PTX, cc],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    compiled = json.loads(done.stdout.strip().splitlines()[-1])
    kernels_by_name = {}
    for key in compiled:
        name = key.split("(")[0]
        kernels_by_name[name] = kernels_by_name.get(name, 0) + 1
    activation_kernels = [
        k for k in kernels_by_name if k.startswith(("_fwd_kernel", "_bwd_kernel"))
    ]
    assert len(activation_kernels) == 2 * 2 * len(ACTIVATIONS)  # fwd, bwd x float32, float64
    for name in ("_prelu_fwd", "_prelu_bwd", "_maxout_fwd", "_maxout_bwd", "_stats_partial"):
        assert kernels_by_name[name] == 2, name  # one signature per dtype
    for name in ("_stats_finalize", "_apply", "_bwd_partial", "_bwd_finalize", "_dx") + (
        "_stats_partial_rows",
        "_bwd_partial_rows",
    ):
        assert kernels_by_name[name] == 2, name
    assert all(size > 1000 for size in compiled.values())
