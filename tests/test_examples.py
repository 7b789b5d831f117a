"""The examples run end to end (small settings) and say clearly when their data is missing."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args, cwd):
    env = {**os.environ, "GPUNET_BACKEND": "numpy", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.parametrize("script,args,output", [
    ("activations.py", ["--out", "act.png"], "act.png"),
    ("train_digits.py", ["--out", "digits", "--epochs", "5"], "digits/curves.png"),
    ("bn_vs_no_bn.py", ["--epochs", "3", "--out", "bn.png"], "bn.png"),
])
def test_example_runs(script, args, output, tmp_path):
    p = _run(script, *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / output).read_bytes()[:4] == b"\x89PNG"


def test_cifar_example_without_data(tmp_path):
    p = _run("train_cifar10.py", "--data-dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert p.returncode == 2
    assert "CIFAR-10 binary files not found" in p.stderr and "Traceback" not in p.stderr
