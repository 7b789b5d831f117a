"""Direct convolution for a net's first layer (few input channels, stride 1) on AVX-512 CPUs.

    out[n, f, y, x] = sum over taps t = (c, i, j) of w[f, c, i, j] xp[n, c, y + i, x + j]

with xp the zero-padded input. This is the layer im2col serves worst: with C kh kw = 27 (3x3
taps of an RGB image) or 147 (CS231n's 7x7 first layer) the product per sample is (F x K) @
(K x Ho Wo) with a small K, where the BLAS runs at half its peak (measured on the 2-vCPU Xeon,
one core, float32: MKL 35-42 GMAC/s at K = 27, 66-73 at K = 147; NumPy's OpenBLAS 46-61 and
49-53), before im2col's copy of every tap.

The microkernel (``_rows``, an LLVM intrinsic) keeps 8 output channels x 2 vectors of columns
of one output row -- 16 accumulators, 8 x 32 outputs in float32 -- in 16 AVX-512 registers
through all T = C kh kw taps. Per tap it loads the two input vectors at (c, y + i, x0 + j),
broadcasts the tap's 8 weights and makes 16 fused multiply-adds (two loads per eight FMAs
besides the broadcasts, which the FMAs take as memory operands): FMA-bound, not load- or
store-bound. It writes the 8 x 32 outputs once, straight into out's NCHW rows. Numba's loop
vectorizer cannot produce this: it keeps accumulators in memory across a loop of taps (one
store per FMA; measured 33-47 GMAC/s for the best loop written that way), hence the intrinsic.

Each sample (one prange iteration) is copied into a zero-padded flat buffer of its own,
C (H + 2 ph) (W + 2 pw) values plus one block of slack; a block's loads may run past a row's
end into the next row (or the slack): those lanes belong to columns >= Wo and are not stored.
Blocks that would stick out of out (the last columns when Wo is not a multiple of the block,
the last channels when F is not a multiple of 8) are written to a scratch block and copied.

Measured on the 2-vCPU Intel Xeon development machine (AVX-512, 2.6 GHz), one core, batch 64,
3 -> 32 channels at 32x32, float32, the kernel alone: 3x3 0.88 ms (64.6 GMAC/s), 7x7 3.87 ms
(79.6 GMAC/s, ~95 % of two FMA units' peak); torch 2.13 (oneDNN) takes 1.42 and 4.47 ms for
the whole layer. BENCHMARKS.md has the layer against torch.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from gpunet.types import Array

from ..shared import cpu_threads, numba_cache
from .vector_math import _has_avx512, _prefer_wide_vectors
from .winograd_planes import _threads

#: output channels per microkernel call (the weights broadcast per tap)
CHANNELS = 8
#: vectors of columns per output channel (CHANNELS x VECTORS accumulators: 16 of AVX-512's 32)
VECTORS = 2
#: bytes per vector register (AVX-512)
VECTOR_BYTES = 64
#: where im2col takes over: taps per output (C kh kw) beyond this (3 x 7 x 7 = 147 is the
#: largest first layer of the CS231n nets; deeper layers go to Winograd or im2col's products)
MAX_TAPS = 160
#: narrower outputs waste most of a block of columns (Wo < 16: the digits' 8x8 maps)
MIN_WIDTH = 16


def lanes(dtype: numpy.dtype) -> int:
    """Values per vector register: 16 float32, 8 float64."""
    return VECTOR_BYTES // numpy.dtype(dtype).itemsize


def _numba_targets_avx512() -> bool:
    """Whether Numba compiles for a CPU with AVX-512 (the host's features, or NUMBA_CPU_FEATURES):
    elsewhere 16 vector accumulators of 64 bytes would spill, and im2col serves the layer."""
    from numba.core.registry import cpu_target

    return _has_avx512(cpu_target.target_context)


def eligible(x_shape: tuple, w_shape: tuple, stride: tuple, padding: tuple, out_width: int) -> bool:
    """Whether a convolution goes here: stride 1, C kh kw <= MAX_TAPS, Wo >= MIN_WIDTH, AVX-512."""
    C, kh, kw = w_shape[1:]
    return (
        tuple(stride) == (1, 1) and C * kh * kw <= MAX_TAPS and out_width >= MIN_WIDTH and _AVX512
    )


@intrinsic
def _rows(
    typingctx: Any, x: Any, x0: Any, taps: Any, w: Any, f0: Any, out: Any, o0: Any, ostride: Any
) -> tuple:  # noqa: ARG001 (Numba's signature)
    """out[o0 + k ostride + v L + l] = sum over t of w[t, f0 + k] x[x0 + taps[t] + v L + l]
    for k < CHANNELS, v < VECTORS, l < L (the lanes): one block of a row's outputs. x, taps, w,
    out are 1-D C arrays (w: (T, Fp) flattened, Fp a multiple of CHANNELS); the indices are not
    checked (the caller's blocks are in bounds)."""
    dtype = x.dtype
    sig = types.void(x, types.intp, taps, w, types.intp, out, types.intp, types.intp)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: tuple) -> Any:
        _prefer_wide_vectors(builder.function)
        xa, x0v, ta, wa, f0v, oa, o0v, ostride_v = args
        arrays = [context.make_array(signature.args[i])(context, builder, v)
                  for i, v in ((0, xa), (2, ta), (3, wa), (5, oa))]  # fmt: skip
        xs, ts, ws, os_ = arrays
        count = builder.extract_value(ts.shape, 0)
        width = builder.extract_value(ws.shape, 0)
        fp = builder.sdiv(width, count)  # w's row length
        scalar = context.get_value_type(dtype)
        size = numpy.dtype(str(dtype)).itemsize
        n = lanes(numpy.dtype(str(dtype)))
        vec = ir.VectorType(scalar, n)
        intp = ir.IntType(64)
        suffix = f"v{n}f{scalar.intrinsic_name[1:]}"
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.{suffix}"
        )
        zero = ir.Constant(vec, [0.0] * n)

        def vector_at(base: ir.Value, offset: ir.Value) -> ir.Value:  # loaded/stored unaligned
            return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

        splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n)

        entry = builder.block
        loop = builder.append_basic_block("taps")
        done = builder.append_basic_block("write")
        builder.branch(loop)
        builder.position_at_end(loop)
        t = builder.phi(intp)
        t.add_incoming(ir.Constant(intp, 0), entry)
        acc = []
        for _ in range(CHANNELS * VECTORS):
            phi = builder.phi(vec)
            phi.add_incoming(zero, entry)
            acc.append(phi)
        at = builder.gep(xs.data, [builder.add(x0v, builder.load(builder.gep(ts.data, [t])))])
        xv = [builder.load(vector_at(at, ir.Constant(intp, v * n)), align=size)
              for v in range(VECTORS)]  # fmt: skip
        wrow = builder.gep(ws.data, [builder.add(builder.mul(t, fp), f0v)])
        new: list[ir.Value] = []
        for k in range(CHANNELS):
            s = builder.load(builder.gep(wrow, [ir.Constant(intp, k)]))
            b = builder.shuffle_vector(
                builder.insert_element(
                    ir.Constant(vec, ir.Undefined), s, ir.Constant(ir.IntType(32), 0)
                ),
                ir.Constant(vec, ir.Undefined),
                splat_mask,
            )
            new.extend(builder.call(fma, [xv[v], b, acc[k * VECTORS + v]]) for v in range(VECTORS))
        t_next = builder.add(t, ir.Constant(intp, 1))
        t.add_incoming(t_next, builder.block)
        for phi, value in zip(acc, new):
            phi.add_incoming(value, builder.block)
        builder.cbranch(builder.icmp_signed("<", t_next, count), loop, done)

        builder.position_at_end(done)
        for k in range(CHANNELS):
            row = builder.add(o0v, builder.mul(ir.Constant(intp, k), ostride_v))
            for v in range(VECTORS):
                at_v = builder.add(row, ir.Constant(intp, v * n))
                builder.store(new[k * VECTORS + v], vector_at(os_.data, at_v), align=size)
        return context.get_dummy_value()

    return sig, codegen


