"""The register-blocked microkernels of the direct convolution (direct_conv.py), as Numba
intrinsics written in LLVM IR: each keeps a block of 16 vector accumulators in AVX-512 registers
through its whole reduction and touches memory only for its operands and, once, for the result.
Numba's own loops cannot: its loop vectorizer keeps accumulators in memory across an outer loop
(one store per FMA; measured 33-47 GMAC/s for the best loop written that way, one core of the
2-vCPU Xeon, against 65-80 here) and its SLP vectorizer is off.

Two shapes of reduction:

* ``tap_rows(channels, vectors)``: ``out[o0 + k os + v L + l] = sum over t of w[t, f0 + k]
  x[x0 + taps[t] + v L + l]`` -- a sum over taps, one broadcast weight per output channel k and
  tap, ``vectors`` consecutive vectors of L lanes (L = 16 float32, 8 float64) of outputs. The
  forward (8 channels x 2 vectors) and the input gradient (4 x 4) of the direct convolution.
* ``position_block(d_rows, x_rows)``: ``acc[a0 + (k as + m) L + l] += sum over positions
  (y, s) of d[d0 + k ds + y dr + s L + l] x[taps[t0 + m] + y xr + s L + l]`` -- a sum over
  positions in the lanes (d_rows rows of d against x_rows shifted rows of x, d_rows x x_rows
  products per step of L positions), the weight gradient.

No index is checked: the callers' buffers carry the slack their blocks read past.
"""

from __future__ import annotations

from typing import Any

import numpy
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .vector_math import _prefer_wide_vectors

#: bytes per vector register (AVX-512)
VECTOR_BYTES = 64


def lanes(dtype: numpy.dtype) -> int:
    """Values per vector register: 16 float32, 8 float64."""
    return VECTOR_BYTES // numpy.dtype(dtype).itemsize


class _Vectors:
    """The vector type of one dtype in one function being built, and its few operations."""

    def __init__(self, context: Any, builder: ir.IRBuilder, dtype: Any) -> None:
        _prefer_wide_vectors(builder.function)
        self.builder = builder
        scalar = context.get_value_type(dtype)
        self.size = numpy.dtype(str(dtype)).itemsize
        self.n = lanes(numpy.dtype(str(dtype)))
        self.type = ir.VectorType(scalar, self.n)
        self.intp = ir.IntType(64)
        suffix = f"v{self.n}f{scalar.intrinsic_name[1:]}"
        self._fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(self.type, [self.type] * 3), f"llvm.fma.{suffix}"
        )
        self.zero = ir.Constant(self.type, [0.0] * self.n)

    def const(self, v: int) -> ir.Constant:
        return ir.Constant(self.intp, v)

    def _at(self, base: ir.Value, offset: ir.Value) -> ir.Value:
        return self.builder.bitcast(self.builder.gep(base, [offset]), self.type.as_pointer())

    def load(self, base: ir.Value, offset: ir.Value) -> ir.Value:
        """The vector at base[offset:offset + L], unaligned."""
        return self.builder.load(self._at(base, offset), align=self.size)

    def store(self, value: ir.Value, base: ir.Value, offset: ir.Value) -> None:
        self.builder.store(value, self._at(base, offset), align=self.size)

    def splat(self, s: ir.Value) -> ir.Value:
        b = self.builder
        one = b.insert_element(
            ir.Constant(self.type, ir.Undefined), s, ir.Constant(ir.IntType(32), 0)
        )
        mask = ir.Constant(ir.VectorType(ir.IntType(32), self.n), [0] * self.n)
        return b.shuffle_vector(one, ir.Constant(self.type, ir.Undefined), mask)

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.builder.call(self._fma, [a, b, c])

    def loop(self, count: ir.Value, start: list, body: Any) -> list:
        """Values of a do-while loop of ``count`` (>= 1) trips carrying ``start``:
        ``body(i, values) -> values``."""
        b = self.builder
        entry = b.block
        head = b.append_basic_block("loop")
        done = b.append_basic_block("done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(self.intp)
        i.add_incoming(self.const(0), entry)
        carried = []
        for v in start:
            phi = b.phi(v.type)
            phi.add_incoming(v, entry)
            carried.append(phi)
        new = body(i, carried)
        i_next = b.add(i, self.const(1))
        i.add_incoming(i_next, b.block)
        for phi, value in zip(carried, new):
            phi.add_incoming(value, b.block)
        b.cbranch(b.icmp_signed("<", i_next, count), head, done)
        b.position_at_end(done)
        return new


def _arrays(context: Any, builder: ir.IRBuilder, signature: Any, args: tuple, which: tuple) -> list:
    return [context.make_array(signature.args[i])(context, builder, args[i]) for i in which]


def tap_rows(channels: int, vectors: int) -> Any:
    """The intrinsic ``rows(x, x0, taps, w, f0, out, o0, ostride)``: for k < channels, v <
    vectors, l < L, ``out[o0 + k ostride + v L + l] = sum over t < len(taps) of w[t Fp + f0 + k]
    x[x0 + taps[t] + v L + l]`` (w: (T, Fp) flattened, Fp = len(w) / len(taps))."""

    @intrinsic
    def rows(
        typingctx: Any, x: Any, x0: Any, taps: Any, w: Any, f0: Any, out: Any, o0: Any, ostride: Any
    ) -> tuple:  # noqa: ARG001 (Numba's signature)
        sig = types.void(x, types.intp, taps, w, types.intp, out, types.intp, types.intp)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: tuple) -> Any:
            vec = _Vectors(context, builder, x.dtype)
            xs, ts, ws, os_ = _arrays(context, builder, signature, args, (0, 2, 3, 5))
            x0v, f0v, o0v, ostride_v = args[1], args[4], args[6], args[7]
            count = builder.extract_value(ts.shape, 0)
            fp = builder.sdiv(builder.extract_value(ws.shape, 0), count)  # w's row length

            def tap(t: ir.Value, acc: list) -> list:
                at = builder.gep(
                    xs.data, [builder.add(x0v, builder.load(builder.gep(ts.data, [t])))]
                )
                xv = [vec.load(at, vec.const(v * vec.n)) for v in range(vectors)]
                wrow = builder.gep(ws.data, [builder.add(builder.mul(t, fp), f0v)])
                new: list[ir.Value] = []
                for k in range(channels):
                    b = vec.splat(builder.load(builder.gep(wrow, [vec.const(k)])))
                    new.extend(vec.fma(xv[v], b, acc[k * vectors + v]) for v in range(vectors))
                return new

            sums = vec.loop(count, [vec.zero] * (channels * vectors), tap)
            for k in range(channels):
                row = builder.add(o0v, builder.mul(vec.const(k), ostride_v))
                for v in range(vectors):
                    vec.store(
                        sums[k * vectors + v], os_.data, builder.add(row, vec.const(v * vec.n))
                    )
            return context.get_dummy_value()

        return sig, codegen

    return rows


