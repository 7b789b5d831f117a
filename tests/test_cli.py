"""The gpunet command, end to end in a subprocess."""

import json
import os
import subprocess
import sys

import pytest


def _run(*args, cwd=None):
    env = {**os.environ, "GPUNET_BACKEND": "numpy", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "gpunet", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_train_default_job_reaches_95_percent(tmp_path):
    out = tmp_path / "run"
    p = _run("train", "--out", str(out), "--no-progress", "--backend", "numpy")
    assert p.returncode == 0, p.stderr
    test_acc = float(p.stdout.split("test accuracy")[1].split()[0])
    assert test_acc >= 0.95
    for name in ("config.json", "history.json", "history.csv", "curves.png", "checkpoint.npz"):
        assert (out / name).exists(), name
    assert json.loads((out / "config.json").read_text())["dataset"] == "digits"
    from gpunet.run import load_preprocessor

    assert load_preprocessor(out / "checkpoint.npz") is not None
    # resume of a finished run trains nothing more and gives the same result
    again = _run("train", "--out", str(out), "--no-progress", "--backend", "numpy", "--resume")
    assert again.returncode == 0 and f"test accuracy {test_acc:.4f}" in again.stdout


def test_train_options_and_divergence_message(tmp_path):
    p = _run(
        "train",
        "--dataset",
        "spiral",
        "--hidden",
        "32",
        "--activation",
        "tanh",
        "--batchnorm",
        "off",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--epochs",
        "3",
        "--out",
        str(tmp_path / "s"),
        "--no-progress",
    )
    assert p.returncode == 0, p.stderr
    bad = _run(
        "train",
        "--lr",
        "1e9",
        "--batchnorm",
        "off",
        "--epochs",
        "3",
        "--schedule",
        "none",
        "--out",
        str(tmp_path / "b"),
        "--no-progress",
    )
    assert (
        bad.returncode == 1 and "training stopped" in bad.stderr and "Traceback" not in bad.stderr
    )


def test_train_errors_are_clear(tmp_path):
    p = _run(
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "c"),
        "--no-progress",
    )
    assert (
        p.returncode == 2
        and "CIFAR-10 binary files not found" in p.stderr
        and "Traceback" not in p.stderr
    )
    p = _run("train", "--hidden", "12,x")
    assert p.returncode == 2 and "hidden sizes must be comma-separated integers" in p.stderr


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["info", "--help"]])
def test_help(args):
    p = _run(*args)
    assert p.returncode == 0 and "usage: gpunet" in p.stdout


def test_info():
    p = _run("info")
    assert p.returncode == 0 and "gpunet 0.1.0" in p.stdout and "backend" in p.stdout.lower()


def test_info_says_how_to_get_mkl_where_it_is_missing(monkeypatch, capsys):
    import platform

    from gpunet import cli
    from gpunet.kernels.shared import cpu_blas

    monkeypatch.setattr(cpu_blas, "mkl_problem", lambda: "the mkl package is not installed")
    assert cli.main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("CPU matrix"))
    assert "numpy: the only one installed (MKL: the mkl package is not installed)" in line
    wheels_exist = sys.platform == "linux" and platform.machine() == "x86_64"
    assert ("pip install 'gpunet[mkl]'" in line) == wheels_exist


def test_the_command_skips_the_last_collection_only_as_the_process_command(monkeypatch, capsys):
    """main() with the process's own arguments (the console script, python -m gpunet) freezes
    the objects alive at its end, so that the interpreter's collection at exit does not walk
    Numba's registries (~0.2 s); called with an explicit argv (a program going on) it does not."""
    import gc

    from gpunet import cli

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    assert cli.main(["info"]) == 0 and not frozen
    monkeypatch.setattr(sys, "argv", ["gpunet", "info"])
    assert cli.main() == 0 and frozen == [1]
    capsys.readouterr()
