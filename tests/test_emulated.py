"""gpunet's CUDA C kernels executed on the CPU by the emulator (tests/emulator), through the real
host glue: layouts and sizes, BatchNorm split over many blocks, the loss, the fused optimizers, a
small MLP end to end, and the driver's checks on every launch (each shown to catch a planted
mistake). Every test id here contains "emulated": ``pytest -k emulated`` runs exactly these and
the emulated paths of the parity tests."""

import numpy
import pytest
from emulator import emulation
from parity import assert_allclose

import gpunet
from gpunet import functional as F
from gpunet import nn, optim
from gpunet.functional.loss import softmax_cross_entropy as xent

DTYPES = [numpy.float32, numpy.float64]


@pytest.fixture
def cp():
    """The emulated CuPy, installed as ``cupy`` for the test."""
    with emulation() as fake:
        yield fake


def _host(a):
    return gpunet.to_numpy(a)


# ----------------------------------------------------------------------------- activations
ACTIVATIONS = [
    ("sigmoid", {}),
    ("tanh", {}),
    ("relu", {}),
    ("leaky_relu", {"negative_slope": 0.2}),
    ("elu", {"alpha": 1.3}),
    ("selu", {}),
    ("gelu", {}),
    ("gelu", {"approximate": "tanh"}),
    ("softplus", {"beta": 2.0, "threshold": 5.0}),
    ("silu", {}),
]
SPECIAL = numpy.array(
    [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 1000.0, -1000.0, numpy.inf, -numpy.inf, numpy.nan]
)


def _layouts(cp, host):
    """The same values as CuPy arrays in every layout the kernels must take."""
    big = cp.asarray(numpy.concatenate([[7.0], host.ravel()]).astype(host.dtype))
    strided = cp.zeros(2 * host.size, host.dtype)
    strided[::2] = cp.asarray(host.ravel())
    return {
        "contiguous": cp.asarray(host),
        "offset view x[1:]": big[1:].reshape(host.shape),
        "strided": strided[::2].reshape(host.shape) if host.ndim == 1 else strided[::2],
        "F-ordered": cp.asarray(
            numpy.asfortranarray(host.reshape(-1, 1) if host.ndim == 1 else host)
        ),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1029])
@pytest.mark.parametrize("name,kwargs", ACTIVATIONS, ids=lambda v: v if isinstance(v, str) else "")
def test_emulated_activation_layouts_and_sizes(cp, name, kwargs, size, dtype):
    rng = numpy.random.default_rng(size)
    host = rng.uniform(-4, 4, size).astype(dtype)  # the range of the parity tests
    host[: min(size, SPECIAL.size)] = SPECIAL[: min(size, SPECIAL.size)]
    dy_host = rng.normal(size=size).astype(dtype)
    fwd, bwd = getattr(F, name), getattr(F, f"{name}_backward")
    for layout, x in _layouts(cp, host).items():
        x_ref = _host(x)
        dy = cp.asarray(dy_host.reshape(x_ref.shape))
        y, dx = fwd(x, **kwargs), bwd(dy, x, **kwargs)
        assert y.dtype == dtype and y.shape == x.shape, layout
        with numpy.errstate(all="ignore"):  # the float64 NumPy path as the reference
            want_y = fwd(x_ref.astype(numpy.float64), **kwargs)
            want_dx = bwd(_host(dy).astype(numpy.float64), x_ref.astype(numpy.float64), **kwargs)
        assert_allclose(_host(y), want_y, dtype)
        assert_allclose(_host(dx), want_dx, dtype)


# ----------------------------------------------------------------------------- BatchNorm
def _bn_data(shape, dtype, seed=0):
    rng = numpy.random.default_rng(seed)
    C = shape[1]
    per_channel = (1, C) + (1,) * (len(shape) - 2)
    x = rng.normal(size=shape) * rng.uniform(0.5, 3, per_channel) + rng.normal(size=per_channel) * 2
    return x.astype(dtype), rng.uniform(0.5, 1.5, C).astype(dtype), rng.normal(size=C).astype(dtype)


