"""gpunet's CPU thread policy, in one place: when a Numba CPU kernel runs on every core and when
on one, and how many BLAS threads a training run's matrix products get.

The activation, BatchNorm and optimizer kernels (kernels/numba_cpu/activations.py, batchnorm.py,
cpu_optim.py) each have a serial and a parallel (``prange``) build and ask ``parallel(n)`` which
one to run; the training loop asks ``blas_threads(largest_product)`` (bottom of this file).

What decides it, measured on the 2-core development machine (Intel Xeon VM, NumPy's OpenBLAS
0.3.31 with its own pthreads, Numba 0.68 on its OpenMP threading layer; BENCHMARKS.md):

* **Right after a matrix product, one thread.** OpenBLAS's worker threads keep spinning for about
  0.1 s after every product (its THREAD_TIMEOUT, 2^28 cycles) and a parallel Numba region in that
  window fights them for the cores: sigmoid on 1M float32 values took 0.46 ms serial and 5.4 ms
  parallel after a product; a training step (batch 1024, 784-512-512-10) 14.5 ms with serial
  kernels, 39 ms with parallel ones. Shortening both spins (``OPENBLAS_THREAD_TIMEOUT=4`` and
  ``GOMP_SPINCOUNT=0`` or ``10000``, set before the libraries load) only brought the parallel step
  back to 14.6 ms: on two cores the wake-ups cost what the second core gains. So inside training
  and evaluation -- where every kernel follows a product by milliseconds -- the kernels run
  serially, and the matrix products keep both cores (OpenBLAS's own threads; their speed is
  PyTorch's MKL's within a few per cent: BENCHMARKS.md).
* **Away from matrix products, every core.** An activation, BatchNorm or optimizer update on its
  own halves on two cores: sigmoid on 1M values 459 -> 230 us, from about 64K values on (below,
  waking the threads costs more than the second core saves).

* **When the cores are not free, one thread.** Another process on a core turns a parallel region
  into a wait for the scheduler: a two-thread kernel whose second thread is descheduled finishes
  one 4-8 ms time slice later (the in-process benches read 7,990-8,000 us for 100 us kernels on a
  loaded machine). Each kernel call goes through ``choose(key, n)``, which times it: a parallel
  call slower than the same kernel's own serial time per value (``STALL_FACTOR`` x, plus
  ``STALL_MARGIN_S``) is a stall, and after ``STALL_STRIKES`` of them in a row every kernel runs
  serially for ``BACKOFF_S`` (0.25 s, doubling while the stalls go on, up to
  ``BACKOFF_MAX_S``), then tries the cores again. Measured: 300 sigmoids on 1M values, quiet,
  auto 74 ms = parallel's 73 (serial 137); with one core taken by another process, auto 137-208
  ms, parallel 167-296, serial 128-137 (runs scatter). A kernel with no serial time yet runs its
  next call serially to get one when a parallel call was far slower than its best.

gpunet knows when *it* ran a product: every CPU product of Linear, Conv2d and the bias gradients
goes through cpu_blas.py, which calls ``note_matmul()`` after each one that leaves foreign threads
spinning (OpenBLAS's; not MKL's when MKL runs on Numba's own OpenMP threads -- then the kernels
stay parallel inside a step too). Products a program makes with NumPy directly are invisible
here; a program that interleaves its own large products with gpunet kernels can pin the choice
with ``gpunet.set_cpu_kernels("numba-serial")`` (or ``"numba-parallel"``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterator

from gpunet.config import CONFIG

__all__ = [
    "MODES",
    "PARALLEL_MIN",
    "QUIET_S",
    "SINGLE_THREAD_BELOW",
    "blas_threads",
    "choose",
    "key",
    "watch",
    "get_mode",
    "last_matmul",
    "note_matmul",
    "parallel",
    "product_loop",
]

MODES = ("auto", "serial", "parallel")
#: in ``auto``, from this many values a kernel away from matrix products runs on every core
PARALLEL_MIN = 1 << 16
#: in ``auto``, this long after gpunet's last matrix product kernels stay serial (OpenBLAS's
#: worker threads spin for 2^28 TSC cycles, 0.08-0.13 s at 2-3.5 GHz, after each product)
QUIET_S = 0.15

#: a parallel call slower than STALL_FACTOR x its kernel's serial time for as many values, plus
#: STALL_MARGIN_S, was stalled by the scheduler (the margin keeps cache effects and timer jitter
#: of sub-millisecond calls out; a stall costs a 4-8 ms time slice)
STALL_FACTOR = 1.5
STALL_MARGIN_S = 1e-3
#: this many stalled parallel calls in a row send every kernel serial for BACKOFF_S, doubled for
#: each further episode up to BACKOFF_MAX_S, back to BACKOFF_S after a parallel call that kept
#: its time
STALL_STRIKES = 2
#: short at first: a fresh process's first parallel calls are slow too (its threads start and
#: its new pages fault in, 5-10 ms for 1M-value sigmoids against 0.42 ms serial), and going
#: serial for a whole second then cost a quiet run its second core
BACKOFF_S = 0.25
BACKOFF_MAX_S = 60.0
#: a serial call is timed while its kernel has fewer than SERIAL_SAMPLES serial times, then one
#: call in SERIAL_EVERY: the serial reference is a minimum, which more samples barely move, and
#: timing a call costs ~1 us of Python (a fifth of a 256K-value ReLU's dispatch, issue #24)
SERIAL_SAMPLES = 8
SERIAL_EVERY = 64

#: the CPU kernel choice (gpunet.set_cpu_kernels) -> the thread mode it sets
_MODE_OF_CHOICE = {"numba-serial": "serial", "numba-parallel": "parallel"}


def get_mode() -> str:
    """``"auto"`` (the rules above), ``"serial"`` or ``"parallel"`` for every Numba CPU kernel:
    what ``gpunet.set_cpu_kernels`` chose ("numba-serial", "numba-parallel", else auto)."""
    return _MODE_OF_CHOICE.get(CONFIG.get("cpu_kernels"), "auto")


def last_matmul() -> float:
    """``time.perf_counter()`` of gpunet's last CPU matrix product (-inf: none yet)."""
    return CONFIG.found.last_matmul


