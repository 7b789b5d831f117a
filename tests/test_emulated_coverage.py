"""Coverage of the CUDA sources by the emulator: every kernel that CuPy would compile from
kernels/cupy/*.cuh is launched here, every RawKernel with more than one block (so that tail,
cross-block merge and grid-stride code runs), every ElementwiseKernel for float32 and float64 --
and the test fails, naming them, if a kernel of the sources is never launched. Results are held to
the float64 NumPy path, so each launch is also a parity check. The fake records what actually ran
(``launches``, ``elementwise_launches``), so nothing here trusts the host code's own arithmetic.
"""

import numpy
from emulator import build, emulation
from parity import assert_allclose

import gpunet
from gpunet.kernels.activation_table import ACTIVATIONS
from gpunet.kernels.numpy import path as numpy_path

DTYPES = [numpy.float32, numpy.float64]
#: the translation units compiled as RawModules (optim.cuh is also an ElementwiseKernel preamble)
RAW_UNITS = ("activations", "batchnorm", "loss", "optim", "conv")


def _raw_kernels() -> set:
    from gpunet.kernels.cupy import sources

    return {name for unit in RAW_UNITS for name in build.parse_kernels(sources.unit_source(unit))}


def _elementwise_kernels() -> set:
    from gpunet.kernels.cupy import elementwise_ops

    return {(op[3], numpy.dtype(dt).name) for op in elementwise_ops.all_ops() for dt in DTYPES}


def _params(spec) -> dict:
    """Parameters that move the activation away from its defaults (so both scalars are used)."""
    return {p.name: p.default * 1.5 if p.default else 0.5 for p in spec.params}


def _run_activations(path, cp, dtype, rng):
    for spec in ACTIVATIONS:
        host = rng.uniform(-4, 4, 3001).astype(dtype)
        dy_host = rng.normal(size=3001).astype(dtype)
        params = _params(spec)
        for layout in ("contiguous", "strided"):
            x, dy = cp.asarray(host), cp.asarray(dy_host)
            if layout == "strided":  # not vectorizable: the ElementwiseKernel
                x2, dy2 = cp.zeros(2 * host.size, dtype), cp.zeros(2 * host.size, dtype)
                x2[::2], dy2[::2] = x, dy
                x, dy = x2[::2], dy2[::2]
            y = path.activation_forward(spec.name, x, **params)
            dx = path.activation_backward(spec.name, dy, x, **params)
            with numpy.errstate(all="ignore"):
                want_y = numpy_path.activation_forward(
                    spec.name, host.astype(numpy.float64), **params
                )
                want_dx = numpy_path.activation_backward(
                    spec.name, dy_host.astype(numpy.float64), host.astype(numpy.float64), **params
                )
            assert_allclose(gpunet.to_numpy(y), want_y, dtype)
            assert_allclose(gpunet.to_numpy(dx), want_dx, dtype)


