"""What the compiled CUDA code of the CuPy path is, read without a GPU: NVRTC (the compiler CuPy
uses at run time, from the ``nvidia-cuda-nvrtc`` wheel) with CuPy's own options to a cubin, then
``cuobjdump`` (the ``nvidia-cuda-cuobjdump`` wheel, or the CUDA toolkit) for each kernel's
resources and SASS, and the CUDA occupancy rules of the target architecture.

    cubin = compile_cubin(unit_source("batchnorm"), "sm_90")
    usage = resource_usage(cubin)      # {"bn_stats_rows_float": Resources(registers=40, ...)}
    code = sass(cubin)                 # {"bn_stats_rows_float": "...LDG.E.128 ..."}
    occupancy(usage[k], threads=256, arch="sm_90")   # resident blocks per SM

Everything here is static: it says what the code *is* (registers, stack, spills, load widths,
calls), never how fast it runs.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from gpunet.kernels.cupy import launch

__all__ = [
    "ARCHITECTURES",
    "Resources",
    "available",
    "compile_cubin",
    "cupy_options",
    "find_nvrtc",
    "find_tool",
    "occupancy",
    "resource_usage",
    "sass",
]

#: where the NVRTC wheels put the library, under each folder of the ``nvidia`` namespace package:
#: CUDA 12 (nvidia-cuda-nvrtc-cu12) and CUDA 13 (nvidia-cuda-nvrtc 13, all libraries in cu13/lib)
NVRTC_LAYOUTS = ("cuda_nvrtc/lib/libnvrtc.so.*", "cu13/lib/libnvrtc.so.*")
#: where the cuobjdump / nvdisasm wheels put the programs
TOOL_LAYOUTS = ("cu13/bin/{name}", "cuda_{name}/bin/{name}", "cu12/bin/{name}")


#: the architectures we target and the occupancy limits of their parts (kernels/cupy/launch.py)
ARCHITECTURES = {"sm_80": launch.A100, "sm_90": launch.H100}


def _nvidia_roots() -> list:
    try:
        import nvidia
    except ImportError:
        return []
    return list(nvidia.__path__)


def find_nvrtc(roots: list | None = None) -> str | None:
    """Path of libnvrtc from an NVIDIA wheel under ``roots`` (default: the ``nvidia`` package's
    folders), newest CUDA major first; None if there is none."""
    roots = _nvidia_roots() if roots is None else roots
    found = [p for r in roots for lay in NVRTC_LAYOUTS for p in glob.glob(os.path.join(r, lay))]
    found = [p for p in found if os.path.basename(p).split(".so.")[-1].split(".")[0].isdigit()]
    found.sort(key=lambda p: int(os.path.basename(p).split(".so.")[-1].split(".")[0]), reverse=True)
    return found[0] if found else None


def find_tool(name: str) -> str | None:
    """``cuobjdump`` or ``nvdisasm``: from an NVIDIA wheel, else the CUDA toolkit, else PATH."""
    for root in _nvidia_roots():
        for layout in TOOL_LAYOUTS:
            path = os.path.join(root, layout.format(name=name))
            if os.access(path, os.X_OK):
                return path
    for candidate in (f"/usr/local/cuda/bin/{name}", shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


_NVRTC: ctypes.CDLL | None = None


def _nvrtc() -> ctypes.CDLL:
    global _NVRTC
    if _NVRTC is None:
        path = find_nvrtc()
        if path is None:
            raise RuntimeError("NVRTC not found: pip install nvidia-cuda-nvrtc-cu12")
        _NVRTC = ctypes.CDLL(path)
    return _NVRTC


def available() -> str | None:
    """None if NVRTC, cuobjdump and nvdisasm (which ``cuobjdump -sass`` runs) are here, else
    what is missing."""
    tools = (("NVRTC", find_nvrtc()), *((n, find_tool(n)) for n in ("cuobjdump", "nvdisasm")))
    missing = [n for n, ok in tools if not ok]
    return (
        f"{' and '.join(missing)} not installed (the [test] extra's NVIDIA wheels)"
        if missing
        else None
    )


def cupy_options(arch: str, options: tuple = ("-std=c++14",)) -> tuple:
    """The options CuPy 14 hands NVRTC for ``RawModule(code, options=options)`` on a GPU of
    architecture ``arch``: the module's own options, then ``-ftz=true`` (appended unconditionally
    in cupy/cuda/compiler.py ``_compile_with_cache_cuda``), ``-arch=sm_XX`` (``compile_using_nvrtc``
    asks for a cubin where NVRTC knows the architecture) and, from NVRTC 12 on,
    ``--device-as-default-execution-space``."""
    return (*options, "-ftz=true", f"-arch={arch}", "--device-as-default-execution-space")


@functools.lru_cache(maxsize=64)
def _compile(source: str, options: tuple) -> tuple:
    """(ok, log, cubin or None) of one NVRTC compile. Remembered for the process: the static
    checks and the compile tests read the same units with the same options (each batchnorm
    compile takes some 10 s)."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    name = b"gpunet.cu"
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name, 0, None, None)
    if rc != 0:
        raise RuntimeError(f"nvrtcCreateProgram failed ({rc})")
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        ok = lib.nvrtcCompileProgram(prog, len(options), opts) == 0
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        cubin = None
        # a cubin exists where the options name a real architecture (-arch=sm_XX), not compute_XX
        if ok and lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)) == 0 and size.value:
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetCUBIN(prog, buf)
            cubin = buf.raw
        return ok, log.value.decode(errors="replace"), cubin
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_log(source: str, options: tuple) -> tuple:
    """(ok, log) of an NVRTC compile, like ``cupy.RawModule(code=source, options=...)``."""
    ok, log, _ = _compile(source, tuple(options))
    return ok, log