def note_matmul() -> None:
    """Called after each matrix product gpunet makes on the CPU: BLAS threads are spinning now."""
    CONFIG.found.last_matmul = time.perf_counter()


def _blas_on_numba_threads() -> bool:
    from . import cpu_blas

    return cpu_blas.shares_numba_threads()


def parallel(n_values: int) -> bool:
    """Whether a kernel over ``n_values`` values should run its parallel build now."""
    mode = get_mode()
    if mode != "auto":
        return mode == "parallel"
    if time.perf_counter() < watch().serial_until:  # the cores are taken (stalls, above)
        return False
    if parallel_builds_pending():
        return False  # a helper is compiling the parallel builds (kernels/numba_cpu/warm.py)
    loop = CONFIG.found.product_loop
    if loop == "serial" or n_values < PARALLEL_MIN:
        return False
    import numba  # here, not at the top: Linear imports this module, and Numba costs 0.3 s

    if numba.get_num_threads() < 2:
        return False
    if loop:  # inside a training loop: only where nothing else spins (product_loop)
        return loop == "free" or _blas_on_numba_threads()
    return time.perf_counter() - CONFIG.found.last_matmul > QUIET_S


def parallel_builds_pending() -> bool:
    """Whether a helper (``CONFIG.found.parallel_helper``, kernels/numba_cpu/warm.py) is
    compiling the parallel builds now; once it has exited, forgotten."""
    helper = CONFIG.found.parallel_helper
    if helper is None:
        return False
    if helper.poll() is None:
        return True
    CONFIG.found.parallel_helper = None
    return False


def held_by_last_product(n_values: int) -> bool:
    """Whether ``parallel(n_values)`` says serial only because a matrix product ran in the last
    QUIET_S (outside a training loop, auto mode, cores not taken): a caller whose own products
    would keep that true call after call (a split convolution's unsplit path) can make them on
    one BLAS thread, so that they leave nothing spinning and are not noted."""
    if get_mode() != "auto" or CONFIG.found.product_loop or n_values < PARALLEL_MIN:
        return False
    if time.perf_counter() < watch().serial_until:
        return False
    import numba

    return numba.get_num_threads() >= 2 and not parallel(n_values)


# ----------------------------------------------------------------------------- OpenMP's spin
#: GOMP_SPINCOUNT that ``short_openmp_spin`` sets. GNU OpenMP's threads (Numba's parallel
#: kernels; MKL's products) spin this many turns after a parallel region before they sleep --
#: by default 300,000, about a millisecond, during which they hold a core that gpunet's own
#: threads (a convolution's samples split over threads, kernels/numba_cpu/conv.py) then wait
#: for. Measured on the 2-core development machine, issue #23's 7x7 training step at batch 64
#: on two threads: MKL 18.4 ms with the default, 12.6 with 10,000, 14.0 with 100,000; bare
#: (OpenBLAS) 25.2 / 14.4 / 16.6. With 0 the threads sleep at once and waking them costs about
#: 80 us a call: back-to-back activations on 256K values took 110 us instead of 20; with 10,000
#: they take 20, as with the default.
OPENMP_SPIN = "10000"

