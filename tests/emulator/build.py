"""Compile CUDA C for the CPU emulator: the real kernel sources behind ``cuda_emu.h``, with g++.

* ``raw_module(source)`` compiles a translation unit (the text CuPy's ``RawModule`` gets) with a
  launch wrapper per ``extern "C" __global__`` kernel, and returns the kernels' parameter lists
  and static shared memory, parsed from the preprocessed source, so that launches can be checked
  as the driver would.
* ``elementwise_library(...)`` turns one ``ElementwiseKernel`` definition into a loop over the
  elements of a broadcast shape, with any strides (CuPy's indexer), for float and double.

Shared libraries are cached by the hash of everything that goes into them (header, source,
compiler flags) under ``$GPUNET_EMU_CACHE`` (default: the system's temporary folder), so a test
run compiles each one once, and a later run none.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "cuda_emu.h")
CXX = os.environ.get("CXX", "g++")


def _has_fma() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return " fma" in f.read()
    except OSError:
        return False


#: -fsanitize=kernel-address: every load and store calls the __asan_* hooks of cuda_emu.h (no ASan
#: runtime); hidden symbols and no GNU_UNIQUE, so that each library (and its copy for concurrent
#: blocks) has its own __shared__ objects and emulator state; FMA contraction as NVRTC's --fmad=true
FLAGS = [
    "-std=c++20",
    "-O2",
    "-shared",
    "-fPIC",
    "-pthread",
    "-w",
    "-fsanitize=kernel-address",
    "--param=asan-instrumentation-with-call-threshold=0",
    "--param=asan-stack=0",
    "--param=asan-globals=0",
    "-fvisibility=hidden",
    "-fvisibility-inlines-hidden",
    "-fno-gnu-unique",
    "-g1",  # line tables: a fault names the source line of the access
    "-ffp-contract=fast",
    *(["-mfma"] if _has_fma() else []),
]
#: what a symbol exported to Python is declared with (the rest is hidden)
EXPORT = '__attribute__((visibility("default")))'
CACHE = os.environ.get("GPUNET_EMU_CACHE", os.path.join(tempfile.gettempdir(), "gpunet-cuda-emu"))

#: C scalar types of kernel parameters -> (NumPy dtype name, size in bytes)
C_TYPES = {
    "float": ("float32", 4),
    "double": ("float64", 8),
    "int": ("int32", 4),
    "unsigned int": ("uint32", 4),
    "long long": ("int64", 8),
    "unsigned long long": ("uint64", 8),
    "bool": ("bool", 1),
}
_SIZEOF = {name: size for name, (_, size) in C_TYPES.items()} | {"T": 8}

_lock = threading.Lock()
_loaded: dict = {}


class EmulatorBuildError(RuntimeError):
    """g++ rejected a source: the message carries its diagnostics."""


def _header_text() -> str:
    with open(HEADER, encoding="utf-8") as f:
        return f.read()


def _so_path(cpp_source: str) -> str:
    """The cached shared library of ``cpp_source`` (which includes cuda_emu.h), built once."""
    key = hashlib.sha256("\0".join([_header_text(), cpp_source, CXX, *FLAGS]).encode()).hexdigest()[
        :24
    ]
    os.makedirs(CACHE, exist_ok=True)
    so_path = os.path.join(CACHE, f"{key}.so")
    if not os.path.exists(so_path):
        cpp_path = os.path.join(CACHE, f"{key}.cpp")
        with open(cpp_path, "w", encoding="utf-8") as f:
            f.write(cpp_source)
        tmp = f"{so_path}.{os.getpid()}.tmp"
        done = subprocess.run(
            [CXX, *FLAGS, "-I", HERE, cpp_path, "-o", tmp], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise EmulatorBuildError(f"g++ failed on {cpp_path}:\n{done.stderr[-4000:]}")
        os.replace(tmp, so_path)
    return so_path


def compile_library(cpp_source: str, copy: int = 0) -> ctypes.CDLL:
    """The library of ``cpp_source``, loaded; ``copy`` > 0 loads another instance of it (its own
    __shared__ objects, barrier and thread pool), which runs blocks beside the first."""
    with _lock:
        so_path = _so_path(cpp_source)
        if (so_path, copy) in _loaded:
            return _loaded[(so_path, copy)]
        path = so_path
        if copy:
            path = f"{so_path[:-3]}.copy{copy}.so"  # the loader maps one file once
            if not os.path.exists(path):
                tmp = f"{path}.{os.getpid()}.tmp"
                shutil.copyfile(so_path, tmp)
                os.replace(tmp, path)
        _loaded[(so_path, copy)] = ctypes.CDLL(path)
        return _loaded[(so_path, copy)]


def symbols(library_path: str) -> list:
    """[(offset, size, name)] of the library's data objects, sorted (to name __shared__ memory)."""
    done = subprocess.run(
        ["nm", "-C", "-S", "--defined-only", library_path], capture_output=True, text=True
    )
    found = []
    for line in done.stdout.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[2] in "bBdD":
            found.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    return sorted(found)