@pytest.fixture
def many_blocks(monkeypatch, cp):
    """Split every channel over several blocks (the last-block merge) even on small shapes."""
    from gpunet.kernels.cupy import batchnorm as cupy_batchnorm

    monkeypatch.setattr(cupy_batchnorm, "MIN_PER_BLOCK", 64)
    monkeypatch.setattr(cupy_batchnorm, "WAVE_OVERRIDE", 16)
    return cupy_batchnorm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "act", [None, "relu", "leaky_relu", "elu", "tanh", "sigmoid", "gelu", "silu"]
)
@pytest.mark.parametrize(
    "shape",
    [(700, 37), (150, 40), (40, 3, 5, 7), (26, 3, 4, 6)],
    # C = 37: a channel per thread; C = 40: 16-byte loads of 4 floats / 2 doubles per row;
    # S = 35: scalar loads; S = 24: 16-byte loads
    ids=["rows", "rows-16-byte-loads", "spatial", "spatial-16-byte-loads"],
)
def test_emulated_batchnorm_many_blocks_two_steps(many_blocks, cp, shape, act, dtype):
    """Two training steps in a row (the arrival counters must be reset by the first), then eval;
    every channel split over several blocks (checked on the grids that actually ran); against
    the float64 NumPy path on the same data."""
    C = shape[1]
    results = {}
    cp.launches.clear()
    for device in ("numpy", "emulated"):
        xp = cp if device == "emulated" else numpy
        dt = dtype if device == "emulated" else numpy.float64
        rm, rv = xp.zeros(C, dt), xp.ones(C, dt)
        outs = []
        for step in range(2):
            x, g, b = (xp.asarray(a.astype(dt)) for a in _bn_data(shape, dtype, seed=step))
            y, cache = F.batch_norm_forward(x, g, b, rm, rv, activation=act)
            dy = xp.asarray(numpy.random.default_rng(10 + step).normal(size=shape).astype(dt))
            outs += [y, *F.batch_norm_backward(dy, cache)]
        y_eval, cache = F.batch_norm_forward(x, g, b, rm, rv, training=False, activation=act)
        outs += [y_eval, *F.batch_norm_backward(dy, cache), rm, rv]
        results[device] = [_host(o) for o in outs]
    kind = "rows" if len(shape) == 2 else "spatial"
    suffix = "float" if dtype == numpy.float32 else "double"
    for name in (f"bn_stats_{kind}_{suffix}", f"bn_bwd_reduce_{kind}_{suffix}"):
        grids = [launch.grid for launch in cp.launches if launch.name == name]
        assert len(grids) >= 2 and all(grid[1] > 1 for grid in grids), (name, grids)
    for got, want in zip(results["emulated"], results["numpy"]):
        assert_allclose(got, want, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(700, 37), (40, 3, 5, 7)], ids=["rows", "spatial"])
