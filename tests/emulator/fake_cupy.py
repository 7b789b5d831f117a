"""A test double of the small part of CuPy that gpunet calls, running CUDA C on the CPU.

Installed as ``sys.modules["cupy"]`` only inside the emulated tests (``emulation()`` in
tests/emulator/__init__.py), so that ``kernels/cupy/*.py`` and the functional layer run unchanged:

* ``ndarray``: NumPy memory, with ``__cuda_array_interface__``, ``.data.ptr`` and ``.get()``;
  every other array function is NumPy's. ``empty()`` allocates exactly the bytes asked for,
  256-byte aligned (as CuPy's pool gives), between two guard zones that the sanitizer watches, and
  fills them with a signalling pattern (NaN for floats, 0xA5 bytes otherwise), as initcheck would
  want: what nobody wrote does not read as a plausible zero.
* ``RawModule`` / ``RawKernel``: the source compiled by g++ against cuda_emu.h; each launch is
  checked as CuPy and the driver would (grid and block tuples, argument count, each argument's C
  type and size by CuPy's scalar rules, grid and block limits, shared memory), then runs every
  block's threads (blocks in a shuffled order, or two at a time with ``CONCURRENT_BLOCKS = 2``)
  with memcheck, racecheck, initcheck and synccheck on (cuda_emu.h). Every launch is recorded in
  ``launches``, so that tests assert on what ran.
* ``ElementwiseKernel``: the parameter strings and operation turned into a loop over the broadcast
  shape with each argument's strides, as CuPy generates.
* ``cuda``: one device ("gpunet CUDA emulator"), its stream, memory info; ``memoize``; ``random``.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import itertools
import os
import re
import subprocess
import sys
import threading
import types
import weakref

import numpy

from . import build

__version__ = "emulated"
#: multiprocessors of the emulated device: small, so that the kernels' grids stay small
MULTIPROCESSORS = 2
#: the driver's limits
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS_PER_BLOCK = 1024
MAX_STATIC_SHARED = 48 * 1024
ALIGNMENT = 256
#: bytes watched before and after every allocation (an access there is out of bounds)
GUARD = 1024
#: blocks of one launch run at the same time (each by its own copy of the kernel library)
CONCURRENT_BLOCKS = 1
#: seconds without progress (a barrier or a block completing) after which a launch is a hang
HANG_SECONDS = float(os.environ.get("GPUNET_EMU_HANG_SECONDS", "5"))

#: one record per RawKernel launch, in order: tests read it (and may clear it)
Launch = collections.namedtuple("Launch", "name grid block")
launches: list = []
#: one record per ElementwiseKernel call: (kernel name, dtype of T, number of elements)
ElementwiseLaunch = collections.namedtuple("ElementwiseLaunch", "name dtype size")
elementwise_launches: list = []

_launch_seeds = itertools.count(1)


class CUDADriverError(RuntimeError):
    """What a launch that the driver (or the hardware) refuses raises."""


class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


class ndarray(numpy.ndarray):
    """A "device" array: NumPy memory that the emulated kernels read and write."""

    @property
    def __cuda_array_interface__(self):
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.ctypes.data, False),
            "strides": None if self.flags.c_contiguous else self.strides,
            "version": 3,
            "stream": 1,
        }

    @property
    def data(self):
        return _Pointer(self.ctypes.data)

    @property
    def device(self):
        return cuda.Device(0)

    def get(self, stream=None, order="C", out=None):
        host = numpy.array(numpy.asarray(self), order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def __array_wrap__(self, obj, context=None, return_scalar=False):
        if obj.ndim == 0 and return_scalar:
            return obj[()]
        return numpy.ndarray.__array_wrap__(self, obj, context, return_scalar)


ndarray.__module__ = "cupy"  # gpunet.backend.is_cupy_array looks at the type's module


def _device(a):
    return a if isinstance(a, ndarray) else numpy.asarray(a).view(ndarray)


#: id of each allocation's memory owner -> (start, end, guard start, guard end)
_allocations: dict = {}


def empty(shape, dtype=float, order="C"):
    dtype = numpy.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, numpy.integer)) else tuple(shape)
    count = int(numpy.prod(shape, dtype=numpy.int64))
    nbytes = count * dtype.itemsize
    raw = numpy.empty(GUARD + nbytes + GUARD + ALIGNMENT, dtype=numpy.uint8)
    start = GUARD + (-(raw.ctypes.data + GUARD)) % ALIGNMENT
    raw.fill(0xA5)
    flat = raw[start : start + nbytes].view(dtype)
    if dtype.kind in "fc":
        flat.fill(numpy.nan)
    base = raw.ctypes.data
    _allocations[id(raw)] = (base + start, base + start + nbytes, base, base + raw.size)
    weakref.finalize(raw, _allocations.pop, id(raw), None)
    return flat.reshape(shape, order=order).view(ndarray)


def _allocation_of(a):
    """(start, end, guard start, guard end) of the memory an array lives in (a view: its base's)."""
    owner = a
    while isinstance(owner.base, numpy.ndarray):
        owner = owner.base
    if id(owner) in _allocations:
        return _allocations[id(owner)]
    start = owner.ctypes.data  # made by NumPy, not by empty(): exact bounds, no guard of its own
    return start, start + owner.nbytes, start - GUARD, start + owner.nbytes + GUARD


def zeros(shape, dtype=float, order="C"):
    a = empty(shape, dtype, order)
    a.fill(0)
    return a


def ones(shape, dtype=float, order="C"):
    a = empty(shape, dtype, order)
    a.fill(1)
    return a


def full(shape, fill_value, dtype=None, order="C"):
    a = empty(shape, numpy.asarray(fill_value).dtype if dtype is None else dtype, order)
    a.fill(fill_value)
    return a


def _like(a, dtype, order, shape):
    a = numpy.asarray(a)
    order = (
        "F"
        if order == "K" and a.flags.f_contiguous and not a.flags.c_contiguous
        else ("C" if order in ("K", "A") else order)
    )
    return empty(a.shape if shape is None else shape, a.dtype if dtype is None else dtype, order)


def empty_like(a, dtype=None, order="K", shape=None):
    return _like(a, dtype, order, shape)


def zeros_like(a, dtype=None, order="K", shape=None):
    out = _like(a, dtype, order, shape)
    out.fill(0)
    return out


def ones_like(a, dtype=None, order="K", shape=None):
    out = _like(a, dtype, order, shape)
    out.fill(1)
    return out


def full_like(a, fill_value, dtype=None, order="K", shape=None):
    out = _like(a, dtype, order, shape)
    out.fill(fill_value)
    return out


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    host = numpy.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin)
    out = empty(
        host.shape,
        host.dtype,
        "F" if host.flags.f_contiguous and not host.flags.c_contiguous else "C",
    )
    out[...] = host
    return out


