"""The training loop: accuracy, resume = uninterrupted, divergence stop, callbacks, checkpoints
(atomic, no unpickling, tamper-evident), history outputs."""

import os
import pickle
import zipfile

import numpy
import pytest

import gpunet
from gpunet import checkpoint as C
from gpunet import nn, optim
from gpunet.datasets import load_digits, make_spiral
from gpunet.train import Callback, EarlyStopping, Trainer, TrainingDiverged, evaluate, fit, predict


def _digits():
    d = load_digits()
    mean, std = d["X_train"].mean(0), d["X_train"].std(0) + 1e-3
    return {
        k: ((v - mean) / std).astype(numpy.float32) if k.startswith("X") else v
        for k, v in d.items()
    }


def _setup(lr=0.1, seed=0, dropout=0.1):
    gpunet.seed(seed)
    model = nn.mlp([64, 64, 10], dropout=dropout)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return model, opt, optim.CosineAnnealing(opt, 6)


def test_fit_reaches_95_percent_on_digits():
    d = _digits()
    model, opt, sched = _setup()
    h = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        d["X_train"],
        d["y_train"],
        val=(d["X_val"], d["y_val"]),
        epochs=6,
        batch_size=32,
        lr_schedule=sched,
        seed=1,
        progress=False,
    )
    assert evaluate(model, d["X_test"], d["y_test"])[1] >= 0.95
    assert len(h.loss) == 6 * 40 and h.epoch == [1, 2, 3, 4, 5, 6]
    assert numpy.mean(h.loss[-40:]) < numpy.mean(h.loss[:40]) / 5
    assert len(h.val_acc) == 6 and h.lr[0] == pytest.approx(0.1)
    assert predict(model, d["X_test"]).shape == d["y_test"].shape
    assert model.training  # evaluate/predict restore the mode


class _Interrupt(Callback):
    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt  # before this epoch's checkpoint is written


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    d = _digits()
    X, y, val = d["X_train"][:300], d["y_train"][:300], (d["X_val"], d["y_val"])
    model, opt, sched = _setup()
    h_full = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        X,
        y,
        val=val,
        epochs=5,
        batch_size=32,
        lr_schedule=sched,
        seed=7,
        progress=False,
    )
    full = {k: v.copy() for k, v in model.state_dict().items()}

    ckpt = tmp_path / "ck.npz"
    model, opt, sched = _setup()  # the same start, interrupted in epoch 3
    with pytest.raises(KeyboardInterrupt):
        fit(
            model,
            nn.SoftmaxCrossEntropy(),
            opt,
            X,
            y,
            val=val,
            epochs=5,
            batch_size=32,
            lr_schedule=sched,
            seed=7,
            checkpoint=ckpt,
            callbacks=[_Interrupt(3)],
            progress=False,
        )
    assert C.load_checkpoint(ckpt)[1]["epoch"] == 2  # interrupted during epoch 3
    model, opt, sched = _setup(seed=999)  # a different init: the checkpoint must restore it all
    h_res = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        X,
        y,
        val=val,
        epochs=5,
        batch_size=32,
        lr_schedule=sched,
        seed=None,
        checkpoint=ckpt,
        resume=True,
        progress=False,
    )
    for k, v in model.state_dict().items():
        numpy.testing.assert_array_equal(v, full[k], err_msg=k)
    assert h_res.loss == h_full.loss and h_res.val_acc == h_full.val_acc


def test_divergence_stops_with_iteration_and_keeps_last_checkpoint(tmp_path):
    d = _digits()
    ckpt = tmp_path / "ck.npz"
    gpunet.seed(0)
    model = nn.mlp([64, 64, 10], batchnorm=False)
    opt = optim.SGD(model.parameters(), lr=0.05)

    class Explode(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                trainer.optimizer.lr = 1e6  # a learning rate that blows up

    with pytest.raises(
        TrainingDiverged, match=r"loss became (nan|inf) at iteration \d+ \(epoch 3\).*try lr / 10"
    ):
        fit(
            model,
            nn.SoftmaxCrossEntropy(),
            opt,
            d["X_train"],
            d["y_train"],
            epochs=10,
            batch_size=64,
            checkpoint=ckpt,
            seed=0,
            callbacks=[Explode()],
            progress=False,
        )
    arrays, meta = C.load_checkpoint(ckpt)  # the last good checkpoint is intact
    assert meta["epoch"] == 2
    assert all(numpy.isfinite(v).all() for k, v in arrays.items() if k.startswith("model/"))


def test_early_stopping_restores_best_weights():
    d = _digits()
    model, opt, _ = _setup()
    es = EarlyStopping(patience=2)
    h = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        d["X_train"][:200],
        d["y_train"][:200],
        val=(d["X_val"], d["y_val"]),
        epochs=50,
        batch_size=32,
        callbacks=[es],
        seed=0,
        progress=False,
    )
    assert len(h.epoch) < 50
    assert evaluate(model, d["X_val"], d["y_val"])[1] == pytest.approx(es.best)
    with pytest.raises(ValueError, match="EarlyStopping monitors 'val_acc'"):
        fit(
            model,
            nn.SoftmaxCrossEntropy(),
            opt,
            d["X_train"][:64],
            d["y_train"][:64],
            epochs=1,
            callbacks=[EarlyStopping()],
            progress=False,
        )


