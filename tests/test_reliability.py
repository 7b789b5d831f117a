"""A run folder never lies, every bad input gets one clear line, and the API a user reaches for
first works: resume semantics, the run folder's files, validation of each option, the dtype
policy, layer misuse, and twenty more cases of the same kind."""

import json
import os
import subprocess
import sys

import numpy
import pytest

import gpunet
from gpunet import checkpoint as C
from gpunet import cli, nn, optim
from gpunet.datasets import make_spiral
from gpunet.run import ConfigError, TrainConfig, run
from gpunet.train import EarlyStopping, Trainer, evaluate, fit, predict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--dataset", "spiral", "--hidden", "16", "--epochs", "2", "--no-progress"]


def _cli(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse's own errors (usage + one line), exit status 2
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


# ----------------------------------------------------------------------------- resume (1)
def test_resume_refuses_options_that_change_the_run(tmp_path, capsys):
    out = str(tmp_path / "a")
    assert _cli(capsys, "train", "--out", out, "--lr", "0.05", *FAST)[0] == 0
    before = _bytes(os.path.join(out, "checkpoint.npz"))
    code, _, err = _cli(
        capsys, "train", "--out", out, "--resume", "--lr", "0.1", "--optimizer", "adam", *FAST
    )
    assert code == 2 and "Traceback" not in err
    assert "--lr 0.1 (the checkpoint's run: 0.05)" in err
    assert "--optimizer 'adam' (the checkpoint's run: 'sgd')" in err
    assert _bytes(os.path.join(out, "checkpoint.npz")) == before  # nothing touched
    with pytest.raises(ConfigError, match=r"seed 5 \(the checkpoint's run: 0\)"):
        run(
            TrainConfig(
                dataset="spiral",
                hidden=[16],
                epochs=2,
                out=out,
                resume=True,
                seed=5,
                lr=0.05,
                progress=False,
            )
        )


def test_resume_continues_the_checkpoints_run_and_says_so(tmp_path, capsys):
    out = str(tmp_path / "a")
    assert _cli(capsys, "train", "--out", out, "--lr", "0.05", *FAST)[0] == 0
    # no options restated: the checkpoint's lr (0.05), not the default (0.1), is used
    code, _, err = _cli(
        capsys,
        "train",
        "--out",
        out,
        "--resume",
        "--dataset",
        "spiral",
        "--epochs",
        "4",
        "--no-progress",
    )
    assert code == 0, err
    assert "epochs 2 -> 4" in err and "resumed from epoch 2" in err
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["lr"] == 0.05 and config["hidden"] == [16] and config["epochs"] == 4
    _, meta = C.load_checkpoint(os.path.join(out, "checkpoint.npz"))
    assert meta["epoch"] == 4
    code, _, err = _cli(
        capsys,
        "train",
        "--out",
        out,
        "--resume",
        "--dataset",
        "spiral",
        "--epochs",
        "4",
        "--no-progress",
    )
    assert code == 0 and "is finished (4 of 4 epochs)" in err


def test_resume_without_a_checkpoint_starts_fresh(tmp_path, capsys):
    code, _, err = _cli(capsys, "train", "--out", str(tmp_path / "new"), "--resume", *FAST)
    assert code == 0 and f"no checkpoint in {tmp_path / 'new'}: starting fresh" in err


# ----------------------------------------------------------------------------- the run folder (2-4)
def test_a_failed_or_refused_run_replaces_nothing(tmp_path, capsys):
    out = str(tmp_path / "a")
    assert _cli(capsys, "train", "--out", out, *FAST)[0] == 0
    files = {
        f: _bytes(os.path.join(out, f)) for f in ("config.json", "checkpoint.npz", "history.json")
    }
    # a new run that diverges in its first epoch: the good run's files stay as they were
    code, _, err = _cli(
        capsys,
        "train",
        "--out",
        out,
        "--lr",
        "1e30",
        "--batchnorm",
        "off",
        "--preprocess",
        "none",
        *FAST,
    )
    assert code == 1 and "loss became" in err and "No epoch was completed" in err
    for f, content in files.items():
        assert _bytes(os.path.join(out, f)) == content, f
    assert os.path.exists(os.path.join(out, "diverged-history.json"))
    assert _bytes(os.path.join(out, "diverged-curves.png"))[:4] == b"\x89PNG"
    with open(os.path.join(out, "diverged-history.json")) as f:
        assert not numpy.isfinite(json.load(f)["loss"][-1])  # the failure is in the history


@pytest.mark.parametrize(
    "value,message",
    [
        ("", "--out must name a folder, got ''"),
        ("FILE", "is a file, not a folder"),
        ("FILE/sub", "cannot be written to"),
    ],
)
def test_out_must_be_a_writable_folder(tmp_path, capsys, value, message):
    (tmp_path / "FILE").write_text("x")
    value = str(tmp_path / value) if value else value
    code, _, err = _cli(capsys, "train", "--out", value, *FAST)
    assert code == 2 and message in err and "Traceback" not in err


def test_stale_tmp_files_are_cleaned_at_the_next_save(tmp_path):
    stale = tmp_path / ".checkpoint.npz.k1ll3d.tmp"
    stale.write_bytes(b"\0" * 4096)  # what a save killed midway leaves
    C.save_checkpoint(tmp_path / "checkpoint.npz", {"model/w": numpy.ones(3)}, {"epoch": 1})
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]


