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

torch need not be importable here: ``--torch-python`` runs the torch side with another
interpreter (a venv with torch), which needs only torch and NumPy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys

#: (kernel, padding, batch) of the step rows (issue #23's table)
STEPS = [(3, 1, 64), (3, 1, 256), (7, 3, 64), (7, 3, 256)]
#: (C_in, C_out, H=W, kernel) of the single-layer rows, batch 64
LAYERS = [(3, 32, 32, 3), (3, 32, 32, 7), (64, 64, 32, 3), (128, 128, 16, 3), (256, 256, 16, 3)]
QUICK_LAYERS = [(3, 32, 32, 3), (64, 64, 32, 3)]
LAYER_BATCH = 64
UNSTEADY = 0.15


def cases(quick: bool = False) -> list:
    """[(name, spec)] in table order; spec is what both workers understand."""
    out = [(f"step k{k} b{b}", {"kind": "step", "k": k, "pad": p, "batch": b}) for k, p, b in STEPS]
    for cin, cout, hw, k in QUICK_LAYERS if quick else LAYERS:
        for part in ("fwd", "bwd"):
            spec = {"kind": "conv", "cin": cin, "cout": cout, "hw": hw, "k": k, "part": part}
            out.append((f"conv {cin}x{cout}@{hw}x{hw} k{k} {part}", spec))
    for part in ("fwd", "bwd"):
        out.append((f"maxpool 64x32@32x32 {part}", {"kind": "pool", "part": part}))
    return out


# ----------------------------------------------------------------------------- the workers
#: shared by both workers: timing after a warm-up of >= 0.3 s and >= 5 calls
_TIMER = r"""
import json, sys, time, statistics
def _time(fn, repeat):
    t_end, n = time.perf_counter() + 0.3, 0
    while n < 5 or time.perf_counter() < t_end:
        fn(); n += 1
    ts = []
    budget = time.perf_counter() + 3.0
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
        if time.perf_counter() > budget and len(ts) >= 5:
            break
    return statistics.median(ts)
def _blas():
    try:
        import threadpoolctl
        return [{k: d.get(k) for k in ("internal_api", "architecture", "version", "num_threads")}
                for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
    except Exception as exc:
        return [{"internal_api": "unknown: " + str(exc)}]
"""

TORCH_WORKER = (
    _TIMER
    + r"""
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
tnn, F = torch.nn, torch.nn.functional
def make(spec):
    torch.manual_seed(0)
    if spec["kind"] == "step":
        k, pad, b = spec["k"], spec["pad"], spec["batch"]
        m = tnn.Sequential(tnn.Conv2d(3, 32, k, padding=pad, bias=False), tnn.BatchNorm2d(32),
                           tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
                           tnn.Linear(32 * 16 * 16, 10))
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(b, 3, 32, 32), torch.randint(0, 10, (b,))
        lf = tnn.CrossEntropyLoss()
        def step():
            opt.zero_grad(); lf(m(x), y).backward(); opt.step()
        return step
    if spec["kind"] == "conv":
        x = torch.randn(64, spec["cin"], spec["hw"], spec["hw"], requires_grad=True)
        conv = tnn.Conv2d(spec["cin"], spec["cout"], spec["k"], padding=spec["k"] // 2, bias=False)
        if spec["part"] == "fwd":
            def fwd():
                with torch.no_grad():
                    conv(x)
            return fwd
        out = conv(x)
        d = torch.randn_like(out)
        def bwd():
            torch.autograd.grad(out, [x, conv.weight], d, retain_graph=True)
        return bwd
    x = torch.randn(64, 32, 32, 32, requires_grad=True)
    if spec["part"] == "fwd":
        def pf():
            with torch.no_grad():
                F.max_pool2d(x, 2)
        return pf
    out = F.max_pool2d(x, 2)
    d = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, [x], d, retain_graph=True)
res = {name: _time(make(spec), args["repeat"]) for name, spec in args["cases"]}
print(json.dumps({"times": res, "blas": _blas(), "version": "torch " + torch.__version__}))
"""
)

