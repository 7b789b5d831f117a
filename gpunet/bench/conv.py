"""Benchmark of convolution, pooling and convnet training steps on the CPU, against PyTorch eager:

    python -m gpunet.bench conv [--threads 1,2] [--rounds 3] [--torch-python PYTHON] [--quick]

Rows (float32, NCHW):

* ``step kK bB``: one training step (forward, backward, SGD momentum 0.9) of issue #23's net,
  input 3x32x32: Conv2d(3, 32, K, "same" padding, no bias) -> BatchNorm2d -> ReLU -> MaxPool2d(2)
  -> Linear(8192, 10), softmax cross-entropy, no gradient for the input (as ``fit`` trains);
* ``conv CinxCout@HxW kK fwd|bwd``: one Conv2d layer, batch 64 -- forward, then backward (dx and
  dw) -- for the first layer of those nets and CS231n's deeper 3x3 stacks (64-256 channels at
  32x32 and 16x16);
* ``maxpool fwd|bwd``: MaxPool2d(2) on (64, 32, 32, 32).

How it measures (what a user's machine does):

* each side runs in its own process, gpunet's and torch's alternated ``--rounds`` times; a row's
  figure is the median over rounds of each process's median; ``spread`` is the largest relative
  distance of a round from that median, and a row whose spread passes 15 % says so
  (``unsteady``) instead of being taken at face value;
* every call is warmed up for at least 0.3 s and 5 calls before timing;
* ``--threads``: torch.set_num_threads on one side; the BLAS (threadpoolctl) and Numba's thread
  count on the other;
* the header names the CPU model, each side's BLAS and its kernel (threadpoolctl's
  ``internal_api``/``architecture``), and whether OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set
  (they pin OpenBLAS to one kernel; benchmark commands unset them to measure what users get).

The processes, the timer and the table are gpunet.bench.vs_torch's (``vs-torch --groups conv``
is the same table); torch need not be importable here: ``--torch-python`` runs the torch side
with another interpreter (a venv with torch and NumPy).
"""

from __future__ import annotations

#: (kernel, padding, batch) of the step rows (issue #23's table)
STEPS = [(3, 1, 64), (3, 1, 256), (7, 3, 64), (7, 3, 256)]
#: (C_in, C_out, H=W, kernel) of the single-layer rows, batch 64
LAYERS = [(3, 32, 32, 3), (3, 32, 32, 7), (64, 64, 32, 3), (128, 128, 16, 3), (256, 256, 16, 3)]
QUICK_LAYERS = [(3, 32, 32, 3), (64, 64, 32, 3)]
LAYER_BATCH = 64


def cases(quick: bool = False) -> list:
    """[(name, spec)] in table order; spec is what both workers understand."""
    out = [
        (f"step k{k} b{b}", {"kind": "convstep", "k": k, "pad": p, "batch": b}) for k, p, b in STEPS
    ]
    for cin, cout, hw, k in QUICK_LAYERS if quick else LAYERS:
        for part in ("fwd", "bwd"):
            spec = {"kind": "conv", "cin": cin, "cout": cout, "hw": hw, "k": k, "part": part}
            spec["batch"] = LAYER_BATCH
            out.append((f"conv {cin}x{cout}@{hw}x{hw} k{k} {part}", spec))
    for part in ("fwd", "bwd"):
        spec = {"kind": "pool", "shape": (64, 32, 32, 32), "part": part}
        out.append((f"maxpool 64x32@32x32 {part}", spec))
    return out


def run(
    threads: list | None = None,
    rounds: int = 3,
    repeat: int = 20,
    torch_python: str | None = None,
    quick: bool = False,
) -> str:
    """The table (and a header naming the machine, the BLAS kernels and the threads)."""
    from . import vs_torch

    return vs_torch.run(["conv"], threads or [1, 2], rounds, repeat, torch_python, quick)
