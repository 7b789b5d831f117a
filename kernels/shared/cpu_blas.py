"""gpunet's CPU matrix products: NumPy's BLAS, or Intel MKL's -- whichever measures faster here.

Every matrix product gpunet makes on NumPy arrays (Linear, Conv2d, the bias gradients) goes
through ``matmul`` / ``tensordot`` / ``column_sums`` here, which run on one of two libraries:

* ``numpy`` -- NumPy's own BLAS (OpenBLAS in the PyPI wheels). Always there.
* ``mkl`` -- Intel MKL's ``cblas_?gemm``/``cblas_?gemv`` through its C interface (ctypes), when
  the ``mkl`` package is installed (``pip install "gpunet[mkl]"``, Linux x86-64), running on GNU
  OpenMP: the same thread pool as Numba's parallel kernels.

``set_cpu_blas("auto" | "numpy" | "mkl")`` (``GPUNET_CPU_BLAS``) chooses. ``auto`` measures:
where MKL loads, the first product times both libraries on the products of a training step
(``PROBE_PRODUCTS``: forward, weight-gradient and input-gradient layouts of MLP layers and an
im2col convolution; interleaved rounds, the best of each) and takes MKL only where it is at least
``MKL_MARGIN`` faster. The result is kept per machine (``cache_path()``: the CPU, core count,
NumPy, its BLAS and kernel, MKL's version and the variables that steer them), so each machine
measures once; ``choice_reason()`` says which library and why (``gpunet info`` prints it).

Why measure rather than prefer one (issue #24): the answer depends on the CPU. On the 2-core
Intel Xeon development machine (AVX-512) MKL's sgemm was 5-12 % faster than OpenBLAS pinned to
its AVX2 kernels (OPENBLAS_CORETYPE=Haswell, as these development machines set), while on a
2-core AMD Zen 5 machine MKL takes its AVX2 path and OpenBLAS's own AVX-512 kernels were 1.8-2x
faster per core (181-220 against 85-99 GFLOP/s): a whole MLP step at 0.47-0.50 of torch's
against MKL's 0.99-1.04. MKL's other gain -- one thread pool with Numba's kernels (below) --
does not outweigh a product twice as slow.

* One thread pool. OpenBLAS's own threads spin for ~0.1 s after each product and fight any other
  thread pool for the cores, so that gpunet's Numba kernels must run serially inside a step
  (cpu_threads.py). MKL on GNU OpenMP hands the cores straight to Numba's OpenMP threads: the
  kernels of a step may then use every core too.

The two results differ by rounding only (float32 products: a few ulp of the sum); the tests hold
both to the same float64 references. Every other NumPy array operation stays NumPy's.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy

from gpunet import config
from gpunet.config import CONFIG, checked
from gpunet.types import Array

from . import cpu_threads

__all__ = [
    "CHOICES",
    "set_cpu_blas",
    "get_cpu_blas",
    "active",
    "mkl_problem",
    "shares_numba_threads",
    "choice_reason",
    "measure",
    "cache_path",
    "matmul",
    "tensordot",
    "column_sums",
]

CHOICES = config.CHOICES["cpu_blas"]
#: Products of at most this many multiply-adds stay NumPy's even when MKL is active: a ctypes call
#: costs ~6 us (MKL 6.4 us against NumPy's 0.6 us at 8x4x3), and OpenBLAS runs products this small
#: on the calling thread (its threshold, 4 x 65536), so none of its threads is left spinning.
#: Larger ones go to MKL even where NumPy's is faster alone (64x64x128: 14 against 7 us): OpenBLAS
#: threads some shapes from here on (64x1024x10 = 655K), and one spinning OpenBLAS thread inside a
#: step cost 5x (batch 64, 3072-1024-1024-10 with a 1M limit: 38.6 ms against 7.2 ms).
SMALL_PRODUCT = 1 << 18
#: Inside a loop whose BLAS runs on one thread (``one_blas_thread``: a training run of a small net,
#: cpu_threads.blas_threads) no OpenBLAS thread is left spinning, and NumPy's products win up to
#: a few million multiply-adds: MKL's cblas_sgemm through ctypes costs ~5.5 us per call before
#: it multiplies (three ``.ctypes.data`` and the foreign call), and its small products run slower
#: than OpenBLAS's. Measured one thread each, float32, on the development machine (Xeon, AVX-512),
#: NumPy / MKL us: 64x64x10 2.7 / 12.5, 64x64x128 11.0 / 23.5, 128x128x128 40.5 / 45-66,
#: 64x256x256 75 / 66-72 (4.2M: even), 256x256x256 231 / 216 (MKL from here on).
SMALL_PRODUCT_ONE_THREAD = 1 << 21
#: MKL's product A^T B with few columns (a weight gradient X^T dY of a layer with <= 16 outputs)
#: runs 2-3x faster computed as (B^T A)^T: (512, 1024)^T-layout x (1024, 10) 185 -> 84 us,
#: (1024, 256)^T x (256, 10) 97 -> 32 us on the development machine (a skinny product with a
#: C-ordered left operand showed no such rule, so it is left alone).
SKINNY_COLUMNS = 16
#: the products ``auto`` times, (M, K, N, layout): ``NN`` a forward x @ W, ``TN`` a weight
#: gradient x^T @ dy (x read transposed), ``NT`` an input gradient dy @ W^T; the last is an im2col
#: convolution's W (Cout, C kh kw) @ cols (3x3 over 32 channels, a chunk of 8192 pixels)
PROBE_PRODUCTS = (
    (256, 1024, 1024, "NN"),
    (1024, 256, 1024, "TN"),
    (256, 1024, 1024, "NT"),
    (64, 3072, 1024, "NN"),
    (3072, 64, 1024, "TN"),
    (64, 1024, 3072, "NT"),
    (32, 288, 8192, "NN"),
)
#: ``auto`` takes MKL only where its products are at least this much faster in sum: within the
#: margin the libraries are even (runs of the same probe scatter by 2-4 %), and NumPy's own
#: library then wins by being the one every NumPy operation uses anyway
MKL_MARGIN = 0.05
PROBE_ROUNDS = 2
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_MKL_THREADING_GNU = 3  # mkl_service.h: INTEL 0, SEQUENTIAL 1, PGI 2, GNU 3, TBB 4


def set_cpu_blas(name: str = "auto") -> None:
    """Choose the library of gpunet's CPU matrix products: ``"auto"`` (the faster of the two on
    this machine, measured once; NumPy's where MKL is not installed), ``"numpy"`` or ``"mkl"``
    (an error if MKL cannot load)."""
    name = checked("cpu_blas", name)
    if name == "mkl" and mkl_problem() is not None:
        raise RuntimeError(
            f"MKL cannot be used here ({mkl_problem()}); install it with "
            "pip install 'gpunet[mkl]' (Linux x86-64) or choose 'numpy'"
        )
    CONFIG.settings.cpu_blas = name


def get_cpu_blas() -> str:
    """The choice (``GPUNET_CPU_BLAS`` on first use, else ``"auto"``)."""
    choice = CONFIG.settings.cpu_blas
    if choice is None:
        choice = CONFIG.get("cpu_blas")
        set_cpu_blas(choice)
    return choice


def active() -> str:
    """The library that runs the products now: ``"mkl"`` or ``"numpy"``."""
    choice = get_cpu_blas()
    if choice != "auto":
        return choice
    if mkl_problem() is not None:
        return "numpy"
    return _measured()["choice"]


def choice_reason() -> str:
    """Which library runs the products, and why (a sentence for ``gpunet info``)."""
    choice = get_cpu_blas()
    library = active()
    if choice != "auto":
        return f"{library}: chosen ({choice!r} by set_cpu_blas or GPUNET_CPU_BLAS)"
    if mkl_problem() is not None:
        return f"numpy: the only one installed (MKL: {mkl_problem()})"
    m = _measured()
    return (
        f"{library}: measured faster on this machine -- a training step's products took "
        f"{m['mkl_ms']:.2f} ms with MKL, {m['numpy_ms']:.2f} ms with NumPy's "
        f"{m.get('numpy_blas', 'BLAS')}; MKL is taken from {MKL_MARGIN:.0%} faster "
        f"(measured {m.get('when', '?')}, kept in {cache_path()})"
    )


def _measured() -> dict:
    """The measured choice: this process's, else the machine's cache, else measured now."""
    found = CONFIG.found
    if found.blas_measured is None:
        key = _machine_key()
        cached = _read_cache().get(key)
        if not (isinstance(cached, dict) and cached.get("choice") in ("mkl", "numpy")):
            cached = measure()
            cached["when"] = datetime.date.today().isoformat()
            _write_cache(key, cached)
        found.blas_measured = cached
    return found.blas_measured


def forget_measurement() -> None:
    """Drop this machine's measured choice (cache and process): the next product measures."""
    data = _read_cache()
    if data.pop(_machine_key(), None) is not None:
        _write_cache_file(data)
    CONFIG.found.blas_measured = None