_spin_state: dict = {"why": "not set yet", "set": False}


def short_openmp_spin() -> bool:
    """Set GOMP_SPINCOUNT to OPENMP_SPIN for GNU OpenMP, which reads it when it loads (gpunet's
    import calls this, before Numba's or MKL's OpenMP loads); True if set. Left alone where the
    user set GOMP_SPINCOUNT or OMP_WAIT_POLICY, or where OpenMP is already loaded."""
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        _spin_state["why"] = "GOMP_SPINCOUNT / OMP_WAIT_POLICY as the environment sets them"
        return False
    if _openmp_loaded():
        _spin_state["why"] = "OpenMP was loaded before gpunet: its own spin"
        return False
    os.environ["GOMP_SPINCOUNT"] = OPENMP_SPIN
    _spin_state["set"] = True
    _spin_state["why"] = (
        f"GOMP_SPINCOUNT={OPENMP_SPIN} (set by gpunet: OpenMP threads sleep sooner after a "
        "parallel region; set it before import gpunet to choose another)"
    )
    return True


def _openmp_loaded() -> bool:
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            return "libgomp" in maps.read()
    except OSError:
        return False  # not Linux: no GNU OpenMP to speak of


def user_environment() -> dict:
    """os.environ as it was before gpunet's import set GOMP_SPINCOUNT (for a process that must
    not inherit it: the torch side of a benchmark)."""
    env = dict(os.environ)
    if _spin_state["set"] and env.get("GOMP_SPINCOUNT") == OPENMP_SPIN:
        del env["GOMP_SPINCOUNT"]
    return env


def openmp_spin_state() -> str:
    """What ``short_openmp_spin`` did, in words (``gpunet info``)."""
    return str(_spin_state["why"])


# ----------------------------------------------------------------------------- stall watch
@dataclasses.dataclass
class Watch:
    """What ``choose`` learned of the kernels' times in this process."""

    #: the best seconds per value of each kernel (key) on its serial / parallel build
    serial: dict = dataclasses.field(default_factory=dict)
    parallel: dict = dataclasses.field(default_factory=dict)
    #: (key, parallel) pairs seen once: a first call compiles or loads its build, not timed
    seen: set = dataclasses.field(default_factory=set)
    #: kernels whose next call runs serially to learn their serial time
    probe: set = dataclasses.field(default_factory=set)
    #: serial calls of each kernel so far (which of them are timed: SERIAL_SAMPLES)
    serial_calls: dict = dataclasses.field(default_factory=dict)
    strikes: int = 0
    #: time.perf_counter() until which every kernel runs serially, and the next backoff
    serial_until: float = float("-inf")
    backoff: float = BACKOFF_S
    #: how many times the cores were found taken (gpunet info, tests)
    episodes: int = 0


def watch() -> Watch:
    """This process's stall watch (created on first use)."""
    found = CONFIG.found
    if found.thread_watch is None:
        found.thread_watch = Watch()
    return found.thread_watch


class _Timed:
    """The block of one kernel call: yields the build to run, times the call on exit."""

    __slots__ = ("key", "n", "parallel", "t0")

    def __init__(self, key: str, n: int, parallel: bool) -> None:
        self.key, self.n, self.parallel = key, n, parallel
        self.t0 = 0.0

    def __enter__(self) -> bool:
        self.t0 = time.perf_counter()
        return self.parallel

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            observe(self.key, self.n, self.parallel, time.perf_counter() - self.t0)


_KEYS: dict = {}


def key(name: str, dtype: object) -> str:
    """The stall watch's name of kernel ``name`` on ``dtype`` ("sigmoid/float32"), made once:
    formatting a NumPy dtype costs ~2 us, more than the rest of ``choose``."""
    got = _KEYS.get((name, dtype))
    if got is None:
        got = _KEYS[(name, dtype)] = f"{name}/{dtype}"
    return got


def choose(kernel: str, n_values: int) -> _Timed | _Untimed:
    """``parallel(n_values)`` for ``kernel`` (its name and dtype: ``key``), as a timed block::

        with cpu_threads.choose(cpu_threads.key("sgd", p.dtype), p.size) as par:
            _SGD[par](...)

    The call's time feeds the stall watch (the module's docstring)."""
    par = parallel(n_values)
    w = watch()
    if par:
        if kernel not in w.probe:
            return _Timed(kernel, n_values, True)
        w.probe.discard(kernel)
    calls = w.serial_calls.get(kernel, 0)
    w.serial_calls[kernel] = calls + 1
    if calls < SERIAL_SAMPLES or calls % SERIAL_EVERY == 0:
        return _Timed(kernel, n_values, False)
    return _UNTIMED


