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


def test_unsteady_rows_say_so_instead_of_a_time():
    """A measurement whose repeats spread (interquartile range) past half their median -- what a
    scheduler stall of a two-thread region looks like on a loaded 2-core machine -- is printed
    as UNSTEADY with its spread, not as a time; a steady one keeps its numbers."""
    from gpunet.bench import activations, timing

    stalls = [1e-4] * 10 + [8e-3] * 10  # half the calls stalled 8 ms
    assert timing.spread(stalls) > timing.UNSTEADY_IQR and not timing.steady(timing.spread(stalls))
    calm = [1e-4 * (1 + 0.01 * k) for k in range(20)]
    assert timing.steady(timing.spread(calm))
    row = activations._row(4096, "relu", "cpu", 1e-4, 2e-4, 30.0, (timing.spread(stalls), 0.0))
    assert row[3].startswith("UNSTEADY (spread") and row[4:] == [""] * 6
    row = activations._row(4096, "relu", "cpu", 1e-4, 2e-4, 30.0, (0.01, 0.02))
    assert row[3] == "100.0" and row[4] == "0"  # 2 x 4096 B / 100 us = 0.08 GB/s