def numpy_product(a: Array, b: Array) -> Array:
    """a @ b by NumPy's own BLAS (what ``measure`` times on NumPy's side)."""
    return a @ b


def measure() -> dict:
    """Time both libraries on PROBE_PRODUCTS (float32, interleaved PROBE_ROUNDS rounds, the
    best time of each product): {"choice", "mkl_ms", "numpy_ms", "numpy_blas"}. Needs MKL."""
    if mkl_problem() is not None:
        raise RuntimeError(f"measure() compares MKL with NumPy's BLAS; MKL: {mkl_problem()}")
    rng = numpy.random.default_rng(0)
    operands = []
    for M, K, N, layout in PROBE_PRODUCTS:
        a = rng.standard_normal((K, M) if layout == "TN" else (M, K), dtype=numpy.float32)
        b = rng.standard_normal((N, K) if layout == "NT" else (K, N), dtype=numpy.float32)
        operands.append((a.T if layout == "TN" else a, b.T if layout == "NT" else b))
    this = sys.modules[__name__]  # looked up now: the tests slow one side down
    runs = {"numpy": this.numpy_product, "mkl": this.mkl_gemm}
    best = {name: [math.inf] * len(operands) for name in runs}
    for _ in range(PROBE_ROUNDS + 1):  # the first round warms both up (threads, pages)
        for name, product in runs.items():
            # let OpenBLAS's threads stop spinning first (~0.1 s after a product,
            # cpu_threads.QUIET_S): timed into them, MKL read 13-27 ms run to run, 12-13 ms
            # after the pause (MKL's OpenMP threads yield within milliseconds)
            time.sleep(cpu_threads.QUIET_S if name == "mkl" else 0.01)
            for i, (a, b) in enumerate(operands):
                t0 = time.perf_counter()
                product(a, b)
                best[name][i] = min(best[name][i], time.perf_counter() - t0)
    mkl_s, numpy_s = sum(best["mkl"]), sum(best["numpy"])
    cpu_threads.note_matmul()
    return {
        "choice": "mkl" if mkl_s <= (1 - MKL_MARGIN) * numpy_s else "numpy",
        "mkl_ms": mkl_s * 1e3,
        "numpy_ms": numpy_s * 1e3,
        "numpy_blas": _numpy_blas(),
    }