# ----------------------------------------------------------------------------- early stopping (5)
def test_early_stopping_keeps_the_best_model_and_stays_stopped(tmp_path):
    X, y = make_spiral(40, 3, seed=0)
    gpunet.seed(0)
    model = nn.mlp([2, 32, 3], batchnorm=False, dtype=numpy.float64)
    opt = optim.SGD(model.parameters(), 0.5, momentum=0.9)
    ckpt = tmp_path / "ck.npz"
    stop = EarlyStopping(monitor="train_acc", patience=1)

    class ForceWorse(EarlyStopping):  # epochs 3.. report a worse score: stop after epoch 4
        def on_epoch_end(self, trainer, epoch, logs):
            stop.on_epoch_end(trainer, epoch, {**logs, "train_acc": -epoch if epoch > 2 else epoch})
            trainer.stop_training = stop.wait >= stop.patience and epoch > 2

    trainer = Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        callbacks=[ForceWorse()],
        checkpoint=ckpt,
        seed=0,
        progress=False,
    )
    h = trainer.fit(X, y, epochs=10, batch_size=16)
    stop.on_train_end(trainer)
    assert len(h.epoch) == 3 and stop.best_epoch == 2
    arrays, meta = C.load_checkpoint(ckpt)
    assert meta["stopped_early"] == 3 and meta["best_epoch"] == 2
    for k, v in model.state_dict().items():  # returned model == kept model == best epoch
        numpy.testing.assert_array_equal(arrays[f"model/{k}"], v)
        numpy.testing.assert_array_equal(v, stop.best_state[k])
    again = Trainer(model, nn.SoftmaxCrossEntropy(), opt, checkpoint=ckpt, seed=0, progress=False)
    assert len(again.fit(X, y, epochs=10, batch_size=16, resume=True).epoch) == 3  # stays stopped


# ----------------------------------------------------------------------------- Ctrl-C (6)
def test_ctrl_c_ends_with_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    original = Trainer._step

    def interrupted(self, xb, yb):
        calls["n"] += 1
        if self.epoch == 1 and calls["n"] > 3:
            raise KeyboardInterrupt
        return original(self, xb, yb)

    monkeypatch.setattr(Trainer, "_step", interrupted)
    out = str(tmp_path / "a")
    code, _, err = _cli(capsys, "train", "--out", out, *FAST)
    assert code == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "interrupted during epoch 2: epoch 1 is saved" in err
    assert f"gpunet train --out {out} --resume" in err


# ----------------------------------------------------------------------------- diagnoses (7)
def test_bad_data_and_weights_are_named_before_training():
    X, y = make_spiral(10, 3, seed=0)
    model = nn.mlp([2, 8, 3])
    opt = optim.SGD(model.parameters(), 0.1)
    Xn = X.copy()
    Xn[7, 1] = numpy.nan
    with pytest.raises(
        ValueError, match=r"training data: X holds 1 NaN/Inf values \(first in row 7\)"
    ):
        fit(model, nn.SoftmaxCrossEntropy(), opt, Xn, y, progress=False)
    with pytest.raises(ValueError, match="validation data: X holds 1 NaN/Inf"):
        fit(model, nn.SoftmaxCrossEntropy(), opt, X, y, val=(Xn, y), progress=False)
    model[0].weight.data[0, 0] = numpy.inf
    with pytest.raises(
        ValueError, match=r"model parameter '0.weight' holds NaN or Inf values before"
    ):
        fit(model, nn.SoftmaxCrossEntropy(), opt, X, y, progress=False)