def preprocess(source: str) -> str:
    """The source with its macros expanded (the kernels' entry points are made by macros)."""
    done = subprocess.run(
        [CXX, "-E", "-P", "-x", "c++", "-"], input=source, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise EmulatorBuildError(f"g++ -E failed:\n{done.stderr[-4000:]}")
    return done.stdout


# ----------------------------------------------------------------------------- RawModule
@dataclass(frozen=True)
class Param:
    """One kernel parameter: its C declaration type, e.g. ``const float *`` or ``long long``."""

    c_type: str
    base: str  # the scalar type, without const and *
    pointer: bool


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple
    static_shared: int  # bytes of __shared__ objects the kernel can reach


_KERNEL_RE = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)\s*\{'
)


def _parse_param(text: str) -> Param:
    words = text.replace("*", " * ").replace("__restrict__", " ").split()
    if len(words) < 2:
        raise EmulatorBuildError(f"cannot parse kernel parameter {text!r}")
    words = words[:-1]  # drop the parameter's name
    pointer = "*" in words
    base = " ".join(w for w in words if w not in ("const", "volatile", "*"))
    if base not in C_TYPES:
        raise EmulatorBuildError(f"kernel parameter type {base!r} is not known to the emulator")
    return Param(" ".join(words).replace(" *", "*"), base, pointer)


def _top_level_items(pre: str):
    """name -> body text of each top-level function or struct of the preprocessed source."""
    items, depth, start = {}, 0, 0
    for i, ch in enumerate(pre):
        if ch == "{":
            if depth == 0:
                head = pre[start:i]
                m = re.search(r"(\w+)\s*\([^{]*$", head) or re.search(
                    r"(?:struct|union)\s+(\w+)[^{]*$", head
                )
                name, body_start = (m.group(1) if m else None), i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                if name:
                    items[name] = items.get(name, "") + pre[body_start : i + 1]
                start = i + 1
        elif ch == ";" and depth == 0:
            start = i + 1
    return items


_SHARED_RE = re.compile(r"__shared__\s+([A-Za-z_][\w ]*?)\s+(\w+)\s*((?:\[[^\]]+\])*)\s*;")


def _shared_bytes(body: str) -> int:
    total = 0
    for ctype, _, dims in _SHARED_RE.findall(body):
        count = math.prod(
            int(eval(d, {"__builtins__": {}})) for d in re.findall(r"\[([^\]]+)\]", dims)
        )
        total += _SIZEOF.get(ctype.strip(), 8) * count  # unknown (template) types: 8 bytes
    return total


def _reachable_shared(kernel: str, items: dict) -> int:
    seen, todo = set(), [kernel]
    while todo:
        name = todo.pop()
        if name in seen or name not in items:
            continue
        seen.add(name)
        todo.extend(w for w in set(re.findall(r"\b\w+\b", items[name])) if w in items)
    return sum(_shared_bytes(items[n]) for n in seen)


def parse_kernels(source: str) -> dict:
    """name -> Kernel for every extern "C" __global__ function of ``source``."""
    pre = preprocess(source)
    items = _top_level_items(pre)
    kernels = {}
    for name, params in _KERNEL_RE.findall(pre):
        parsed = tuple(_parse_param(p) for p in params.split(",") if p.strip())
        kernels[name] = Kernel(name, parsed, _reachable_shared(name, items))
    return kernels


#: the line of the module source where the kernel text starts (after the emulator's header)
SOURCE_LINE_DIRECTIVE = '#line 1 "gpunet-module"'


def raw_module(source: str, copy: int = 0):
    """(library, kernels) for a RawModule source; ``gpunet_emu_launch_<name>`` runs a kernel."""
    cpp, kernels = _module_cpp(source)
    return compile_library(cpp, copy), kernels