def _numpy_blas() -> str:
    """NumPy's BLAS and the kernel it picked, e.g. "OpenBLAS 0.3.31 SkylakeX" (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            if lib.get("user_api") == "blas" and "numpy" in str(lib.get("filepath", "")).lower():
                name = "OpenBLAS" if lib.get("internal_api") == "openblas" else lib.get("prefix")
                return f"{name} {lib.get('version')} {lib.get('architecture') or ''}".strip()
    except Exception:  # threadpoolctl is a dependency, but a broken one must not stop training
        pass
    return "BLAS"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_key() -> str:
    """What the measurement depends on: the CPU, the cores, the libraries and their settings."""
    cpu = cpu_model()
    steering = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "MKL_NUM_THREADS",
                "OMP_NUM_THREADS")  # fmt: skip
    env = ",".join(f"{v}={os.environ[v]}" for v in steering if v in os.environ)
    mkl_problem()  # loads MKL where it is installed: its version is part of the key
    mkl = CONFIG.found.mkl
    version = ""
    if mkl is not None:
        buf = ctypes.create_string_buffer(256)
        mkl.MKL_Get_Version_String(buf, 256)
        version = buf.value.decode(errors="replace")
    return "|".join([cpu, str(os.cpu_count()), numpy.__version__, _numpy_blas(), version, env])


def cache_path() -> str:
    """The file the measured choices are kept in: ``cpu_blas.json`` in GPUNET_CACHE_DIR if set,
    else in $XDG_CACHE_HOME/gpunet or ~/.cache/gpunet (beside the GPU kernel table)."""
    root = os.environ.get("GPUNET_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "gpunet")
    return os.path.join(root, "cpu_blas.json")


def _read_cache() -> dict:
    path = cache_path()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # none yet, unreadable or torn: measure again
        return {}


def _write_cache(key: str, entry: dict) -> None:
    """Add ``entry`` under ``key``."""
    data = _read_cache()
    data[key] = entry
    _write_cache_file(data)


def _write_cache_file(data: dict) -> None:
    """The whole file, atomically (a temporary file renamed over the old one); a folder that
    cannot be written keeps the choice in memory only."""
    from gpunet.outputs import atomic_write

    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda f: json.dump(data, f, indent=1))
    except OSError:  # a read-only home: measured again by the next process
        pass


def shares_numba_threads() -> bool:
    """Whether the products run on Numba's OpenMP threads (MKL on GNU OpenMP, Numba on its OpenMP
    layer): then nothing spins after a product and gpunet's kernels may use every core inside a
    training step. Otherwise the products are noted like OpenBLAS's (cpu_threads.py)."""
    return active() == "mkl" and CONFIG.found.mkl_gnu and _numba_on_openmp()


