"""Babysitting: the lecture's outcomes as assertions, with thresholds from the math (not from a
previous run), and every check shown to fail on a planted bug."""

import math
import os

import numpy
import pytest

import gpunet
from gpunet import cli, diagnose, nn, optim
from gpunet.datasets import load_digits, make_spiral
from gpunet.train import History, Trainer, fit


def _spiral(n=100, seed=0):
    X, y = make_spiral(n, 3, seed=seed)
    perm = numpy.random.default_rng(seed).permutation(len(X))
    return X[perm].astype(numpy.float32), y[perm]


# ----------------------------------------------------------------------------- initialization study
def _stds(activation, init):
    return numpy.array([s.std for s in diagnose.init_study(activation, init, layers=10, width=500)])


def test_small_random_weights_collapse_tanh_activations():
    """0.01 N(0,1), width 500: each layer multiplies the std by about 0.01 sqrt(500) = 0.22."""
    stds = _stds("tanh", "small_random")
    assert (numpy.diff(stds) < 0).all()
    ratio = stds[1:] / stds[:-1]
    assert numpy.allclose(ratio, 0.01 * math.sqrt(500), rtol=0.15)
    assert stds[-1] < 1e-5


def test_unit_gaussian_weights_saturate_tanh():
    """N(0,1): pre-activations have std ~ sqrt(500) * 0.98 = 22, so P(|tanh| <= 0.99) =
    P(|z| <= 2.65) ~ 0.09: about 90 % of the units sit at +-1 in every layer."""
    study = diagnose.init_study("tanh", "normal")
    saturated = numpy.array([s.saturated for s in study])
    assert (saturated > 0.85).all() and (saturated < 0.95).all()


def test_xavier_keeps_tanh_healthy():
    study = diagnose.init_study("tanh", "xavier_normal")
    stds = numpy.array([s.std for s in study])
    assert stds.min() > 0.15 and stds.max() < 0.8  # neither collapsed nor at +-1
    assert max(s.saturated for s in study) < 0.05


def test_xavier_halves_relu_variance_and_he_keeps_it():
    """Var of the pre-activation: fan_in * Var(W) * E[relu(z)^2] = Var(z) / 2 with Xavier, so the
    std of the outputs shrinks by 1/sqrt(2) per layer; He's factor 2 cancels it."""
    xavier, he = _stds("relu", "xavier_normal"), _stds("relu", "kaiming_normal")
    assert numpy.allclose(xavier[1:] / xavier[:-1], 1 / math.sqrt(2), rtol=0.15)
    assert xavier[-1] < 0.1 * xavier[0]
    assert numpy.allclose(he[1:] / he[:-1], 1.0, rtol=0.15)
    assert 0.5 < he[-1] / he[0] < 2


def test_gradient_flow_vanishes_with_small_weights():
    study = diagnose.init_study("tanh", "small_random")
    grads = [s.grad_rms for s in study]
    assert grads[0] < 1e-4 * grads[-1]  # the backward signal shrinks layer after layer
    healthy = [s.grad_rms for s in diagnose.init_study("relu", "kaiming_normal")]
    assert 0.5 < healthy[0] / healthy[-1] < 2


def test_activation_stats_count_dead_and_saturated_units():
    X = numpy.random.default_rng(0).normal(size=(64, 5)).astype(numpy.float32)
    lin = nn.Linear(5, 4)
    lin.bias.data[:2] = -100.0  # two units that no input can switch on: dead
    stats = diagnose.activation_stats(nn.Sequential(lin, nn.ReLU()), X)
    assert stats[1].kind == "relu" and stats[1].dead == 0.5
    big = nn.Linear(5, 3)
    big.weight.data *= 1000
    stats = diagnose.activation_stats(nn.Sequential(big, nn.Tanh()), X)
    assert stats[1].saturated > 0.95 and stats[0].saturated is None
    assert stats[1].hist.sum() == 64 * 3


