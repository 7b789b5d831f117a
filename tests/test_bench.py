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


# ----------------------------------------------------------------------------- vs-torch, processes
TINY = [
    ("mlp", {"kind": "mlp", "batch": 8, "d": 12, "h": 16, "bn": True}),
    ("convstep", {"kind": "convstep", "k": 3, "pad": 1, "batch": 2}),
    ("bn", {"kind": "bn", "shape": (8, 4, 3, 3), "relu": True, "part": "fwdbwd"}),
    ("act", {"kind": "act", "name": "gelu_tanh", "n": 64, "part": "fwdbwd"}),
    ("optim", {"kind": "optim", "opt": "adam", "d": 6, "h": 5}),
    ("conv", {"kind": "conv", "cin": 2, "cout": 3, "hw": 5, "k": 3, "part": "bwd", "batch": 2}),
    ("pool", {"kind": "pool", "shape": (2, 3, 4, 4), "part": "bwd"}),
]


def test_vs_torch_runs_gpunet_in_its_own_process_and_names_the_machine(monkeypatch):
    """The table's gpunet side runs in a process of its own (gpunet_side), every kind of case;
    the header names the CPU, the BLAS with its kernel and the threads; without torch the
    torch columns say so instead of inventing numbers."""
    from gpunet.bench import torch_side, vs_torch

    monkeypatch.setattr(vs_torch, "cases", lambda groups, quick=False: TINY)
    monkeypatch.setattr(torch_side, "WARM_S", 0.0)  # the parent's: the child keeps its own
    monkeypatch.setattr(vs_torch, "torch_python", lambda given: None)
    text = vs_torch.run(["mlp"], threads=[1], rounds=1, repeat=2)
    lines = text.splitlines()
    assert lines[0].startswith("# CPU: ") and "logical cores" in lines[0]
    assert any(ln.startswith("# 1 thread(s): gpunet ") and "BLAS " in ln for ln in lines)
    assert "torch not importable here" in text
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split()[:1] in ([n] for n, _ in TINY)}
    assert set(rows) == {name for name, _ in TINY}
    for row in rows.values():
        assert float(row[2]) > 0 and row[3:5] == ["-", "-"]


def test_each_case_builds_on_both_sides_to_the_same_computation():
    """gpunet_side and torch_side read the same specs; here gpunet's side is built and run once
    for every kind (torch's is checked where torch imports)."""
    from gpunet.bench import gpunet_side

    for _, spec in TINY:
        fn = gpunet_side.make(spec)
        fn()
    with pytest.raises(ValueError, match="unknown benchmark case kind 'nope'"):
        gpunet_side.make({"kind": "nope"})


def test_vs_torch_groups_and_rows():
    from gpunet.bench import vs_torch

    names = [n for n, _ in vs_torch.cases(vs_torch.GROUPS, quick=True)]
    assert len(names) == len(set(names))
    assert sum(n.startswith("mlp ") for n in names) == len(vs_torch.MLPS) == 10
    with pytest.raises(ValueError, match="groups must be among mlp, bn, act, optim, conv"):
        vs_torch.cases(["mlp", "gemm"])
    ours = [{"times": {"r": t}} for t in (1.0, 1.1, 0.9)]
    theirs = [{"times": {"r": t}} for t in (2.0, 2.0, 3.0)]  # one round 50 % off: unsteady
    assert vs_torch._row("r", 2, ours, theirs) == ["r", 2, "1000.000", "2000.000",
                                                   "0.50 unsteady", "50%"]  # fmt: skip
    assert vs_torch.median_spread([1.0, 1.1, 0.9]) == pytest.approx((1.0, 0.1))


def test_in_process_tables_print_unsteady_instead_of_a_time():
    from gpunet.bench import timing

    assert timing.fmt_time(1.5e-3, 0.1) == "1.500"
    assert timing.fmt_time(1.5e-3, 0.9) == "UNSTEADY (90%)"
    assert timing.fmt_ratio((2.0, 0.1), (1.0, 0.2)) == "2.00x"
    assert timing.fmt_ratio((2.0, 0.9), (1.0, 0.2)) == "-"  # no ratio of an unsteady time


@pytest.mark.parametrize(
    "argv, message",
    [
        (["vs-torch", "--groups", "mlp,gemm"], "groups must be among mlp, bn, act, optim, conv"),
        (["vs-torch", "--threads", "two"], "thread counts must be comma-separated integers"),
        (["conv", "--threads", "0"], "thread counts must be positive"),
        (["conv", "--threads", "4096"], "at most the"),
        (["vs-torch", "--rounds", "0"], "rounds must be a positive integer"),
    ],
)
def test_process_bench_options_are_checked_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_main.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_vs_torch_match_names_an_empty_selection(capsys):
    from gpunet.bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["vs-torch", "--groups", "act", "--match", "no-such-case"])
    assert "--match: no case" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["vs-torch", "--groups", "act", "--match", "relu,,tanh"])
    assert "non-empty" in capsys.readouterr().err


def test_torch_side_names_torchs_own_blas():
    """torch links its BLAS (MKL in the x86-64 wheels) where threadpoolctl does not see it: the
    torch side reads it from torch's build configuration, with the CPU kernels it dispatches to
    and oneDNN; a build text without those says 'unknown' rather than naming NumPy's library."""
    from types import SimpleNamespace

    from gpunet.bench import torch_side

    def fake(config, capability):
        def get_cpu_capability():
            if capability is None:
                raise AttributeError("older torch")
            return capability

        return SimpleNamespace(
            __config__=SimpleNamespace(show=lambda: config),
            backends=SimpleNamespace(cpu=SimpleNamespace(get_cpu_capability=get_cpu_capability)),
            get_num_threads=lambda: 3,
        )

    config = (
        "  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605\n"
        "  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa7)\n  - CPU capability usage: AVX2\n"
        "  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl\n"
    )
    got = torch_side.torch_blas_info(fake(config, "AVX512"))
    assert got == [
        {"internal_api": "torch's mkl", "version": "2024.2-Product", "architecture": "AVX512",
         "num_threads": 3},
        {"internal_api": "oneDNN", "version": "v3.12.0", "architecture": "AVX512"},
    ]  # fmt: skip
    assert torch_side.torch_blas_info(fake(config, None))[0]["architecture"] == "AVX2"
    bare = torch_side.torch_blas_info(fake("PyTorch built with:\n", None))
    assert bare == [
        {"internal_api": "torch's unknown BLAS", "version": None, "architecture": None,
         "num_threads": 3}
    ]  # fmt: skip