def _numba_on_openmp() -> bool:
    """Numba's threading layer is OpenMP -- or not chosen yet, with OpenMP first in line
    (``_load_mkl`` put it there; a layer is chosen at the first parallel kernel). Asked after
    every product: once the layer is chosen, the answer is kept."""
    found = CONFIG.found
    if found.numba_openmp is not None:
        return found.numba_openmp
    import numba

    try:
        found.numba_openmp = numba.threading_layer() == "omp"
        return found.numba_openmp
    except ValueError:  # no parallel kernel has run yet
        layer = numba.config.THREADING_LAYER
        return layer == "omp" or (
            layer == "default" and numba.config.THREADING_LAYER_PRIORITY[0] == "omp"
        )


def mkl_problem() -> str | None:
    """None if MKL's C interface loads here, else why not."""
    if CONFIG.found.mkl is None and CONFIG.found.mkl_problem is None:
        _load_mkl()
    return CONFIG.found.mkl_problem


def _load_mkl() -> None:
    path = _find_mkl_rt()
    if path is None:
        CONFIG.found.mkl_problem = "the mkl package is not installed (libmkl_rt not found)"
        return
    try:
        lib = ctypes.CDLL(path)
        # GNU OpenMP (Numba's threading layer), unless the user asked for another one
        if "MKL_THREADING_LAYER" not in os.environ:
            lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
            lib.MKL_Set_Threading_Layer(ctypes.c_int(_MKL_THREADING_GNU))
        CONFIG.found.mkl_gnu = os.environ.get("MKL_THREADING_LAYER", "GNU").upper() == "GNU"
        _prefer_numba_openmp()
        p, i = ctypes.c_void_p, ctypes.c_int
        for prefix, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            gemm = getattr(lib, f"cblas_{prefix}gemm")
            gemm.restype = None
            gemm.argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
            gemv = getattr(lib, f"cblas_{prefix}gemv")
            gemv.restype = None
            gemv.argtypes = [i, i, i, i, real, p, i, p, i, real, p, i]
        lib.MKL_Set_Num_Threads_Local.argtypes = [i]
        lib.MKL_Set_Num_Threads_Local.restype = i
        lib.MKL_Get_Version_String.argtypes = [ctypes.c_char_p, i]
        lib.MKL_Get_Version_String.restype = None
        CONFIG.found.mkl = lib
    except (OSError, AttributeError) as exc:
        CONFIG.found.mkl_problem = f"libmkl_rt did not load: {exc}"


def _prefer_numba_openmp() -> None:
    """Put OpenMP first among Numba's threading layers (its default order tries TBB first), so
    that Numba's parallel kernels and MKL's products share one pool; unless the user chose a
    layer, or a parallel kernel already ran (the layer is then fixed)."""
    import numba

    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    try:
        numba.threading_layer()
    except ValueError:
        order = [layer for layer in numba.config.THREADING_LAYER_PRIORITY if layer != "omp"]
        numba.config.THREADING_LAYER_PRIORITY = ["omp", *order]


def _find_mkl_rt() -> str | None:
    """libmkl_rt of the ``mkl`` wheel (installed into the environment's lib/)."""
    for root in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for name in ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"):
            path = os.path.join(root, "lib", name)
            if os.path.exists(path):
                return path
    return None


# ----------------------------------------------------------------------------- the products
def _operand(a: Array) -> tuple | None:
    """(transpose flag, leading dimension) for a 2-D operand that BLAS reads without a copy:
    C-contiguous (row-major) or F-contiguous (a transposed row-major array)."""
    if a.flags.c_contiguous:
        return _NO_TRANS, max(1, a.shape[1])
    if a.flags.f_contiguous:
        return _TRANS, max(1, a.shape[0])
    return None


