"""The emulator's checkers (tests/emulator/cuda_emu.h), each shown to catch its class of defect.

compute-sanitizer is the bar: memcheck (out-of-bounds global accesses), racecheck (shared-memory
hazards between two barriers), synccheck (barriers not reached by the whole block, or at different
sites), initcheck (reads of memory nobody wrote), plus a watchdog for launches that never finish.
One small kernel per defect, planted as a first GPU run would meet it; every report must name the
kernel, the block, the thread and where (the source line, the allocation or the __shared__ object).
Each test then runs a correct kernel in the same process: a fault must leave the emulator usable.
Every test id contains "emulated", so ``pytest -k emulated`` runs these too.
"""

import re

import numpy
import pytest
from emulator import emulation

import gpunet

PLANTED = r"""
extern "C" __global__ void copy_ok(const float *x, float *y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i];
}
// off-by-one tail: the thread i == n reads and writes one element past the end
extern "C" __global__ void tail_off_by_one(const float *x, float *y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 2.0f * x[i];
}
// missing guard: every thread of the last block writes, past the end of y
extern "C" __global__ void missing_guard(float *y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = 1.0f;
}
// a negative index: reads before the start of x
extern "C" __global__ void reads_before_start(const float *x, float *y) {
    y[threadIdx.x] = x[(int)threadIdx.x - 3];
}
// missing barrier: each thread writes its slot, then reads its neighbour's without a barrier
extern "C" __global__ void missing_barrier(const float *x, float *y) {
    __shared__ float tile[64];
    int t = threadIdx.x;
    tile[t] = 0.0f;
    __syncthreads();
    tile[t] = x[t];
    y[t] = tile[(t + 1) % blockDim.x];
}
// divergent barrier: the two halves of the block wait at different __syncthreads()
extern "C" __global__ void divergent_barrier(float *y) {
    __shared__ float tile[64];
    tile[threadIdx.x] = 1.0f;
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    y[threadIdx.x] = tile[threadIdx.x];
}
// a barrier only part of the block reaches: the others have left the kernel
extern "C" __global__ void partial_barrier(const float *x, float *y, long long n) {
    __shared__ float tile[64];
    long long i = threadIdx.x;
    if (i >= n) return;
    tile[i] = x[i];
    __syncthreads();
    y[i] = tile[n - 1 - i];
}
// uninitialized shared read: half the tile is never written
extern "C" __global__ void uninitialized_shared(float *y) {
    __shared__ float tile[64];
    if (threadIdx.x < 32) tile[threadIdx.x] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = tile[63 - threadIdx.x];
}
// spin-wait on another block: nothing guarantees block 1 runs while block 0 waits
extern "C" __global__ void spin_wait(volatile int *flag, float *y) {
    if (blockIdx.x == 0) {
        while (*flag == 0) {
        }
        y[threadIdx.x] = 1.0f;
    } else {
        __threadfence();
    }
}
// block 0 waits for block 1: completes only if the two blocks run at the same time
extern "C" __global__ void handshake(volatile int *flag, float *y) {
    if (threadIdx.x == 0) {
        if (blockIdx.x == 1) *flag = 1;
        else while (*flag == 0) {
        }
        y[blockIdx.x] = 1.0f;
    }
}
// numerics: CuPy compiles with -ftz=true (float only) and NVRTC contracts a * b - c into an FMA
extern "C" __global__ void halve_float(const float *x, float *y) {
    y[threadIdx.x] = x[threadIdx.x] * 0.5f;
}
extern "C" __global__ void halve_double(const double *x, double *y) {
    y[threadIdx.x] = x[threadIdx.x] * 0.5;
}
extern "C" __global__ void square_minus_float(const float *x, const float *c, float *y) {
    y[threadIdx.x] = x[threadIdx.x] * x[threadIdx.x] - c[threadIdx.x];
}
// shared memory written by block 0 only: block 1 reads what its own threads never wrote
extern "C" __global__ void first_block_only(float *y) {
    __shared__ float tile[64];
    if (blockIdx.x == 0) tile[threadIdx.x] = 1.0f;
    __syncthreads();
    y[blockIdx.x * 64 + threadIdx.x] = tile[threadIdx.x];
}
"""


@pytest.fixture
def cp(monkeypatch):
    with emulation() as fake:
        monkeypatch.setattr(fake, "HANG_SECONDS", 1.0)
        yield fake


@pytest.fixture
def planted(cp):
    return cp.RawModule(code=PLANTED)


def _still_works(cp, planted):
    """A correct launch after the fault: full values, no stale state from the faulted launch."""
    x = cp.asarray(numpy.arange(300, dtype=numpy.float32))
    y = cp.empty_like(x)
    planted.get_function("copy_ok")((3,), (128,), (x, y, cp.int64(300)))
    numpy.testing.assert_array_equal(gpunet.to_numpy(y), numpy.arange(300, dtype=numpy.float32))


def _f32(cp, n, fill=None):
    return cp.empty(n, numpy.float32) if fill is None else cp.full(n, fill, numpy.float32)


