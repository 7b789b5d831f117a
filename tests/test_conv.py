"""Convolution and max pooling on every kernel path (parity.PATHS: the NumPy expressions, the
Numba CPU kernels serial and parallel, the CUDA kernels on a GPU and in the emulator), held to
float64 direct loops written from the formula (CS231n's conv_forward_naive / max_pool_forward_naive)
and to finite differences; bad input; the 32-bit launch limit of the CUDA host code."""

import numpy
import pytest
from parity import PATHS, assert_allclose, run

from gpunet import functional as F

DTYPES = [numpy.float32, numpy.float64]

#: (x shape, w shape, stride, padding): 3x3 and 7x7 "same", strided, non-square, 1x1, one channel,
#: (kernels/shared/im2col_gemm.py splits the batch into chunks: test_conv_chunks_split_the_batch)
CONV_CASES = [
    ((2, 3, 7, 9), (4, 3, 3, 3), (1, 1), (1, 1)),
    ((3, 2, 8, 8), (5, 2, 3, 3), (2, 2), (1, 1)),
    ((2, 3, 10, 10), (4, 3, 7, 7), (1, 1), (3, 3)),
    ((2, 4, 5, 6), (3, 4, 1, 1), (1, 1), (0, 0)),
    ((2, 1, 9, 7), (3, 1, 2, 3), (2, 1), (1, 0)),
    ((2, 2, 6, 5), (3, 2, 3, 2), (3, 2), (2, 1)),
]
#: (x shape, kernel, stride, padding): the 2x2 fast path, overlapping windows, padding, 1x1
POOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 7, 9), (2, 2), (2, 2), (0, 0)),
    ((2, 2, 7, 7), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 6, 5), (2, 3), (1, 2), (1, 1)),
    ((2, 2, 5, 5), (3, 3), (1, 1), (0, 0)),
    ((1, 3, 4, 4), (1, 1), (1, 1), (0, 0)),
]


