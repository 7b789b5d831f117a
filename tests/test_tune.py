"""Hyperparameter search: sampling statistics, coarse to fine on a known function, folds,
failures, the journal across a killed process, a real Dask cluster with a worker killed, Optuna,
and a small search on the digits."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy
import pytest
import tune_objectives as objectives

from gpunet import cli, tune
from gpunet.run import TrainConfig
from gpunet.tune.journal import Journal, JournalWarning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------- sampling
def test_log_uniform_is_uniform_in_log_space():
    from scipy import stats

    rng = numpy.random.default_rng(0)
    dim = tune.LogUniform(1e-6, 1e-2)
    draws = numpy.array([dim.draw(rng) for _ in range(4000)])
    assert draws.min() >= 1e-6 and draws.max() <= 1e-2
    assert stats.kstest(numpy.log10(draws), stats.uniform(loc=-6, scale=4).cdf).pvalue > 1e-3
    # and not uniform in linear space: 90 % of a uniform's draws would sit above 1e-3
    assert (draws < 1e-3).mean() == pytest.approx(0.75, abs=0.03)
    ints = [tune.IntUniform(2, 4).draw(rng) for _ in range(600)]
    assert set(ints) == {2, 3, 4} and abs(ints.count(2) / 600 - 1 / 3) < 0.06
    picks = [tune.Choice(["a", "b"]).draw(rng) for _ in range(600)]
    assert abs(picks.count("a") / 600 - 0.5) < 0.07
    with pytest.raises(ValueError, match="LogUniform needs 0 < low < high"):
        tune.LogUniform(0, 1)


def test_same_seed_same_trials_whatever_the_executor():
    space = {"lr": tune.LogUniform(1e-4, 1), "x": tune.Uniform(0, 1), "fixed": 7}
    a = tune.random_search(objectives.bowl, space, 6, seed=3, progress=False)
    b = tune.random_search(objectives.bowl, space, 6, seed=3, executor=2, progress=False)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]
    assert all(t.params["fixed"] == 7 for t in a.trials)
    c = tune.random_search(objectives.bowl, space, 6, seed=4, progress=False)
    assert [t.params for t in c.trials] != [t.params for t in a.trials]


# ----------------------------------------------------------------------------- coarse to fine
def test_coarse_to_fine_narrows_onto_a_known_optimum():
    space = {"lr": tune.LogUniform(1e-6, 1.0), "x": tune.Uniform(-2, 2)}
    res = tune.coarse_to_fine(
        objectives.bowl, space, [(40, 1), (20, 1), (20, 1)], keep_top=5, seed=0, progress=False
    )
    by_stage = {s: [t for t in res.trials if t.stage == s] for s in (0, 1, 2)}
    spans = [numpy.ptp(numpy.log10([t.params["lr"] for t in by_stage[s]])) for s in (0, 1, 2)]
    assert spans[0] > spans[1] > spans[2]  # each stage narrower (log scale)
    best = res.best
    assert abs(numpy.log10(best.params["lr"]) + 2) < 0.25 and abs(best.params["x"] - 0.3) < 0.15
    assert best.stage > 0 and len({t.id for t in res.trials}) == 80  # ids unique across stages
    assert all(t.params["epochs"] == 1 for t in res.trials)


def test_a_best_value_at_the_edge_says_widen_the_range(tmp_path):
    space = {"lr": tune.LogUniform(1e-6, 1e-4), "x": tune.Uniform(0, 1)}  # optimum 1e-2: outside
    res = tune.random_search(objectives.bowl, space, 20, seed=0, progress=False)
    assert any(
        "the best lr" in n and "high edge" in n and "widen the range" in n for n in res.notes
    )
    res.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_grid_search_tries_every_combination():
    res = tune.grid_search(
        objectives.bowl, {"lr": [1e-3, 1e-2, 1e-1], "x": [0.0, 0.3]}, progress=False
    )
    assert len(res.trials) == 6 and res.best.params == {"lr": 1e-2, "x": 0.3}


# ----------------------------------------------------------------------------- cross-validation
def test_cross_validation_folds_partition_the_data():
    X = numpy.arange(23 * 2).reshape(23, 2)
    y = numpy.arange(23)
    seen = []

    def train_fn(Xt, yt, Xv, yv):
        assert not set(yt) & set(yv) and len(yt) + len(yv) == 23
        seen.append(set(yv.tolist()))
        return len(yv)

    out = tune.cross_validate(train_fn, X, y, k=5, seed=1)
    assert set().union(*seen) == set(range(23)) and sum(len(s) for s in seen) == 23
    assert sorted(len(f) for f in out["folds"]) == [4, 4, 5, 5, 5]
    assert out["mean"] == pytest.approx(23 / 5) and out["scores"] == [len(s) for s in seen]
    again = tune.cross_validate(lambda *a: 0, X, y, k=5, seed=1)["folds"]
    assert all((a == b).all() for a, b in zip(out["folds"], again))  # folds fixed by the seed
    with pytest.raises(ValueError, match=r"k must be an integer in \[2, 23\]"):
        tune.cross_validate(train_fn, X, y, k=1)


# ----------------------------------------------------------------------------- failures
def test_failed_and_nan_trials_are_recorded_and_the_search_goes_on(tmp_path):
    journal = tmp_path / "j.jsonl"
    configs = [{"i": i} for i in range(6)]
    res = tune.run_trials(objectives.flaky, configs, journal=journal, progress=False)
    status = [t.status for t in res.trials]
    assert status == ["ok", "failed", "failed"] * 2
    broke = res.trials[1]
    assert "RuntimeError: trial 1 broke" in broke.error and "Traceback" in broke.traceback
    assert "the metric val_acc is nan" in res.trials[2].error
    records = Journal(journal).read()
    assert [r["status"] for r in records] == status and records[1]["traceback"]
    with pytest.raises(tune.SearchStopped, match=r"3 trials failed \(max_failures=2\)") as stop:
        tune.run_trials(
            objectives.flaky, [{"i": i} for i in range(10, 20)], max_failures=2, progress=False
        )
    assert len([t for t in stop.value.results.trials if t.status == "failed"]) == 3


def test_an_exploding_trial_is_abandoned_early():
    objective = tune.MLPObjective(
        TrainConfig(dataset="spiral", hidden=[16], epochs=5, batchnorm=False, preprocess="none")
    )
    res = tune.run_trials(objective, [{"lr": 1e4}, {"lr": 0.1}], progress=False)
    assert res.trials[0].status == "abandoned" and "past 3x the initial" in res.trials[0].error
    assert res.trials[1].status == "ok"


def test_ctrl_c_marks_running_trials_interrupted_and_resume_reruns_them(tmp_path, monkeypatch):
    journal = tmp_path / "j.jsonl"
    calls = []

    def objective(params):
        calls.append(params["i"])
        if params["i"] == 2 and len(calls) == 3:
            raise KeyboardInterrupt
        return float(params["i"])

    configs = [{"i": i} for i in range(4)]
    with pytest.raises(KeyboardInterrupt):
        tune.run_trials(objective, configs, journal=journal, progress=False)
    records = Journal(journal).read()
    assert [r["status"] for r in records] == ["ok", "ok", "interrupted", "interrupted"]
    res = tune.run_trials(objective, configs, journal=journal, progress=False)
    assert calls == [0, 1, 2, 2, 3]  # finished trials are not run again
    assert [t.status for t in res.trials] == ["ok"] * 4
    assert len({t.id for t in res.trials}) == 4


def test_a_corrupt_last_line_is_skipped_with_a_warning(tmp_path):
    journal = tmp_path / "j.jsonl"
    tune.run_trials(objectives.bowl, [{"lr": 0.01}], journal=journal, progress=False)
    with open(journal, "a") as f:
        f.write('{"id": 1, "params": {"lr": 0.1}, "stat')  # a crash mid-write
    # line 1: the search's definition, line 2: the trial, line 3: the half-written one
    with pytest.warns(JournalWarning, match="line 3 is not a complete record"):
        res = tune.run_trials(
            objectives.bowl, [{"lr": 0.01}, {"lr": 0.1}], journal=journal, progress=False
        )
    assert [t.status for t in res.trials] == ["ok", "ok"]
    with pytest.warns(JournalWarning):
        lines = Journal(journal).read()
    assert [r["params"]["lr"] for r in lines] == [0.01, 0.1]


def test_journal_resume_after_the_search_process_is_killed(tmp_path):
    count, journal = tmp_path / "calls.txt", tmp_path / "j.jsonl"
    code = (
        f"import sys; sys.path.insert(0, {TESTS!r})\n"
        "import tune_objectives\nfrom gpunet import tune\n"
        f"tune.run_trials(tune_objectives.counted, [{{'i': i}} for i in range(8)], "
        f"journal={str(journal)!r}, metric='m', progress=False)\n"
    )
    env = dict(os.environ, GPUNET_TEST_COUNT_FILE=str(count), GPUNET_TEST_SLEEP="0.4")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline and (
        not journal.exists() or len(journal.read_text().splitlines()) < 4  # header + 3 trials
    ):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = len(Journal(journal).read())
    assert 3 <= done_before < 8
    env["GPUNET_TEST_SLEEP"] = "0"
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)
    records = Journal(journal).read()
    assert sorted(r["params"]["i"] for r in records) == list(range(8))  # each trial once
    assert len({r["id"] for r in records}) == 8
    calls = [int(v) for v in count.read_text().split()]
    finished_first = {r["params"]["i"] for r in records[:done_before]}
    assert not finished_first & set(calls[len(calls) - (8 - done_before) :])  # not run again


# ----------------------------------------------------------------------------- Dask
def test_dask_cluster_runs_a_search_and_survives_a_killed_worker(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(objectives)  # the workers need not import the tests
    try:
        _dask_search_with_a_killed_worker(distributed, tmp_path)
    finally:
        cloudpickle.unregister_pickle_by_value(objectives)


def _dask_search_with_a_killed_worker(distributed, tmp_path):
    journal = tmp_path / "j.jsonl"
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):

        def kill_one_worker():
            while not journal.exists() or len(journal.read_text().splitlines()) < 2:
                time.sleep(0.05)
            pids = client.run(os.getpid)  # {worker address: its process id}
            os.kill(pids[sorted(pids)[0]], signal.SIGKILL)  # mid-trial: its nanny restarts it

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        space = {"lr": tune.LogUniform(1e-4, 1), "sleep": 0.4}
        res = tune.random_search(
            objectives.sleepy_bowl,
            space,
            8,
            seed=0,
            executor=client,
            journal=journal,
            progress=False,
        )
        killer.join(timeout=30)
    records = Journal(journal).read()
    assert sorted(r["id"] for r in records) == sorted(
        t.id for t in res.trials
    )  # none lost, none twice
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    assert len({t.metrics["pid"] for t in res.trials}) >= 2  # both workers (and a restart)
    reference = tune.random_search(objectives.bowl, space, 8, seed=0, progress=False)
    assert [t.params for t in res.trials] == [t.params for t in reference.trials]


def test_without_dask_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'gpunet\[distributed\]'"):
        tune.random_search(
            objectives.bowl,
            {"lr": tune.LogUniform(1e-3, 1)},
            2,
            executor="tcp://127.0.0.1:1",
            progress=False,
        )


# ----------------------------------------------------------------------------- Optuna
def test_optuna_bridge_samples_the_space_and_prunes(tmp_path):
    optuna = pytest.importorskip("optuna")
    space = {"lr": tune.LogUniform(1e-3, 1.0), "hidden": tune.Choice([[16], [32]])}
    objective = tune.MLPObjective(TrainConfig(dataset="spiral", epochs=4))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    res = tune.optuna_search(objective, space, 6, storage=storage, study_name="s", seed=0)
    assert len(res.trials) == 6 and res.best is not None and 0 < res.best.value <= 1
    assert all(1e-3 <= t.params["lr"] <= 1.0 for t in res.trials)
    study = optuna.load_study(study_name="s", storage=storage)
    reported = [t for t in study.trials if t.intermediate_values]
    assert reported and max(len(t.intermediate_values) for t in reported) == 4  # one per epoch
    res.plot(tmp_path / "o.png")


# ----------------------------------------------------------------------------- the real thing
def test_small_search_on_digits_reaches_95_percent(tmp_path, capsys):
    code = cli.main(
        [
            "search",
            "--out",
            str(tmp_path),
            "--trials",
            "6",
            "--epochs",
            "4",
            "--lr-range",
            "1e-2,1",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    best = float(out.split("best: val accuracy ")[1].split()[0])
    assert best >= 0.95
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    header, records = json.loads(lines[0])["header"], [json.loads(line) for line in lines[1:]]
    assert header["definition"]["objective"]["base"]["dataset"] == "digits"
    assert len(records) == 6 and (tmp_path / "search.png").exists()
    assert "test_acc" not in records[0]["metrics"]  # never tuned on test data
    # the same command again: every trial is in the journal, none runs again
    assert (
        cli.main(
            [
                "search",
                "--out",
                str(tmp_path),
                "--trials",
                "6",
                "--epochs",
                "4",
                "--lr-range",
                "1e-2,1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len((tmp_path / "journal.jsonl").read_text().splitlines()) == 1 + 6  # header + trials


def test_gpu_trials_ask_the_cluster_for_a_gpu_each():
    distributed = pytest.importorskip("dask.distributed")
    objectives.CONCURRENCY.update(running=0, peak=0)
    # one worker with 4 threads but one GPU: the trials must run one at a time
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=4,
            processes=False,
            resources={"GPU": 1},
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        res = tune.run_trials(
            objectives.one_at_a_time_probe,
            [{"i": i} for i in range(4)],
            executor=client,
            gpu_per_trial=True,
            progress=False,
        )
    assert [t.status for t in res.trials] == ["ok"] * 4
    assert objectives.CONCURRENCY["peak"] == 1