def test_emulated_batchnorm_merge_with_concurrent_blocks(
    many_blocks, cp, monkeypatch, shape, dtype
):
    """The last-block merge with blocks of one launch running at the same time (two copies of
    the kernel library, each with its own threads): the partials, the arrival counter and the
    fence must order the merge without relying on blocks running one after another."""
    monkeypatch.setattr(cp, "CONCURRENT_BLOCKS", 2)
    C = shape[1]
    x, g, b = _bn_data(shape, dtype)
    dy = numpy.random.default_rng(3).normal(size=shape).astype(dtype)
    outs = {}
    for xp in (numpy, cp):
        dt = numpy.float64 if xp is numpy else dtype
        rm, rv = xp.zeros(C, dt), xp.ones(C, dt)
        args = [xp.asarray(a.astype(dt)) for a in (x, g, b)]
        for _ in range(3):  # the counters are reset by each merge
            y, cache = F.batch_norm_forward(*args, rm, rv, activation="relu")
            grads = F.batch_norm_backward(xp.asarray(dy.astype(dt)), cache)
        outs[xp.__name__] = [_host(o) for o in (y, *grads, rm, rv)]
    for got, want in zip(outs[cp.__name__], outs["numpy"]):
        assert_allclose(got, want, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_batchnorm_strided_gamma_beta(cp, dtype):
    """Defect 1: G[:, 0] as gamma was read as if contiguous (raw pointer indexing gamma[c])."""
    x, _, _ = _bn_data((16, 4, 3), dtype)
    G = numpy.random.default_rng(1).uniform(0.5, 2, (4, 3)).astype(dtype)
    B = numpy.random.default_rng(2).normal(size=(4, 3)).astype(dtype)
    rm, rv = cp.zeros(8, dtype)[::2], cp.ones(8, dtype)[::2]  # strided running statistics too
    y, cache = F.batch_norm_forward(cp.asarray(x), cp.asarray(G)[:, 0], cp.asarray(B)[:, 1], rm, rv)
    dx, dg, db = F.batch_norm_backward(cp.ones_like(y), cache)
    rm_ref, rv_ref = numpy.zeros(4, dtype), numpy.ones(4, dtype)
    y_ref, cache_ref = F.batch_norm_forward(x, G[:, 0].copy(), B[:, 1].copy(), rm_ref, rv_ref)
    dx_ref, dg_ref, db_ref = F.batch_norm_backward(numpy.ones_like(y_ref), cache_ref)
    for got, want in (
        (y, y_ref),
        (dx, dx_ref),
        (dg, dg_ref),
        (db, db_ref),
        (rm, rm_ref),
        (rv, rv_ref),
    ):
        assert_allclose(_host(got), want, dtype, scale=10)


def test_emulated_batchnorm_no_channels(cp):
    """Defect 2: x of shape (N, 0) launched a zero-sized grid; NumPy returns empty results."""
    x = cp.zeros((5, 0), numpy.float32)
    y, cache = F.batch_norm_forward(
        x,
        cp.ones(0, numpy.float32),
        cp.zeros(0, numpy.float32),
        cp.zeros(0, numpy.float32),
        cp.ones(0, numpy.float32),
    )
    dx, dg, db = F.batch_norm_backward(cp.zeros((5, 0), numpy.float32), cache)
    assert y.shape == dx.shape == (5, 0) and dg.shape == db.shape == (0,)


def test_emulated_batchnorm_eval_cache_keeps_its_statistics(cp):
    """Defect 8: the GPU inference cache held references to running_mean/var, so a training step
    between forward and backward changed the gradient; the CPU path copies."""
    x, g, b = _bn_data((8, 3), numpy.float64)
    dy = numpy.random.default_rng(3).normal(size=x.shape)
    grads = {}
    for device in ("numpy", "emulated"):
        xp = cp if device == "emulated" else numpy
        rm, rv = xp.asarray([0.5, -1.0, 2.0]), xp.asarray([2.0, 0.5, 1.5])
        _, cache = F.batch_norm_forward(
            xp.asarray(x), xp.asarray(g), xp.asarray(b), rm, rv, training=False
        )
        F.batch_norm_forward(xp.asarray(x * 5 + 3), None, None, rm, rv, momentum=0.9)  # moves them
        grads[device] = _host(F.batch_norm_backward(xp.asarray(dy), cache)[0])
    expected = dy * g / numpy.sqrt(numpy.array([2.0, 0.5, 1.5]) + 1e-5)  # the formula, eval mode
    numpy.testing.assert_allclose(grads["numpy"], expected, rtol=1e-12)
    numpy.testing.assert_allclose(grads["emulated"], expected, rtol=1e-12)


def test_emulated_wide_batchnorm_grids_are_valid():
    """Defect 3: more than 65535 channels must not put channels on a grid axis limited to 65535
    (CuPy spatial and Numba grids); checked with the driver's limits of the emulator."""
    from emulator import build, fake_cupy

    from gpunet.kernels.numba_cuda import batchnorm as numba_batchnorm

    wide = numpy.empty((2, 70000, 3))
    kernel = build.Kernel("bn_partial", (), 0)
    grid, block, _ = numba_batchnorm.partial_grid(wide)
    block = block if isinstance(block, tuple) else (block,)  # Numba takes an int too
    fake_cupy.check_launch(kernel, fake_cupy._dims(grid, "grid"), fake_cupy._dims(block, "block"))
    with emulation() as cp:
        from gpunet.kernels.cupy import batchnorm as cupy_batchnorm

        for shape in ((2, 70000, 3), (2, 70000, 1), (2, 70001, 1)):  # rows: 4 / 1 per thread
            grid, block = cupy_batchnorm._reduce_launch(cp.empty(shape), "bn_stats")[:2]
            fake_cupy.check_launch(
                kernel, fake_cupy._dims(grid, "grid"), fake_cupy._dims(block, "block")
            )
    with pytest.raises(fake_cupy.CUDADriverError, match="grid dimension y = 70000"):
        fake_cupy.check_launch(kernel, (1, 70000, 1), (256, 1, 1))  # the old orientation


def test_emulated_kernel_functions_are_looked_up_once(cp):
    """Defect 4: get_function ran on every launch (a new RawKernel and a driver lookup each)."""
    lookups = []
    original = cp.RawModule.get_function
    cp.RawModule.get_function = lambda self, name: lookups.append(name) or original(self, name)
    try:
        x = cp.asarray(numpy.linspace(-1, 1, 64))
        for _ in range(3):
            F.relu_backward(x, F.relu(x))
            _, cache = F.batch_norm_forward(
                x.reshape(8, 8), None, None, None, None, activation="relu"
            )
            F.batch_norm_backward(x.reshape(8, 8), cache)
            xent(x.reshape(8, 8), cp.asarray(numpy.arange(8) % 8))
    finally:
        cp.RawModule.get_function = original
    assert len(lookups) == len(set(lookups)), f"looked up again: {sorted(lookups)}"


# ----------------------------------------------------------------------------- loss, optimizers
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_blocks", [65535, 2], ids=["grid", "grid-stride"])
@pytest.mark.parametrize("shape", [(1, 3), (37, 10), (5, 300)])
def test_emulated_softmax_cross_entropy(cp, shape, dtype, max_blocks, monkeypatch):
    """32 threads per row, 8 rows per block; with 2 blocks the grid strides over row groups
    (37 rows: the last group has 3 live rows and 5 that only take part in the barriers)."""
    from gpunet.kernels.cupy import loss as cupy_loss

    monkeypatch.setattr(cupy_loss, "MAX_BLOCKS", max_blocks)
    rng = numpy.random.default_rng(4)
    scores = (rng.normal(size=shape) * 5).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    loss, d = xent(cp.asarray(scores), cp.asarray(y))
    s64 = scores.astype(numpy.float64)
    lse = numpy.log(numpy.exp(s64 - s64.max(1, keepdims=True)).sum(1)) + s64.max(1)
    p = numpy.exp(s64 - lse[:, None])
    p[numpy.arange(shape[0]), y] -= 1
    assert_allclose(_host(loss), (lse - s64[numpy.arange(shape[0]), y]).mean(), dtype)
    assert_allclose(_host(d), p / shape[0], dtype)


def test_emulated_loss_of_an_empty_batch_without_checks(cp):
    """Defect 2: N = 0 with check=False launched a zero-sized grid; the mean of nothing is NaN."""
    loss, d = xent(cp.zeros((0, 4), numpy.float32), cp.zeros(0, numpy.int64), check=False)
    assert numpy.isnan(_host(loss)) and d.shape == (0, 4)


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, 0.1),
    "sgd-wd": lambda ps: optim.SGD(ps, 0.1, weight_decay=0.01),
    "momentum": lambda ps: optim.SGD(ps, 0.1, momentum=0.9, weight_decay=0.01),
    "momentum-dampening": lambda ps: optim.SGD(ps, 0.1, momentum=0.9, dampening=0.3),
    "nesterov": lambda ps: optim.SGD(ps, 0.1, momentum=0.9, nesterov=True),
    "adam": lambda ps: optim.Adam(ps, 0.01, weight_decay=0.1),
    "adamw": lambda ps: optim.AdamW(ps, 0.01),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_emulated_fused_optimizer_updates(cp, name, dtype):
    p0 = numpy.random.default_rng(0).normal(size=(7, 5)).astype(dtype)
    host, dev = nn.Parameter(p0.copy()), nn.Parameter(cp.asarray(p0))
    oh, od = OPTIMIZERS[name]([host]), OPTIMIZERS[name]([dev])
    for k in range(4):
        g = numpy.sin(p0 * (k + 1)).astype(dtype)
        host.grad, dev.grad = g, cp.asarray(g)
        oh.step()
        od.step()
    assert_allclose(_host(dev.data), host.data, dtype, scale=10)