def _forward(
    x: Array, wt: Array, taps: Array, ph: int, pw: int, out: Array, work: Array, threaded: bool
) -> None:  # pragma: no cover - Numba
    """out (N, F, Ho, Wo) from x (N, C, H, W), wt (T, Fp) and the taps' offsets in a padded
    sample (T,); work: (threads, C Hp Wp + block + CHANNELS block) scratch rows."""
    N, C, H, W = x.shape
    F, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    plane = Hp * Wp
    block = VECTORS * (VECTOR_BYTES // x.itemsize)
    for n in prange(N):
        tid = numba.get_thread_id() if threaded else 0
        xp = work[tid, : C * plane + block]
        scratch = work[tid, C * plane + block :]
        xp[:] = 0
        for c in range(C):
            for r in range(H):
                xp[c * plane + (r + ph) * Wp + pw : c * plane + (r + ph) * Wp + pw + W] = x[n, c, r]
        on = out[n].reshape(F * Ho * Wo)
        for f0 in range(0, F, CHANNELS):
            for y in range(Ho):
                for c0 in range(0, Wo, block):
                    if f0 + CHANNELS <= F and c0 + block <= Wo:
                        _rows(xp, y * Wp + c0, taps, wt, f0, on, (f0 * Ho + y) * Wo + c0, Ho * Wo)
                    else:  # the block sticks out of out: write it aside, copy what is inside
                        _rows(xp, y * Wp + c0, taps, wt, f0, scratch, 0, block)
                        for k in range(min(CHANNELS, F - f0)):
                            for v in range(min(block, Wo - c0)):
                                out[n, f0 + k, y, c0 + v] = scratch[k * block + v]


FORWARD = numba_cache.serial_and_parallel(_forward, error_model="numpy", boundscheck=False)
_AVX512 = _numba_targets_avx512()


def forward(x: Array, w: Array, padding: tuple, buffer: Any) -> Array:
    """out (N, F, Ho, Wo) of x (N, C, H, W) and w (F, C, kh, kw) at stride 1 (eligible)."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    ph, pw = padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    Ho, Wo = Hp - kh + 1, Wp - kw + 1
    Fp = -(-F // CHANNELS) * CHANNELS
    wt = numpy.zeros((C * kh * kw, Fp), x.dtype)
    wt[:, :F] = w.reshape(F, -1).T
    c, i, j = numpy.meshgrid(numpy.arange(C), numpy.arange(kh), numpy.arange(kw), indexing="ij")
    taps = (c * Hp * Wp + i * Wp + j).reshape(-1).astype(numpy.intp)
    block = VECTORS * lanes(x.dtype)
    out = numpy.empty((N, F, Ho, Wo), x.dtype)
    with cpu_threads.choose(cpu_threads.key("direct_conv", x.dtype), out.size) as par:
        threads = _threads(par)
        work = buffer("direct_conv", (threads, C * Hp * Wp + block + CHANNELS * block), x.dtype)
        FORWARD[par](x, wt.reshape(-1), taps, ph, pw, out, work, bool(par))
    return out