# ----------------------------------------------------------------------------- options (8, 10c)
@pytest.mark.parametrize(
    "args,message",
    [
        (["--momentum", "1.0"], "--momentum must be a number in [0.0, 1.0), got 1.0"),
        (["--reg", "-1"], "--reg must be a number in [0.0, inf), got -1.0"),
        (["--hidden", ""], "argument --hidden: hidden sizes must be comma-separated integers"),
        (
            ["--hidden", "64,,32"],
            "argument --hidden: hidden sizes must be comma-separated integers",
        ),
        (["--batch-size", "5000"], "--batch-size must be in [1, "),
        (["--batch-size", "1"], "--batch-size must be >= 2 with BatchNorm"),
        # twenty more of the same kind, each one option per message
        (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["--lr", "0"], "--lr must be a number in (0.0, inf), got 0.0"),
        (["--lr", "nan"], "--lr must be a number in (0.0, inf), got nan"),
        (["--dropout", "1.0"], "--dropout must be a number in [0.0, 1.0), got 1.0"),
        (["--weight-decay", "-0.1"], "--weight-decay must be a number in [0.0, inf), got -0.1"),
        (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (["--hidden", "0"], "hidden sizes must be positive"),
    ],
)
def test_each_bad_option_is_one_clear_line(tmp_path, capsys, args, message):
    code, _, err = _cli(
        capsys,
        "train",
        "--out",
        str(tmp_path / "o"),
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--no-progress",
        *args,
    )
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not os.path.exists(tmp_path / "o" / "config.json")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"epochs": 3.5}, "epochs must be an integer >= 1, got 3.5"),
        ({"hidden": [0]}, "hidden must be a list of positive layer sizes"),
        ({"batchnorm": "yes"}, "batchnorm must be on or off"),
        ({"activation": "swish"}, "activation must be one of"),
        ({"momentum": 1.5}, "momentum must be a number in [0.0, 1.0)"),
        ({"dataset": "mnist"}, "data_dir is needed for dataset 'mnist'"),
    ],
)
def test_train_config_names_the_option(kwargs, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        TrainConfig(**kwargs).validate()


def test_the_environment_and_the_backend_give_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPUNET_BACKEND", "tpu")
    code, _, err = _cli(capsys, "train", "--out", str(tmp_path / "o"), *FAST)
    assert code == 2 and "GPUNET_BACKEND must be one of ['auto', 'numpy', 'cupy'], got 'tpu'" in err
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")  # honoured as --backend's default
    monkeypatch.setenv("GPUNET_KERNELS", "numba")
    assert cli.build_parser().parse_args(["train"]).backend == "numpy"
    assert cli.build_parser().parse_args(["train"]).kernels == "numba"
    monkeypatch.delenv("GPUNET_BACKEND")
    monkeypatch.delenv("GPUNET_KERNELS")
    code, _, err = _cli(capsys, "train", "--out", str(tmp_path / "o"), "--backend", "cupy", *FAST)
    assert code == 2 and "backend 'cupy' was requested but" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- dtype policy (9)
def test_the_models_parameter_dtype_decides():
    X, y = make_spiral(10, 3, seed=0)
    model = nn.mlp([2, 8, 3])  # float32 parameters, BatchNorm
    out = model(X.astype(numpy.float64))  # float64 NumPy input: converted at the entry
    assert out.dtype == numpy.float32
    assert model((X * 10).astype(numpy.uint8)).dtype == numpy.float32
    h = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.SGD(model.parameters(), 0.1),
        X.astype(numpy.float64),
        y,
        epochs=2,
        batch_size=10,
        progress=False,
    )
    assert len(h.epoch) == 2
    with pytest.raises(TypeError, match=r"Linear takes numeric arrays .*x.astype\(.float32.\)"):
        model(numpy.array([["a", "b"]]))


# ---------------------------------------------------------------------- layer misuse (10d, e)
LAYERS = [
    lambda: nn.Linear(3, 2),
    nn.ReLU,
    lambda: nn.BatchNorm1d(3),
    lambda: nn.Dropout(0.5),
    lambda: nn.mlp([3, 4, 2]),
    lambda: nn.PReLU(),
    lambda: nn.Maxout(1),
    nn.Flatten,
]