def mkl_gemm(a: Array, b: Array, bias: Array | None = None) -> Array | None:
    """a @ b (+ bias, a row added to every row: MKL's beta = 1 on an output that starts as the
    broadcast bias, which saves a pass over the output), or None where MKL cannot take it."""
    if not _mkl_takes(a, b) or (bias is not None and bias.dtype != a.dtype):
        return None
    op_a = _operand(a) or _operand(a := numpy.ascontiguousarray(a))
    op_b = _operand(b) or _operand(b := numpy.ascontiguousarray(b))
    assert op_a is not None and op_b is not None  # a contiguous copy always qualifies
    out = numpy.empty((a.shape[0], b.shape[1]), a.dtype)
    beta = 0.0
    if bias is not None:
        out[...] = bias
        beta = 1.0
    _gemm(op_a, op_b, a, b, out, beta)
    return out


def _mkl_takes(a: Array, b: Array) -> bool:
    """Both float32 or both float64, neither empty: what cblas_?gemm is called with."""
    return (
        a.dtype == b.dtype
        and a.dtype in (numpy.float32, numpy.float64)
        and 0 not in a.shape
        and 0 not in b.shape
    )


def _controller() -> Any:
    """threadpoolctl's controller of the BLAS libraries loaded now (made again once MKL loads:
    it sees the libraries that were loaded when it was made)."""
    mkl_loaded = CONFIG.found.mkl is not None
    have = CONFIG.found.blas_controller
    if have is None or have[0] != mkl_loaded:
        from threadpoolctl import ThreadpoolController

        have = CONFIG.found.blas_controller = (
            mkl_loaded,
            ThreadpoolController().select(user_api="blas"),
        )
    return have[1]


#: how many ``one_thread_per_product`` blocks are open (any thread)
_one_thread_blocks = [0]
#: how many ``one_blas_thread`` blocks are open (any thread)
_one_thread_loops = [0]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Every BLAS library on one thread while it lasts (a training loop of a small net:
    cpu_threads.blas_threads), and products up to SMALL_PRODUCT_ONE_THREAD made by NumPy."""
    with _limited_to_one_thread(_one_thread_loops):
        yield


@contextlib.contextmanager
def _limited_to_one_thread(counter: list) -> Iterator[None]:
    """Every BLAS library on one thread, and ``counter[0]`` one higher, while it lasts."""
    # threadpoolctl limits the libraries loaded when it is entered: load the one the products
    # will use first (MKL is loaded lazily, at the first product, which came after the limit and
    # kept its own thread count inside it)
    active()
    with _controller().limit(limits=1):
        counter[0] += 1
        try:
            yield
        finally:
            counter[0] -= 1


@contextlib.contextmanager
def one_thread_per_product() -> Iterator[None]:
    """Every BLAS library on one thread per product while it lasts, for callers that make
    products on several threads of their own at once (kernels/numba_cpu/conv.py); each of those
    threads enters ``one_thread_here`` as well. Products made meanwhile are not noted
    (cpu_threads.note_matmul): no BLAS thread is left spinning after them, and noting them kept
    the next call of a split convolution serial -- on two threads, the 7x7 first layer's
    forward (3 to 32 channels, batch 64) never split: 7.8 ms, 6.2 once it did."""
    with _limited_to_one_thread(_one_thread_blocks):
        yield


def _note() -> None:
    """cpu_threads.note_matmul, unless the BLAS is held to one thread (nothing spins then)."""
    if not _one_thread_blocks[0]:
        cpu_threads.note_matmul()


@contextlib.contextmanager
def one_thread_here() -> Iterator[None]:
    """MKL on one thread for the products this thread makes while it lasts. On GNU OpenMP, MKL's
    thread count is the calling thread's own (OpenMP's per-thread setting): a limit set on one
    thread left another thread's products on two threads, and a 64-sample dw pass took 8.6 ms
    on it against 3.7 on the limited one."""
    mkl = CONFIG.found.mkl
    if mkl is None:
        yield
        return
    old = mkl.MKL_Set_Num_Threads_Local(1)
    try:
        yield
    finally:
        mkl.MKL_Set_Num_Threads_Local(old)


def _gemm(op_a: tuple, op_b: tuple, a: Array, b: Array, out: Array, beta: float) -> None:
    """out = a @ b + beta out by MKL's cblas_?gemm (out C-contiguous)."""
    (ta, lda), (tb, ldb) = op_a, op_b
    (M, K), N = a.shape, b.shape[1]
    mkl = CONFIG.found.mkl
    gemm = mkl.cblas_sgemm if a.dtype == numpy.float32 else mkl.cblas_dgemm
    gemm(_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, beta,
         out.ctypes.data, N)  # fmt: skip