#: sizes around the multi-tensor kernel's 4-value groups and 1024-value blocks: a tail of 1..3
#: values, exactly one block, one value past it, and a parameter that skips a step (no grad)
MULTI_SHAPES = [(7, 5), (1,), (1024,), (1025,), (3, 3), (2, 2049)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_emulated_optimizer_step_is_one_launch_for_all_parameters(cp, name, dtype):
    """Every parameter of a step in one kernel launch (optim_multi.cuh), against the NumPy
    optimizer on the same gradients; a parameter whose gradient is None is left alone and its
    state starts when it first gets one (SGD's momentum buffer: first = True then)."""
    rng = numpy.random.default_rng(1)
    p0 = [rng.normal(size=s).astype(dtype) for s in MULTI_SHAPES]
    host = [nn.Parameter(p.copy()) for p in p0]
    dev = [nn.Parameter(cp.asarray(p)) for p in p0]
    oh, od = OPTIMIZERS[name](host), OPTIMIZERS[name](dev)
    for k in range(4):
        for i, (h, d) in enumerate(zip(host, dev)):
            skip = i == 0 and k < 2  # the first parameter joins at the third step
            g = None if skip else numpy.sin(p0[i] * (k + 1) + i).astype(dtype)
            h.grad, d.grad = g, (None if g is None else cp.asarray(g))
        cp.launches.clear()
        del cp.elementwise_launches[:]
        oh.step()
        od.step()
        kernel = "adam_multi" if "adam" in name else "sgd_multi"
        suffix = "float" if dtype == numpy.float32 else "double"
        assert [launch.name for launch in cp.launches] == [f"{kernel}_{suffix}"]
        assert not cp.elementwise_launches
    for h, d in zip(host, dev):
        assert_allclose(_host(d.data), h.data, dtype, scale=10)


def test_emulated_mlp_three_steps_end_to_end(cp):
    """The whole step on the emulated GPU (BatchNorm+ReLU, the loss kernel, fused SGD) follows
    the NumPy run of the same net and data."""
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(64, 20))
    y = rng.integers(0, 5, 64)
    results = {}
    for backend in ("numpy", "cupy"):
        gpunet.set_backend(backend)
        gpunet.seed(1)
        model = nn.mlp([20, 32, 16, 5], activation="relu", batchnorm=True, dtype=numpy.float64).to(
            backend
        )
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            loss, d = nn.SoftmaxCrossEntropy()(model(gpunet.asarray(x)), gpunet.asarray(y))
            model.zero_grad()
            model.backward(d)
            opt.step()
        results[backend] = (float(loss), {k: _host(v) for k, v in model.state_dict().items()})
    assert results["cupy"][0] == pytest.approx(results["numpy"][0], rel=1e-10)
    for k, v in results["numpy"][1].items():
        numpy.testing.assert_allclose(results["cupy"][1][k], v, rtol=1e-9, atol=1e-12, err_msg=k)


