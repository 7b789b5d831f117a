"""The README's Python example runs as written."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_example_runs(tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    code = re.search(r"## From Python\n\n```python\n(.*?)```", text, re.S).group(1)
    env = {**os.environ, "GPUNET_BACKEND": "numpy", "MPLBACKEND": "Agg"}
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    accuracy = float(p.stdout.strip().strip("()").split(",")[1])
    assert accuracy >= 0.95
    assert (tmp_path / "curves.png").exists() and (tmp_path / "runs" / "mine.npz").exists()