def test_checkpoint_atomic_write_survives_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    C.save_checkpoint(path, {"model/w": numpy.arange(3.0)}, {"epoch": 1})

    def crash(*a, **k):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        C.save_checkpoint(path, {"model/w": numpy.arange(5.0)}, {"epoch": 2})
    monkeypatch.undo()
    arrays, meta = C.load_checkpoint(path)  # the old checkpoint, whole
    assert meta["epoch"] == 1 and arrays["model/w"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temp file left behind


def test_checkpoint_refuses_pickles_truncation_and_tampering(tmp_path):
    good = tmp_path / "good.npz"
    C.save_checkpoint(good, {"model/w": numpy.ones(1000)}, {"epoch": 1})
    pickled = tmp_path / "pickled.npz"
    with open(pickled, "wb") as f:
        numpy.save(f, numpy.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(C.CheckpointError, match="pickled objects"):
        C.load_checkpoint(pickled)
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps({"model/w": numpy.ones(2)}))
    with pytest.raises(C.CheckpointError, match="not a readable gpunet checkpoint"):
        C.load_checkpoint(raw)
    obj = tmp_path / "obj.npz"
    numpy.savez(obj, a=numpy.array([object()], dtype=object))
    with pytest.raises(C.CheckpointError, match="not a readable gpunet checkpoint"):
        C.load_checkpoint(obj)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(C.CheckpointError, match="not a readable gpunet checkpoint"):
        C.load_checkpoint(truncated)
    # tampered: rewrite one array with the stored digest kept
    with numpy.load(good, allow_pickle=False) as z:
        content = {k: z[k] for k in z.files}
    content["model/w"] = content["model/w"] * 2
    tampered = tmp_path / "tampered.npz"
    numpy.savez(tampered, **content)
    with pytest.raises(C.CheckpointError, match="failed its integrity check"):
        C.load_checkpoint(tampered)
    plain = tmp_path / "plain.npz"
    numpy.savez(plain, w=numpy.ones(2))
    with pytest.raises(C.CheckpointError, match="not a gpunet checkpoint"):
        C.load_checkpoint(plain)
    with pytest.raises(C.CheckpointError, match="checkpoint not found"):
        C.load_checkpoint(tmp_path / "nope.npz")
    assert zipfile.is_zipfile(good)


def test_history_outputs(tmp_path):
    X, y = make_spiral(60, 3, seed=0)
    gpunet.seed(0)
    model = nn.mlp([2, 32, 3])
    h = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.Adam(model.parameters(), 0.01),
        X,
        y,
        val=(X, y),
        epochs=3,
        batch_size=30,
        progress=False,
    )
    h.plot(tmp_path / "curves.png")
    h.save_csv(tmp_path / "h.csv")
    h.save_json(tmp_path / "h.json")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "h.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_acc,val_acc,val_loss,lr,time" and len(rows) == 4


def test_bad_training_input():
    model = nn.mlp([2, 8, 3])
    opt = optim.SGD(model.parameters(), 0.1)
    X, y = make_spiral(10, 3, seed=0)
    with pytest.raises(ValueError, match="X has 30 examples but y has 29 labels"):
        fit(model, nn.SoftmaxCrossEntropy(), opt, X, y[:-1], progress=False)
    with pytest.raises(TypeError, match="y must be a 1-D array of integer class labels"):
        fit(model, nn.SoftmaxCrossEntropy(), opt, X, y.astype(float), progress=False)
    with pytest.raises(ValueError, match=r"labels go up to 5 but the model outputs 3 class scores"):
        fit(model, nn.SoftmaxCrossEntropy(), opt, X, y + 3, epochs=1, progress=False)


def test_progress_bar_runs(capsys):
    X, y = make_spiral(20, 3, seed=0)
    model = nn.mlp([2, 8, 3])
    Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), 0.1), progress=True).fit(
        X, y, epochs=1
    )
    assert "epoch 1/1" in capsys.readouterr().err