# ----------------------------------------------------------------------------- the driver's checks
PLANTED = r"""
extern "C" __global__ void scale(const float *x, float *y, long long n, float a) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i];
}
extern "C" __global__ void vec_copy(const float *x, float *y, long long n4) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n4) reinterpret_cast<float4 *>(y)[i] = reinterpret_cast<const float4 *>(x)[i];
}
extern "C" __global__ void big_shared(float *y) {
    __shared__ double tile[7000];
    tile[threadIdx.x] = threadIdx.x;
    __syncthreads();
    y[threadIdx.x] = float(tile[blockDim.x - 1 - threadIdx.x]);
}
// Wrong on purpose: assumes block 0 runs first and finishes before the others read its value.
extern "C" __global__ void depends_on_block_order(int *flag, int *out) {
    if (threadIdx.x == 0) {
        if (blockIdx.x == 0) *flag = 1;
        else out[blockIdx.x] = *flag;
    }
}
extern "C" __global__ void reverse_in_block(const float *x, float *y) {
    __shared__ float tile[256];
    int t = threadIdx.x;
    tile[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    y[blockIdx.x * blockDim.x + t] = tile[blockDim.x - 1 - t];
}
"""


@pytest.fixture
def planted(cp):
    return cp.RawModule(code=PLANTED)


def test_emulated_launch_runs_and_syncthreads_orders_the_block(planted, cp):
    x = cp.asarray(numpy.arange(512, dtype=numpy.float32))
    y = cp.empty_like(x)
    planted.get_function("reverse_in_block")((2,), (256,), (x, y))
    numpy.testing.assert_array_equal(
        _host(y), numpy.concatenate([numpy.arange(255, -1, -1), numpy.arange(511, 255, -1)])
    )
    planted.get_function("scale")((1,), (32,), (x, y, cp.int64(20), cp.float32(2.0)))
    numpy.testing.assert_array_equal(_host(y)[:20], 2 * numpy.arange(20))