GPUNET_WORKER = (
    _TIMER
    + r"""
import numpy, numba
args = json.loads(sys.argv[1])
import threadpoolctl
threadpoolctl.threadpool_limits(args["threads"], user_api="blas")
numba.set_num_threads(min(args["threads"], numba.config.NUMBA_NUM_THREADS))
import gpunet
from gpunet import nn, optim
from gpunet import functional as Fn
from gpunet.kernels.shared import cpu_blas
cpu_blas.active()
threadpoolctl.threadpool_limits(args["threads"], user_api="blas")  # a lazily loaded MKL too
rng = numpy.random.default_rng(0)
def make(spec):
    gpunet.seed(0)
    if spec["kind"] == "step":
        k, pad, b = spec["k"], spec["pad"], spec["batch"]
        m = nn.Sequential(nn.Conv2d(3, 32, k, padding=pad, bias=False),
                          nn.BatchNorm2d(32, activation="relu"), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(32 * 16 * 16, 10))
        m.input_grad = False
        opt = optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        lf = nn.SoftmaxCrossEntropy()
        x = rng.normal(size=(b, 3, 32, 32)).astype(numpy.float32)
        y = rng.integers(0, 10, b)
        def step():
            _, d = lf(m.forward(x), y, check=False)
            m.zero_grad(); m.backward(d); opt.step()
        return step
    if spec["kind"] == "conv":
        x = rng.normal(size=(64, spec["cin"], spec["hw"], spec["hw"])).astype(numpy.float32)
        w = (rng.normal(size=(spec["cout"], spec["cin"], spec["k"], spec["k"])) * 0.1).astype(
            numpy.float32)
        pad = spec["k"] // 2
        if spec["part"] == "fwd":
            return lambda: Fn.conv2d_forward(x, w, None, 1, pad)
        out, cache = Fn.conv2d_forward(x, w, None, 1, pad)
        d = rng.normal(size=out.shape).astype(numpy.float32)
        return lambda: Fn.conv2d_backward(d, cache)
    x = rng.normal(size=(64, 32, 32, 32)).astype(numpy.float32)
    if spec["part"] == "fwd":
        return lambda: Fn.max_pool2d_forward(x, 2)
    out, cache = Fn.max_pool2d_forward(x, 2)
    d = rng.normal(size=out.shape).astype(numpy.float32)
    return lambda: Fn.max_pool2d_backward(d, cache)
res = {name: _time(make(spec), args["repeat"]) for name, spec in args["cases"]}
version = "gpunet %s, cpu_blas %s" % (gpunet.__version__, cpu_blas.active())
print(json.dumps({"times": res, "blas": _blas(), "version": version}))
"""
)


def _worker(python: str, code: str, payload: dict) -> dict:
    p = subprocess.run(
        [python, "-c", code, json.dumps(payload)], capture_output=True, text=True, timeout=1800
    )
    if p.returncode != 0:
        raise RuntimeError(f"benchmark worker {python} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_python(given: str | None) -> str | None:
    if given:
        return given
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


def _blas_text(blas: list) -> str:
    return "; ".join(
        f"{b.get('internal_api')} {b.get('version') or ''} {b.get('architecture') or ''}".strip()
        for b in blas
    )


def run(
    threads: list | None = None,
    rounds: int = 3,
    repeat: int = 20,
    torch_python: str | None = None,
    quick: bool = False,
) -> str:
    """The table (and a header naming the machine, the BLAS kernels and the threads)."""
    from .timing import fmt_table

    threads = threads or [1, 2]
    table = cases(quick)
    tpy = _torch_python(torch_python)
    pinned = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(v)]
    lines = [
        f"# CPU: {cpu_model()}, {os.cpu_count()} logical cores; "
        + (
            f"{' and '.join(pinned)} SET (OpenBLAS pinned to one kernel: not what users get)"
            if pinned
            else "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset"
        ),
        f"# each side in its own process, alternated, {rounds} rounds; median of per-process "
        "medians; 'unsteady' where a round is > 15 % from it",
    ]
    rows = []
    for t in threads:
        payload = {"threads": t, "repeat": repeat, "cases": table}
        ours: list = []
        theirs: list = []
        for _ in range(rounds):
            ours.append(_worker(sys.executable, GPUNET_WORKER, payload))
            if tpy:
                theirs.append(_worker(tpy, TORCH_WORKER, payload))
        blas = _blas_text(ours[0]["blas"])
        lines.append(f"# {t} thread(s): gpunet: {ours[0]['version']}, BLAS {blas}")
        if theirs:
            lines.append(
                f"# {t} thread(s): {theirs[0]['version']}, BLAS {_blas_text(theirs[0]['blas'])}"
            )
        for name, _ in table:
            a, sa = _median_spread([r["times"][name] for r in ours])
            row = [name, t, f"{a * 1e3:.2f}"]
            if theirs:
                b, sb = _median_spread([r["times"][name] for r in theirs])
                ratio = f"{a / b:.2f}"
                if max(sa, sb) > UNSTEADY:
                    ratio += " unsteady"
                row += [f"{b * 1e3:.2f}", ratio, f"{max(sa, sb) * 100:.0f}%"]
            else:
                row += ["-", "-", f"{sa * 100:.0f}%"]
            rows.append(row)
    headers = ["case", "threads", "gpunet ms", "torch ms", "gpunet/torch", "spread"]
    if not tpy:
        lines.append("# torch not importable here: pass --torch-python with a venv that has it")
    return "\n".join(lines + [fmt_table(headers, rows)])


def _median_spread(values: list) -> tuple:
    m = statistics.median(values)
    return m, max(abs(v - m) / m for v in values) if m > 0 else 0.0