def test_init_study_command(tmp_path, capsys):
    out = tmp_path / "study.png"
    assert (
        cli.main(
            [
                "init-study",
                "--layers",
                "4",
                "--width",
                "100",
                "--activation",
                "relu",
                "--init",
                "xavier_normal,kaiming_normal",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "xavier_normal with relu:" in text and "kaiming_normal with relu:" in text
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["init-study", "--init", "nonsense"]) == 2


# ----------------------------------------------------------------------------- sanity checks
def test_initial_loss_is_log_c_for_small_weights():
    d = load_digits()
    gpunet.seed(0)
    model = nn.mlp([64, 50, 10], init="small_random", batchnorm=False)
    result = diagnose.check_initial_loss(model, d["X_train"], d["y_train"])
    assert result.verdict == "pass"
    assert abs(result.numbers["loss"] - math.log(10)) < 0.05 * math.log(10)
    svm = diagnose.check_initial_loss(model, d["X_train"], d["y_train"], nn.MulticlassSVM())
    assert svm.verdict == "pass" and abs(svm.numbers["loss"] - 9) < 0.5
    big = nn.mlp([64, 50, 10], init="normal", batchnorm=False)  # N(0, 1) weights
    assert diagnose.check_initial_loss(big, d["X_train"], d["y_train"]).verdict == "fail"


def test_regularization_raises_the_loss_and_the_check_can_fail():
    X, y = _spiral()
    model = nn.mlp([2, 16, 3])
    assert diagnose.check_regularization(model, X, y, reg=0.1).verdict == "pass"
    no_weights = nn.Sequential(nn.ReLU(), nn.Maxout(1))  # nothing to regularize
    result = diagnose.check_regularization(no_weights, X, y % 2, reg=0.1)
    assert result.verdict == "fail" and "should go up" in result.message


class InvertedReLU(nn.ReLU):
    """Planted bug: the gradient flows where the unit was off, not where it was on."""

    def backward(self, dout):
        return dout - super().backward(dout)


def _small_net(relu=nn.ReLU):
    gpunet.seed(0)
    return nn.Sequential(nn.Linear(2, 16), relu(), nn.Linear(16, 16), relu(), nn.Linear(16, 3))


def test_overfit_check_passes_a_correct_net_and_fails_a_planted_bug():
    X, y = _spiral()
    good = diagnose.overfit_small_subset(_small_net(), X, y, epochs=300)
    assert good.verdict == "pass" and good.numbers["train_acc"] == 1.0
    bad = diagnose.overfit_small_subset(_small_net(InvertedReLU), X, y, epochs=300)
    assert bad.verdict == "fail" and "backward" in bad.message


LAYER_NETS = {
    "linear+relu": lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)),
    "batchnorm+fused tanh": lambda: nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6, activation="tanh"), nn.Linear(6, 3)
    ),
    "activations": lambda: nn.Sequential(
        nn.Linear(4, 6),
        nn.Sigmoid(),
        nn.Linear(6, 6),
        nn.GELU(),
        nn.Linear(6, 6),
        nn.ELU(),
        nn.Linear(6, 6),
        nn.SiLU(),
        nn.Linear(6, 6),
        nn.Softplus(),
        nn.Linear(6, 3),
    ),
    "prelu+maxout": lambda: nn.Sequential(
        nn.Linear(4, 6), nn.PReLU(6), nn.Linear(6, 6), nn.Maxout(2), nn.Linear(3, 3)
    ),
    "dropout": lambda: nn.Sequential(
        nn.Linear(4, 6), nn.Dropout(0.5), nn.LeakyReLU(negative_slope=0.1), nn.Linear(6, 3)
    ),
    "conv+pool": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(LAYER_NETS))
def test_gradient_check_passes_every_layer(name):
    gpunet.seed(1)
    net = LAYER_NETS[name]()
    rng = numpy.random.default_rng(2)
    X = rng.normal(size=(8, 1, 4, 4) if name == "conv+pool" else (8, 4))
    y = rng.integers(0, 3, 8)
    result = diagnose.gradient_check(net, None, X, y, samples=6)
    assert result.verdict in ("pass", "warn"), result.message
    assert result.numbers["max_relative_error"] < 1e-4
    # every tensor compared: relatively, or (a gradient ~0: a bias in front of BatchNorm)
    # in absolute terms, below the differences' rounding noise
    for t in result.numbers["tensors"].values():
        assert t["checked"] + t["near_zero"] > 0
        assert t["near_zero_max_difference"] < diagnose.checks.FLAT