def position_block(d_rows: int, x_rows: int) -> Any:
    """The intrinsic ``block(d, d0, dstride, drow, x, taps, t0, xrow, rows, steps, acc, a0,
    astride)``: for k < d_rows, m < x_rows, ``acc[a0 + (k astride + m) L + l] += sum over y <
    rows, s < steps of d[d0 + k dstride + y drow + s L + l] x[taps[t0 + m] + y xrow + s L + l]``
    (rows, steps >= 1): d_rows x x_rows accumulators, the sum over positions in their lanes."""

    @intrinsic
    def block(
        typingctx: Any,
        d: Any,
        d0: Any,
        dstride: Any,
        drow: Any,
        x: Any,
        taps: Any,
        t0: Any,
        xrow: Any,
        rows: Any,
        steps: Any,
        acc: Any,
        a0: Any,
        astride: Any,
    ) -> tuple:  # noqa: ARG001 (Numba's signature)
        i = types.intp
        sig = types.void(d, i, i, i, x, taps, i, i, i, i, acc, i, i)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: tuple) -> Any:
            vec = _Vectors(context, builder, d.dtype)
            ds, xs, ts, accs = _arrays(context, builder, signature, args, (0, 4, 5, 10))
            d0v, dstride_v, drow_v, t0v, xrow_v, rows_v, steps_v, a0v, astride_v = (
                args[j] for j in (1, 2, 3, 6, 7, 8, 9, 11, 12)
            )
            d_at = [builder.gep(ds.data, [builder.add(d0v, builder.mul(vec.const(k), dstride_v))])
                    for k in range(d_rows)]  # fmt: skip
            x_at = []
            for m in range(x_rows):
                tap = builder.load(builder.gep(ts.data, [builder.add(t0v, vec.const(m))]))
                x_at.append(builder.gep(xs.data, [tap]))
            slots: list[ir.Value] = []
            for k in range(d_rows):
                first = builder.mul(builder.mul(vec.const(k), astride_v), vec.const(vec.n))
                slots.extend(builder.add(a0v, builder.add(first, vec.const(m * vec.n)))
                             for m in range(x_rows))  # fmt: skip
            start = [vec.load(accs.data, s) for s in slots]

            def row(y: ir.Value, sums: list) -> list:
                d_row = [builder.gep(p, [builder.mul(y, drow_v)]) for p in d_at]
                x_row = [builder.gep(p, [builder.mul(y, xrow_v)]) for p in x_at]

                def step(s: ir.Value, sums: list) -> list:
                    off = builder.mul(s, vec.const(vec.n))
                    dv = [vec.load(r, off) for r in d_row]
                    xv = [vec.load(r, off) for r in x_row]
                    return [vec.fma(dv[k], xv[m], sums[k * x_rows + m])
                            for k in range(d_rows) for m in range(x_rows)]  # fmt: skip

                return vec.loop(steps_v, sums, step)

            for value, s in zip(vec.loop(rows_v, start, row), slots):
                vec.store(value, accs.data, s)
            return context.get_dummy_value()

        return sig, codegen

    return block