def conv_naive(x, w, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, W = x.shape
    F_, _, kh, kw = w.shape
    xp = numpy.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph : ph + H, pw : pw + W] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = numpy.zeros((N, F_, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            out[:, :, i, j] = numpy.tensordot(patch, w, ([1, 2, 3], [1, 2, 3]))
    return out


def pool_naive(x, kernel, stride, padding):
    """(out, dx for dout = ones * cos(out)) by windows over the real cells, first max wins."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out, dx = numpy.zeros((N, C, Ho, Wo)), numpy.zeros(x.shape)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    h0, w0 = i * sh - ph, j * sw - pw
                    cells = [
                        (h, w)
                        for h in range(max(h0, 0), min(h0 + kh, H))
                        for w in range(max(w0, 0), min(w0 + kw, W))
                    ]
                    values = [x[n, c, h, w] for h, w in cells]
                    nan = [k for k, v in enumerate(values) if v != v]
                    k = nan[0] if nan else int(numpy.argmax(values))
                    out[n, c, i, j] = values[k]
                    dx[(n, c) + cells[k]] += numpy.cos(values[k]) if not nan else 1.0
    return out, dx


def numeric_grad(f, a, h=1e-6):
    """Centered differences of the scalar f at a (float64), one entry at a time."""
    g = numpy.zeros_like(a)
    for i in numpy.ndindex(*a.shape):
        old = a[i]
        a[i] = old + h
        fp = f(a)
        a[i] = old - h
        fm = f(a)
        a[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def _conv(x, w, stride, padding, dout):
    out, cache = F.conv2d_forward(x, w, None, stride, padding)
    dx, dw, _ = F.conv2d_backward(dout, cache)
    return out, dx, dw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}*{c[1]}s{c[2]}p{c[3]}")
@pytest.mark.parametrize("path", PATHS)
def test_conv2d_matches_direct_loops(path, case, dtype):
    x_shape, w_shape, stride, padding = case
    rng = numpy.random.default_rng(1)
    x, w = rng.normal(size=x_shape), rng.normal(size=w_shape)
    want = conv_naive(x, w, stride, padding)
    dout = numpy.cos(want)
    # the adjoint: dx and dw are the gradients of sum(dout * out), by the chain rule of the loops
    want_dw = numpy.zeros(w.shape)
    want_dx = numpy.zeros(x.shape)
    for idx in numpy.ndindex(*w.shape):
        e = numpy.zeros(w.shape)
        e[idx] = 1
        want_dw[idx] = (dout * conv_naive(x, e, stride, padding)).sum()
    for idx in numpy.ndindex(*x.shape):
        e = numpy.zeros(x.shape)
        e[idx] = 1
        want_dx[idx] = (dout * conv_naive(e, w, stride, padding)).sum()
    args = [a.astype(dtype) for a in (x, w)]
    out, dx, dw = run(path, _conv, args[0], args[1], stride, padding, dout.astype(dtype))
    scale = 10 * w_shape[1] * w_shape[2] * w_shape[3]  # float32: sums of C kh kw products
    assert out.dtype == dtype and dx.dtype == dtype and dw.dtype == dtype
    assert_allclose(out, want, dtype, scale=scale)
    assert_allclose(dx, want_dx, dtype, scale=scale)
    assert_allclose(dw, want_dw, dtype, scale=scale * x_shape[0] * 10)


def _pool(x, kernel, stride, padding, dout):
    out, cache = F.max_pool2d_forward(x, kernel, stride, padding)
    return out, F.max_pool2d_backward(dout, cache), cache[1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[0]}k{c[1]}s{c[2]}p{c[3]}")
@pytest.mark.parametrize("path", PATHS)
def test_max_pool2d_matches_direct_loops(path, case, dtype):
    x_shape, kernel, stride, padding = case
    rng = numpy.random.default_rng(2)
    x = rng.normal(size=x_shape).astype(dtype).astype(numpy.float64)
    x.flat[::7] = numpy.round(x.flat[::7])  # ties: the first maximum in window order wins
    x.flat[5], x.flat[11] = numpy.nan, numpy.nan  # a NaN wins its windows
    want, want_dx = pool_naive(x, kernel, stride, padding)
    dout = numpy.where(numpy.isnan(want), 1.0, numpy.cos(want))
    out, dx, arg = run(path, _pool, x.astype(dtype), kernel, stride, padding, dout.astype(dtype))
    assert out.dtype == dtype and dx.dtype == dtype and arg.dtype == numpy.int32
    numpy.testing.assert_array_equal(out, want.astype(dtype))
    assert_allclose(dx, want_dx, dtype)


def test_pool_ties_and_nan_route_to_the_first():
    x = numpy.zeros((1, 1, 2, 4))
    x[0, 0] = [[1, 3, numpy.nan, 2], [3, 2, 7, numpy.nan]]
    for path in ("numpy", "cpu-kernels", "emulated-cupy"):
        out, dx, _ = run(path, _pool, x, (2, 2), (2, 2), (0, 0), numpy.ones((1, 1, 1, 2)))
        assert out[0, 0, 0, 0] == 3 and numpy.isnan(out[0, 0, 0, 1]), path
        numpy.testing.assert_array_equal(dx[0, 0], [[0, 1, 1, 0], [0, 0, 0, 0]], err_msg=path)


@pytest.mark.parametrize("path", ["numpy", "cpu-kernels"])
def test_conv2d_gradients_by_finite_differences(path):
    rng = numpy.random.default_rng(3)
    x, w = rng.normal(size=(2, 2, 5, 4)), rng.normal(size=(3, 2, 3, 2))
    dout = rng.normal(size=conv_naive(x, w, (2, 1), (1, 1)).shape)
    _, dx, dw = run(path, _conv, x, w, (2, 1), (1, 1), dout)

    def loss_x(v):
        return (run(path, _conv, v, w, (2, 1), (1, 1), dout)[0] * dout).sum()

    def loss_w(v):
        return (run(path, _conv, x, v, (2, 1), (1, 1), dout)[0] * dout).sum()

    numpy.testing.assert_allclose(dx, numeric_grad(loss_x, x.copy()), rtol=1e-6, atol=1e-8)
    numpy.testing.assert_allclose(dw, numeric_grad(loss_w, w.copy()), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("per_chunk", [1, 2])
def test_conv_chunks_split_the_batch(monkeypatch, per_chunk):
    """More than one chunk of the batch per call (and a short last one) on the compiled paths;
    a chunk of one sample is the CPU's product written straight into that sample's output."""
    from gpunet.kernels.shared import im2col_gemm

    # per_chunk samples per chunk on every path (the CPU's column count, the GPU's byte budget)
    monkeypatch.setattr(im2col_gemm.Geometry, "chunk", lambda self, *a: min(per_chunk, self.N))
    rng = numpy.random.default_rng(4)
    x, w = rng.normal(size=(5, 2, 5, 6)), rng.normal(size=(3, 2, 3, 3))
    want = conv_naive(x, w, (1, 1), (1, 1))
    dout = numpy.cos(want)
    ref = run("numpy", _conv, x, w, (1, 1), (1, 1), dout)
    for path in ("cpu-kernels", "emulated-cupy"):
        got = run(path, _conv, x, w, (1, 1), (1, 1), dout)
        numpy.testing.assert_allclose(got[0], want, rtol=1e-12, atol=1e-12)
        for g, r in zip(got[1:], ref[1:]):
            numpy.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def test_bad_input_names_the_argument():
    x, w = numpy.zeros((2, 3, 8, 8), "f4"), numpy.zeros((4, 3, 3, 3), "f4")
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\)"):
        F.conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match="w .*4, 2, 3, 3"):
        F.conv2d_forward(x, numpy.zeros((4, 2, 3, 3), "f4"))
    with pytest.raises(ValueError, match="stride must be positive"):
        F.conv2d_forward(x, w, stride=0)
    with pytest.raises(ValueError, match="does not fit"):
        F.conv2d_forward(x, numpy.zeros((4, 3, 11, 11), "f4"))
    with pytest.raises(ValueError, match="padding must be a non-negative int"):
        F.conv2d_forward(x, w, padding=-1)
    with pytest.raises(ValueError, match="b must have shape"):
        F.conv2d_forward(x, w, numpy.zeros(3, "f4"))
    with pytest.raises(ValueError, match="at most half the kernel"):
        F.max_pool2d_forward(x, 2, 2, 2)
    with pytest.raises(ValueError, match=r"max_pool2d: x must be \(N, C, H, W\)"):
        F.max_pool2d_forward(x[0], 2)
    out, cache = F.max_pool2d_forward(x, 2)
    with pytest.raises(ValueError, match="dout must have shape"):
        F.max_pool2d_backward(out[:1], cache)


def test_gpu_launches_stay_under_32_bit_indices():
    """conv.cuh indexes in 32 bits: the host refuses a launch past 2^31 values instead of wrapping,
    and pooling splits the planes so that each launch stays under it."""
    pytest.importorskip("emulator")
    from emulator import emulation

    with emulation():
        from gpunet.kernels.cupy import conv as cupy_conv
        from gpunet.kernels.shared import im2col_gemm

        with pytest.raises(ValueError, match="2\\^31"):
            cupy_conv._launch("im2col", numpy.float32, 2**31, ())
        g = im2col_gemm.geometry((3000, 100, 100, 100), (2, 2), (2, 2), (0, 0))
        starts = cupy_conv._plane_slices(g)
        assert len(starts) > 1 and starts.step * g.H * g.W <= cupy_conv.MAX_VALUES


def test_shared_weights_two_forwards_then_two_backwards():
    """One weight array through two forwards before either backward (a shared layer): each
    backward sees its own forward's input, on the compiled CPU path as on the reference (a path
    that keeps what forward computed must not hand the second forward's to the first backward)."""
    rng = numpy.random.default_rng(5)
    w = rng.normal(size=(4, 3, 3, 3))
    x1, x2 = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(2, 3, 6, 6))
    d1, d2 = rng.normal(size=(2, 4, 6, 6)), rng.normal(size=(2, 4, 6, 6))

    def both(x1, x2, w, d1, d2):
        _, c1 = F.conv2d_forward(x1, w, None, 1, 1)
        _, c2 = F.conv2d_forward(x2, w, None, 1, 1)
        return F.conv2d_backward(d1, c1)[:2] + F.conv2d_backward(d2, c2)[:2]

    want = run("numpy", both, x1, x2, w, d1, d2)
    got = run("cpu-kernels", both, x1, x2, w, d1, d2)
    for g, r in zip(got, want):
        numpy.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def avg_pool_naive(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C, H, W = x.shape
    xp = numpy.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph : ph + H, pw : pw + W] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = numpy.zeros((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw].mean(axis=(2, 3))
    return out


def _avg(x, kernel, stride, padding, dout):
    out, cache = F.avg_pool2d_forward(x, kernel, stride, padding)
    return out, F.avg_pool2d_backward(dout, cache)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[0]}k{c[1]}s{c[2]}p{c[3]}")
@pytest.mark.parametrize("path", ["numpy", "cpu-kernels", "emulated-cupy"])
def test_avg_pool2d_matches_direct_loops(path, case, dtype):
    """Average pooling (padding counted as zeros, PyTorch's default): the mean of each window,
    and the adjoint of that mean -- each output gradient spread evenly over its window's cells."""
    x_shape, kernel, stride, padding = case
    rng = numpy.random.default_rng(6)
    x = rng.normal(size=x_shape)
    want = avg_pool_naive(x, kernel, stride, padding)
    dout = numpy.cos(want)
    want_dx = numpy.zeros(x.shape)
    for idx in numpy.ndindex(*x.shape):
        e = numpy.zeros(x.shape)
        e[idx] = 1
        want_dx[idx] = (dout * avg_pool_naive(e, kernel, stride, padding)).sum()
    out, dx = run(path, _avg, x.astype(dtype), kernel, stride, padding, dout.astype(dtype))
    assert out.dtype == dtype and dx.dtype == dtype
    assert_allclose(out, want, dtype, scale=10)
    assert_allclose(dx, want_dx, dtype, scale=10)


def test_avg_pool_layer():
    from gpunet import nn

    x = numpy.arange(16.0).reshape(1, 1, 4, 4)
    numpy.testing.assert_allclose(nn.AvgPool2d(2)(x), [[[[2.5, 4.5], [10.5, 12.5]]]])
    with pytest.raises(ValueError, match="avg_pool2d: padding must be at most half"):
        nn.AvgPool2d(2, padding=2)(x)


# ------------------------------------------------------------------------ Winograd F(m x m, 3x3)
def _conv_einsum(x, w, padding):
    """float64 out, and the gradients dx, dw of sum(dout * out), from the sum's formula by
    einsum over the nine taps (an independent reference for the larger Winograd shapes)."""
    (ph, pw), (N, C, H, W) = padding, x.shape
    xp = numpy.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph : ph + H, pw : pw + W] = x
    Ho, Wo = H + 2 * ph - 2, W + 2 * pw - 2
    out = numpy.zeros((N, w.shape[0], Ho, Wo))
    for p in range(3):
        for q in range(3):
            out += numpy.einsum("fc,nchw->nfhw", w[:, :, p, q], xp[:, :, p : p + Ho, q : q + Wo])
    dout = numpy.cos(out)
    dw, dxp = numpy.zeros(w.shape), numpy.zeros(xp.shape)
    for p in range(3):
        for q in range(3):
            dw[:, :, p, q] = numpy.einsum("nfhw,nchw->fc", dout, xp[:, :, p : p + Ho, q : q + Wo])
            dxp[:, :, p : p + Ho, q : q + Wo] += numpy.einsum("fc,nfhw->nchw", w[:, :, p, q], dout)
    return out, dout, dxp[:, :, ph : ph + H, pw : pw + W], dw


