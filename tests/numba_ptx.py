"""Compile every Numba CUDA kernel of gpunet to PTX for a real GPU architecture, without a GPU.

Numba's simulator (how the tests run these kernels elsewhere) never type-infers or compiles them:
a kernel that would fail to compile on a GPU (an unsupported NumPy call, a type that does not
unify, a float64 constant in a float32 kernel that the simulator happily runs) passes there. Here
the real CUDA target compiles each kernel with the argument types of its real launches: the host
functions of kernels/numba_cuda run on NumPy arrays with ``support.launch`` replaced by a recorder
that calls ``numba.cuda.compile_ptx(kernel.py_func, types, cc)`` (NVVM, no driver needed).

Run as a script (the test process has NUMBA_ENABLE_CUDASIM=1, which replaces numba.cuda):
``python tests/numba_ptx.py 9.0`` prints one JSON line: {kernel: [PTX bytes, registers hint]}.
"""

from __future__ import annotations

import json
import os
import sys


def main(cc_text: str) -> int:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    import numba
    import numpy
    from numba import cuda

    from gpunet.kernels.activation_table import ACTIVATION_CODES, ACTIVATIONS
    from gpunet.kernels.interface import BNParams, BNSpec, BNStats
    from gpunet.kernels.numba_cuda import activations as nk
    from gpunet.kernels.numba_cuda import batchnorm as nb
    from gpunet.kernels.numba_cuda import support

    cc = tuple(int(v) for v in cc_text.split("."))
    compiled: dict = {}

    # Device functions are compiled for "the current device" (numba/cuda/dispatcher.py,
    # compile_device): with no device here, that device is the target architecture.
    import types

    from numba.cuda import dispatcher

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)

    def compile_launch(kernel, blocks, threads, *args):
        types = tuple(numba.typeof(a) for a in args)
        name = kernel.py_func.__name__
        key = f"{name}{types}"
        if key not in compiled:
            ptx, _ = cuda.compile_ptx(kernel.py_func, types, cc=cc)
            assert f".target sm_{cc[0]}{cc[1]}" in ptx, ptx[:200]
            compiled[key] = len(ptx)

    for module in (support, nk, nb):
        if hasattr(module, "launch"):
            module.launch = compile_launch

    rng = numpy.random.default_rng(0)
    for dtype in (numpy.float32, numpy.float64):
        x = rng.normal(size=300).astype(dtype)
        dy = rng.normal(size=300).astype(dtype)
        for spec in ACTIVATIONS:
            nk.forward(spec.name, x, numpy.empty_like(x), 0.5, 0.5)
            nk.backward(spec.name, dy, x, numpy.empty_like(x), 0.5, 0.5)
        w = numpy.ones(4, dtype)
        x3 = rng.normal(size=(3, 4, 5)).astype(dtype).ravel()
        nk.prelu_forward(x3, w, numpy.empty_like(x3), 4, 5)
        nk.prelu_backward(x3, x3, w, numpy.empty_like(x3), numpy.empty_like(x3), 4, 5)
        nk.maxout_forward(x3[:48], numpy.empty(16, dtype), 3, 2)
        nk.maxout_backward(numpy.empty(16, dtype), x3[:48], numpy.empty(48, dtype), 3, 2)
        for shape in ((9, 3, 1), (5, 2, 7)):
            xb = rng.normal(size=shape).astype(dtype)
            C = shape[1]
            params = BNParams(numpy.ones(C, dtype), numpy.zeros(C, dtype), None, None)
            for act in ACTIVATION_CODES:
                spec = BNSpec(batch_stats=True, update=False, factor=0.1, eps=1e-5, act=act)
                mean, invstd = numpy.zeros(C, dtype), numpy.ones(C, dtype)
                nb.stats(xb, 1e-5)
                nb.apply(xb, mean, invstd, params, spec)
                nb.backward(xb, xb, BNStats(mean, invstd), params, spec)
    print(json.dumps(compiled))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "9.0"))
