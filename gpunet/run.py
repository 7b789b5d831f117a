"""Train one configuration end to end and report its accuracy: the main job's engine, used by
``gpunet train`` and meant for hyperparameter searches ("train this config, return val accuracy").
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from gpunet.types import PathLike

from . import backend, datasets, nn, optim, preprocess
from .checkpoint import group, load_checkpoint
from .train import Trainer, evaluate

DATASETS = ("digits", "spiral", "cifar10", "mnist")


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults reach >= 95% test accuracy on digits in seconds."""

    dataset: str = "digits"
    data_dir: str | None = None
    hidden: list = field(default_factory=lambda: [128, 64])
    activation: str = "relu"
    init: str = "he_normal"
    batchnorm: bool = True
    dropout: float = 0.0
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    reg: float = 0.0
    schedule: str = "cosine"
    epochs: int = 30
    batch_size: int = 64
    preprocess: str = "standardize"
    backend: str = "auto"
    kernels: str = "auto"
    seed: int = 0
    out: str | None = None
    resume: bool = False
    progress: bool | None = None

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset in ("cifar10", "mnist") and not self.data_dir:
            raise ValueError(f"dataset {self.dataset!r} needs data_dir (a folder with its files)")
        if self.optimizer not in optim.OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(optim.OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.preprocess not in preprocess.PREPROCESSORS:
            raise ValueError(
                f"preprocess must be one of {sorted(preprocess.PREPROCESSORS)}, got "
                f"{self.preprocess!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"need lr > 0, epochs >= 1, batch_size >= 1; got {self.lr}, {self.epochs}, "
                f"{self.batch_size}"
            )
        return self


SCHEDULES = {
    "none": lambda opt, cfg: None,
    "cosine": lambda opt, cfg: optim.CosineAnnealing(opt, cfg.epochs),
    "step": lambda opt, cfg: optim.StepDecay(opt, max(1, cfg.epochs // 3), 0.1),
    "exponential": lambda opt, cfg: optim.ExponentialDecay(opt, 0.95),
}


def load_data(cfg: TrainConfig) -> dict:
    """The configured data set as a dict of train/val/test arrays (flattened for an MLP)."""
    if cfg.dataset == "digits":
        data = datasets.load_digits()
    elif cfg.dataset == "spiral":
        X, y = datasets.make_spiral(300, 3, seed=0)
        tr, va, te = datasets.split_indices(len(X), (0.7, 0.15), seed=1)
        data = {
            "X_train": X[tr],
            "y_train": y[tr],
            "X_val": X[va],
            "y_val": y[va],
            "X_test": X[te],
            "y_test": y[te],
        }
    elif cfg.dataset == "cifar10":
        data = datasets.load_cifar10(cfg.data_dir)
    else:
        data = datasets.load_mnist(cfg.data_dir)
    return {k: (v.reshape(len(v), -1) if k.startswith("X") else v) for k, v in data.items()}


def _optimizer(cfg: TrainConfig, params: Iterable):
    cls = optim.OPTIMIZERS[cfg.optimizer]
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    return cls(params, **kwargs)


def run(cfg: TrainConfig) -> dict:
    """Train ``cfg``; returns a dict with val_acc, test_acc, history, model, preprocessor. With
    ``cfg.out`` set, writes config.json, history.json/.csv, curves.png and checkpoint.npz
    (model + optimizer + schedule + preprocessing + history, resumable with ``cfg.resume``)."""
    cfg.validate()
    from .dispatch import set_kernels

    backend.set_backend(cfg.backend)
    set_kernels(cfg.kernels)
    backend.seed(cfg.seed)
    data = load_data(cfg)
    pre = preprocess.PREPROCESSORS[cfg.preprocess]
    pre = pre() if pre is not None else None
    if pre is not None:
        pre.fit(data["X_train"])  # fitted on the training data only
        data = {k: (pre.transform(v) if k.startswith("X") else v) for k, v in data.items()}
    n_classes = int(max(data["y_train"].max(), data["y_val"].max(), data["y_test"].max())) + 1
    model = nn.mlp(
        [data["X_train"].shape[1], *cfg.hidden, n_classes],
        activation=cfg.activation,
        batchnorm=cfg.batchnorm,
        init=cfg.init,
        dropout=cfg.dropout,
    )
    model.to(backend.get_backend())
    opt = _optimizer(cfg, model.parameters())
    schedule = SCHEDULES[cfg.schedule](opt, cfg)
    ckpt = os.path.join(cfg.out, "checkpoint.npz") if cfg.out else None
    if cfg.out:
        os.makedirs(cfg.out, exist_ok=True)
        with open(os.path.join(cfg.out, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
    trainer = Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        schedule,
        checkpoint=ckpt,
        seed=cfg.seed,
        progress=cfg.progress,
        reg=cfg.reg,
    )
    if pre is not None:  # the fitted preprocessing travels with the model in every checkpoint
        trainer.extra_state["preprocess"] = pre.state_dict()
        trainer.extra_meta["preprocess"] = cfg.preprocess
    history = trainer.fit(
        data["X_train"],
        data["y_train"],
        val=(data["X_val"], data["y_val"]),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        resume=cfg.resume,
    )
    _, val_acc = evaluate(model, data["X_val"], data["y_val"])
    _, test_acc = evaluate(model, data["X_test"], data["y_test"])
    if cfg.out:
        history.save_json(os.path.join(cfg.out, "history.json"))
        history.save_csv(os.path.join(cfg.out, "history.csv"))
        history.plot(
            os.path.join(cfg.out, "curves.png"),
            title=f"{cfg.dataset}: hidden {cfg.hidden}, {cfg.activation}, bn={cfg.batchnorm}, "
            f"{cfg.optimizer} lr={cfg.lr} -- test acc {test_acc:.3f}",
        )
    return {
        "val_acc": val_acc,
        "test_acc": test_acc,
        "history": history,
        "model": model,
        "preprocessor": pre,
    }


def train_and_evaluate(cfg: TrainConfig) -> float:
    """Train ``cfg`` and return its validation accuracy (what a hyperparameter search maximizes)."""
    return run(cfg)["val_acc"]


def load_preprocessor(path: PathLike) -> preprocess.Transform:
    """The fitted preprocessing saved in a checkpoint by ``run`` (or None)."""
    arrays, meta = load_checkpoint(path)
    name = meta.get("preprocess")
    if not name or preprocess.PREPROCESSORS.get(name) is None:
        return None
    return preprocess.PREPROCESSORS[name]().load_state_dict(group(arrays, "preprocess"))