#: (x shape, filters, padding): square and odd sizes (tiles past the output's edge), no padding,
#: padding 2 (the input gradient's own padding is then 0), more filters than channels
WINOGRAD_CASES = [
    ((2, 16, 8, 8), 16, (1, 1)),
    ((3, 17, 7, 9), 20, (1, 1)),
    ((1, 16, 5, 6), 32, (0, 0)),
    ((2, 24, 6, 5), 16, (2, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=lambda c: f"{c[0]}F{c[1]}p{c[2]}")
@pytest.mark.parametrize("path", ["cpu-kernels", "cpu-parallel"])
@pytest.mark.parametrize("tile", [4, 2])
@pytest.mark.parametrize("route", ["planes", "nhwc", "nhwc-python-products"])
def test_winograd_3x3_matches_the_sum(route, tile, path, case, dtype, monkeypatch):
    """3x3, stride 1, >= 16 channels in and out run through Winograd on the CPU (counted), with
    F(4x4, 3x3) and F(2x2, 3x3), and agree with the float64 sum: in winograd_planes.py's layout
    (taken here for any size), or in the NHWC one in chunks of 5 tiles (a short last one), with
    the positions' products made from Numba (blas_call.py) or, where no gemm can be called from
    there, from Python."""
    from gpunet.kernels.numba_cpu import winograd, winograd_planes
    from gpunet.kernels.shared import blas_call, cpu_blas

    made = []
    if route == "nhwc-python-products":
        real_matmul = cpu_blas.matmul_into
        monkeypatch.setattr(blas_call, "gemm_function", lambda *a: None)
        monkeypatch.setattr(cpu_blas, "matmul_into", lambda *a, **k: made.append(1) or
                            real_matmul(*a, **k))  # fmt: skip
    elif blas_call.gemm_function(numpy.dtype(dtype), cpu_blas.active()) is None:
        pytest.skip(f"no cblas gemm of {cpu_blas.active()} callable from Numba here")
    else:
        name = "FORWARD_BLOCKS" if route == "planes" else "PRODUCTS"
        module = winograd_planes if route == "planes" else winograd
        real_builds = getattr(module, name)
        monkeypatch.setattr(module, name, [
            lambda *a: made.append(1) or real_builds[0](*a),
            lambda *a: made.append(1) or real_builds[1](*a),
        ])  # fmt: skip
    monkeypatch.setattr(winograd, "PLANES_MIN_TILES", 1 if route == "planes" else 10**9)
    monkeypatch.setattr(winograd, "CHUNK_TILES", 5)
    monkeypatch.setattr(winograd, "TILE", tile)
    calls = []
    real = winograd.forward
    monkeypatch.setattr(winograd, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    x_shape, filters, padding = case
    rng = numpy.random.default_rng(5)
    x, w = rng.normal(size=x_shape), rng.normal(size=(filters, x_shape[1], 3, 3))
    want, dout, want_dx, want_dw = _conv_einsum(x, w, padding)
    out, dx, dw = run(path, _conv, x.astype(dtype), w.astype(dtype), (1, 1), padding,
                      dout.astype(dtype))  # fmt: skip
    assert len(calls) == 2  # forward, and the input gradient's correlation
    assert made  # the products went the way asked
    assert out.dtype == dx.dtype == dw.dtype == dtype
    scale = 10 * x_shape[1] * 9
    assert_allclose(out, want, dtype, scale=scale)
    assert_allclose(dx, want_dx, dtype, scale=scale)
    assert_allclose(dw, want_dw, dtype, scale=scale * x_shape[0] * 10)


@pytest.mark.parametrize("tile, bound", [(4, 2e-5), (2, 2e-6)])
def test_winograd_float32_error_on_a_deep_layer(tile, bound):
    """The rounding the transforms add, at the size the module docstring quotes (64 channels,
    32x32, batch 8, unit normal data): the largest error against float64, relative to the
    largest output, stays under ``bound`` (measured: ~6e-6 for F(4x4), ~4e-7 for F(2x2))."""
    from gpunet.kernels.numba_cpu import conv as cpu_conv
    from gpunet.kernels.numba_cpu import winograd

    rng = numpy.random.default_rng(7)
    x, w = rng.normal(size=(8, 64, 32, 32)), rng.normal(size=(64, 64, 3, 3))
    want = _conv_einsum(x, w, (1, 1))[0]
    got = winograd.forward(x.astype("f4"), w.astype("f4"), (1, 1), cpu_conv._buffer, tile)
    assert numpy.abs(got - want).max() < bound * numpy.abs(want).max()


@pytest.mark.parametrize("library", ["numpy", "mkl"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("parallel", [0, 1])
def test_gemm_called_from_numba(parallel, trans, dtype, library):
    """blas_call.gemm at the address of NumPy's OpenBLAS (64-bit integers) or MKL (32-bit), from
    the serial and parallel builds of winograd's per-position loop: C[i] = op(A[i]) B[i] + beta
    C[i] on the first rows of padded arrays, against float64 products."""
    from gpunet.kernels.numba_cpu import winograd
    from gpunet.kernels.shared import blas_call, cpu_blas

    if library == "mkl" and cpu_blas.mkl_problem() is not None:
        pytest.skip(cpu_blas.mkl_problem())
    fn = blas_call.gemm_function(numpy.dtype(dtype), library)
    if fn is None:
        pytest.skip(f"{library}'s cblas gemm is not found in this NumPy build")
    assert fn[1] == (library == "numpy")  # NumPy's wheels: ILP64; MKL's cblas: LP64
    rng = numpy.random.default_rng(8)
    M, N, K = 5, 6, 7
    A = rng.normal(size=(3, K + 2, M + 1) if trans else (3, M + 2, K + 1)).astype(dtype)
    B = rng.normal(size=(3, K + 3, N + 1)).astype(dtype)
    C = rng.normal(size=(3, M + 4, N + 2)).astype(dtype)
    a = A[:, :K, :M].transpose(0, 2, 1) if trans else A[:, :M, :K]
    want = C.astype(float).copy()
    want[:, :M, :N] = a.astype(float) @ B[:, :K, :N].astype(float) + 0.5 * want[:, :M, :N]
    ta = blas_call.TRANS if trans else blas_call.NO_TRANS
    winograd.PRODUCTS[parallel](A, B, C, ta, M, N, K, numpy.dtype(dtype).type(0.5), *fn)
    assert_allclose(C, want, dtype)


def test_winograd_is_only_taken_where_it_applies():
    from gpunet.kernels.numba_cpu import winograd

    assert winograd.eligible((3, 3), (1, 1), (1, 1), 64, 64)
    assert not winograd.eligible((3, 3), (2, 2), (1, 1), 64, 64)  # strided
    assert not winograd.eligible((5, 5), (1, 1), (2, 2), 64, 64)
    assert not winograd.eligible((3, 3), (1, 1), (3, 3), 64, 64)  # padding past 2
    assert not winograd.eligible((3, 3), (1, 1), (1, 1), 3, 64)  # a first layer: im2col


# ------------------------------------------------------------- direct convolution (first layer)
#: (x shape, filters, kernel, padding): an RGB first layer 3x3 and 7x7 "same" (blocks of 32
#: columns exactly), one channel at a width of 37 and 10 filters (a short last block of columns
#: and of channels), no padding, 13 filters at a width of 18, float64's 16-column blocks; two
#: channels padded by 2 around a 3x3 kernel (dout's own padding 0); a 1x1 kernel padded by 1
#: (its backward is im2col's: dout's padding would be -1)
DIRECT_CASES = [
    ((2, 3, 32, 32), 32, 3, 1),
    ((2, 3, 20, 32), 32, 7, 3),
    ((2, 1, 9, 37), 10, 5, 2),
    ((3, 3, 6, 18), 13, 3, 0),
    ((2, 2, 17, 19), 5, 3, 2),
    ((2, 3, 16, 16), 8, 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DIRECT_CASES, ids=lambda c: f"{c[0]}F{c[1]}k{c[2]}p{c[3]}")
@pytest.mark.parametrize("path", ["cpu-kernels", "cpu-parallel"])
def test_direct_conv_matches_the_sum(path, case, dtype, monkeypatch):
    """A first layer (C kh kw <= 160, stride 1, Wo >= 16) runs direct_conv.py's microkernels on
    the CPU, forward and backward (counted; taken here on CPUs without AVX-512 too, where they
    are slower but the same sums), and agrees with float64 loops: out, dx and dw, and dw alone
    (input_grad=False: dout read in place or through a padded copy of its last channels)."""
    from gpunet.kernels.numba_cpu import direct_conv

    monkeypatch.setattr(direct_conv, "_AVX512", True)
    made = []
    for name in ("FORWARD", "BACKWARD"):
        real = getattr(direct_conv, name)
        monkeypatch.setattr(direct_conv, name, [
            lambda *a, real=real, name=name: made.append(name) or real[0](*a),
            lambda *a, real=real, name=name: made.append(name) or real[1](*a),
        ])  # fmt: skip
    x_shape, filters, k, p = case
    rng = numpy.random.default_rng(9)
    x, w = rng.normal(size=x_shape), rng.normal(size=(filters, x_shape[1], k, k))
    dout = rng.normal(
        size=(x_shape[0], filters, x_shape[2] + 2 * p - k + 1, x_shape[3] + 2 * p - k + 1)
    )
    args = (x.astype(dtype), w.astype(dtype), (1, 1), (p, p), dout.astype(dtype))
    out, dx, dw = run(path, _conv, *args)
    (dw_alone,) = run(path, _conv_dw_alone, *args)
    assert made.count("FORWARD") == 2  # the microkernel made both forwards
    assert made.count("BACKWARD") == (2 if p < k else 0)  # ... and the backwards where they fit
    assert out.dtype == dw_alone.dtype == dtype
    want = conv_naive(x, w, (1, 1), (p, p))
    assert_allclose(out, want, dtype, scale=10 * x_shape[1] * k * k)
    want_dx, want_dw = _conv_grads_naive(x, w, (p, p), dout)
    assert_allclose(dx, want_dx, dtype, scale=10 * filters * k * k)
    for got in (dw, dw_alone):
        assert_allclose(got, want_dw, dtype, scale=10 * x_shape[0] * x_shape[2] * x_shape[3])


def _conv_dw_alone(x, w, stride, padding, dout):
    out, cache = F.conv2d_forward(x, w, None, stride, padding)
    dx, dw, _ = F.conv2d_backward(dout, cache, input_grad=False)
    assert dx is None
    return (dw,)


def _conv_grads_naive(x, w, padding, dout):
    """dx, dw of sum(dout * conv(x, w)) at stride 1, by the taps' loops in float64."""
    (ph, pw), (N, C, H, W), (_, _, kh, kw) = padding, x.shape, w.shape
    Ho, Wo = dout.shape[2:]
    dxp = numpy.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp = numpy.zeros_like(dxp)
    xp[:, :, ph : ph + H, pw : pw + W] = x
    dw = numpy.zeros(w.shape)
    for i in range(kh):
        for j in range(kw):
            dw[:, :, i, j] = numpy.einsum("nfhw,nchw->fc", dout, xp[:, :, i : i + Ho, j : j + Wo])
            dxp[:, :, i : i + Ho, j : j + Wo] += numpy.einsum("fc,nfhw->nchw", w[:, :, i, j], dout)
    return dxp[:, :, ph : ph + H, pw : pw + W], dw


def test_direct_conv_is_only_taken_where_it_applies(monkeypatch):
    from gpunet.kernels.numba_cpu import direct_conv

    monkeypatch.setattr(direct_conv, "_AVX512", True)
    first = ((64, 3, 32, 32), (32, 3, 7, 7))
    assert direct_conv.eligible(*first, (1, 1), (3, 3), 32)
    assert not direct_conv.eligible(*first, (2, 2), (3, 3), 16)  # strided
    assert not direct_conv.eligible(*first, (1, 1), (3, 3), 8)  # narrow: im2col
    assert not direct_conv.eligible((64, 4, 32, 32), (32, 4, 7, 7), (1, 1), (3, 3), 32)  # 196 taps
    monkeypatch.setattr(direct_conv, "_AVX512", False)
    assert not direct_conv.eligible(*first, (1, 1), (3, 3), 32)  # 16 accumulators would spill


def test_a_convolution_kept_serial_by_a_product_splits_next_time(monkeypatch):
    """Right after a product (cpu_threads' quiet rule) a splittable call runs unsplit, its
    products on one BLAS thread and not noted -- so the call after it splits, instead of every
    call's own products keeping the next one serial."""
    import numba

    import gpunet
    from gpunet.kernels.numba_cpu import conv as cpu_conv
    from gpunet.kernels.shared import cpu_blas, cpu_threads, im2col_gemm

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread here: nothing to split over")
    monkeypatch.setattr(cpu_blas, "active", lambda: "numpy")  # OpenBLAS's threads spin; MKL's
    monkeypatch.setattr(cpu_conv, "SPLIT_MIN_MACS", 1)  # are Numba's, and it is not noted
    monkeypatch.setattr(cpu_conv, "SPLIT_MIN_CHUNK_MACS", 1)
    monkeypatch.setattr(cpu_threads, "PARALLEL_MIN", 1)
    monkeypatch.setattr(im2col_gemm.Geometry, "chunk", lambda self, *a: min(1, self.N))
    used, real = [], cpu_conv._on_one_thread
    monkeypatch.setattr(
        cpu_conv, "_on_one_thread", lambda fn, part: used.append(1) or real(fn, part)
    )
    rng = numpy.random.default_rng(9)
    x, w = rng.normal(size=(4, 3, 6, 7)), rng.normal(size=(4, 3, 3, 3))
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        with gpunet.use_cpu_kernels("numba"):
            assert cpu_threads.get_mode() == "auto"
            cpu_threads.note_matmul()  # a product just now
            noted = cpu_threads.last_matmul()
            first, _ = cpu_conv.conv2d_forward(x, w, (1, 1), (1, 1))
            assert not used and cpu_threads.last_matmul() == noted  # unsplit, not noted
            monkeypatch.setattr(cpu_threads, "QUIET_S", 0.0)  # no waiting in a test
            second, _ = cpu_conv.conv2d_forward(x, w, (1, 1), (1, 1))
    finally:
        numba.set_num_threads(old)
    assert used  # split
    want = conv_naive(x, w, (1, 1), (1, 1))
    assert_allclose(first, want, numpy.float64)
    assert_allclose(second, want, numpy.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_samples_split_over_threads(monkeypatch, dtype):
    """A parallel call splits its samples over threads (kernels/numba_cpu/conv.py's
    _run_parts): each part's cols, products and dx on its own thread, the parts' dw summed --
    the same results as the float64 reference, the workers really used."""
    import numba

    from gpunet.kernels.numba_cpu import conv as cpu_conv
    from gpunet.kernels.shared import im2col_gemm

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread here: nothing to split over")
    monkeypatch.setattr(cpu_conv, "SPLIT_MIN_MACS", 1)
    monkeypatch.setattr(cpu_conv, "SPLIT_MIN_CHUNK_MACS", 1)
    monkeypatch.setattr(im2col_gemm.Geometry, "chunk", lambda self, *a: min(1, self.N))
    used, real = [], cpu_conv._on_one_thread

    def on_worker(fn, part):
        used.append(part)
        return real(fn, part)

    monkeypatch.setattr(cpu_conv, "_on_one_thread", on_worker)
    rng = numpy.random.default_rng(6)
    x, w = rng.normal(size=(5, 3, 6, 7)).astype(dtype), rng.normal(size=(4, 3, 3, 3)).astype(dtype)
    dout = rng.normal(size=(5, 4, 6, 7)).astype(dtype)
    want = conv_naive(x, w, (1, 1), (1, 1))
    ref = run("numpy", _conv, x.astype(float), w.astype(float), (1, 1), (1, 1), dout.astype(float))
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        got = run("cpu-parallel", _conv, x, w, (1, 1), (1, 1), dout)
    finally:
        numba.set_num_threads(old)
    assert len(used) == 2  # forward's and backward's second part, each on the worker
    assert_allclose(got[0], want, dtype)
    for g, r in zip(got[1:], ref[1:]):
        assert_allclose(g, r, dtype, scale=10)


def test_the_stall_watch_is_told_work_not_outputs(monkeypatch):
    """cpu_threads' stall watch compares one kernel's per-value times across calls: a 7x7 first
    layer's call must count its multiply-adds, not its outputs (counted by outputs, a 7x7 call
    after 3x3 ones read as a stall and sent every kernel serial), and Winograd's its filters."""
    import contextlib

    from gpunet.kernels.numba_cpu import conv as cpu_conv
    from gpunet.kernels.numba_cpu import direct_conv
    from gpunet.kernels.shared import cpu_threads

    told = {}

    @contextlib.contextmanager
    def choose(key, n_values):
        told.setdefault(key.split("/")[0], []).append(n_values)
        yield False

    monkeypatch.setattr(cpu_threads, "choose", choose)
    monkeypatch.setattr(direct_conv, "_AVX512", True)
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(2, 3, 16, 16)).astype(numpy.float32)
    for k in (3, 7):
        w = rng.normal(size=(8, 3, k, k)).astype(numpy.float32)
        out, kept = cpu_conv.conv2d_forward(x, w, (1, 1), (k // 2, k // 2))
        cpu_conv.conv2d_backward(out, x, w, kept, (1, 1), (k // 2, k // 2), True)
    assert told["direct_conv"] == [x.size // 3 * 8 * 27, x.size // 3 * 8 * 147]
    assert told["direct_conv'"] == [2 * x.size // 3 * 8 * 27, 2 * x.size // 3 * 8 * 147]
    x = rng.normal(size=(2, 16, 32, 32)).astype(numpy.float32)  # Winograd on planes
    for filters in (16, 32):
        w = rng.normal(size=(filters, 16, 3, 3)).astype(numpy.float32)
        cpu_conv.conv2d_forward(x, w, (1, 1), (1, 1))
    assert told["winograd_planes"] == [x.size * 16, x.size * 32]
