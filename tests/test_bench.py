"""The benchmark commands run and print their tables (tiny sizes; speed is not tested here)."""

import numpy
import pytest

import gpunet
from gpunet.bench import __main__ as bench_main
from gpunet.bench import optim as optim_bench
from gpunet.bench import step as step_bench


@pytest.fixture(autouse=True)
def _numpy_backend():
    previous = gpunet.get_backend()
    gpunet.set_backend("numpy")
    yield
    gpunet.set_backend(previous)


def _rows(table):
    return [line.split() for line in table.splitlines()[2:]]


def test_optim_bench_runs_each_optimizer_and_leaves_no_nan():
    table = optim_bench.run(nets=[(16, 8)], repeat=1)
    rows = _rows(table)
    assert [r[2] for r in rows] == ["sgd", "adam"]
    # 16*8 + 8 + 8*8 + 8 + 8*10 + 10 values
    assert all(r[1] == f"{(16 * 8 + 8 + 64 + 8 + 80 + 10) / 1e6:.2f}M" for r in rows)
    step = optim_bench._ours(numpy, "adam", 16, 8)
    step()
    assert step.__self__.params[0].data.dtype == numpy.float32


@pytest.mark.parametrize("batchnorm", [True, False])
def test_step_bench_with_and_without_batchnorm(batchnorm):
    table = step_bench.run(configs=[(8, 16, 32)], repeat=1, batchnorm=batchnorm)
    (row,) = _rows(table)
    assert row[0] == "8" and row[1] == "16->32->32->10"
    assert (row[2:4] == ["no", "BN"]) == (not batchnorm)


def test_cli_optim_and_sweep_options(capsys):
    assert bench_main.main(["--backend", "numpy", "optim", "--nets", "16x8", "--repeat", "1"]) == 0
    assert "optimizer" in capsys.readouterr().out
    assert len(step_bench.SWEEP) == 7 and all(d == 3072 for _, d, _ in step_bench.SWEEP)
