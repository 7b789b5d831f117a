"""Compile CUDA C with NVRTC through ctypes -- the compiler CuPy uses at run time -- on machines
without a GPU (NVRTC needs no device). The library comes from the nvidia-cuda-nvrtc wheel (test
extra, Linux x86-64); ``available()`` is False elsewhere."""

import ctypes
import glob
import os

#: where the NVRTC wheels put the library, under each folder of the ``nvidia`` namespace package:
#: CUDA 12 (nvidia-cuda-nvrtc-cu12) and CUDA 13 (nvidia-cuda-nvrtc 13, all libraries in cu13/lib)
WHEEL_LAYOUTS = ("cuda_nvrtc/lib/libnvrtc.so.*", "cu13/lib/libnvrtc.so.*")


def find_library(roots=None):
    """Path of libnvrtc from an NVIDIA wheel under ``roots`` (default: the ``nvidia`` package's
    folders), newest CUDA major first; None if there is none."""
    if roots is None:
        try:
            import nvidia
        except ImportError:
            return None
        roots = list(nvidia.__path__)
    found = [
        p
        for root in roots
        for layout in WHEEL_LAYOUTS
        for p in glob.glob(os.path.join(root, layout))
    ]
    found = [p for p in found if os.path.basename(p).split(".so.")[-1].split(".")[0].isdigit()]
    found.sort(key=lambda p: int(os.path.basename(p).split(".so.")[-1].split(".")[0]), reverse=True)
    return found[0] if found else None


def _library():
    path = find_library()
    return ctypes.CDLL(path) if path else None


_LIB = _library()


def available():
    return _LIB is not None


#: the architectures CuPy compiles for on the GPUs we target: A100 (sm_80), H100/H200 (sm_90)
ARCHITECTURES = ("sm_80", "sm_90")


def cupy_options(arch, options=("-std=c++14",)):
    """The options CuPy 14 hands NVRTC for ``RawModule(code, options=options)`` on a GPU of
    architecture ``arch``: the module's own options, then ``-ftz=true`` (appended unconditionally
    in cupy/cuda/compiler.py ``_compile_with_cache_cuda``), ``-arch=sm_XX`` (``compile_using_nvrtc``
    asks for a cubin where NVRTC knows the architecture) and, from NVRTC 12 on,
    ``--device-as-default-execution-space``."""
    return (*options, "-ftz=true", f"-arch={arch}", "--device-as-default-execution-space")


def compile_ptx(source, options=("-std=c++14", "--gpu-architecture=compute_90"), name="gpunet.cu"):
    """Returns (ok, log). Like cupy.RawModule(code=source, options=...) up to the binary."""
    prog = ctypes.c_void_p()
    rc = _LIB.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram failed ({rc})"
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = _LIB.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    _LIB.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    _LIB.nvrtcGetProgramLog(prog, log)
    _LIB.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, log.value.decode(errors="replace")
