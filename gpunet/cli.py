"""The ``gpunet`` command: ``train``, ``babysit``, ``init-study`` and ``info`` (also
``python -m gpunet``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import TrainConfig


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {s!r}")


def _positive_list(s: str, what: str, example: str) -> list:
    """``128,64`` -> [128, 64], or an argparse error naming ``what`` and an ``example``."""
    try:
        sizes = [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} must be comma-separated integers such as {example}, got {s!r}"
        ) from None
    if any(v < 1 for v in sizes):
        raise argparse.ArgumentTypeError(f"{what} must be positive, got {s!r}")
    return sizes


def _hidden(s: str) -> list:
    """``128,64`` -> [128, 64]; ``none`` -> [] (no hidden layer: a linear classifier)."""
    if s.strip().lower() == "none":
        return []
    return _positive_list(s, "hidden sizes", "128,64 (or none)")


def _channels(s: str) -> list:
    """``32,64`` -> [32, 64]: the conv blocks' output channels."""
    return _positive_list(s, "conv channels", "32,64")


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser; with ``suppress_defaults`` an option left out is absent from the result (how
    ``explicit_options`` tells what the user typed from what is a default)."""
    import os

    from . import init, optim, preprocess
    from .nn import ACTIVATION_LAYERS
    from .run import DATASETS, MODELS, SCHEDULES, TrainConfig

    d = TrainConfig(
        backend=os.environ.get("GPUNET_BACKEND", "auto"),
        kernels=os.environ.get("GPUNET_KERNELS", "auto"),
    )

    def options(t: argparse.ArgumentParser, resume: bool = True) -> None:
        """The options of one run, shared by train, babysit and search (``resume``: train's
        --resume; babysit starts fresh, a search resumes from its journal by itself)."""
        t.add_argument(
            "--dataset", choices=DATASETS, default=d.dataset, help="digits is bundled (no download)"
        )
        t.add_argument(
            "--data-dir",
            default=d.data_dir,
            help="folder with the CIFAR-10 binary or MNIST IDX files",
        )
        t.add_argument(
            "--model",
            choices=MODELS,
            default=d.model,
            help="mlp: fully connected; convnet: conv blocks (conv -> BatchNorm -> activation -> "
            "max-pool 2) then the --hidden layers, on images (digits as 1x8x8)",
        )
        t.add_argument(
            "--conv",
            type=_channels,
            default=d.conv,
            metavar="CHANNELS",
            help="convnet: output channels of each conv block, comma-separated, e.g. 32,64",
        )
        t.add_argument(
            "--kernel-size",
            type=int,
            default=d.kernel_size,
            help="convnet: the convolutions' kernel size (odd; 'same' padding)",
        )
        t.add_argument(
            "--hidden",
            type=_hidden,
            default=d.hidden,
            metavar="SIZES",
            help="hidden layer sizes, comma-separated, e.g. 128,64",
        )
        t.add_argument(
            "--activation",
            choices=sorted(ACTIVATION_LAYERS),
            default=d.activation,
            metavar="NAME",
            help=f"hidden activation: {', '.join(sorted(ACTIVATION_LAYERS))}",
        )
        t.add_argument(
            "--init",
            choices=sorted(init.INITIALIZERS),
            default=d.init,
            metavar="NAME",
            help=f"weight initialization: {', '.join(sorted(init.INITIALIZERS))}",
        )
        t.add_argument(
            "--batchnorm",
            type=_bool,
            default=d.batchnorm,
            metavar="on|off",
            help="BatchNorm after each hidden Linear layer (fused with the activation)",
        )
        t.add_argument(
            "--dropout",
            type=float,
            default=d.dropout,
            help="drop probability after each hidden layer",
        )
        t.add_argument(
            "--optimizer", choices=sorted(optim.OPTIMIZERS), default=d.optimizer, help="update rule"
        )
        t.add_argument("--lr", type=float, default=d.lr, help="learning rate")
        t.add_argument("--momentum", type=float, default=d.momentum, help="for sgd and rmsprop")
        t.add_argument(
            "--weight-decay",
            type=float,
            default=d.weight_decay,
            help="L2 weight decay in the optimizer",
        )
        t.add_argument(
            "--reg", type=float, default=d.reg, help="L2 strength as an explicit loss term"
        )
        t.add_argument(
            "--schedule",
            choices=sorted(SCHEDULES),
            default=d.schedule,
            help="learning-rate schedule",
        )
        t.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training data")
        t.add_argument(
            "--batch-size", type=int, default=d.batch_size, help="examples per mini-batch"
        )
        t.add_argument(
            "--preprocess",
            choices=sorted(preprocess.PREPROCESSORS),
            default=d.preprocess,
            help="fitted on the training split only, saved in the checkpoint",
        )
        t.add_argument(
            "--backend",
            choices=["auto", "numpy", "cupy"],
            default=d.backend,
            help="auto: GPU if present (default from GPUNET_BACKEND)",
        )
        t.add_argument(
            "--kernels",
            choices=["auto", "cupy", "numba"],
            default=d.kernels,
            help="GPU kernel path (default from GPUNET_KERNELS)",
        )
        t.add_argument(
            "--seed",
            type=int,
            default=d.seed,
            help="makes the run reproducible (init, shuffles, dropout)",
        )
        t.add_argument("--out", default="runs/latest", help="output folder (the run folder)")
        if resume:
            t.add_argument(
                "--resume",
                action="store_true",
                help="continue from OUT/checkpoint.npz if it exists",
            )
        t.add_argument(
            "--overwrite",
            action="store_true",
            help="replace what --out holds (another run): without it that is refused, and the "
            "default --out moves an earlier run aside",
        )
        t.add_argument("--no-progress", action="store_true", help="no progress bar")
        t.add_argument("--no-plot", action="store_true", help="no curves.png (it is drawn last)")

    parser = argparse.ArgumentParser(
        prog="gpunet", description="Train neural networks well, on a GPU or a CPU."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train",
        help="train an MLP or a convnet on a data set and save history, curves and a checkpoint",
        description="Train an MLP (Linear -> BatchNorm -> activation -> Dropout, repeated) or, "
        "with --model convnet, conv blocks (Conv2d -> BatchNorm2d -> activation -> MaxPool2d) "
        "before those layers, and write config.json, history.json/.csv, curves.png and "
        "checkpoint.npz to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    options(t)
    t.add_argument(
        "--monitor",
        action="store_true",
        help="babysitting monitors during the run (update/weight ratios, gradient norms, dead and "
        "saturated units, train/val gap, exploding loss): alerts, and monitor-*.png in --out",
    )
    b = sub.add_parser(
        "babysit",
        help="the lecture's checklist on a configuration: report.md and figures in --out",
        description="Initial loss, regularization, overfitting a small subset, gradient check, "
        "learning-rate range, activations per layer, then a short monitored run and a reading of "
        "its curves; one line per check, report.md and figures in --out. Takes the options of "
        "`gpunet train`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    options(b, resume=False)
    b.set_defaults(out="runs/babysit", epochs=10)
    se = sub.add_parser(
        "search",
        help="hyperparameter search: random or coarse-to-fine, journaled, resumable, parallel",
        description="Random search (or coarse to fine with --stages) over log-scaled ranges of "
        "the learning rate and the regularization, on the validation set, with the other options "
        "of `gpunet train` fixed. Prints the trials sorted by validation accuracy and saves the "
        "scatter plot; every finished trial goes to a journal, and a rerun skips them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    options(se, resume=False)
    se.set_defaults(out="runs/search", epochs=5)
    se.add_argument("--trials", type=int, default=20, help="trials (random search)")
    se.add_argument(
        "--lr-range",
        default="1e-4,1",
        metavar="LOW,HIGH",
        help="learning rates, sampled on a log scale",
    )
    se.add_argument(
        "--reg-range",
        default="1e-6,1e-2",
        metavar="LOW,HIGH",
        help="L2 strengths, sampled on a log scale ('off': not searched)",
    )
    se.add_argument(
        "--stages",
        default=None,
        metavar="N:EPOCHS,...",
        help="coarse to fine, e.g. 20:2,10:8 (overrides --trials and --epochs)",
    )
    se.add_argument("--workers", type=int, default=0, help="local processes (0: in this process)")
    se.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="a Dask scheduler (tcp://host:8786): one trial per worker (per GPU)",
    )
    se.add_argument(
        "--journal", default=None, help="JSON-lines journal (default OUT/journal.jsonl)"
    )
    se.add_argument("--search-seed", type=int, default=0, help="seed of the sampled configurations")
    se.add_argument("--max-failures", type=int, default=None, help="stop after this many failures")
    se.add_argument(
        "--engine",
        choices=["gpunet", "optuna"],
        default="gpunet",
        help="optuna: a TPE study with pruning (needs gpunet[optuna])",
    )
    se.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: sqlite:///OUT/study.db, so a rerun resumes)",
    )
    se.add_argument(
        "--study",
        default=None,
        help="Optuna study name (default: derived from the search's definition)",
    )
    st = sub.add_parser(
        "init-study",
        help="the lecture's weight-initialization experiment: per-layer activation histograms",
        description="A net of --layers x (Linear(width, width) -> activation) on unit-Gaussian "
        "input (--model convnet: 3x3 Conv2d(width, width) -> activation on unit-Gaussian images), "
        "one forward and one backward pass per initialization: the per-layer table (std, "
        "saturated, dead, gradient RMS) and a figure with one row of histograms per init.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    st.add_argument("--layers", type=int, default=10, help="depth")
    st.add_argument(
        "--model",
        choices=MODELS,
        default="mlp",
        help="mlp: Linear layers; convnet: 3x3 Conv2d layers (fan-in width x 9) on images",
    )
    st.add_argument(
        "--width", type=int, default=None, help="units per layer (convnet: channels) [500; 32]"
    )
    st.add_argument(
        "--image-size", type=int, default=16, help="convnet: the input images' height and width"
    )
    st.add_argument(
        "--activation",
        default="tanh",
        choices=sorted(ACTIVATION_LAYERS),
        metavar="NAME",
        help="activation after every layer",
    )
    st.add_argument(
        "--init",
        default="small_random,normal,xavier_normal,kaiming_normal",
        help=f"comma-separated initializations to compare: {', '.join(sorted(init.INITIALIZERS))}",
    )
    st.add_argument("--examples", type=int, default=1000, help="unit-Gaussian input rows")
    st.add_argument("--seed", type=int, default=0, help="weights and input")
    st.add_argument("--out", default="runs/init-study.png", help="the figure (.png, .pdf or .svg)")
    st.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    inf = sub.add_parser(
        "info",
        help="versions, backend, GPU name and memory, which kernel paths work",
        description="Print versions, the active backend, the GPU (name, memory), which kernel "
        "paths work, and which library runs the CPU's matrix products and why.",
    )
    inf.add_argument(
        "--measure-blas",
        action="store_true",
        help="time MKL and NumPy's BLAS again on this machine (else the kept result is used)",
    )
    if suppress_defaults:
        for p in (t, b, se, st):
            p._defaults.clear()  # set_defaults' values (babysit's --out, ...) are defaults too
            for action in p._actions:
                action.default = argparse.SUPPRESS
    return parser


#: how the command line spells each option of TrainConfig, for error messages
OPTION_NAMES = {
    "data_dir": "--data-dir",
    "weight_decay": "--weight-decay",
    "batch_size": "--batch-size",
    "kernel_size": "--kernel-size",
    "no_progress": "--no-progress",
    "plot": "--no-plot",
    "overwrite": "--overwrite",
}


def option_names() -> dict:
    from .run import TrainConfig

    return {
        f.name: OPTION_NAMES.get(f.name, f"--{f.name}") for f in dataclasses.fields(TrainConfig)
    }


def explicit_options(argv: list) -> set:
    """The TrainConfig fields the user typed on the command line."""
    return set(vars(build_parser(suppress_defaults=True).parse_args(argv)))


def _environment_errors(explicit: set) -> str | None:
    import os

    from .dispatch import GPU_CHOICES

    for var, opt, choices in (
        ("GPUNET_BACKEND", "backend", ("auto", "numpy", "cupy")),
        ("GPUNET_KERNELS", "kernels", GPU_CHOICES),
    ):
        value = os.environ.get(var)
        if value is not None and opt not in explicit and value not in choices:
            return f"the environment variable {var} must be one of {list(choices)}, got {value!r}"
    return None


def cmd_train(args: argparse.Namespace, argv: list | None = None) -> int:
    from .backend import BackendError
    from .checkpoint import CheckpointError
    from .run import ConfigError, RunInterrupted, run
    from .train import TrainingDiverged

    explicit = explicit_options(argv if argv is not None else sys.argv[1:])
    problem = _environment_errors(explicit)
    if problem:
        print(f"gpunet train: error: {problem}", file=sys.stderr)
        return 2
    cfg = _config(args)
    try:
        result = run(cfg, explicit=explicit, names=option_names(), monitor=args.monitor)
    except TrainingDiverged as exc:
        print(f"gpunet train: {exc}", file=sys.stderr)
        return 1
    except RunInterrupted as exc:
        print(f"gpunet train: {exc}", file=sys.stderr)
        return 130
    except (CheckpointError, ConfigError, BackendError, ValueError, FileNotFoundError) as exc:
        print(f"gpunet train: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        return _last_word("train", exc, "nothing of this run was saved")
    import gpunet

    cfg = result.get("config", cfg)
    print(
        f"backend {gpunet.get_backend()} ({gpunet.device_name()}); dataset {cfg.dataset}; "
        f"{cfg.epochs} epochs in {sum(result['history'].time):.1f} s"
    )
    print(f"val accuracy {result['val_acc']:.4f}  test accuracy {result['test_acc']:.4f}")
    files = "config.json history.json history.csv " + ("curves.png " if cfg.plot else "")
    print(f"wrote {cfg.out}/: {files}checkpoint.npz")
    return 0


def _last_word(command: str, exc: BaseException, interrupted_note: str) -> int:
    """One line for Ctrl-C outside the epochs and for a failed write (a full disk, a read-only
    folder): the exit code, or ``exc`` raised again if it is neither."""
    from ._checks import interrupted

    if interrupted(exc):
        print(f"gpunet {command}: interrupted: {interrupted_note}", file=sys.stderr)
        return 130
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) not in what:
            what = f"cannot write {exc.filename}: {what}"
        print(
            f"gpunet {command}: error: {what} (files already written are intact)", file=sys.stderr
        )
        return 1
    raise exc


def _config(args: argparse.Namespace) -> TrainConfig:
    from .run import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["progress"] = False if args.no_progress else None
    values["plot"] = not args.no_plot
    return TrainConfig(**values)


def cmd_babysit(args: argparse.Namespace, argv: list | None = None) -> int:
    """The checklist, one line per check (verdict first); exit 1 if a check failed."""
    from .backend import BackendError
    from .checkpoint import CheckpointError
    from .diagnose.report import babysit
    from .run import ConfigError

    explicit = explicit_options(argv if argv is not None else sys.argv[1:])
    cfg = _config(args)
    try:
        results = babysit(cfg, names=option_names(), log=print, explicit_out="out" in explicit)
    except (CheckpointError, ConfigError, BackendError, ValueError, FileNotFoundError) as exc:
        print(f"gpunet babysit: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        return _last_word("babysit", exc, "no report was written")
    failed = [r for r in results if r.verdict == "fail"]
    print(
        f"{len(results)} checks: {len(results) - len(failed)} passed or warned, "
        f"{len(failed)} failed"
    )
    return 1 if failed else 0


def _log_range(text: str, option: str) -> tuple:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{option} must be LOW,HIGH (two numbers), got {text!r}") from None
    if not 0 < low < high:
        raise ValueError(f"{option} must have 0 < LOW < HIGH (a log scale), got {text!r}")
    return low, high


def _stages(text: str) -> list:
    try:
        stages = [tuple(int(v) for v in part.split(":")) for part in text.split(",")]
    except ValueError:
        stages = []
    if not stages or any(len(s) != 2 or s[0] < 1 or s[1] < 1 for s in stages):
        raise ValueError(f"--stages must be N:EPOCHS pairs such as 20:2,10:8, got {text!r}")
    return stages


def cmd_search(args: argparse.Namespace, argv: list | None = None) -> int:
    """A search over lr (and reg) with the rest of a `gpunet train` configuration fixed."""
    from . import tune
    from .backend import BackendError
    from .run import ConfigError

    explicit = explicit_options(argv if argv is not None else sys.argv[1:])
    cfg = _config(args)
    try:
        cfg.validate(option_names())
        space = {"lr": tune.LogUniform(*_log_range(args.lr_range, "--lr-range"))}
        if args.reg_range != "off":
            space["reg"] = tune.LogUniform(*_log_range(args.reg_range, "--reg-range"))
        stages = _stages(args.stages) if args.stages else None
        if args.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {args.trials}")
        if args.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {args.workers}")
        _search_conflicts(args, explicit, space, stages)
    except (ValueError, ConfigError) as exc:
        print(f"gpunet search: error: {exc}", file=sys.stderr)
        return 2
    try:
        return _search(args, cfg, explicit, space, stages)
    except tune.SearchStopped as exc:
        print(f"gpunet search: {exc}", file=sys.stderr)
        return 1
    except (ImportError, BackendError, ConfigError, ValueError) as exc:
        print(f"gpunet search: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        journal = args.journal or f"{cfg.out}/journal.jsonl"
        note = (
            f"finished trials are in {journal}, and the same command resumes the search"
            if args.engine == "gpunet"
            else "the same command resumes the study"
        )
        return _last_word("search", exc, note)


def _search_conflicts(args: argparse.Namespace, explicit: set, space: dict, stages: list | None):
    """Options a search would ignore are an error, not silence."""
    ignored = {
        "lr": "the search samples it: give --lr-range",
        "reg": "the search samples it: give --reg-range (or --reg-range off to fix it)",
    }
    for opt, why in ignored.items():
        if opt in explicit and opt in space:
            raise ValueError(f"--{opt} is not used by a search ({why})")
    if stages and "epochs" in explicit:
        raise ValueError("--epochs is not used with --stages (each stage gives its epochs)")
    if stages and "trials" in explicit:
        raise ValueError("--trials is not used with --stages (each stage gives its trials)")
    if args.engine == "optuna":
        for opt, value, why in (
            ("--stages", args.stages, "Optuna's pruner stops weak trials instead"),
            ("--journal", args.journal, "the study in --storage is its journal"),
            ("--scheduler", args.scheduler, "run more processes on one --storage instead"),
            (
                "--workers",
                args.workers,
                "Optuna runs parallel trials as threads sharing gpunet's backend; run more "
                "processes on one --storage instead",
            ),
            ("--max-failures", args.max_failures, "Optuna records failures and goes on"),
        ):
            if value:
                raise ValueError(f"{opt} is not supported with --engine optuna ({why})")
    elif args.storage or "study" in explicit:
        raise ValueError("--storage and --study are for --engine optuna")


def _search(
    args: argparse.Namespace, cfg: TrainConfig, explicit: set, space: dict, stages: list | None
) -> int:
    import contextlib
    import os

    from . import tune
    from .outputs import hold, set_aside, writable_file, writable_folder
    from .run import RUN_FILES, ConfigError

    names = option_names()
    out = writable_folder(cfg.out, "--out")
    default_journal = args.journal is None
    journal = args.journal or os.path.join(out, "journal.jsonl")
    writable_file(journal, "--journal", option="journal")
    objective = tune.MLPObjective(cfg)
    with contextlib.ExitStack() as held:
        held.enter_context(hold(out, "--out"))
        if not default_journal:
            held.enter_context(hold(journal, "--journal", option="journal"))
        others = [n for n in RUN_FILES if n != "journal.jsonl" and os.path.exists(f"{out}/{n}")]
        if others and not cfg.overwrite:
            if "out" not in explicit:
                print(f"the earlier run in {out} was moved to {set_aside(out)}", file=sys.stderr)
            else:
                raise ConfigError(
                    "out",
                    f"--out {out!r} holds a run of another command ({', '.join(others)}). To go "
                    "on: choose another --out, or replace it with --overwrite",
                )
        if args.engine == "optuna":
            return _optuna_search(args, objective, space, out, names)
        definition = tune.search_definition(
            objective,
            "coarse_to_fine" if stages else "random",
            space,
            "val_acc",
            "max",
            **({"stages": [list(s) for s in stages], "keep_top": 0.2} if stages else {}),
        )
        try:
            tune.journal.Journal(journal).claim(definition)
        except tune.JournalMismatch as exc:
            if cfg.overwrite:
                os.unlink(journal)
                print(
                    f"--overwrite: the journal of another search in {journal} is replaced",
                    file=sys.stderr,
                )
            elif default_journal and "out" not in explicit:
                print(f"the earlier search in {out} was moved to {set_aside(out)}", file=sys.stderr)
            else:
                what = "; ".join(
                    f"{_option_of(k, names)} {a!r} there, {b!r} here" for k, a, b in exc.differences
                )
                option = "--out" if default_journal else "--journal"
                raise ConfigError(
                    "journal",
                    f"{option} {out if default_journal else journal!r} holds the journal of "
                    f"another search ({what}). To go on: choose another {option}, or start over "
                    "there with --overwrite",
                ) from None
        executor = args.scheduler or (args.workers if args.workers > 0 else None)
        progress = False if args.no_progress else None
        # on a Dask cluster with --backend cupy, each trial asks for one GPU of a worker
        # started with --resources GPU=<count>: one trial per GPU at a time
        common = dict(
            seed=args.search_seed,
            executor=executor,
            journal=journal,
            max_failures=args.max_failures,
            progress=progress,
            gpu_per_trial=bool(args.scheduler) and cfg.backend == "cupy",
            definition=definition,
        )
        try:
            if stages:
                results = tune.coarse_to_fine(objective, space, stages, **common)
            else:
                results = tune.random_search(objective, space, args.trials, **common)
        except tune.SearchStopped as exc:
            print(f"gpunet search: {exc}", file=sys.stderr)
            results = exc.results
        return _search_report(results, out, journal, args)


def _option_of(key: str, names: dict) -> str:
    """``objective.base.hidden`` -> ``--hidden``; other keys as they are."""
    last = key.rsplit(".", 1)[-1]
    if key.startswith("objective.base."):
        return names.get(last, f"--{last}")
    return {"space.lr": "--lr-range", "space.reg": "--reg-range", "stages": "--stages"}.get(
        key, key
    )


def _search_report(results: object, out: str, journal: str | None, args: argparse.Namespace) -> int:
    import os

    print(results.table())  # type: ignore[attr-defined]
    written = [journal] if journal else []
    if not args.no_plot:
        plot = os.path.join(out, "search.png")
        results.plot(plot)  # type: ignore[attr-defined]
        written.insert(0, plot)
    best = results.best  # type: ignore[attr-defined]
    if best is not None:
        print(
            f"best: val accuracy {best.value:.4f} with "
            + ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in best.params.items()
            )
        )
    if written:
        print(f"wrote {' and '.join(written)}")
    return 0 if best is not None else 1


def _optuna_search(
    args: argparse.Namespace, objective: Callable, space: dict, out: str, names: dict
) -> int:
    import os

    from . import tune

    storage = args.storage or f"sqlite:///{os.path.abspath(os.path.join(out, 'study.db'))}"
    definition = tune.search_definition(objective, "optuna", space, "val_acc", "max")
    study = args.study or f"gpunet-{tune.journal.definition_hash(definition)}"
    results = tune.optuna_search(
        objective, space, args.trials, storage=storage, study_name=study, seed=args.search_seed
    )
    code = _search_report(results, out, None, args)
    print(f"the study {study!r} is in {storage}: the same command resumes it")
    return code


def cmd_init_study(args: argparse.Namespace, argv: list | None = None) -> int:
    import os

    from . import init as initializers

    inits = [i.strip() for i in args.init.split(",") if i.strip()]
    unknown = [i for i in inits if i not in initializers.INITIALIZERS]
    if not inits or unknown:
        print(
            f"gpunet init-study: error: --init must name initializations among "
            f"{sorted(initializers.INITIALIZERS)}, got {args.init!r}",
            file=sys.stderr,
        )
        return 2
    if args.width is None:
        args.width = 32 if args.model == "convnet" else 500
    for name, value, low in (
        ("--layers", args.layers, 1),
        ("--width", args.width, 1),
        ("--examples", args.examples, 2),
        ("--image-size", args.image_size, 1),
    ):
        if value < low:
            print(
                f"gpunet init-study: error: {name} must be >= {low}, got {value}", file=sys.stderr
            )
            return 2
    from .outputs import set_aside_file, writable_file
    from .run import ConfigError

    explicit = explicit_options(argv if argv is not None else sys.argv[1:])
    try:
        writable_file(args.out, "--out", (".png", ".pdf", ".svg"))
        if os.path.exists(args.out) and not args.overwrite:
            if "out" in explicit:
                raise ConfigError(
                    "out",
                    f"--out {args.out!r} exists: choose another file, or replace it with "
                    "--overwrite",
                )
            folder = set_aside_file(args.out)
            print(f"the earlier figure {args.out} was moved to {folder}", file=sys.stderr)
    except ConfigError as exc:
        print(f"gpunet init-study: error: {exc}", file=sys.stderr)
        return 2
    try:
        return _init_study(args, inits)
    except BaseException as exc:
        return _last_word("init-study", exc, "no figure was written")


def _init_study(args: argparse.Namespace, inits: list) -> int:
    from .diagnose import init_study, plot_init_study, study_table

    studies = {}
    for init in inits:
        stats = init_study(
            args.activation,
            init,
            layers=args.layers,
            width=args.width,
            n=args.examples,
            seed=args.seed,
            model=args.model,
            image_size=args.image_size,
        )
        studies[f"{init}, {args.activation}"] = stats
        print(study_table(f"{init} with {args.activation}:", stats))
    what = (
        f"3x3 conv channels on {args.image_size}x{args.image_size} images"
        if args.model == "convnet"
        else "units"
    )
    plot_init_study(
        studies,
        args.out,
        title=f"{args.layers} layers of {args.width} {what}, "
        f"{args.activation}: activations per layer, one row per initialization",
    )
    print(f"wrote {args.out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numba
    import numpy

    import gpunet

    from .backend import probe_cupy
    from .dispatch import numba_cuda_problem

    print(
        f"gpunet {gpunet.__version__}  Python {platform.python_version()}  numpy "
        f"{numpy.__version__}  "
        f"numba {numba.__version__}"
    )
    from .kernels.shared.numba_cache import cache_usage

    for folder, files, size in cache_usage():
        print(f"kernel cache: {folder}: {files} files, {size / 2**20:.1f} MiB")
    print(
        "(GPUNET_CACHE_DIR moves the Numba kernel cache; CuPy keeps its own in "
        "~/.cupy/kernel_cache or CUPY_CACHE_DIR)"
    )
    from .kernels.shared import cpu_blas

    if getattr(args, "measure_blas", False):
        cpu_blas.forget_measurement()
    hint = ""
    if cpu_blas.mkl_problem() is not None and sys.platform == "linux":
        if platform.machine() == "x86_64":
            hint = " (pip install 'gpunet[mkl]' adds MKL; gpunet then measures both)"
    print(f"CPU matrix products: {cpu_blas.choice_reason()}{hint}")
    from .kernels.shared import cpu_memory

    print(f"CPU memory: {cpu_memory.state()}")
    from .kernels.shared import cpu_threads

    print(f"CPU threads: {cpu_threads.openmp_spin_state()}")
    cupy, reason = probe_cupy()
    if cupy is None:
        print(f"GPU: unavailable ({reason})")
        print(
            "backend: numpy (CPU); kernel paths: Numba CPU kernels (activations, BatchNorm, "
            "optimizer updates, softmax cross-entropy) and the NumPy reference"
        )
        return 0
    print(f"cupy {cupy.__version__}")
    gpunet.set_backend("cupy")
    free, total = cupy.cuda.runtime.memGetInfo()
    print(f"GPU: {gpunet.device_name()}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)")
    failure = _kernel_check(cupy)
    if failure:
        print(f"kernel check FAILED: {failure}")
        return 1
    print("kernel check: relu on 4 values compiled and ran, results correct")
    problem = numba_cuda_problem()
    print(
        "kernel paths: cupy (vectorized RawKernel + ElementwiseKernel): ok; numba: "
        + ("ok" if problem is None else f"unusable ({problem})")
    )
    return 0


def _kernel_check(cupy: ModuleType):
    """None if a CuPy kernel of gpunet compiles (NVRTC and the CUDA headers must be installed:
    the ``ctk`` extra of cupy-cuda1Nx) and computes the right values here, else why not."""
    from .functional import relu

    try:
        y = relu(cupy.asarray([-2.0, -0.5, 0.5, 2.0], dtype=cupy.float32))
        values = cupy.asnumpy(y).tolist()
    except Exception as exc:  # a missing NVRTC, a driver too old for the compiled code, ...
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    if values != [0.0, 0.0, 0.5, 2.0]:
        return f"relu gave {values}, expected [0.0, 0.0, 0.5, 2.0]"
    return None


def main(argv: list[str] | None = None) -> int:
    """The ``gpunet`` command: ``argv`` (default: the process's own arguments, as the console
    script and ``python -m gpunet`` call it)."""
    from ._checks import catch_lost_ctrl_c

    with catch_lost_ctrl_c():
        code = _main(argv)
    if argv is None:  # the process ends with this command: see _skip_last_collection
        _skip_last_collection()
    return code


def _skip_last_collection() -> None:
    """Exempt every object alive now from the interpreter's garbage collection at exit: after a
    command that compiled or loaded Numba kernels that collection walks Numba's typing and
    lowering registries, 0.2-0.25 s of a 1.3 s `gpunet train` (measured: a process that only
    calls one njit function ends 0.25 s sooner). Files are closed by then -- every output is
    written atomically and closed before the command returns -- so nothing is lost; only a
    program that goes on after ``main()`` would keep garbage, hence not with an explicit argv."""
    import gc

    gc.freeze()


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "info":
        return cmd_info(args)
    commands = {
        "train": cmd_train,
        "babysit": cmd_babysit,
        "search": cmd_search,
        "init-study": cmd_init_study,
    }
    return commands[args.command](args, argv)


if __name__ == "__main__":
    sys.exit(main())
