"""Compile CUDA C with NVRTC through ctypes -- the compiler CuPy uses at run time -- on machines
without a GPU (NVRTC needs no device). The library comes from the nvidia-cuda-nvrtc wheel (test
extra, Linux x86-64); ``available()`` is False elsewhere."""
import ctypes
import glob
import os


def _library():
    try:
        import nvidia.cuda_nvrtc as pkg
    except ImportError:
        return None
    folder = list(pkg.__path__)[0]
    found = sorted(glob.glob(os.path.join(folder, "lib", "libnvrtc.so.*")))
    return ctypes.CDLL(found[0]) if found else None


_LIB = _library()


def available():
    return _LIB is not None


def compile_ptx(source, options=("-std=c++14", "--gpu-architecture=compute_90"), name="gpunet.cu"):
    """Returns (ok, log). Like cupy.RawModule(code=source, options=...) up to the PTX."""
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
