"""Time to the first step and to the last file: each measured in fresh processes.

* ``import gpunet``;
* the first training step of the default digits MLP in a process whose kernel cache is empty
  (cold: a fresh cache folder, so every Numba kernel compiles) and in one whose cache is filled
  (warm: loaded from disk);
* drawing ``curves.png`` of a 30-epoch history (Pillow's import, then the drawing);
* ``gpunet train`` with its defaults, end to end (wall time), cold and warm;
* torch beside it where it is installed: its import and its first step of the same MLP.
Medians of ``--repeat`` runs; each run is its own process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from .timing import fmt_table

FIRST_STEP = r"""
import time, numpy
t0 = time.perf_counter()
import gpunet
from gpunet import nn, optim
from gpunet.datasets import load_digits
d = load_digits()
X, y = d["X_train"][:64].astype(numpy.float32) / 16, d["y_train"][:64]
t1 = time.perf_counter()
model = nn.mlp([64, 128, 64, 10])
opt = optim.SGD(model.parameters(), 0.1, momentum=0.9)
loss, dscores = nn.SoftmaxCrossEntropy()(model(X), y)
model.zero_grad(); model.backward(dscores); opt.step()
print(time.perf_counter() - t1)
"""

TORCH_STEP = r"""
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
m = torch.nn.Sequential(torch.nn.Linear(64, 128, bias=False), torch.nn.BatchNorm1d(128),
                        torch.nn.ReLU(), torch.nn.Linear(128, 64, bias=False),
                        torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
opt = torch.optim.SGD(m.parameters(), 0.1, momentum=0.9)
x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
loss = torch.nn.functional.cross_entropy(m(x), y)
opt.zero_grad(); loss.backward(); opt.step()
print(t1 - t0, time.perf_counter() - t1)
"""

PLOT = r"""
import time, json, sys
t0 = time.perf_counter()
from PIL import Image, ImageDraw, ImageFont
t1 = time.perf_counter()
from gpunet.train import History, plots
n = 30
h = History(loss=[2.3 * 0.99 ** i for i in range(n * 20)], epoch=list(range(1, n + 1)),
            train_acc=[0.9] * n, val_acc=[0.88] * n, val_loss=[0.4] * n, lr=[0.1] * n,
            time=[0.03] * n)
t2 = time.perf_counter()
plots.plot_histories({"": h}, sys.argv[1], title="digits")
print(t1 - t0, time.perf_counter() - t2)
"""


def _python(code: str, env: dict, *args: str) -> list:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    return [float(v) for v in out.stdout.split()]


def _wall(cmd: list, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def run(repeat: int = 3) -> str:
    rows = []
    base = dict(os.environ, PYTHONUNBUFFERED="1")
    imports = [_wall([sys.executable, "-c", "import gpunet"], base) for _ in range(repeat)]
    rows.append(["import gpunet (process wall, incl. Python)", f"{statistics.median(imports):.2f}"])
    with tempfile.TemporaryDirectory() as tmp:
        cold, warm = [], []
        for k in range(repeat):
            env = dict(base, GPUNET_CACHE_DIR=os.path.join(tmp, f"cold{k}"))
            cold.append(_python(FIRST_STEP, env)[0])
            warm.append(_python(FIRST_STEP, env)[0])  # the same cache folder, now filled
        rows.append(["first step, cold (every kernel compiles)", f"{statistics.median(cold):.2f}"])
        rows.append(
            ["first step, warm (kernels loaded from the cache)", f"{statistics.median(warm):.2f}"]
        )
        plot = [_python(PLOT, base, os.path.join(tmp, "c.png")) for _ in range(repeat)]
        rows.append(["curves.png: import Pillow", f"{statistics.median(p[0] for p in plot):.2f}"])
        rows.append(["curves.png: draw and write", f"{statistics.median(p[1] for p in plot):.2f}"])
        gpunet_cmd = [sys.executable, "-m", "gpunet", "train", "--no-progress"]
        for label, cache in (("cold", "train-cold"), ("warm", "train-cold")):
            env = dict(base, GPUNET_CACHE_DIR=os.path.join(tmp, cache))
            walls = [
                _wall(gpunet_cmd + ["--out", os.path.join(tmp, f"run-{label}-{k}")], env)
                for k in range(1 if label == "cold" else repeat)
            ]
            rows.append(
                [f"gpunet train (defaults), {label} (wall)", f"{statistics.median(walls):.2f}"]
            )
    try:
        torch_runs = [_python(TORCH_STEP, base) for _ in range(repeat)]
        rows.append(["torch: import torch", f"{statistics.median(r[0] for r in torch_runs):.2f}"])
        rows.append(
            [
                "torch: first step of the same MLP",
                f"{statistics.median(r[1] for r in torch_runs):.2f}",
            ]
        )
    except subprocess.CalledProcessError:
        rows.append(["torch", "not installed"])
    return fmt_table(["measure", "seconds"], rows)