class _Untimed:
    """A serial call that is not timed (``choose``'s SERIAL_SAMPLES)."""

    __slots__ = ()

    def __enter__(self) -> bool:
        return False

    def __exit__(self, *_: object) -> None:
        pass


_UNTIMED = _Untimed()


def observe(key: str, n_values: int, parallel_build: bool, seconds: float) -> None:
    """Record one call of kernel ``key`` over ``n_values`` values that took ``seconds``."""
    w = watch()
    if (key, parallel_build) not in w.seen:  # compiled or loaded its build: not a kernel time
        w.seen.add((key, parallel_build))
        return
    rate = seconds / max(n_values, 1)
    if not parallel_build:
        w.serial[key] = min(w.serial.get(key, math.inf), rate)
        return
    w.parallel[key] = min(w.parallel.get(key, math.inf), rate)
    serial_rate = w.serial.get(key)
    if serial_rate is None:
        import numba

        bound = w.parallel[key] * numba.get_num_threads()  # no build is slower than this alone
        if seconds > STALL_FACTOR * bound * n_values + STALL_MARGIN_S:
            w.probe.add(key)
        return
    if seconds <= STALL_FACTOR * serial_rate * n_values + STALL_MARGIN_S:
        w.strikes, w.backoff = 0, BACKOFF_S
        return
    w.strikes += 1
    if w.strikes >= STALL_STRIKES:
        w.serial_until = time.perf_counter() + w.backoff
        w.backoff = min(2 * w.backoff, BACKOFF_MAX_S)
        w.strikes = 0
        w.episodes += 1


#: The BLAS side: below this many multiply-adds, a training run's matrix products run on one BLAS
#: thread (waking threads costs more than it saves on tiny products, and on 2 cores they compete
#: with Numba's and NumPy's work: issue #13 measured the digits run swinging between 6 and 13 s
#: from that oversubscription). On the development machine the digits MLP's 30 epochs take
#: 0.59-0.62 s with one BLAS thread or two -- within noise -- so this is a guard, not a measured
#: speed-up. Larger nets keep every thread.
SINGLE_THREAD_BELOW = 1 << 23


@contextlib.contextmanager
def product_loop(single_blas_thread: bool | None = None, serial: bool = False) -> Iterator[None]:
    """A training or evaluation loop's CPU region, where products and kernels alternate. In
    ``auto`` a kernel there runs its parallel build (from PARALLEL_MIN values) only when nothing
    else spins on the cores: the products run on one BLAS thread (``single_blas_thread``: a
    small net, blas_threads below) or on Numba's own OpenMP threads (MKL on GNU OpenMP);
    otherwise every kernel runs serially, also the first of each step and of each evaluation,
    which the 0.15 s rule above let go parallel into the BLAS threads' spinning. Measured on the
    development machine, the digits convnet (`gpunet train --model convnet`), OpenBLAS limited
    to one thread: kernels by size 3.8 s, all serial 5.6 s; and a first run that never uses a
    parallel build does not compile it (issue #24: the parallel BatchNorm build alone took
    6.4-6.9 s to compile). ``None``: as the enclosing loop has it, else "products".
    ``serial``: every kernel serial -- an evaluation (train.evaluate, the per-epoch
    accuracies), a few forward passes where a parallel build would be compiled for a
    gain of microseconds: the quickstart's first `gpunet train` compiled BatchNorm's parallel
    build for its evaluation batches alone, 4.8-5.3 s wall, 4.3 s without; the digits convnet's
    30 epochs took 3.4-3.5 s with serial evaluations, 3.6-3.9 s without."""
    old = CONFIG.found.product_loop
    if serial:
        CONFIG.found.product_loop = "serial"
    elif single_blas_thread is None:
        CONFIG.found.product_loop = old or "products"
    else:
        CONFIG.found.product_loop = "free" if single_blas_thread else "products"
    try:
        yield
    finally:
        CONFIG.found.product_loop = old


def blas_threads(largest_product: int) -> contextlib.AbstractContextManager:
    """The BLAS threads for a CPU computation whose largest matrix product has
    ``largest_product`` multiply-adds: one below SINGLE_THREAD_BELOW, else the default."""
    if largest_product >= SINGLE_THREAD_BELOW:
        return contextlib.nullcontext()
    from . import cpu_blas

    return cpu_blas.one_blas_thread()
