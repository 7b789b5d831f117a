"""The examples run end to end (small settings) and say clearly when their data is missing."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args, cwd):
    env = {**os.environ, "GPUNET_BACKEND": "numpy", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize(
    "script,args,output",
    [
        ("activations.py", ["--out", "act.png"], "act.png"),
        ("train_digits.py", ["--out", "digits", "--epochs", "5"], "digits/curves.png"),
        ("bn_vs_no_bn.py", ["--epochs", "3", "--out", "bn.png"], "bn.png"),
        ("init_experiment.py", ["--out", "init.png"], "init.png"),
    ],
)
def test_example_runs(script, args, output, tmp_path):
    p = _run(script, *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / output).read_bytes()[:4] == b"\x89PNG"


def test_cifar_example_without_data(tmp_path):
    p = _run("train_cifar10.py", "--data-dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert p.returncode == 2
    assert "CIFAR-10 binary files not found" in p.stderr and "Traceback" not in p.stderr


def test_init_experiment_shows_the_lecture(tmp_path):
    """Small random weights collapse, He keeps ReLU activations alive: the printed layer stds."""
    p = _run("init_experiment.py", "--out", "i.png", cwd=tmp_path)
    stds = {
        line.split(" layer std:")[0].strip(): [float(v) for v in line.split(":")[1].split()]
        for line in p.stdout.splitlines()
        if "layer std:" in line
    }
    assert stds["W = 0.01 randn"][-1] < 1e-5
    assert min(stds["W = randn"]) > 0.95  # saturated tanh
    assert stds["Xavier, ReLU"][-1] < 0.1 * stds["Xavier, ReLU"][0]
    assert 0.5 < stds["He, ReLU"][-1] / stds["He, ReLU"][0] < 2


def test_cifar_convnet_example_end_to_end(tmp_path):
    """CS231n's three-layer ConvNet through the real CIFAR-10 binary loader, on files of the
    official format (random pixels; 30 images per batch file), 2 epochs: it trains, evaluates,
    checkpoints and plots -- and a rerun resumes from the checkpoint."""
    import numpy

    rng = numpy.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, 30, dtype=numpy.uint8)
        pixels = rng.integers(0, 256, (30, 3072), dtype=numpy.uint8)
        numpy.concatenate([labels[:, None], pixels], axis=1).tofile(folder / name)
    args = ["--data-dir", str(folder), "--epochs", "2", "--val-size", "20", "--out", "run"]
    p = _run("train_cifar10_convnet.py", *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Conv2d(3, 32, kernel_size=(7, 7)" in p.stdout and "Linear(8192, 100" in p.stdout
    assert "test accuracy:" in p.stdout
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    p = _run("train_cifar10_convnet.py", *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