def compile_cubin(source: str, arch: str = "sm_90", options: tuple = ("-std=c++14",)) -> bytes:
    """The cubin CuPy would load for ``source`` on an ``arch`` GPU."""
    ok, log, cubin = _compile(source, cupy_options(arch, tuple(options)))
    if not ok or cubin is None:
        raise RuntimeError(f"NVRTC failed for {arch}:\n{log}")
    return cubin


@functools.lru_cache(maxsize=64)
def _cuobjdump(cubin: bytes, *flags: str) -> str:
    tool = find_tool("cuobjdump")
    if tool is None:
        raise RuntimeError(
            "cuobjdump not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm"
        )
    env = dict(os.environ)
    disasm = find_tool("nvdisasm")  # cuobjdump -sass runs it, found on PATH or NVDISASM_PATH
    if disasm:
        env["PATH"] = os.pathsep.join([os.path.dirname(disasm), env.get("PATH", "")])
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run([tool, *flags, f.name], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"cuobjdump {' '.join(flags)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Resources:
    """Per thread: registers, stack frame and spill ("local") bytes; per block: static shared
    memory bytes."""

    registers: int
    stack: int
    shared: int
    local: int


def resource_usage(cubin: bytes) -> dict:
    """kernel name -> ``Resources``, from ``cuobjdump -res-usage``."""
    text = _cuobjdump(cubin, "-res-usage")
    out, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            name = m.group(1)
            continue
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if m and name:
            out[name] = Resources(*(int(v) for v in m.groups()))
            name = None
    return out


def sass(cubin: bytes) -> dict:
    """kernel name -> its SASS text (``cuobjdump -sass``)."""
    text = _cuobjdump(cubin, "-sass")
    out: dict = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            name = m.group(1)
            out[name] = []
            continue
        if name:
            out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def occupancy(res: Resources, threads: int, arch: str = "sm_90", dynamic_shared: int = 0) -> int:
    """Resident blocks of ``threads`` threads per SM of ``arch``: launch.resident_blocks, the one
    occupancy rule the host's grids follow too."""
    return launch.resident_blocks(
        res.registers, res.shared + dynamic_shared, threads, ARCHITECTURES[arch]
    )