def test_emulated_wrong_argument_type_fails(planted, cp):
    x, y = cp.ones(8, numpy.float32), cp.empty(8, numpy.float32)
    kernel = planted.get_function("scale")
    with pytest.raises(TypeError, match=r"argument 2: long long \(8 bytes\) given a int32"):
        kernel((1,), (8,), (x, y, cp.int32(8), cp.float32(1)))
    with pytest.raises(TypeError, match=r"argument 3: float \(4 bytes\) given a float64"):
        kernel((1,), (8,), (x, y, 8, 1.0))  # a Python float is passed as a double
    with pytest.raises(
        TypeError, match="argument 0: const float\\* needs a float32 array, got float64"
    ):
        kernel((1,), (8,), (cp.ones(8), y, 8, cp.float32(1)))
    with pytest.raises(TypeError, match="takes 4 arguments, got 3"):
        kernel((1,), (8,), (x, y, 8))


@pytest.mark.parametrize(
    "grid,block,message",
    [
        ((1, 65536), (32,), "grid dimension y = 65536"),
        ((2**31,), (32,), "grid dimension x = 2147483648"),
        ((1,), (1025,), "block dimension x = 1025"),
        ((1,), (64, 32), "2048 threads per block"),
        ((1,), (1, 1, 65), "block dimension z = 65"),
    ],
)
def test_emulated_grid_limits(planted, cp, grid, block, message):
    x, y = cp.ones(8, numpy.float32), cp.empty(8, numpy.float32)
    with pytest.raises(cp.cuda.CUDADriverError, match=message):
        planted.get_function("scale")(grid, block, (x, y, cp.int64(8), cp.float32(1)))


def test_emulated_grid_and_block_follow_cupys_rules(planted, cp):
    """CuPy's ``Function.__call__`` (cupy/cuda/function.pyx): grid and block are tuples, padded
    with 1, and each axis is launched as max(1, value) -- a grid of 0 runs one block."""
    x, y = cp.ones(8, numpy.float32), cp.empty(8, numpy.float32)
    kernel = planted.get_function("scale")
    cp.launches.clear()
    kernel((0,), (8,), (x, y, cp.int64(8), cp.float32(3)))
    assert cp.launches == [cp.Launch("scale", (1, 1, 1), (8, 1, 1))]
    numpy.testing.assert_array_equal(_host(y), 3 * numpy.ones(8))
    with pytest.raises(TypeError, match="expected tuple, got int"):
        kernel(1, (8,), (x, y, cp.int64(8), cp.float32(3)))
    with pytest.raises(TypeError, match="expected tuple, got list"):
        kernel((1,), [8], (x, y, cp.int64(8), cp.float32(3)))


def test_emulated_shared_memory_limit(planted, cp):
    kernel = planted.get_function("big_shared")
    assert kernel.kernel.static_shared == 7000 * 8
    with pytest.raises(cp.cuda.CUDADriverError, match="56000 bytes of static"):
        kernel((1,), (32,), (cp.empty(32, numpy.float32),))


def test_emulated_misaligned_vector_load_faults(planted, cp):
    x, y = cp.ones(17, numpy.float32), cp.empty(16, numpy.float32)
    kernel = planted.get_function("vec_copy")
    kernel((1,), (4,), (x[:16], y, cp.int64(4)))  # aligned: fine
    with pytest.raises(cp.cuda.CUDADriverError, match="misaligned address"):
        kernel((1,), (4,), (x[1:], y, cp.int64(4)))


def test_emulated_blocks_run_in_a_shuffled_order(planted, cp):
    """A kernel that relies on block 0 running first gives wrong answers on some launches."""
    seen = set()
    for _ in range(10):
        flag, out = cp.zeros(1, numpy.int32), cp.full(16, -1, numpy.int32)
        planted.get_function("depends_on_block_order")((16,), (32,), (flag, out))
        seen.add(tuple(_host(out)[1:]))
    assert any(0 in s for s in seen), "block 0 always ran first: the emulator would hide order bugs"


def test_emulated_gpunet_info_runs_a_kernel(cp, capsys):
    """Defect 7: `gpunet info` compiles and runs a kernel, not only counts devices."""
    from gpunet import cli

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "kernel check: relu on 4 values compiled and ran, results correct" in out