def asarray(a, dtype=None, order=None):
    if (
        isinstance(a, ndarray)
        and (dtype is None or a.dtype == numpy.dtype(dtype))
        and order in (None, "K", "A")
    ):
        return a
    if isinstance(a, ndarray) and order is None:
        return a.astype(dtype)
    return array(a, dtype=dtype, order="K" if order is None else order)


def ascontiguousarray(a, dtype=None):
    if (
        isinstance(a, ndarray)
        and a.flags.c_contiguous
        and (dtype is None or a.dtype == numpy.dtype(dtype))
    ):
        return a
    return array(a, dtype=dtype, order="C")


def asnumpy(a, stream=None, order="C", out=None):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return numpy.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else numpy


def _wrap(result):
    if isinstance(result, numpy.ndarray) and not isinstance(result, ndarray):
        return result.view(ndarray)
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    return result


def __getattr__(name):
    """Everything else is NumPy's, with array results on the "device"."""
    attr = getattr(numpy, name)
    if callable(attr) and not isinstance(attr, type):

        @functools.wraps(attr)
        def device_function(*args, **kwargs):
            return _wrap(attr(*args, **kwargs))

        return device_function
    return attr


def memoize(for_each_device=False):
    def decorator(f):
        return functools.cache(f)

    return decorator


