"""Host side of convolution and max pooling on the GPU (conv.cuh): CuPy 14 has no cuDNN, so the
convolution is ours -- the im2col/col2im kernels of conv.cuh feeding cuBLAS products through the
driver the CPU path uses too (kernels/shared/im2col_gemm.py), and the max pool kernels.

conv.cuh indexes in 32 bits (no 64-bit division in its loops), so every launch here covers fewer
than 2^31 values: the convolution's launches one chunk of the batch, the pooling launches a slice
of the (n, c) planes, as many slices as it takes."""

from __future__ import annotations

import cupy

from gpunet.types import Array, DTypeLike

from ..shared import im2col_gemm
from .sources import unit_source

THREADS = 256
#: grid-stride kernels: a grid of at most this many blocks fills an H100/H200 (132 SMs x 8
#: resident 256-thread blocks) many times over
MAX_BLOCKS = 65535
#: values one launch may cover (32-bit indices in conv.cuh, signed)
MAX_VALUES = 2**31 - 1


@cupy.memoize(for_each_device=True)
def _module() -> Array:
    return cupy.RawModule(code=unit_source("conv"), options=("-std=c++14",))


@cupy.memoize(for_each_device=True)
def _kernel(name: str, dtype: DTypeLike):
    suffix = "float" if cupy.dtype(dtype) == cupy.float32 else "double"
    return _module().get_function(f"{name}_{suffix}")


def _launch(name: str, dtype: DTypeLike, n: int, args: tuple) -> None:
    if n == 0:
        return
    if n > MAX_VALUES:
        raise ValueError(f"{name}: one launch covers at most 2^31 - 1 values, got {n}")
    blocks = min(-(-n // THREADS), MAX_BLOCKS)
    i32 = cupy.int32
    _kernel(name, dtype)(
        (blocks,), (THREADS,), tuple(i32(a) if isinstance(a, int) else a for a in args)
    )


def _im2col_into(x: Array, n0: int, nb: int, g: im2col_gemm.Geometry, cols: Array) -> None:
    _launch("im2col", x.dtype, cols.size, (x[n0 : n0 + nb], nb, g.C, g.H, g.W, *g.taps, cols))


def _col2im_into(dcols: Array, n0: int, nb: int, g: im2col_gemm.Geometry, dx: Array) -> None:
    if max(g.H, g.W) >= 1 << 15:  # col2im packs (h, w) into one int of 15 + 15 bits
        raise ValueError(f"conv2d on the GPU: images up to 32767 pixels a side, got {g.H}x{g.W}")
    if dcols.size > MAX_VALUES:
        raise ValueError(f"col2im: one chunk holds at most 2^31 - 1 values, got {dcols.size}")
    n = nb * g.C * g.H * g.W
    _launch("col2im", dx.dtype, n, (dcols, nb, g.C, g.H, g.W, *g.taps, dx[n0 : n0 + nb]))


def _buffer(slot: str, shape: tuple, dtype: DTypeLike) -> Array:
    return cupy.empty(shape, dtype)  # CuPy's memory pool hands back the same block: no cudaMalloc


def _matmul(a: Array, b: Array) -> Array:
    return a @ b  # cuBLAS


#: a GPU chunk: up to 256 MiB of cols -- the whole batch of every layer of issue #23's nets at
#: batch 256 (3x3 taps of 64 channels at 32x32: 150 MB) in one launch and one cuBLAS product,
#: where the CPU's one sample per chunk would make hundreds of launches of a few microseconds each
CHUNK_BYTES = 256 << 20

KERNELS = im2col_gemm.Kernels(
    _im2col_into, _col2im_into, _matmul, _buffer, cupy, chunk_bytes=CHUNK_BYTES
)


def conv2d_forward(x: Array, w: Array, stride: tuple, padding: tuple) -> tuple:
    return im2col_gemm.conv2d_forward(KERNELS, x, w, stride, padding)


def conv2d_backward(
    dout: Array, x: Array, w: Array, kept: object, stride: tuple, padding: tuple, input_grad: bool
) -> tuple:
    return im2col_gemm.conv2d_backward(KERNELS, dout, x, w, stride, padding, input_grad)


def _plane_slices(g: im2col_gemm.Geometry) -> range:
    """Starts of the slices of (n, c) planes, each under MAX_VALUES input values."""
    per = max(1, MAX_VALUES // max(g.H * g.W, 1))
    return range(0, g.N * g.C, per)


def max_pool2d_forward(x: Array, kernel: tuple, stride: tuple, padding: tuple) -> tuple:
    x = cupy.ascontiguousarray(x)
    g = im2col_gemm.geometry(x.shape, kernel, stride, padding)
    out = cupy.empty((g.N * g.C, g.Ho, g.Wo), x.dtype)
    arg = cupy.empty((g.N * g.C, g.Ho, g.Wo), cupy.int32)
    planes = x.reshape(g.N * g.C, g.H, g.W)
    slices = _plane_slices(g)
    for p0 in slices:
        p1 = min(p0 + slices.step, g.N * g.C)
        args = (planes[p0:p1], p1 - p0, g.H, g.W, *g.taps, out[p0:p1], arg[p0:p1])
        _launch("max_pool_fwd", x.dtype, (p1 - p0) * g.P, args)
    shape = (g.N, g.C, g.Ho, g.Wo)
    return out.reshape(shape), arg.reshape(shape)


def max_pool2d_backward(
    dout: Array, arg: Array, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple
) -> Array:
    g = im2col_gemm.geometry(x_shape, kernel, stride, padding)
    dx = cupy.empty((g.N * g.C, g.H, g.W), dout.dtype)
    dout = cupy.ascontiguousarray(dout).reshape(g.N * g.C, g.Ho, g.Wo)
    arg = cupy.ascontiguousarray(arg, dtype=cupy.int32).reshape(g.N * g.C, g.Ho, g.Wo)
    slices = _plane_slices(g)
    for p0 in slices:
        p1 = min(p0 + slices.step, g.N * g.C)
        args = (dout[p0:p1], arg[p0:p1], p1 - p0, g.H, g.W, *g.taps, dx[p0:p1])
        _launch("max_pool_bwd", dx.dtype, (p1 - p0) * g.H * g.W, args)
    return dx.reshape(x_shape)
