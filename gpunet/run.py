"""Train one configuration end to end and report its accuracy: the main job's engine, used by
``gpunet train`` and meant for hyperparameter searches ("train this config, return val accuracy").
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpunet.types import PathLike

from . import backend, datasets, nn, optim, preprocess
from .checkpoint import group, load_checkpoint
from .outputs import ConfigError
from .train import Callback, History, Trainer, TrainingDiverged, evaluate

DATASETS = ("digits", "spiral", "cifar10", "mnist")
#: the networks a run builds: nn.mlp, or nn.convnet on the images (digits as 1x8x8, MNIST 1x28x28,
#: CIFAR-10 3x32x32)
MODELS = ("mlp", "convnet")
#: data sets of images (what --model convnet takes)
IMAGE_DATASETS = ("digits", "cifar10", "mnist")


#: options that may differ from the checkpoint's when resuming: where and how long it runs
RESUMABLE_CHANGES = (
    "epochs",
    "out",
    "resume",
    "progress",
    "backend",
    "kernels",
    "data_dir",
    "plot",
    "overwrite",
)

#: options that, left out on --resume, take the checkpoint's value (the rest of
#: RESUMABLE_CHANGES are about this invocation: where it writes, a progress bar)
RESUMED_FROM_CHECKPOINT = ("epochs", "backend", "kernels", "data_dir")

#: the files that make a folder hold a run (of train, babysit or search); a fresh command into
#: such a folder is refused unless --overwrite (or moves them aside, for a default --out)
RUN_FILES = ("config.json", "checkpoint.npz", "history.json", "report.md", "journal.jsonl")


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults reach >= 95% test accuracy on digits in seconds."""

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    hidden: list = field(default_factory=lambda: [128, 64])
    conv: list = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
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
    plot: bool = True
    overwrite: bool = False

    def architecture(self) -> str:
        """The network in a few words: ``hidden [128, 64]`` or ``convnet [32, 64] 3x3, hidden
        [128, 64]``."""
        return architecture(dataclasses.asdict(self))

    def validate(self, names: dict | None = None) -> TrainConfig:
        """Check every option, one message per option naming it and its valid values
        (``names`` maps field names to how the caller spells them, e.g. ``--batch-size``)."""
        from .dispatch import GPU_CHOICES
        from .nn import ACTIVATION_LAYERS

        def fail(opt: str, message: str) -> None:
            raise ConfigError(opt, f"{(names or {}).get(opt, opt)} {message}")

        def one_of(opt: str, choices: Collection[str]) -> None:
            if getattr(self, opt) not in choices:
                fail(opt, f"must be one of {sorted(choices)}, got {getattr(self, opt)!r}")

        def integer(opt: str, low: int) -> None:
            v = getattr(self, opt)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                fail(opt, f"must be an integer >= {low}, got {v!r}")

        def number(opt: str, low: float, high: float | None = None, low_open: bool = False) -> None:
            v = getattr(self, opt)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > low if low_open else v >= low) and (high is None or v < high)
            if not ok:
                rng = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
                fail(opt, f"must be a number in {rng}, got {v!r}")

        one_of("dataset", DATASETS)
        if self.dataset in ("cifar10", "mnist") and not self.data_dir:
            fail("data_dir", f"is needed for dataset {self.dataset!r} (a folder with its files)")
        if not isinstance(self.hidden, (list, tuple)) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.hidden
        ):
            fail("hidden", f"must be a list of positive layer sizes, got {self.hidden!r}")
        one_of("model", MODELS)
        if self.model == "convnet" and self.dataset not in IMAGE_DATASETS:
            fail("model", f"convnet needs images: a dataset among {list(IMAGE_DATASETS)}, "
                 f"got {self.dataset!r}")  # fmt: skip
        if (
            not isinstance(self.conv, (list, tuple))
            or not self.conv
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in self.conv)
        ):
            fail("conv", f"must be a list of positive channel counts, got {self.conv!r}")
        integer("kernel_size", 1)
        if self.kernel_size % 2 == 0:
            fail("kernel_size", f"must be odd (for 'same' padding), got {self.kernel_size}")
        one_of("activation", ACTIVATION_LAYERS)
        one_of("init", __import__("gpunet.init", fromlist=["INITIALIZERS"]).INITIALIZERS)
        if not isinstance(self.batchnorm, bool):
            fail("batchnorm", f"must be on or off (a bool), got {self.batchnorm!r}")
        number("dropout", 0.0, 1.0)
        one_of("optimizer", optim.OPTIMIZERS)
        number("lr", 0.0, low_open=True)
        number("momentum", 0.0, 1.0)
        number("weight_decay", 0.0)
        number("reg", 0.0)
        one_of("schedule", SCHEDULES)
        integer("epochs", 1)
        integer("batch_size", 1)
        if self.batchnorm and self.batch_size < 2:
            fail(
                "batch_size",
                "must be >= 2 with BatchNorm (batch statistics need 2 examples); "
                "use a larger batch or turn BatchNorm off",
            )
        one_of("preprocess", preprocess.PREPROCESSORS)
        one_of("backend", ("auto", "numpy", "cupy"))
        one_of("kernels", GPU_CHOICES)
        integer("seed", 0)
        return self