def matmul_into(a: Array, b: Array, out: Array, accumulate: bool = False) -> None:
    """out = a @ b, or out += a @ b (``accumulate``), for 2-D NumPy arrays and a C-contiguous
    ``out`` (M, N) of their dtype: no result array, no copy (with MKL, its beta = 1 adds in
    place). The products of Winograd's 16 positions per chunk (kernels/numba_cpu/winograd.py)."""
    if active() == "mkl" and _mkl_takes(a, b) and out.dtype == a.dtype and out.flags.c_contiguous:
        op_a, op_b = _operand(a), _operand(b)
        if op_a is not None and op_b is not None:
            _gemm(op_a, op_b, a, b, out, 1.0 if accumulate else 0.0)
            _noted(out)
            return
    if accumulate:
        out += a @ b
    else:
        numpy.matmul(a, b, out=out)
    _note()


def _noted(out: Array) -> Array:
    if not shares_numba_threads():
        _note()  # BLAS threads that are not Numba's now spin
    return out


def matmul(a: Array, b: Array, bias: Array | None = None) -> Array:
    """a @ b for 2-D NumPy arrays a (M, K) and b (K, N), plus ``bias`` (N,) on every row if given
    (a Linear layer's x @ W + b)."""
    limit = SMALL_PRODUCT_ONE_THREAD if _one_thread_loops[0] else SMALL_PRODUCT
    small = a.ndim == 2 and b.ndim == 2 and a.shape[0] * a.shape[1] * b.shape[-1] <= limit
    if active() == "mkl":
        if small:
            return _plus(a @ b, bias)  # NumPy's, on this thread (SMALL_PRODUCT)
        if a.ndim == 2 and b.ndim == 2:
            if _skinny_transposed(a, b, bias):
                out = mkl_gemm(b.T, a.T)  # (A^T B)^T's transpose: the same dot products
                if out is not None:
                    return _noted(numpy.ascontiguousarray(out.T))
            out = mkl_gemm(a, b, bias)
            if out is not None:
                return _noted(out)
    out = a @ b
    _note()
    return _plus(out, bias)


def _skinny_transposed(a: Array, b: Array, bias: Array | None) -> bool:
    """a is a transposed row-major array (F-contiguous only) and b has SKINNY_COLUMNS or fewer."""
    return (
        bias is None
        and b.shape[1] <= SKINNY_COLUMNS
        and a.flags.f_contiguous
        and not a.flags.c_contiguous
    )


def _plus(out: Array, bias: Array | None) -> Array:
    if bias is not None:
        out += bias
    return out


def tensordot(a: Array, b: Array, axes: tuple) -> Array:
    """numpy.tensordot(a, b, axes) with explicit axis lists, as NumPy computes it: both operands
    transposed and reshaped to 2-D (a copy where needed), then one matrix product."""
    axes_a, axes_b = list(axes[0]), list(axes[1])
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]
    k = math.prod(a.shape[i] for i in axes_a)
    a2 = a.transpose(free_a + axes_a).reshape(-1, k)
    b2 = b.transpose(axes_b + free_b).reshape(k, -1)
    shape = tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b)
    return matmul(a2, b2).reshape(shape)


def column_sums(a: Array) -> Array:
    """The sum over the rows of a 2-D array a (N, M) (a bias gradient), for floats as the product
    ones(N) @ a: BLAS's matrix-vector kernel, 3x faster than NumPy's axis-0 sum at (1024, 512)."""
    d = a
    N, M = d.shape
    if d.dtype not in (numpy.float32, numpy.float64) or not N or not M:
        return d.sum(axis=0)
    if active() == "mkl":
        if N * M <= SMALL_PRODUCT:
            return d.sum(axis=0)  # no BLAS call at all: nothing left spinning
        d = numpy.ascontiguousarray(d)
        ones, out = numpy.ones(N, d.dtype), numpy.empty(M, d.dtype)
        mkl = CONFIG.found.mkl
        gemv = mkl.cblas_sgemv if d.dtype == numpy.float32 else mkl.cblas_dgemv
        gemv(_ROW_MAJOR, _TRANS, N, M, 1.0, d.ctypes.data, M, ones.ctypes.data, 1, 0.0,
             out.ctypes.data, 1)  # fmt: skip
        return _noted(out)
    out = numpy.ones(N, d.dtype) @ d
    _note()
    return out