def test_gradient_check_prints_the_real_relative_error():
    """Not a rounded 0.0e+00: the float64 differences agree to a small but nonzero error."""
    gpunet.seed(1)
    net = LAYER_NETS["batchnorm+fused tanh"]()
    X = numpy.random.default_rng(2).normal(size=(8, 4))
    y = numpy.random.default_rng(3).integers(0, 3, 8)
    result = diagnose.gradient_check(net, None, X, y, samples=6)
    assert 0 < result.numbers["max_relative_error"] < 1e-4
    assert "max relative error 0.0e+00" not in result.message


def test_gradient_check_catches_a_wrong_backward():
    X, y = _spiral(10)

    class WrongSigmoid(nn.Sigmoid):
        def backward(self, dout):
            return 2 * super().backward(dout)  # planted: twice the true gradient

    gpunet.seed(0)
    net = nn.Sequential(nn.Linear(2, 8), WrongSigmoid(), nn.Linear(8, 3))
    result = diagnose.gradient_check(net, None, X[:8], y[:8])
    assert result.verdict == "fail" and "0.weight" in result.message
    assert result.numbers["tensors"]["2.weight"]["max_relative_error"] < 1e-6  # after the bug: fine


def test_lr_range_flags_too_high_and_too_low():
    X, y = _spiral()
    gpunet.seed(0)
    result = diagnose.lr_range_test(nn.mlp([2, 32, 3]), X, y, lrs=[1e-9, 1e-3, 1e-1, 10.0])
    status = {r["lr"]: r["status"] for r in result.rows}
    assert status[10.0] == "explodes" and status[1e-9] == "barely moves"
    assert status[1e-1] == "falls"
    low, high = result.suggested
    assert 1e-9 < low < high < 10.0
    assert 10.0 in result.numbers["too_high"] and 1e-9 in result.numbers["too_low"]


# ----------------------------------------------------------------------------- monitors
def test_monitors_record_into_the_history_and_alert(tmp_path):
    X, y = _spiral(60)
    gpunet.seed(0)
    model = nn.mlp([2, 64, 3], batchnorm=False)
    model[0].bias.data[:40] = -50.0  # 40 of 64 hidden units can never fire
    monitors = [
        diagnose.UpdateRatioMonitor(every=2, high=1e-3, verbose=False),
        diagnose.GradientNormMonitor(every=2, verbose=False),
        diagnose.ActivationMonitor(X[:100], verbose=False),
        diagnose.LossMonitor(verbose=False),
    ]
    trainer = Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.SGD(model.parameters(), 0.5, momentum=0.9),
        callbacks=monitors,
        checkpoint=tmp_path / "ck.npz",
        seed=0,
        progress=False,
    )
    h = trainer.fit(X, y, epochs=3, batch_size=30)
    ratios = h.monitors["update_ratio/0.weight"]["value"]
    assert ratios and all(r > 0 for r in ratios)
    assert any(
        "update/weight ratio of 0.weight" in a and "too high" in a for a in monitors[0].alerts
    )
    assert h.monitors["grad_norm/2.weight"]["value"]
    assert h.monitors["activations/1.dead"]["value"][-1] >= 40 / 64
    assert any("are dead" in a for a in monitors[2].alerts)
    restored = Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.SGD(model.parameters(), 0.5),
        checkpoint=tmp_path / "ck.npz",
        progress=False,
    )
    restored.restore()
    assert restored.history.monitors == h.monitors  # the series survive a checkpoint
    for m in monitors:
        m.plot(h, tmp_path / f"{m.prefix}.png")
        assert (tmp_path / f"{m.prefix}.png").read_bytes()[:4] == b"\x89PNG"