@pytest.mark.parametrize("make", LAYERS)
def test_backward_before_forward_and_wrong_dout(make):
    layer = make()
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        layer.backward(numpy.ones((4, 3), numpy.float32))
    out = layer(numpy.random.default_rng(0).normal(size=(4, 3)).astype(numpy.float32))
    expected = __import__("re").escape(str(tuple(out.shape)))
    with pytest.raises(ValueError, match=rf"dout has shape \(4, 7\), expected .* {expected}"):
        layer.backward(numpy.ones((4, 7), numpy.float32))


def test_preprocessing_feature_count_is_checked():
    from gpunet.preprocess import Standardize, ZeroCenter

    pre = Standardize().fit(numpy.ones((5, 4)) + numpy.arange(5)[:, None])
    with pytest.raises(
        ValueError, match="X has 3 features per example but Standardize was fitted on data with 4"
    ):
        pre.transform(numpy.ones((2, 3)))
    zc = ZeroCenter(per_channel=True).fit(numpy.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="X has 2 channels per example"):
        zc.transform(numpy.ones((2, 2, 4, 4)))


def test_empty_input_and_length_mismatch():
    model = nn.mlp([2, 4, 3])
    with pytest.raises(ValueError, match="predict: X has no rows"):
        predict(model, numpy.zeros((0, 2)))
    with pytest.raises(ValueError, match="evaluate: X has no rows"):
        evaluate(model, numpy.zeros((0, 2)), numpy.zeros(0, numpy.int64))
    with pytest.raises(ValueError, match="evaluate: X has 3 rows but y has 2 labels"):
        evaluate(model, numpy.zeros((3, 2)), numpy.zeros(2, numpy.int64))


def test_checkpoint_paths_that_are_not_checkpoints(tmp_path):
    with pytest.raises(C.CheckpointError, match="is a directory, not a checkpoint file"):
        C.load_checkpoint(tmp_path)
    with pytest.raises(C.CheckpointError, match="is a directory; give a file name"):
        C.save_checkpoint(tmp_path, {"a/b": numpy.ones(1)}, {})
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(
        C.CheckpointError, match=r"not a readable gpunet checkpoint: not an \.npz \(zip\) archive"
    ):
        C.load_checkpoint(junk)


def test_corrupt_checkpoint_on_resume_is_one_line(tmp_path, capsys):
    out = tmp_path / "a"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(os.urandom(100))
    code, _, err = _cli(capsys, "train", "--out", str(out), "--resume", *FAST)
    assert code == 2 and "not a readable gpunet checkpoint" in err and "Traceback" not in err


def test_early_stopping_monitor_misspelled():
    X, y = make_spiral(10, 3, seed=0)
    model = nn.mlp([2, 4, 3])
    with pytest.raises(
        ValueError,
        match=r"unknown monitor 'vall_acc'; the epoch logs have "
        r"\['lr', 'time', 'train_acc', 'val_acc', 'val_loss'\]",
    ):
        fit(
            model,
            nn.SoftmaxCrossEntropy(),
            optim.SGD(model.parameters(), 0.1),
            X,
            y,
            val=(X, y),
            callbacks=[EarlyStopping(monitor="vall_acc")],
            progress=False,
        )


# ----------------------------------------------------------------------------- the API (11-13)
def test_plain_import_reaches_every_submodule():
    code = (
        "import gpunet\n"
        "m = gpunet.nn.mlp([4, 8, 3])\n"
        "w = gpunet.init.kaiming_normal((4, 8))\n"
        "o = gpunet.optim.SGD(m.parameters(), 0.1)\n"
        "print(gpunet.preprocess.Standardize.__name__, gpunet.datasets.load_digits.__name__,\n"
        "      gpunet.train.fit.__name__, gpunet.metrics.accuracy.__name__, w.shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Standardize", "load_digits", "fit", "accuracy", "(4,", "8)"]


def test_losses_are_functional_operations():
    from gpunet import functional as F

    s = numpy.random.default_rng(0).normal(size=(5, 3))
    y = numpy.array([0, 2, 1, 1, 0])
    lse = numpy.log(numpy.exp(s).sum(1))
    assert float(F.softmax_cross_entropy(s, y)[0]) == pytest.approx((lse - s[range(5), y]).mean())
    margins = numpy.maximum(0, s - s[range(5), y][:, None] + 1)
    margins[range(5), y] = 0
    assert float(F.multiclass_svm(s, y)[0]) == pytest.approx(margins.sum() / 5)