SCHEDULES = {
    "none": lambda opt, cfg: None,
    "cosine": lambda opt, cfg: optim.CosineAnnealing(opt, cfg.epochs),
    "step": lambda opt, cfg: optim.StepDecay(opt, max(1, cfg.epochs // 3), 0.1),
    "exponential": lambda opt, cfg: optim.ExponentialDecay(opt, 0.95),
}


def load_data(cfg: TrainConfig) -> dict:
    """The configured data set as a dict of train/val/test arrays: flattened for an MLP,
    (N, C, H, W) images for a convnet."""
    if cfg.dataset == "digits":
        data = datasets.load_digits()
    elif cfg.dataset == "spiral":
        X, y = datasets.make_spiral(300, 3, seed=0)
        data = datasets.split(X, y, (0.7, 0.15), seed=1)
    elif cfg.data_dir is None:  # TrainConfig.check says so with the option's name
        raise ConfigError("data_dir", f"data_dir is needed for dataset {cfg.dataset!r}")
    elif cfg.dataset == "cifar10":
        data = datasets.load_cifar10(cfg.data_dir)
    else:
        data = datasets.load_mnist(cfg.data_dir)
    if cfg.model == "convnet":
        if cfg.dataset == "digits":
            shape: tuple = (1, 8, 8)
        else:
            shape = data["X_train"].shape[1:]
        return {k: (v.reshape(len(v), *shape) if k.startswith("X") else v) for k, v in data.items()}
    return {k: (v.reshape(len(v), -1) if k.startswith("X") else v) for k, v in data.items()}


def _optimizer(cfg: TrainConfig, params: Iterable):
    cls = optim.OPTIMIZERS[cfg.optimizer]
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    return cls(params, **kwargs)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _resume_config(
    cfg: TrainConfig, old: dict, done: int, explicit: set | None, names: dict | None
) -> tuple:
    """(config to run, notes): the checkpoint's run, with only the changes that keep it the same
    run; any other differing option is an error naming it with both values. Options left out
    (not in ``explicit``) take the checkpoint's values, --epochs included."""
    label = (names or {}).get
    diffs = []
    for f in dataclasses.fields(TrainConfig):
        k = f.name
        if k in RESUMABLE_CHANGES or k not in old or (explicit is not None and k not in explicit):
            continue
        if _jsonable(getattr(cfg, k)) != old[k]:
            diffs.append(f"{label(k, k)} {getattr(cfg, k)!r} (the checkpoint's run: {old[k]!r})")
    if diffs:
        raise ConfigError(
            "resume",
            f"{label('resume', 'resume')} continues the run in the checkpoint exactly, but these "
            f"options differ from it: {'; '.join(diffs)}. Leave them out to continue that run, "
            f"or start a new run in another {label('out', 'out')} folder",
        )
    keep = {k: v for k, v in old.items() if k not in RESUMABLE_CHANGES and hasattr(cfg, k)}
    if explicit is not None:
        keep.update({k: old[k] for k in RESUMED_FROM_CHECKPOINT if k in old and k not in explicit})
    merged = dataclasses.replace(cfg, **keep)
    if merged.epochs < done:
        raise ConfigError(
            "epochs",
            f"{label('epochs', 'epochs')} {merged.epochs} is fewer than the {done} epochs the run "
            f"in {cfg.out} has trained: leave {label('epochs', 'epochs')} out to continue it as "
            f"it was ({old.get('epochs', done)} epochs), or give more to train on",
        )
    notes = []
    if merged.epochs != old.get("epochs", merged.epochs):
        notes.append(
            f"{label('epochs', 'epochs')} {old['epochs']} -> {merged.epochs}: training on to epoch "
            f"{merged.epochs} (the {merged.schedule} schedule now spans {merged.epochs} epochs)"
        )
    return merged, notes


def architecture(config: dict) -> str:
    """The network of a run's configuration (a TrainConfig as a dict) in a few words."""
    text = f"hidden {config.get('hidden')}"
    if config.get("model") == "convnet":
        k = config.get("kernel_size")
        text = f"convnet {config.get('conv')} {k}x{k}, {text}"
    return text


def describe_run(config: dict) -> str:
    """A run's configuration in a few words, for messages."""
    what = config.get("command", "train")
    return (
        f"a {what} run: dataset {config.get('dataset')}, {architecture(config)}, "
        f"{config.get('optimizer')} lr {config.get('lr')}, {config.get('epochs')} epochs"
    )


def _differences(old: dict, new: dict, names: dict | None) -> list:
    label = (names or {}).get
    skip = {"out", "resume", "progress", "plot", "overwrite", "command"}
    return [
        f"{label(k, k)} {old[k]!r} there, {new[k]!r} here"
        for k in new
        if k not in skip and k in old and old[k] != new[k]
    ]


def claim_folder(
    out: str,
    config: dict,
    *,
    explicit_out: bool,
    overwrite: bool,
    names: dict | None,
    log: Callable,
    ways: str,
) -> None:
    """A fresh command is about to write into ``out``: if the folder holds another run, refuse
    with one line naming both and the ways on (``ways``), unless ``overwrite`` (its files are
    replaced as the new ones are written) or the folder is the default one (``explicit_out``
    False: the earlier run is moved aside, and ``log`` says where)."""
    from .outputs import set_aside

    held = [n for n in RUN_FILES if os.path.exists(os.path.join(out, n))]
    if not held:
        return
    if overwrite:
        log(f"{out} holds an earlier run: --overwrite replaces it")
        return
    if not explicit_out:
        moved = set_aside(out)
        log(f"the earlier run in {out} was moved to {moved}")
        return
    old = {}
    try:
        with open(os.path.join(out, "config.json")) as f:
            old = json.load(f)
    except (OSError, ValueError):
        pass
    label = (names or {}).get("out", "out")
    if isinstance(old, dict) and old:
        mine = _jsonable(config)
        diffs = _differences(old, mine if isinstance(mine, dict) else {}, names)
        there = f"{describe_run(old)}" + (
            f"; this one differs: {'; '.join(diffs)}" if diffs else "; this one is the same"
        )
    else:
        there = f"{', '.join(held)}"
    raise ConfigError(
        "out",
        f"{label} {out!r} holds another run ({there}). To go on: {ways}",
    )


def _jsonable(v: object) -> object:
    return json.loads(json.dumps(v))


def _write_json_atomic(path: str, obj: object) -> None:
    from .outputs import atomic_write

    atomic_write(path, lambda f: json.dump(obj, f, indent=2))


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``run``: says which epoch the run folder holds and how to resume. A
    KeyboardInterrupt, so that what runs trials (a search) stops instead of recording a
    failure."""


class _RunFolder(Callback):
    """Writes config.json once the run has produced a good epoch: until then nothing in the
    folder (another run's files) is replaced."""

    def __init__(self, out: str, config: dict):
        self.out, self.config, self.written = out, config, False

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        if not self.written:
            _write_json_atomic(os.path.join(self.out, "config.json"), self.config)
            self.written = True


def build(cfg: TrainConfig, names: dict | None = None) -> tuple:
    """(data, fitted preprocessing or None, model on the configured backend): everything of a
    run but its training. The backend, kernel path and seed are set from ``cfg``."""
    from .dispatch import set_kernels

    if backend.set_backend(cfg.backend) == "numpy":
        from .kernels.numba_cpu import warm

        warm.start()  # a first run's backward kernels compile in another process meanwhile
    set_kernels(cfg.kernels)
    backend.seed(cfg.seed)
    data = load_data(cfg)
    if cfg.batch_size > len(data["X_train"]):
        label = (names or {}).get("batch_size", "batch_size")
        raise ConfigError(
            "batch_size",
            f"{label} must be in [1, {len(data['X_train'])}] (the training set of "
            f"{cfg.dataset} has {len(data['X_train'])} examples), got {cfg.batch_size}",
        )
    make_pre = preprocess.PREPROCESSORS[cfg.preprocess]
    pre = make_pre() if make_pre is not None else None
    if pre is not None:  # on rows of features (an image's pixels: the mean image, per pixel)
        pre.fit(data["X_train"].reshape(len(data["X_train"]), -1))  # the training data only
        data = {
            k: (pre.transform(v.reshape(len(v), -1)).reshape(v.shape) if k.startswith("X") else v)
            for k, v in data.items()
        }
    n_classes = int(max(data["y_train"].max(), data["y_val"].max(), data["y_test"].max())) + 1
    if cfg.model == "convnet":
        shape: dict[str, Any] = {
            "channels": list(cfg.conv),
            "input_shape": list(data["X_train"].shape[1:]),
            "hidden": list(cfg.hidden),
            "classes": n_classes,
            "kernel_size": cfg.kernel_size,
            "activation": cfg.activation,
            "batchnorm": cfg.batchnorm,
        }
        model = nn.convnet(**shape, init=cfg.init, dropout=cfg.dropout)
        if backend.get_backend() == "numpy":
            from .kernels.numba_cpu import warm

            # a first run's parallel kernel builds compile in another process meanwhile
            spec = {"convnet": shape, "batch": cfg.batch_size, "optimizer": cfg.optimizer}
            warm.start_parallel(spec)
    else:
        model = nn.mlp(
            [data["X_train"].shape[1], *cfg.hidden, n_classes],
            activation=cfg.activation,
            batchnorm=cfg.batchnorm,
            init=cfg.init,
            dropout=cfg.dropout,
        )
    model.to(backend.get_backend())
    return data, pre, model


def run(
    cfg: TrainConfig,
    explicit: set | None = None,
    names: dict | None = None,
    log: Callable = _log,
    monitor: bool = False,
    callbacks: Sequence = (),
    command: str = "train",
) -> dict:
    """Train ``cfg``; returns a dict with val_acc, test_acc, history, model, preprocessor, and
    ``status`` ("trained", "finished" or "stopped"). With ``cfg.out`` set, writes config.json,
    history.json/.csv, curves.png and checkpoint.npz (model + optimizer + schedule +
    preprocessing + history + config). ``cfg.resume`` continues the checkpoint's run exactly:
    options that would change it (``explicit``: the ones the caller set; None: all) are an
    error, except RESUMABLE_CHANGES (more epochs, another device). ``names``: how the caller
    spells the options in messages (the CLI: ``--lr``). ``monitor``: the babysitting monitors;
    ``callbacks``: more training callbacks (a search's early abandonment, Optuna's pruning).
    The folder is held (``outputs.hold``: a second process gets ``Busy``) and claimed
    (``claim_folder``): a fresh run into a folder that holds another run is a ``ConfigError``
    unless ``cfg.overwrite``; when ``explicit`` says ``out`` was left out (the default folder),
    the earlier run is moved aside instead. ``command`` tags config.json (train, babysit)."""
    cfg.validate(names)
    if cfg.out is None:
        return _run(cfg, {}, names, log, monitor, callbacks, command)
    from .outputs import hold, writable_folder

    label = (names or {}).get("out", "out")
    writable_folder(cfg.out, label)
    with hold(cfg.out, label):
        ckpt = os.path.join(cfg.out, "checkpoint.npz")
        meta: dict = {}
        if cfg.resume and os.path.exists(ckpt):
            _, meta = load_checkpoint(ckpt)
            old = meta.get("config")
            if old is None:
                raise ConfigError(
                    "resume",
                    f"{ckpt} has no run configuration (not written by "
                    "`gpunet train`): it cannot be resumed as a run",
                )
            cfg, notes = _resume_config(cfg, old, int(meta["epoch"]), explicit, names)
            cfg.validate(names)
            for note in notes:
                log(note)
        else:
            if cfg.resume:
                log(f"no checkpoint in {cfg.out}: starting fresh")
            claim_folder(
                str(cfg.out),
                {**dataclasses.asdict(cfg), "command": command},
                explicit_out=explicit is None or "out" in explicit,
                overwrite=cfg.overwrite,
                names=names,
                log=log,
                ways=f"continue it with {(names or {}).get('resume', 'resume')}, choose another "
                f"{label}, or replace it with {(names or {}).get('overwrite', 'overwrite')}",
            )
        return _run(cfg, meta, names, log, monitor, callbacks, command)


def _run(
    cfg: TrainConfig,
    meta: dict,
    names: dict | None,
    log: Callable,
    monitor: bool,
    callbacks: Sequence,
    command: str,
) -> dict:
    """``run`` once the folder is claimed (or there is none): ``meta`` of the checkpoint resumed
    (empty for a fresh run)."""
    ckpt = os.path.join(cfg.out, "checkpoint.npz") if cfg.out else None
    done = int(meta.get("epoch", 0))
    data, pre, model = build(cfg, names)
    opt = _optimizer(cfg, model.parameters())
    schedule = SCHEDULES[cfg.schedule](opt, cfg)
    config = {**dataclasses.asdict(cfg), "command": command}
    folder = [_RunFolder(cfg.out, config)] if cfg.out else []
    monitors = []
    if monitor:  # the babysitting monitors, recorded into the history (gpunet.diagnose)
        from .diagnose.monitors import default_monitors

        monitors = default_monitors(data["X_train"][:256])
    trainer = Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        schedule,
        callbacks=list(callbacks) + monitors + folder,
        checkpoint=ckpt,
        seed=cfg.seed,
        progress=cfg.progress,
        reg=cfg.reg,
    )
    trainer.extra_meta["config"] = _jsonable(config)
    if pre is not None:  # the fitted preprocessing travels with the model in every checkpoint
        trainer.extra_state["preprocess"] = pre.state_dict()
        trainer.extra_meta["preprocess"] = cfg.preprocess
    status = "trained"
    if meta.get("stopped_early") is not None:
        status = "stopped"
        log(
            f"the run in {cfg.out} was stopped early at epoch {meta['stopped_early']} "
            f"(EarlyStopping) and stays stopped; its checkpoint holds the best epoch"
        )
    elif meta and done >= cfg.epochs:
        status = "finished"
        log(
            f"the run in {cfg.out} is finished ({done} of {cfg.epochs} epochs); raise the "
            "number of epochs to train on"
        )
    elif meta:
        log(f"resumed from epoch {done} of {ckpt}")
    try:
        history = trainer.fit(
            data["X_train"],
            data["y_train"],
            val=(data["X_val"], data["y_val"]),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            resume=bool(meta),
        )
    except TrainingDiverged:
        if cfg.out:
            _save_curves(
                cfg, trainer.history, float("nan"), owned=bool(meta) or folder[0].written, log=log
            )
        raise
    except KeyboardInterrupt:
        saved = trainer.saved_epoch if (ckpt and os.path.exists(ckpt)) else 0
        where = (
            f"epoch {saved} is saved in {ckpt}; continue with `gpunet train --out "
            f"{cfg.out} --resume`"
            if saved
            else "no epoch was completed, nothing was saved"
        )
        raise RunInterrupted(f"interrupted during epoch {trainer.epoch + 1}: {where}") from None
    _, val_acc = evaluate(model, data["X_val"], data["y_val"])
    _, test_acc = evaluate(model, data["X_test"], data["y_test"])
    if cfg.out:
        _save_curves(cfg, history, test_acc, owned=True, log=None)
        for m in monitors:
            m.plot(history, os.path.join(cfg.out, f"monitor-{m.prefix}.png"))
    return {
        "val_acc": val_acc,
        "test_acc": test_acc,
        "history": history,
        "model": model,
        "preprocessor": pre,
        "status": status,
        "config": cfg,
        "monitors": monitors,
    }


def _save_curves(
    cfg: TrainConfig, history: History, test_acc: float, owned: bool, log: Callable | None
) -> None:
    """history.json/.csv and curves.png; a diverged run that never had a good epoch in this
    folder writes diverged-* files beside another run's, replacing none of them."""
    prefix, out = "" if owned else "diverged-", run_folder(cfg)
    history.save_json(os.path.join(out, f"{prefix}history.json"))
    history.save_csv(os.path.join(out, f"{prefix}history.csv"))
    if not cfg.plot:
        return
    result = f"test acc {test_acc:.3f}" if math.isfinite(test_acc) else "diverged"
    history.plot(
        os.path.join(out, f"{prefix}curves.png"),
        title=f"{cfg.dataset}: {cfg.architecture()}, {cfg.activation}, bn={cfg.batchnorm}, "
        f"{cfg.optimizer} lr={cfg.lr} -- {result}",
    )
    if log is not None:
        log(
            f"wrote the diverged run's history and curves: {cfg.out}/{prefix}history.json, "
            f"{prefix}curves.png (the last good checkpoint is untouched)"
        )


def run_folder(cfg: TrainConfig) -> str:
    """The run folder of a configuration that ``run`` has already given one."""
    if cfg.out is None:
        raise ValueError("the configuration has no run folder (out)")
    return cfg.out


def train_and_evaluate(cfg: TrainConfig) -> float:
    """Train ``cfg`` and return its validation accuracy (what a hyperparameter search maximizes)."""
    return run(cfg)["val_acc"]


def load_preprocessor(path: PathLike) -> preprocess.Transform | None:
    """The fitted preprocessing saved in a checkpoint by ``run`` (or None)."""
    arrays, meta = load_checkpoint(path)
    make = preprocess.PREPROCESSORS.get(meta.get("preprocess") or "none")
    if make is None:
        return None
    return make().load_state_dict(group(arrays, "preprocess"))