# ----------------------------------------------------------------------------- cuda
class _Device:
    def __init__(self, device=0):
        self.id = int(device)
        self.attributes = {
            "MultiProcessorCount": MULTIPROCESSORS,
            "MaxThreadsPerBlock": MAX_THREADS_PER_BLOCK,
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass

    def synchronize(self):
        pass


class _Stream:
    ptr = 0

    def synchronize(self):
        pass


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDeviceProperties(device):
        return {
            "name": b"gpunet CUDA emulator (CPU)",
            "multiProcessorCount": MULTIPROCESSORS,
            "totalGlobalMem": 8 << 30,
        }

    @staticmethod
    def memGetInfo():
        return 8 << 30, 8 << 30


cuda = types.SimpleNamespace(
    Device=_Device,
    runtime=_Runtime(),
    get_current_stream=lambda: _Stream(),
    Stream=_Stream,
    CUDADriverError=CUDADriverError,
)


class _Generator:
    def __init__(self, seed=None):
        self._g = numpy.random.default_rng(seed)

    def __getattr__(self, name):
        attr = getattr(self._g, name)
        return lambda *a, **k: _wrap(numpy.asarray(attr(*a, **k)))


random = types.SimpleNamespace(default_rng=_Generator)


# ----------------------------------------------------------------------------- RawModule
def _c_value(param, arg, position, kernel):
    """The bytes CuPy would pass for ``arg``, checked against the parameter's C type."""
    where = f"kernel {kernel!r}, argument {position}"
    expected_dtype, size = build.C_TYPES[param.base]
    if param.pointer:
        if arg is None:
            return ctypes.c_void_p(0)
        if not isinstance(arg, ndarray):
            raise TypeError(
                f"{where}: {param.c_type} needs a device array, got {type(arg).__name__}"
            )
        if arg.dtype != numpy.dtype(expected_dtype):
            raise TypeError(
                f"{where}: {param.c_type} needs a {expected_dtype} array, got {arg.dtype}"
            )
        return ctypes.c_void_p(arg.ctypes.data)
    arg = _cupy_scalar(arg, where, param)
    if arg.dtype != numpy.dtype(expected_dtype):
        raise TypeError(
            f"{where}: {param.c_type} ({size} bytes) given a {arg.dtype} "
            f"({arg.dtype.itemsize} bytes): the kernel would read the wrong bytes"
        )
    return numpy.ctypeslib.as_ctypes(numpy.array(arg))


def _cupy_scalar(arg, where, param):
    """The NumPy scalar CuPy 14 passes for a scalar argument (cupy/cuda/function.pyx ``_pointer``
    and cupy/_core/_scalar.pyx ``numpy_dtype_from_pyscalar``): ``bool`` -> bool (1 byte), ``int``
    -> int64 (uint64 from 2**63), ``float`` -> float64, a NumPy scalar keeps its dtype, a NumPy
    array of one element is passed by value; a larger NumPy array is refused."""
    if type(arg) is bool:
        return numpy.bool_(arg)
    if type(arg) is int:
        return numpy.uint64(arg) if arg >= 2**63 else numpy.int64(arg)
    if type(arg) is float:
        return numpy.float64(arg)
    if isinstance(arg, numpy.generic):
        return arg
    if isinstance(arg, numpy.ndarray):
        if arg.size == 1:
            return arg.reshape(()).copy()[()]
        raise TypeError(
            f"{where}: a numpy.ndarray of shape {arg.shape} as a kernel parameter; only NumPy "
            f"arrays of size one are passed by value (CuPy's rule)"
        )
    raise TypeError(f"{where}: {param.c_type} needs a scalar, got {type(arg).__name__}")


def _dims(value, what):
    """CuPy's ``Function.__call__(tuple grid, tuple block, ...)``: tuples only, padded with 1 to
    three axes, each at least 1 (``max(1, g)``: a 0 launches one block)."""
    if not isinstance(value, tuple):
        raise TypeError(
            f"Argument '{what}' has incorrect type (expected tuple, got {type(value).__name__})"
        )
    if not 1 <= len(value) <= 3 or not all(isinstance(d, (int, numpy.integer)) for d in value):
        raise TypeError(f"{what} must be 1 to 3 integers, got {value!r}")
    return tuple(max(1, int(d)) for d in (value + (1, 1))[:3])


def check_launch(kernel, grid, block, shared_mem=0):
    """The driver's refusals (cudaErrorInvalidConfiguration and friends), as exceptions."""
    for axis, (g, limit) in enumerate(zip(grid, MAX_GRID)):
        if not 1 <= g <= limit:
            raise CUDADriverError(
                f"kernel {kernel.name!r}: grid dimension {'xyz'[axis]} = {g} outside "
                f"[1, {limit}] (CUDA_ERROR_INVALID_VALUE)"
            )
    for axis, (b, limit) in enumerate(zip(block, MAX_BLOCK)):
        if not 1 <= b <= limit:
            raise CUDADriverError(
                f"kernel {kernel.name!r}: block dimension {'xyz'[axis]} = {b} outside "
                f"[1, {limit}] (CUDA_ERROR_INVALID_VALUE)"
            )
    if block[0] * block[1] * block[2] > MAX_THREADS_PER_BLOCK:
        raise CUDADriverError(
            f"kernel {kernel.name!r}: {block[0] * block[1] * block[2]} threads per "
            f"block > {MAX_THREADS_PER_BLOCK}"
        )
    if kernel.static_shared + shared_mem > MAX_STATIC_SHARED:
        raise CUDADriverError(
            f"kernel {kernel.name!r}: {kernel.static_shared} bytes of static + "
            f"{shared_mem} of dynamic shared memory > {MAX_STATIC_SHARED}"
        )


class EmulatorWedged(RuntimeError):
    """Threads of a hung launch could not be stopped: this process's emulator is unusable."""


class RawKernel:
    #: what cupy.RawKernel.attributes reports; the emulator knows no registers: a mid-size kernel's
    attributes = {
        "num_regs": 64,
        "shared_size_bytes": 8192,
        "local_size_bytes": 0,
        "max_threads_per_block": 1024,
    }

    def __init__(self, module, kernel):
        self.module = module
        self.kernel = kernel
        self.name = kernel.name
        self._launchers: dict = {}

    def _launcher(self, copy):
        """The library copy's launch function, looked up (and typed) once."""
        if copy not in self._launchers:
            launch = getattr(self.module.library(copy), f"gpunet_emu_launch_{self.name}")
            launch.restype = ctypes.c_int
            self._launchers[copy] = launch
        return self._launchers[copy]

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        args = tuple(args)
        params = self.kernel.params
        if len(args) != len(params):
            raise TypeError(f"kernel {self.name!r} takes {len(params)} arguments, got {len(args)}")
        check_launch(self.kernel, grid, block, shared_mem)
        values = [_c_value(p, a, i, self.name) for i, (p, a) in enumerate(zip(params, args))]
        pointers = (ctypes.c_void_p * max(len(values), 1))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values]
        )
        allocations = [
            (*_allocation_of(a), i) for i, a in enumerate(args) if isinstance(a, ndarray)
        ]
        table = (ctypes.c_ulonglong * max(5 * len(allocations), 1))(
            *[v for m in allocations for v in m]
        )
        launches.append(Launch(self.name, grid, block))
        seed = next(_launch_seeds)
        nslots = max(1, CONCURRENT_BLOCKS)
        codes = [0] * nslots

        def run(slot):
            codes[slot] = self._launcher(slot)(
                (ctypes.c_uint * 3)(*grid),
                (ctypes.c_uint * 3)(*block),
                ctypes.c_ulonglong(seed),
                ctypes.c_int(slot),
                ctypes.c_int(nslots),
                ctypes.c_int(self.name.endswith("_float")),  # CuPy's -ftz=true flushes float only
                table,
                ctypes.c_int(len(allocations)),
                ctypes.c_double(HANG_SECONDS),
                pointers,
            )

        if nslots == 1:
            run(0)
        else:  # ctypes lets go of the GIL: the copies run their blocks at the same time
            threads = [threading.Thread(target=run, args=(k,)) for k in range(nslots)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for slot, code in enumerate(codes):
            if code:
                library = self.module.library(slot)
                text = ctypes.c_char_p.in_dll(library, "gpunet_emu_fault_text").value.decode()
                text = self.module.describe(text, library)
                if code == 2:
                    raise EmulatorWedged(f"kernel {self.name!r}: {text}; threads still spin")
                raise CUDADriverError(f"kernel {self.name!r}: {text}")


class RawModule:
    def __init__(self, code=None, options=(), name_expressions=None, **kwargs):
        self.code, self.options = code, tuple(options)
        self._libraries = {}
        self._libraries[0], self._kernels = build.raw_module(code)
        self._functions: dict = {}

    def library(self, copy=0):
        if copy not in self._libraries:
            self._libraries[copy] = build.raw_module(self.code, copy)[0]
        return self._libraries[copy]

    def get_function(self, name):
        if name not in self._kernels:
            raise CUDADriverError(f"named symbol not found: {name!r} (CUDA_ERROR_NOT_FOUND)")
        if name not in self._functions:
            self._functions[name] = RawKernel(self, self._kernels[name])
        return self._functions[name]

    def describe(self, text, library):
        """A fault message with the library offsets it names turned into source lines
        (``code @so+0x..``) and __shared__ objects (``@so+0x..``), and module lines into files."""
        path = library._name
        symbols = build.symbols(path)

        def code_line(match):
            done = subprocess.run(
                ["addr2line", "-e", path, match.group(1)], capture_output=True, text=True
            )
            line = done.stdout.strip().rpartition(":")[2].split()[0] if done.stdout else "?"
            return f"code at line {line}" if line.isdigit() else match.group(0)

        def data(match):
            offset = int(match.group(1), 16)
            for start, size, name in symbols:
                if start <= offset < start + size:
                    return f"{name}+{offset - start}"
            return match.group(0)

        text = re.sub(r"code @so\+(0x[0-9a-f]+)", code_line, text)
        text = re.sub(r"@so\+0x([0-9a-f]+)", data, text)
        return re.sub(r"line (\d+)", lambda m: source_line(self.code, int(m.group(1))), text)


def source_line(code, line):
    """'batchnorm.cuh:123' for line ``line`` of a module's source made of gpunet's .cuh files
    (kernels/cupy/sources.py), else 'line N of the module source'."""
    from gpunet.kernels.cupy import sources

    names = {f for files in sources.TRANSLATION_UNITS.values() for f in files}
    starts = []
    for name in names:
        at = code.find(sources.read_source(name))
        if at >= 0:
            starts.append((code.count("\n", 0, at) + 1, name))
    for first, name in sorted(starts, reverse=True):
        if first <= line:
            return f"{name}:{line - first + 1}"
    return f"line {line} of the module source"


# ----------------------------------------------------------------------------- ElementwiseKernel
class ElementwiseKernel:
    """CuPy's ElementwiseKernel: inputs then outputs; outputs not given are allocated with the
    broadcast shape and the dtype of their type parameter."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="", **kwargs):
        self.in_params = build.parse_ew_params(in_params)
        self.out_params = build.parse_ew_params(out_params)
        self.operation, self.name, self.preamble = operation, name, preamble
        self._libraries: dict = {}

    def _library(self, mask):
        if mask not in self._libraries:
            self._libraries[mask] = build.elementwise_library(
                self.in_params, self.out_params, self.operation, self.preamble, mask
            )
        return self._libraries[mask]

    def __call__(self, *args, size=None):
        n_in, n_out = len(self.in_params), len(self.out_params)
        if len(args) not in (n_in, n_in + n_out):
            raise TypeError(
                f"{self.name}: takes {n_in} or {n_in + n_out} arguments, got {len(args)}"
            )
        params = self.in_params + self.out_params
        arrays = [a for a in args if isinstance(a, ndarray)]
        for a in args:
            if isinstance(a, numpy.ndarray) and not isinstance(a, ndarray):
                raise TypeError(f"{self.name}: a NumPy array was passed to a CuPy kernel")
        t_dtypes = {
            a.dtype
            for a, (typ, _) in zip(args, params)
            if isinstance(a, ndarray) and typ not in build.EW_TYPES
        }
        if len(t_dtypes) > 1:
            raise TypeError(
                f"{self.name}: type parameter T is bound to several dtypes "
                f"{sorted(map(str, t_dtypes))}"
            )
        dtype = t_dtypes.pop() if t_dtypes else numpy.dtype(numpy.float64)
        if dtype not in (numpy.float32, numpy.float64):
            raise TypeError(
                f"{self.name}: the emulator instantiates T = float32 or float64, got {dtype}"
            )
        shape = numpy.broadcast_shapes(*(a.shape for a in arrays))
        args = list(args)
        for typ, _ in self.out_params[len(args) - n_in :]:
            args.append(empty(shape, dtype if typ not in build.EW_TYPES else numpy.dtype(typ)))
        outputs = args[n_in:]
        for o in outputs:
            if o.shape != shape:
                raise ValueError(
                    f"{self.name}: output shape {o.shape} is not the broadcast shape {shape}"
                )
        for a, (typ, name) in zip(args, params):
            if isinstance(a, ndarray) and typ in build.EW_TYPES and a.dtype != numpy.dtype(typ):
                raise TypeError(f"{self.name}: {name} is declared {typ}, got a {a.dtype} array")
        mask = tuple(isinstance(a, ndarray) for a in args)
        ndim = len(shape)
        n = int(numpy.prod(shape, dtype=numpy.int64))
        elementwise_launches.append(ElementwiseLaunch(self.name, dtype.name, n))
        if n:
            strides = numpy.zeros((len(args), max(ndim, 1)), dtype=numpy.int64)
            ptrs = (ctypes.c_void_p * len(args))()
            scalars = numpy.zeros(len(args), dtype=numpy.float64)
            for k, a in enumerate(args):
                if isinstance(a, ndarray):
                    view = numpy.broadcast_to(a, shape)
                    strides[k, :ndim] = view.strides
                    ptrs[k] = a.ctypes.data
                else:
                    scalars[k] = float(a)
            fn = getattr(
                self._library(mask),
                f"gpunet_emu_ew_{'float' if dtype == numpy.float32 else 'double'}",
            )
            fn(
                ctypes.c_longlong(n),
                ctypes.c_int(ndim),
                numpy.asarray(shape or (1,), dtype=numpy.int64).ctypes.data_as(ctypes.c_void_p),
                ptrs,
                strides.ctypes.data_as(ctypes.c_void_p),
                scalars.ctypes.data_as(ctypes.c_void_p),
            )
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