@functools.cache
def _module_cpp(source: str):
    """The emulator's C++ text of a module and its kernels: parsed once (a g++ -E run), also
    when a second copy of the library is loaded."""
    kernels = parse_kernels(source)
    wrappers = []
    for k in kernels.values():
        args = ", ".join(f"*({p.c_type}*)a[{i}]" for i, p in enumerate(k.params))
        wrappers.append(
            f'extern "C" {EXPORT} int gpunet_emu_launch_{k.name}(const unsigned int *g, '
            f"const unsigned int *b, unsigned long long seed, int slot, int nslots, int ftz, "
            f"const unsigned long long *allocs, int nallocs, double hang, void **a) {{\n"
            f'    return gpunet_emu::launch("{k.name}", g, b, seed, slot, nslots, ftz, allocs, '
            f"nallocs, hang, [&]() GPUNET_EMU_NOSAN {{ {k.name}({args}); }});\n}}"
        )
    fault = f'extern "C" {EXPORT} const char *gpunet_emu_fault_text = gpunet_emu::fault_message;'
    cpp = "\n".join(
        ['#include "cuda_emu.h"', SOURCE_LINE_DIRECTIVE, source, "#undef reinterpret_cast", fault]
        + wrappers
    )
    return cpp, kernels


# ----------------------------------------------------------------------------- ElementwiseKernel
#: CuPy's type names in ElementwiseKernel parameter strings -> C types
EW_TYPES = {
    "float32": "float",
    "float64": "double",
    "int32": "int",
    "int64": "long long",
    "uint32": "unsigned int",
    "bool": "bool",
}


def parse_ew_params(spec: str):
    """[(type, name)] of an ElementwiseKernel parameter string such as ``"T x, float64 a"``."""
    params = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        words = part.split()
        if len(words) != 2:
            raise NotImplementedError(
                f"the emulator takes 'type name' parameters only, got {part!r}"
            )
        params.append((words[0], words[1]))
    return params


def elementwise_library(in_params, out_params, operation, preamble, array_mask):
    """A library with ``gpunet_emu_ew_float`` and ``gpunet_emu_ew_double``: one pass over ``n``
    elements of a broadcast shape. ``array_mask[k]`` says whether parameter k is an array (read
    through ``ptrs[k]`` at byte offset sum(index * strides)) or a scalar (``scalars[k]``)."""
    params = [(t, n, False) for t, n in in_params] + [(t, n, True) for t, n in out_params]
    lines = []
    for k, ((typ, name, is_out), is_array) in enumerate(zip(params, array_mask)):
        ctype = "T" if typ not in EW_TYPES else EW_TYPES[typ]
        if is_array:
            ref = f"*({ctype}*)(ptrs[{k}] + off[{k}])"
            lines.append(
                f"{ctype} &{name} = {ref};" if is_out else f"const {ctype} {name} = {ref};"
            )
        else:
            lines.append(f"const {ctype} {name} = ({ctype})scalars[{k}];")
    nargs = len(params)
    body = "\n            ".join(lines)
    template = f"""
template <typename T>
static void gpunet_emu_ew(long long n, int ndim, const long long *shape, char **ptrs,
                          const long long *strides, const double *scalars) {{
    long long index[32] = {{0}};
    long long off[{nargs}] = {{0}};
    for (long long i = 0; i < n; ++i) {{
        {{
            {body}
            {operation};
        }}
        for (int d = ndim - 1; d >= 0; --d) {{          // next index, row-major like CuPy's
            ++index[d];
            for (int k = 0; k < {nargs}; ++k) off[k] += strides[k * ndim + d];
            if (index[d] < shape[d]) break;
            for (int k = 0; k < {nargs}; ++k) off[k] -= index[d] * strides[k * ndim + d];
            index[d] = 0;
        }}
    }}
}}
extern "C" {EXPORT} void gpunet_emu_ew_float(long long n, int ndim, const long long *shape,
                                    char **ptrs, const long long *strides, const double *scalars) {{
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u);  // CuPy's -ftz=true: float denormals flushed to zero
    gpunet_emu_ew<float>(n, ndim, shape, ptrs, strides, scalars);
    _mm_setcsr(csr);
}}
extern "C" {EXPORT} void gpunet_emu_ew_double(long long n, int ndim, const long long *shape,
                                    char **ptrs, const long long *strides, const double *scalars) {{
    gpunet_emu_ew<double>(n, ndim, shape, ptrs, strides, scalars);
}}
"""
    cpp = "\n".join(['#include "cuda_emu.h"', preamble, "#undef reinterpret_cast", template])
    return compile_library(cpp)