def _run_layers(cp, dtype, rng, monkeypatch):
    """PReLU, Maxout, BatchNorm (rows and spatial; train, backward, eval), the loss and the
    optimizers through gpunet's functional layer, each against the NumPy backend."""
    from gpunet import functional as F
    from gpunet import nn, optim
    from gpunet.kernels.cupy import batchnorm as cupy_batchnorm

    monkeypatch.setattr(cupy_batchnorm, "MIN_PER_BLOCK", 64)
    monkeypatch.setattr(cupy_batchnorm, "WAVE_OVERRIDE", 16)

    def both(fn, *arrays, scale=1.0):
        got = fn(cp, *[cp.asarray(a) for a in arrays])
        want = fn(numpy, *[a.astype(numpy.float64) for a in arrays])
        for g, w in zip(got, want):
            assert_allclose(gpunet.to_numpy(g), w, dtype, scale=scale)

    x = rng.normal(size=(300, 12)).astype(dtype)
    w = rng.uniform(0.05, 0.4, 12).astype(dtype)
    dy = rng.normal(size=(300, 12)).astype(dtype)
    both(lambda xp, x, w, dy: (F.prelu(x, w), *F.prelu_backward(dy, x, w)), x, w, dy)
    dy3 = rng.normal(size=(300, 4)).astype(dtype)
    both(lambda xp, x, dy: (F.maxout(x, 3), F.maxout_backward(dy, x, 3)), x, dy3)

    # (6, 300): 300 channels, so that folding the running statistics takes two blocks
    for shape in [(700, 37), (40, 3, 5, 7), (6, 300)]:
        C = shape[1]
        xb = (rng.normal(size=shape) * 2 + 1).astype(dtype)
        g, b = rng.uniform(0.5, 1.5, C).astype(dtype), rng.normal(size=C).astype(dtype)
        dyb = rng.normal(size=shape).astype(dtype)

        def bn(xp, x, g, b, dy):
            rm, rv = xp.zeros(C, x.dtype), xp.ones(C, x.dtype)
            y, cache = F.batch_norm_forward(x, g, b, rm, rv, activation="relu")
            grads = F.batch_norm_backward(dy, cache)
            y_eval, cache = F.batch_norm_forward(x, g, b, rm, rv, training=False)
            return (y, *grads, y_eval, *F.batch_norm_backward(dy, cache), rm, rv)

        both(bn, xb, g, b, dyb)

    # convolution (im2col, col2im) and max pooling (forward, backward), each over several blocks
    xc = rng.normal(size=(4, 3, 9, 8)).astype(dtype)
    wc = rng.normal(size=(5, 3, 3, 3)).astype(dtype)

    def conv_pool(xp, x, w):
        out, cache = F.conv2d_forward(x, w, None, 1, 1)
        dx, dw, _ = F.conv2d_backward(xp.cos(out), cache)
        pooled, pcache = F.max_pool2d_forward(out, 2)
        return out, dx, dw, pooled, F.max_pool2d_backward(xp.sin(pooled), pcache)

    both(conv_pool, xc, wc, scale=300)  # float32: sums of 27 products, then cos of them

    scores = rng.normal(size=(64, 10)).astype(dtype)
    labels = rng.integers(0, 10, 64)
    got = F.softmax_cross_entropy(cp.asarray(scores), cp.asarray(labels))
    want = F.softmax_cross_entropy(scores.astype(numpy.float64), labels)
    for g_, w_ in zip(got, want):
        assert_allclose(gpunet.to_numpy(g_), w_, dtype)

    p0 = rng.normal(size=(30, 20)).astype(dtype)
    for make in (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda ps: optim.SGD(ps, lr=0.1),
        lambda ps: optim.Adam(ps, lr=1e-2),
        lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    ):
        # one parameter: the per-parameter ElementwiseKernel; two: one multi-tensor launch
        for arrays in ([p0], [p0, rng.normal(size=(2, 1100)).astype(dtype)]):
            host = [nn.Parameter(a.copy()) for a in arrays]
            dev = [nn.Parameter(cp.asarray(a)) for a in arrays]
            opt_host, opt_dev = make(host), make(dev)
            for k in range(2):
                for h, d, a in zip(host, dev, arrays):
                    g = numpy.cos(a * (k + 2)).astype(dtype)
                    h.grad, d.grad = g, cp.asarray(g)
                opt_host.step()
                opt_dev.step()
            for h, d in zip(host, dev):
                assert_allclose(gpunet.to_numpy(d.data), h.data, dtype, scale=10)


def test_emulated_every_kernel_of_the_sources_runs_multi_block(monkeypatch):
    with emulation() as cp:
        from gpunet.kernels.cupy import path

        cp.launches.clear()
        cp.elementwise_launches.clear()
        for dtype in DTYPES:
            rng = numpy.random.default_rng(0)
            _run_activations(path, cp, dtype, rng)
            _run_layers(cp, dtype, rng, monkeypatch)
        multi_block = {
            launch.name
            for launch in cp.launches
            if launch.grid[0] * launch.grid[1] * launch.grid[2] > 1
        }
        ran_elementwise = {(e.name, e.dtype) for e in cp.elementwise_launches if e.size > 1}
    never = sorted(_raw_kernels() - multi_block)
    assert not never, f"kernels of the sources never launched with more than one block: {never}"
    never_ew = sorted(_elementwise_kernels() - ran_elementwise)
    assert not never_ew, f"ElementwiseKernels never launched: {never_ew}"


def test_emulated_coverage_reads_the_kernels_from_the_sources():
    """The list the check above compares with is parsed from the sources, so a kernel added to a
    .cuh file without a launch here is reported as missing."""
    planted = r'extern "C" __global__ void k(float *y) { y[0] = 1; }'
    assert set(build.parse_kernels(planted)) == {"k"}
    raw = _raw_kernels()
    assert {"bn_bwd_reduce_rows_float", "bn_bwd_dx_double", "softmax_xent_float"} <= raw
    # per dtype: activations fwd/bwd, prelu + maxout, BatchNorm (7), the loss, the optimizers (2),
    # im2col + col2im + max pool fwd/bwd
    assert len(raw) == 2 * (4 * len(ACTIVATIONS) // 2 + 4 + 7 + 1 + 2 + 4)