#: one planted defect a row: kernel, grid, block, its arguments, and what the report must say
#: (besides the kernel's name and a block, which every report names)
DEFECTS = {
    "memcheck-off-by-one-tail": (
        "tail_off_by_one",
        (1,),
        (128,),
        lambda cp: (_f32(cp, 100, 1), _f32(cp, 100), cp.int64(100)),
        [
            r"memcheck: out-of-bounds read of 4 bytes at 0 bytes past the end of argument 0 "
            r"\(an allocation of 400 bytes\)",
            r"block \(0,0,0\), thread \(100,0,0\)",
            r"code at line 9 of the module source",
        ],
    ),
    "memcheck-missing-guard": (
        "missing_guard",
        (2,),
        (128,),
        lambda cp: (_f32(cp, 200), cp.int64(200)),
        [
            r"memcheck: out-of-bounds write of 4 bytes at \d+ bytes past the end of argument 0",
            r"block \(1,0,0\)",
            r"code at line 14 of the module source",
        ],
    ),
    "memcheck-negative-index": (
        "reads_before_start",
        (1,),
        (32,),
        lambda cp: (_f32(cp, 32, 1), _f32(cp, 32)),
        [
            r"memcheck: out-of-bounds read of 4 bytes at -(4|8|12) bytes from the start of "
            r"argument 0"
        ],
    ),
    "racecheck-missing-barrier": (
        "missing_barrier",
        (1,),
        (64,),
        lambda cp: (_f32(cp, 64, 1), _f32(cp, 64)),
        [
            r"racecheck: shared memory (read-after-write|write-after-read) hazard at "
            r"missing_barrier::tile\+\d+",
            r"thread \(\d+,0,0\)",
            r"code at line (26|27) of the module source",
        ],
    ),
    "synccheck-divergent-barrier": (
        "divergent_barrier",
        (1,),
        (64,),
        lambda cp: (_f32(cp, 64),),
        [
            r"synccheck: divergent barrier: thread \(\d+,0,0\) waits at the __syncthreads\(\) "
            r"of line (34|36) of the module source, thread \(\d+,0,0\) at the one of line (34|36)"
        ],
    ),
    "synccheck-partial-barrier": (
        "partial_barrier",
        (1,),
        (64,),
        lambda cp: (_f32(cp, 64, 1), _f32(cp, 64), cp.int64(40)),
        [
            r"synccheck: the __syncthreads\(\) of line 46 of the module source is reached by 40 "
            r"of 64 threads: 24 left the kernel without reaching it"
        ],
    ),
    "initcheck-uninitialized-shared": (
        "uninitialized_shared",
        (1,),
        (64,),
        lambda cp: (_f32(cp, 64),),
        [
            r"initcheck: read of 4 bytes of __shared__ memory at uninitialized_shared::tile\+\d+ "
            r"that no thread of this block has written",
            r"thread \((\d|[12]\d|3[01]),0,0\)",
            r"code at line 54 of the module source",
        ],
    ),
    "initcheck-shared-written-by-another-block": (
        "first_block_only",
        (2,),
        (64,),
        lambda cp: (_f32(cp, 128),),
        [
            r"initcheck: read of 4 bytes of __shared__ memory at first_block_only::tile\+\d+",
            r"block \(1,0,0\)",
        ],
    ),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_emulated_checker_reports_planted_defect(cp, planted, defect):
    name, grid, block, make_args, patterns = DEFECTS[defect]
    with pytest.raises(cp.cuda.CUDADriverError) as caught:
        planted.get_function(name)(grid, block, make_args(cp))
    text = str(caught.value)
    for pattern in (f"kernel '{name}'", r"block \(\d+,\d+,\d+\)", *patterns):
        assert re.search(pattern, text), (pattern, text)
    _still_works(cp, planted)


def test_emulated_memcheck_view_bounds_are_the_allocation(cp, planted):
    """A view reads inside its base allocation: legal on a GPU too (CuPy passes the view's
    pointer), so no report -- only the allocation's own end is a fault."""
    big = cp.asarray(numpy.arange(101, dtype=numpy.float32))
    y = cp.empty(100, numpy.float32)
    planted.get_function("tail_off_by_one")((1,), (128,), (big[:100], y[:99], cp.int64(98)))
    numpy.testing.assert_array_equal(gpunet.to_numpy(y)[:99], 2 * numpy.arange(99))


# ----------------------------------------------------------------------------- initcheck
def test_emulated_initcheck_empty_is_poisoned(cp):
    """empty()/empty_like() give NaN floats and 0xA5 bytes: an unwritten output reads as garbage."""
    assert numpy.isnan(gpunet.to_numpy(cp.empty(5, numpy.float32))).all()
    assert numpy.isnan(gpunet.to_numpy(cp.empty_like(cp.zeros((2, 3))))).all()
    assert (gpunet.to_numpy(cp.empty(4, numpy.int32)).view(numpy.uint8) == 0xA5).all()
    assert (gpunet.to_numpy(cp.zeros(4, numpy.int32)) == 0).all()


# ----------------------------------------------------------------------------- hangs
def test_emulated_hang_is_reported_not_waited_for(cp, planted):
    flag = cp.zeros(1, numpy.int32)
    y = cp.empty(32, numpy.float32)
    # blocks in a shuffled order: the waiting block may run first (a hang) or last (fine);
    # run until it runs first (each seed decides it), at most 20 launches
    for _ in range(20):
        flag[...] = 0
        try:
            planted.get_function("spin_wait")((2,), (32,), (flag, y))
        except cp.cuda.CUDADriverError as e:
            text = str(e)
            break
    else:
        pytest.fail("block 0 never ran before block 1 in 20 launches")
    assert "hang: no progress for 1 s (kernel 'spin_wait', block (0,0,0))" in text
    assert "threads 0-31 are running" in text
    _still_works(cp, planted)


def test_emulated_concurrent_blocks_run_at_the_same_time(cp, planted, monkeypatch):
    """CONCURRENT_BLOCKS = 2 runs two blocks of one launch at once (the merge tests use it): a
    kernel whose block 0 waits for block 1 completes there, and hangs when blocks run in turn."""
    flag, y = cp.zeros(1, numpy.int32), cp.zeros(2, numpy.float32)
    monkeypatch.setattr(cp, "CONCURRENT_BLOCKS", 2)
    for _ in range(3):
        flag[...] = 0
        planted.get_function("handshake")((2,), (32,), (flag, y))
        numpy.testing.assert_array_equal(gpunet.to_numpy(y), [1, 1])
    monkeypatch.setattr(cp, "CONCURRENT_BLOCKS", 1)
    for _ in range(30):  # block 0 first (a hang) is a coin toss per launch
        flag[...] = 0
        try:
            planted.get_function("handshake")((2,), (32,), (flag, y))
        except cp.cuda.CUDADriverError as e:
            assert "hang: no progress for 1 s (kernel 'handshake'" in str(e)
            break
    else:
        pytest.fail("blocks in turn never ran block 0 first in 30 launches")


# ----------------------------------------------------------------------------- numerics
def test_emulated_float_kernels_flush_denormals_like_cupy(cp, planted):
    """-ftz=true: a float kernel reads a denormal as 0 and flushes a denormal result; double
    kernels keep them (CUDA's FTZ mode is single precision only)."""
    tiny32 = numpy.array(
        [1e-39, 2e-38, -1e-40, 2.0], numpy.float32
    )  # denormal, normal/2 -> denormal
    y32 = cp.empty(4, numpy.float32)
    planted.get_function("halve_float")((1,), (4,), (cp.asarray(tiny32), y32))
    numpy.testing.assert_array_equal(gpunet.to_numpy(y32), [0.0, 0.0, 0.0, 1.0])
    tiny64 = numpy.array([1e-310, 4e-308], numpy.float64)
    y64 = cp.empty(2, numpy.float64)
    planted.get_function("halve_double")((1,), (2,), (cp.asarray(tiny64), y64))
    numpy.testing.assert_array_equal(gpunet.to_numpy(y64), tiny64 * 0.5)


def test_emulated_contracts_multiply_add_like_nvrtc(cp, planted):
    """x * x - c with x = 1 + 2^-12, c = 1 + 2^-11: rounded separately it is 0, as one FMA (what
    NVRTC's default --fmad=true emits) 2^-24."""
    from emulator import build

    if "-mfma" not in build.FLAGS:
        pytest.skip("this CPU has no FMA instruction")
    x = cp.asarray(numpy.array([1 + 2.0**-12], numpy.float32))
    c = cp.asarray(numpy.array([1 + 2.0**-11], numpy.float32))
    y = cp.empty(1, numpy.float32)
    planted.get_function("square_minus_float")((1,), (1,), (x, c, y))
    assert gpunet.to_numpy(y)[0] == numpy.float32(2.0**-24)


# ----------------------------------------------------------------------------- recovery
def test_emulated_every_checker_in_a_row_then_correct_kernels(cp, planted):
    """The faults one after another in one process, each in its own launch, each reported with
    its own checker's message (a fault must not leave barrier or shadow state behind)."""
    f32 = numpy.float32
    cases = [
        ("partial_barrier", (cp.ones(64, f32), cp.empty(64, f32), cp.int64(40)), "synccheck"),
        ("missing_barrier", (cp.ones(64, f32), cp.empty(64, f32)), "racecheck"),
        ("divergent_barrier", (cp.empty(64, f32),), "synccheck: divergent"),
        ("uninitialized_shared", (cp.empty(64, f32),), "initcheck"),
        ("missing_guard", (cp.empty(40, f32), cp.int64(40)), "memcheck"),
        ("partial_barrier", (cp.ones(64, f32), cp.empty(64, f32), cp.int64(40)), "synccheck"),
        ("divergent_barrier", (cp.empty(64, f32),), "synccheck: divergent"),
    ]
    for _ in range(2):
        for name, args, checker in cases:
            with pytest.raises(cp.cuda.CUDADriverError, match=checker):
                planted.get_function(name)((1,), (64,), args)
            _still_works(cp, planted)
