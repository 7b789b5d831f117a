"""``babysit``: the lecture's whole checklist on one configuration of ``gpunet train``, with a
report a user can look at (Markdown and figures in the run folder) and one line per check.

Order, as in the lecture: initial loss; regularization raises the loss; overfit a small subset;
gradient check; the learning-rate range; the activations and backward signal per layer; then a
short training run with every monitor on, and a reading of its curves.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from .. import nn
from ..outputs import atomic_write, hold, writable_folder
from ..run import TrainConfig, build, claim_folder, run
from ..train import TrainingDiverged
from .activations import gradient_flow, plot_init_study, study_table
from .checks import (
    check_initial_loss,
    check_regularization,
    gradient_check,
    lr_range_test,
    overfit_small_subset,
)
from .curves import read_history
from .results import FAIL, CheckResult

__all__ = ["babysit"]


def babysit(
    cfg: TrainConfig, names: dict | None = None, log: Callable = print, explicit_out: bool = True
) -> list:
    """Run every check on ``cfg`` (its model, data and preprocessing); write ``report.md`` and the
    figures into ``cfg.out``; return the ``CheckResult`` list. ``log`` gets one line per check,
    verdict first, as each finishes. The folder is checked and claimed first (``gpunet train``'s
    rule: a folder that holds another run is refused unless ``cfg.overwrite``; with
    ``explicit_out`` False, the default folder, the earlier run is moved aside)."""
    cfg.validate(names)
    out = cfg.out or "runs/babysit"
    label = (names or {}).get("out", "out")
    writable_folder(out, label)
    with hold(out, label):
        claim_folder(
            out,
            {**dataclasses.asdict(cfg), "command": "babysit"},
            explicit_out=explicit_out,
            overwrite=cfg.overwrite,
            names=names,
            log=log,
            ways=f"choose another {label}, or replace it with "
            f"{(names or {}).get('overwrite', 'overwrite')}",
        )
        return _babysit(dataclasses.replace(cfg, out=out), names, log)


def _babysit(cfg: TrainConfig, names: dict | None, log: Callable) -> list:
    out = cfg.out
    assert out is not None
    data, _, model = build(cfg, names)
    X, y = data["X_train"], data["y_train"]
    batch = slice(0, min(len(X), 512))
    loss = nn.SoftmaxCrossEntropy()
    results, figures = [], {}

    def add(result: CheckResult) -> None:
        results.append(result)
        log(result.line())

    add(check_initial_loss(model, X[batch], y[batch], loss))
    add(check_regularization(model, X[batch], y[batch], reg=max(cfg.reg, 0.1), loss=loss))
    add(overfit_small_subset(model, X, y, n=20, loss=loss, seed=cfg.seed))
    add(gradient_check(model, loss, X[:16], y[:16], seed=cfg.seed))
    lr = lr_range_test(model, X, y, loss=loss, batch_size=cfg.batch_size, seed=cfg.seed)
    add(lr)
    lr.plot(os.path.join(out, "lr_range.png"))
    figures["learning-rate range"] = "lr_range.png"
    model.train()
    stats = gradient_flow(model, X[batch])
    plot_init_study(
        {"this model": stats},
        os.path.join(out, "activations.png"),
        title="this model's activations per layer, training mode, one batch",
    )
    figures["activations per layer"] = "activations.png"
    table = study_table("per-layer activations and backward signal (one batch)", stats)
    try:
        trained = run(
            dataclasses.replace(cfg, resume=False, progress=False, overwrite=True),
            names=names,
            log=lambda message: None,
            monitor=True,
            command="babysit",
        )
    except TrainingDiverged as exc:
        add(_diverged(cfg, exc, lr, names))
        trained = None
    if trained is not None:
        for r in read_history(trained["history"]):
            add(r)
        for m in trained["monitors"]:
            for alert in dict.fromkeys(m.alerts):
                add(CheckResult(f"monitor {m.prefix}", "warn", alert))
            figures[f"monitor: {m.prefix}"] = f"monitor-{m.prefix}.png"
    figures["training curves"] = (
        "curves.png" if os.path.exists(os.path.join(out, "curves.png")) else "diverged-curves.png"
    )
    _write_report(out, cfg, results, table, figures, trained)
    log(f"wrote {out}/report.md and its figures")
    return results


def _diverged(
    cfg: TrainConfig, exc: TrainingDiverged, lr: CheckResult, names: dict | None
) -> CheckResult:
    """The short run's divergence as a verdict, with the learning rates that train."""
    option = (names or {}).get("lr", "lr")
    suggested = lr.numbers.get("suggested")
    advice = (
        f"the learning-rate range test trains with {option} {suggested[0]:.0e} to "
        f"{suggested[1]:.0e}"
        if suggested
        else "no learning rate of the range test made the loss fall: check the data and model"
    )
    first = str(exc).splitlines()[0]
    return CheckResult(
        "short run",
        FAIL,
        f"diverged with {option} {cfg.lr:g}: {first} -- {advice}",
        {"lr": cfg.lr, "suggested": suggested},
    )


def _write_report(
    out: str, cfg: TrainConfig, results: list, table: str, figures: dict, trained: dict | None
) -> None:
    lines = [
        "# Babysitting report",
        "",
        f"Configuration: dataset {cfg.dataset}, {cfg.architecture()}, {cfg.activation}, "
        f"init {cfg.init}, BatchNorm {'on' if cfg.batchnorm else 'off'}, {cfg.optimizer} "
        f"lr {cfg.lr:g}, {cfg.epochs} epochs, batch {cfg.batch_size}.",
        "",
        "| verdict | check | reading |",
        "|---|---|---|",
    ]
    for r in results:
        lines.append(f"| **{r.verdict.upper()}** | {r.name} | {r.message.replace('|', '/')} |")
    short = (
        f"Short run: val accuracy {trained['val_acc']:.4f}, test accuracy "
        f"{trained['test_acc']:.4f}."
        if trained is not None
        else "Short run: diverged (see the short-run check above)."
    )
    lines += [
        "",
        short,
        "",
        "```",
        table,
        "```",
        "",
    ]
    for title, path in figures.items():
        if os.path.exists(os.path.join(out, path)):
            lines += [f"## {title}", "", f"![{title}]({path})", ""]
    atomic_write(os.path.join(out, "report.md"), lambda f: f.write("\n".join(lines)))
