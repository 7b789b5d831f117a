"""Compile CUDA C with NVRTC through ctypes -- the compiler CuPy uses at run time -- on machines
without a GPU (NVRTC needs no device). The library comes from the nvidia-cuda-nvrtc wheel (test
extra, Linux x86-64); ``available()`` is False elsewhere. The work is done by
gpunet.bench.cuda_tools, which also reads the compiled code (gpunet-static checks)."""

from gpunet.bench import cuda_tools

find_library = cuda_tools.find_nvrtc
cupy_options = cuda_tools.cupy_options

#: the architectures CuPy compiles for on the GPUs we target: A100 (sm_80), H100/H200 (sm_90)
ARCHITECTURES = tuple(cuda_tools.ARCHITECTURES)


def available():
    return cuda_tools.find_nvrtc() is not None


def compile_ptx(source, options=("-std=c++14", "--gpu-architecture=compute_90"), name="gpunet.cu"):
    """Returns (ok, log). Like cupy.RawModule(code=source, options=...) up to the binary."""
    return cuda_tools.compile_log(source, tuple(options))