@pytest.mark.parametrize(
    "loss", [nn.SoftmaxCrossEntropy(), nn.MulticlassSVM()], ids=["xent", "svm"]
)
def test_evaluate_reports_the_loss_the_model_was_trained_with(loss):
    X, y = make_spiral(10, 3, seed=0)
    model = nn.mlp([2, 8, 3], batchnorm=False, dtype=numpy.float64)
    fit(
        model,
        loss,
        optim.SGD(model.parameters(), 0.1),
        X,
        y,
        epochs=1,
        batch_size=10,
        progress=False,
    )
    value, acc = evaluate(model, X, y)
    model.eval()
    assert value == pytest.approx(float(loss(model(X), y)[0]))
    assert 0 <= acc <= 1


# ----------------------------------------------------------------------------- output (14)
def test_one_line_per_epoch_when_not_on_a_terminal(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpunet",
            "train",
            "--out",
            str(tmp_path / "o"),
            "--dataset",
            "spiral",
            "--hidden",
            "16",
            "--epochs",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]


def test_curves_show_the_validation_loss_and_no_empty_legend(tmp_path):
    from gpunet.train import History, plots

    h = History(
        loss=[1.0 - 0.01 * i for i in range(40)],
        epoch=[1, 2],
        train_acc=[0.5, 0.6],
        val_acc=[0.4, 0.5],
        val_loss=[0.9, 0.8],
        lr=[0.1, 0.1],
        time=[1, 1],
    )
    drawn = plots.plot_histories({"": h}, tmp_path / "a.png", title="t")
    assert drawn["panels"][0]["legend"] == ["loss", "val loss"]
    assert drawn["panels"][1]["legend"] == ["train", "val"]
    short = History(
        loss=[1.0, 0.9],
        epoch=[1],
        train_acc=[0.5],
        val_acc=[float("nan")],
        val_loss=[float("nan")],
        lr=[0.1],
        time=[1],
    )
    drawn = plots.plot_histories({"": short}, tmp_path / "c.png")
    assert drawn["panels"][0]["legend"] == []  # nothing labelled: no legend box
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == ["a.png", "c.png"]  # the temporary files are gone


def test_examples_write_under_runs():
    for name in ("activations", "bn_vs_no_bn", "init_experiment", "train_digits", "train_cifar10"):
        with open(os.path.join(ROOT, "examples", f"{name}.py")) as f:
            src = f.read()
        default = src.split('"--out", default=')[1].split(")")[0]
        assert default.startswith('"runs/'), (name, default)
    with open(os.path.join(ROOT, ".gitignore")) as f:
        assert "runs/" in f.read().split()


# ---------------------------------------------------------------------- more of the same kind
def test_more_bad_input_gets_clear_errors():
    X, y = make_spiral(10, 3, seed=0)
    model = nn.mlp([2, 4, 3])
    with pytest.raises(
        ValueError,
        match=r"validation data: X has examples of shape \(1,\), the training data \(2,\)",
    ):
        fit(
            model,
            nn.SoftmaxCrossEntropy(),
            optim.SGD(model.parameters(), 0.1),
            X,
            y,
            val=(X[:, :1], y),
            progress=False,
        )
    with pytest.raises(
        ValueError, match=r"Linear\(2, 4\) expects input of shape \(N, 2\), got \(30,\)"
    ):
        predict(model, X[:, 0])
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        optim.SGD(model.parameters(), 0.1, momentum=1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        optim.RMSprop(model.parameters(), 0.1, momentum=1.0)
    with pytest.raises(ValueError, match=r"n \(the number of examples\) must be >= 0, got -1"):
        gpunet.datasets.minibatches(-1, 4)
    with pytest.raises(ValueError, match="cpu kernels must be one of"):
        gpunet.set_cpu_kernels("gpu")
    with pytest.raises(ValueError, match="epochs must be an integer >= 0, got 2.5"):
        fit(
            model,
            nn.SoftmaxCrossEntropy(),
            optim.SGD(model.parameters(), 0.1),
            X,
            y,
            epochs=2.5,
            progress=False,
        )