def test_loss_and_gap_monitors():
    X, y = _spiral(60)
    gpunet.seed(0)
    model = nn.mlp([2, 64, 3], batchnorm=False)
    loss_monitor = diagnose.LossMonitor(verbose=False)
    try:  # a learning rate far too high: the loss explodes (and may reach NaN: then it stops)
        fit(
            model,
            nn.SoftmaxCrossEntropy(),
            optim.SGD(model.parameters(), 50.0),
            X,
            y,
            epochs=5,
            batch_size=30,
            callbacks=[loss_monitor],
            progress=False,
        )
    except gpunet.train.TrainingDiverged:
        pass
    assert any("past 3x the initial" in a or "loss is nan" in a for a in loss_monitor.alerts)
    gap = diagnose.GapMonitor(window=2, verbose=False)
    gpunet.seed(0)
    big = nn.mlp([2, 256, 256, 3], batchnorm=False)
    Xs, ys = X[:12], y[:12]  # 12 examples: memorized, val stays low
    fit(
        big,
        nn.SoftmaxCrossEntropy(),
        optim.Adam(big.parameters(), 1e-2),
        Xs,
        ys,
        val=(X[100:], y[100:]),
        epochs=40,
        batch_size=12,
        callbacks=[gap],
        progress=False,
    )
    assert any("overfitting" in a for a in gap.alerts)


# ----------------------------------------------------------------------------- reading curves
def _history(loss, train=(), val=()):
    n = len(train)
    return History(
        loss=list(loss),
        epoch=list(range(1, n + 1)),
        train_acc=list(train),
        val_acc=list(val),
        val_loss=[float("nan")] * n,
        lr=[0.1] * n,
        time=[1.0] * n,
    )


def test_read_history_names_each_shape():
    it = numpy.arange(200)
    verdict = {}
    cases = {
        "barely": numpy.full(200, 2.3) - 1e-4 * it,
        "exploding": numpy.concatenate([2.3 - 0.001 * it[:100], 2.3 * 4 + it[:100]]),
        "nan": numpy.concatenate([2.3 - 0.001 * it[:100], [numpy.nan] * 100]),
        "plateau": numpy.concatenate([numpy.full(80, 2.3), 2.3 * numpy.exp(-0.05 * it[:120])]),
        "healthy": 2.3 * numpy.exp(-0.02 * it),
    }
    for name, loss in cases.items():
        verdict[name] = diagnose.read_history(_history(loss))[0]
    assert verdict["barely"].verdict == "fail" and "too low" in verdict["barely"].message
    assert verdict["exploding"].verdict == "fail" and "too high" in verdict["exploding"].message
    assert "NaN" in verdict["nan"].message and verdict["nan"].numbers["iteration"] == 101
    assert verdict["plateau"].verdict == "warn" and "initialization" in verdict["plateau"].message
    assert verdict["healthy"].verdict == "pass"
    healthy = cases["healthy"]
    over = diagnose.read_history(_history(healthy, [0.6, 0.8, 0.95, 1.0], [0.6, 0.7, 0.72, 0.7]))[1]
    assert (
        over.verdict == "warn"
        and "overfitting" in over.message
        and over.numbers["final_gap"] == pytest.approx(0.3)
    )
    under = diagnose.read_history(_history(healthy, [0.5, 0.55, 0.6], [0.5, 0.55, 0.595]))[1]
    assert under.verdict == "warn" and "capacity" in under.message
    fine = diagnose.read_history(_history(healthy, [0.8, 0.95, 0.97], [0.78, 0.92, 0.95]))[1]
    assert fine.verdict == "pass"


# ----------------------------------------------------------------------------- the commands
def test_babysit_command_writes_a_report(tmp_path, capsys):
    out = tmp_path / "bs"
    code = cli.main(
        [
            "babysit",
            "--dataset",
            "spiral",
            "--hidden",
            "32",
            "--epochs",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    lines = [line for line in text.splitlines() if line[:4] in ("PASS", "WARN", "FAIL")]
    names = " ".join(lines)
    for check in (
        "initial loss",
        "regularization",
        "overfit small subset",
        "gradient check",
        "learning-rate range",
        "loss curve",
    ):
        assert check in names
    report = (out / "report.md").read_text()
    assert "| verdict | check | reading |" in report and "lr_range.png" in report
    for f in ("lr_range.png", "activations.png", "curves.png", "monitor-update_ratio.png"):
        assert (out / f).read_bytes()[:4] == b"\x89PNG", f


def test_train_monitor_option(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "spiral",
                "--hidden",
                "16",
                "--epochs",
                "2",
                "--monitor",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    for f in ("monitor-update_ratio.png", "monitor-grad_norm.png", "monitor-activations.png"):
        assert os.path.exists(out / f), f