def test_training_computes_no_gradient_for_the_data(monkeypatch):
    """The first layer's input is data: fit skips its dx (one matrix product of three), and
    the weights it reaches are the same as when every dx is computed."""
    from gpunet import functional as F_
    from gpunet.datasets import make_spiral

    X, y = make_spiral(20, 3, seed=0)
    original = F_.linear_backward
    weights, flags = {}, []
    for skip in (True, False):

        def backward(dout, cache, input_grad=True, skip=skip):
            flags.append((skip, input_grad))
            return original(dout, cache, input_grad if skip else True)

        monkeypatch.setattr(nn.Linear, "_backward_fn", staticmethod(backward))
        gpunet.seed(0)
        model = nn.mlp([2, 16, 16, 3], dtype=numpy.float64)
        fit(
            model,
            nn.SoftmaxCrossEntropy(),
            optim.SGD(model.parameters(), 0.1, momentum=0.9),
            X,
            y,
            epochs=2,
            batch_size=20,
            progress=False,
            seed=0,
        )
        weights[skip] = {k: v.copy() for k, v in model.state_dict().items()}
    monkeypatch.undo()
    asked = [flag for skip, flag in flags if skip]
    assert asked.count(False) == len(asked) // 3  # the first Linear of three
    for k in weights[True]:
        numpy.testing.assert_array_equal(weights[True][k], weights[False][k])
    model = nn.mlp([2, 4, 3])
    out = model(numpy.ones((5, 2), numpy.float32))
    assert model.backward(numpy.ones_like(out)).shape == (5, 2)  # outside fit: dx as before


# ----------------------------------------------------------------------------- checkpoint cadence
def _count_writes(monkeypatch):
    from gpunet.train import loop

    writes = []
    real = loop.save_checkpoint

    def counted(path, arrays, meta):
        writes.append(meta["epoch"])
        return real(path, arrays, meta)

    monkeypatch.setattr(loop, "save_checkpoint", counted)
    return writes


def _spiral_fit(tmp_path, **kwargs):
    X, y = make_spiral(40, 3, seed=0)
    gpunet.seed(0)
    model = nn.mlp([2, 16, 3])
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(model, nn.SoftmaxCrossEntropy(), opt, X, y, epochs=5, batch_size=20, seed=3,
        checkpoint=tmp_path / "ck.npz", progress=False, **kwargs)  # fmt: skip
    return model


@pytest.mark.parametrize("interval, written", [(3600.0, [1, 5]), (0.0, [1, 2, 3, 4, 5])])
def test_checkpoints_are_written_once_per_interval_and_at_the_end(
    tmp_path, monkeypatch, interval, written
):
    """The first epoch is written at once; epochs shorter than checkpoint_interval are then kept
    in memory and the last one is written when fit returns (the quickstart's 30 epochs of ~20 ms
    wrote 30 files, 80-100 ms of 0.85 s)."""
    writes = _count_writes(monkeypatch)
    model = _spiral_fit(tmp_path, checkpoint_interval=interval)
    assert writes == written
    arrays, meta = C.load_checkpoint(tmp_path / "ck.npz")
    assert meta["epoch"] == 5
    for k, v in model.state_dict().items():
        numpy.testing.assert_array_equal(arrays[f"model/{k}"], v, err_msg=k)


def test_ctrl_c_writes_the_last_completed_epoch_kept_in_memory(tmp_path, monkeypatch):
    writes = _count_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _spiral_fit(tmp_path, checkpoint_interval=3600.0, callbacks=[_Interrupt(4)])
    assert writes == [1, 3]  # epochs 2-3 in memory, epoch 3 written on the way out
    assert C.load_checkpoint(tmp_path / "ck.npz")[1]["epoch"] == 3


def test_a_failed_write_on_the_way_out_leaves_the_interrupt_and_says_what_is_saved(
    tmp_path, monkeypatch
):
    from gpunet.train import loop

    real, calls = loop.save_checkpoint, []

    def full_after_the_first(path, arrays, meta):
        calls.append(meta["epoch"])
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real(path, arrays, meta)

    monkeypatch.setattr(loop, "save_checkpoint", full_after_the_first)
    X, y = make_spiral(40, 3, seed=0)

    def trainer(**kwargs):
        model = nn.mlp([2, 16, 3])
        return Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1),
                       checkpoint=tmp_path / "ck.npz", progress=False, checkpoint_interval=3600.0,
                       **kwargs)  # fmt: skip

    t = trainer(callbacks=[_Interrupt(3)])
    with pytest.raises(KeyboardInterrupt):  # not the OSError of writing epoch 2 on the way out
        t.fit(X, y, epochs=5, batch_size=20)
    assert calls == [1, 2] and t.saved_epoch == 1
    assert C.load_checkpoint(tmp_path / "ck.npz")[1]["epoch"] == 1
    calls.clear()
    with pytest.raises(OSError, match="No space"):  # a completed run's failed last write: an error
        trainer().fit(X, y, epochs=2, batch_size=20)
    assert calls == [1, 2]  # epoch 1 written, epoch 2's write at the end failed


@pytest.mark.parametrize("bad", [-1.0, "1", None])
def test_checkpoint_interval_is_checked(bad):
    model = nn.mlp([2, 4, 3])
    with pytest.raises(ValueError, match="checkpoint_interval must be a number of seconds"):
        Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1),
                checkpoint_interval=bad)  # fmt: skip
