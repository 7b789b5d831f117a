"""gpunet against PyTorch on the CPU, each side in its own process -- what a user's machine does:

    python -m gpunet.bench vs-torch [--groups mlp,bn,act,optim,conv] [--threads 1,2] [--rounds 3]
                                    [--torch-python PYTHON] [--repeat 20]

Groups of rows (float32):

* ``mlp``: one training step (forward, backward, SGD momentum 0.9) of mlp([D, H, H, 10]) with
  BatchNorm -- batch 64..4096 at 3072-1024-1024-10, width 256..4096 at batch 256 -- and without
  BatchNorm (784-512-512-10 and 3072-1024-1024-10, batch 256): issue #24's table;
* ``bn``: BatchNorm in training mode, alone and with ReLU, forward and forward+backward, on the
  shapes of those MLPs and of the convnets;
* ``act``: every activation, forward and forward+backward, on 256K and 4M values;
* ``optim``: one SGD-momentum and one Adam update over an MLP's parameters;
* ``conv``: issue #23's convnet steps, single Conv2d layers, MaxPool2d (gpunet.bench.conv).

How it measures:

* each side runs in its own process (gpunet_side.py, torch_side.py), gpunet's and torch's
  alternated ``--rounds`` times; a row's figure is the median over rounds of each process's
  median; ``spread`` is the largest relative distance of a round from that median, and a row
  whose spread passes 15 % is marked ``unsteady`` rather than taken at face value;
* every case is warmed up (torch_side.WARM_S) before timing;
* ``--threads``: torch.set_num_threads on one side; the BLAS (threadpoolctl) and Numba's thread
  count on the other; gpunet's training steps run inside ``fit``'s thread policy;
* the header names the CPU model, each side's BLAS and its kernel (gpunet's: threadpoolctl's
  ``internal_api``/``architecture``; torch's own MKL and oneDNN, which threadpoolctl cannot
  see, from its build configuration: torch_side.torch_blas_info), and whether
  OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set (they pin OpenBLAS to one kernel: benchmark
  commands unset them to measure what users get).

torch need not be importable here: ``--torch-python`` runs the torch side with another
interpreter (a venv with torch and NumPy; torch_side.py imports nothing of gpunet).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence

from gpunet.kernels.shared import cpu_blas

from . import gpunet_side, torch_side

#: a row whose rounds are further than this from their median is marked unsteady
UNSTEADY = 0.15
GROUPS = ("mlp", "bn", "act", "optim", "conv")

#: (batch, inputs, hidden, batchnorm) of the MLP step rows: issue #24's table
MLPS = (
    [(b, 3072, 1024, True) for b in (64, 256, 1024, 4096)]
    + [(256, 3072, h, True) for h in (256, 512, 2048, 4096)]
    + [(256, 784, 512, False), (256, 3072, 1024, False)]
)
#: BatchNorm shapes: the MLPs' hidden layers (batch x width) and convnet layers (N, C, H, W)
BN_SHAPES = [(256, 1024), (4096, 1024), (64, 32, 32, 32), (64, 128, 16, 16)]
ACT_SIZES = (1 << 18, 1 << 22)
OPTIM_NETS = [(3072, 1024), (784, 512)]


class NoCases(ValueError):
    """The options select no benchmark case."""


def mlp_cases() -> list:
    out = []
    for b, d, h, bn in MLPS:
        name = f"mlp b{b} {d}-{h}-{h}-10" + ("" if bn else " noBN")
        out.append((name, {"kind": "mlp", "batch": b, "d": d, "h": h, "bn": bn}))
    return out


def bn_cases() -> list:
    out = []
    for shape in BN_SHAPES:
        for relu in (False, True):
            for part in ("fwd", "fwdbwd"):
                name = f"bn{'+relu' if relu else ''} {'x'.join(map(str, shape))} {part}"
                out.append((name, {"kind": "bn", "shape": shape, "relu": relu, "part": part}))
    return out


def act_cases() -> list:
    from .activations import FUNCTIONS

    out = []
    for n in ACT_SIZES:
        for name in FUNCTIONS:
            for part in ("fwd", "fwdbwd"):
                spec = {"kind": "act", "name": name, "n": n, "part": part}
                out.append((f"{name} {n >> 10}K {part}", spec))
    return out


def optim_cases() -> list:
    return [
        (f"{opt} {d}-{h}-{h}-10", {"kind": "optim", "opt": opt, "d": d, "h": h})
        for d, h in OPTIM_NETS
        for opt in ("sgd", "adam")
    ]


def cases(groups: Sequence[str], quick: bool = False) -> list:
    """[(name, spec)] in table order for the groups asked."""
    from . import conv

    makers = {
        "mlp": mlp_cases,
        "bn": bn_cases,
        "act": act_cases,
        "optim": optim_cases,
        "conv": lambda: conv.cases(quick),
    }
    unknown = [g for g in groups if g not in makers]
    if unknown:
        raise ValueError(f"groups must be among {', '.join(GROUPS)}; got {', '.join(unknown)}")
    return [case for g in groups for case in makers[g]()]


# ----------------------------------------------------------------------------- running sides
def _worker(command: list, payload: dict) -> dict:
    """One side's process, in the environment the user gave this one: without what gpunet's
    import set here (GOMP_SPINCOUNT would otherwise reach torch's OpenMP)."""
    from gpunet.kernels.shared import cpu_threads

    p = subprocess.run(
        [*command, json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=3600,
        env=cpu_threads.user_environment(),
    )
    if p.returncode != 0:
        raise RuntimeError(f"benchmark side {command[0]} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def gpunet_command() -> list:
    return [sys.executable, "-m", gpunet_side.__name__]


def torch_command(python: str) -> list:
    return [python, torch_side.__file__]


def torch_python(given: str | None) -> str | None:
    """The interpreter for the torch side: ``given``, else this one if torch imports here."""
    if given:
        return given
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


def blas_text(blas: list) -> str:
    return "; ".join(
        f"{b.get('internal_api')} {b.get('version') or ''} {b.get('architecture') or ''}".strip()
        for b in blas
    )


def pinned_openblas() -> list:
    return [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(v)]


def header(rounds: int) -> list:
    pinned = pinned_openblas()
    env = (
        f"{' and '.join(pinned)} SET (OpenBLAS pinned to one kernel: not what users get)"
        if pinned
        else "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset"
    )
    return [
        f"# CPU: {cpu_blas.cpu_model()}, {os.cpu_count()} logical cores; {env}",
        f"# each side in its own process, alternated, {rounds} rounds; median of per-process "
        f"medians; 'unsteady' where a round is > {UNSTEADY:.0%} from it",
    ]


def run(
    groups: Sequence[str] = GROUPS,
    threads: Sequence[int] = (1, 2),
    rounds: int = 3,
    repeat: int = 20,
    torch_python_path: str | None = None,
    quick: bool = False,
    match: Sequence[str] | None = None,
) -> str:
    """The table, with a header naming the machine, each side's BLAS kernel and the threads;
    ``match``: only the cases whose name contains one of these strings."""
    from .timing import fmt_table

    table = cases(groups, quick)
    if match:
        table = [case for case in table if any(m in case[0] for m in match)]
        if not table:
            raise NoCases(f"--match: no case of groups {', '.join(groups)} matches {list(match)}")
    tpy = torch_python(torch_python_path)
    lines = header(rounds)
    rows = []
    for t in threads:
        payload = {"threads": t, "repeat": repeat, "cases": table}
        ours: list = []
        theirs: list = []
        for _ in range(rounds):
            ours.append(_worker(gpunet_command(), payload))
            if tpy:
                theirs.append(_worker(torch_command(tpy), payload))
        lines.append(f"# {t} thread(s): {ours[0]['version']}, BLAS {blas_text(ours[0]['blas'])}")
        if theirs:
            blas = blas_text(theirs[0]["blas"])
            lines.append(f"# {t} thread(s): {theirs[0]['version']}, BLAS {blas}")
        for name, _ in table:
            rows.append(_row(name, t, ours, theirs))
    if not tpy:
        lines.append("# torch not importable here: pass --torch-python with a venv that has it")
    headers = ["case", "threads", "gpunet ms", "torch ms", "gpunet/torch", "spread"]
    return "\n".join(lines + [fmt_table(headers, rows)])


def _row(name: str, threads: int, ours: list, theirs: list) -> list:
    a, sa = median_spread([r["times"][name] for r in ours])
    if not theirs:
        return [name, threads, f"{a * 1e3:.3f}", "-", "-", f"{sa:.0%}"]
    b, sb = median_spread([r["times"][name] for r in theirs])
    ratio = f"{a / b:.2f}" + (" unsteady" if max(sa, sb) > UNSTEADY else "")
    return [name, threads, f"{a * 1e3:.3f}", f"{b * 1e3:.3f}", ratio, f"{max(sa, sb):.0%}"]


def median_spread(values: list) -> tuple:
    """(median, the largest relative distance of a value from it)."""
    m = statistics.median(values)
    return m, max(abs(v - m) / m for v in values) if m > 0 else 0.0
