"""The lecture's sanity checks before a long training run, each a ``CheckResult`` with a verdict.

* ``check_initial_loss``: with small weights, softmax on C classes starts near log(C) (the hinge
  loss near C - 1); far from it means a bug or a bad initialization.
* ``check_regularization``: turning L2 regularization on makes the loss go up.
* ``overfit_small_subset``: a handful of examples, no regularization: the training accuracy must
  reach 100 % and the loss ~0. If it cannot, something is broken (backward, learning rate).
* ``gradient_check``: analytic gradients against centered differences in float64 on a sample of
  every parameter tensor; relative error < 1e-7 good, < 1e-4 acceptable with kinks, else wrong.
  Kinks (ReLU at 0, Maxout's argmax) crossed by a difference are counted and left out.
* ``lr_range_test``: a short run per learning rate on a log scale: where the loss barely moves
  (too low), where it falls fastest, where it explodes or goes NaN (too high); suggests a range.

Every check works on copies: the model passed in is not changed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy

from gpunet.types import Array, PathLike

from .. import nn, optim
from ..backend import asarray, get_array_module, to_numpy
from .results import FAIL, PASS, WARN, CheckResult

__all__ = [
    "check_initial_loss",
    "check_regularization",
    "overfit_small_subset",
    "gradient_check",
    "lr_range_test",
    "LRRangeResult",
]


def _loss_of(model: nn.Module, loss: Callable, X: Array, y: Array) -> float:
    """The loss of one forward pass in training mode; BatchNorm's running statistics are put
    back afterwards (a check must not move them)."""
    buffers = {k: v.copy() for k, v in model.state_dict().items()}
    try:
        model.train()
        return float(loss(model(asarray(X)), asarray(y))[0])
    finally:
        model.load_state_dict(buffers)


def _expected_initial_loss(loss: Callable, n_classes: int) -> tuple:
    if isinstance(loss, nn.MulticlassSVM):
        return float(n_classes - 1) * loss.margin, f"(C - 1) * margin = {n_classes - 1:g}"
    return math.log(n_classes), f"log(C) = log({n_classes}) = {math.log(n_classes):.3f}"


def check_initial_loss(
    model: nn.Module, X: Array, y: Array, loss: Callable | None = None, tolerance: float = 0.1
) -> CheckResult:
    """The loss before any training, against log(C) (softmax) or C - 1 (hinge), no
    regularization. Within ``tolerance`` (relative): pass; within 5x that: warn; else fail."""
    loss = loss or nn.SoftmaxCrossEntropy()
    value = _loss_of(model, loss, X, y)
    C = int(model(asarray(X[:2])).shape[1])
    expected, formula = _expected_initial_loss(loss, C)
    rel = abs(value - expected) / expected
    numbers = {"loss": value, "expected": expected, "relative_difference": rel, "classes": C}
    if not math.isfinite(value):
        return CheckResult(
            "initial loss",
            FAIL,
            f"the initial loss is {value}: check the data and the initialization",
            numbers,
        )
    verdict = PASS if rel <= tolerance else WARN if rel <= 5 * tolerance else FAIL
    hint = {
        PASS: "as expected for small random weights",
        WARN: "a bit off: weights not small, or classes imbalanced",
        FAIL: "far off: a bug in the loss or the forward pass, or weights far too large",
    }[verdict]
    return CheckResult(
        "initial loss",
        verdict,
        f"{value:.4f} vs {formula} ({100 * rel:.0f} % off): {hint}",
        numbers,
    )


def check_regularization(
    model: nn.Module, X: Array, y: Array, reg: float = 1e-1, loss: Callable | None = None
) -> CheckResult:
    """The loss without and with an L2 term of strength ``reg``: it must go up."""
    loss = loss or nn.SoftmaxCrossEntropy()
    plain = _loss_of(model, loss, X, y)
    penalty = float(to_numpy(nn.l2_penalty(model, reg)))
    with_reg = plain + penalty
    numbers = {"loss": plain, "loss_with_reg": with_reg, "reg": reg}
    if with_reg > plain:
        return CheckResult(
            "regularization",
            PASS,
            f"loss {plain:.4f} -> {with_reg:.4f} with reg = {reg:g}: goes up, as it must",
            numbers,
        )
    return CheckResult(
        "regularization",
        FAIL,
        f"loss {plain:.4f} -> {with_reg:.4f} with reg = "
        f"{reg:g}: it should go up (is the penalty wired in?)",
        numbers,
    )


def overfit_small_subset(
    model: nn.Module,
    X: Array,
    y: Array,
    n: int = 20,
    epochs: int = 200,
    lr: float = 1e-2,
    loss: Callable | None = None,
    seed: int = 0,
) -> CheckResult:
    """Train a copy of ``model`` on ``n`` examples without regularization (Adam, full batch):
    training accuracy must reach 100 % and the loss go near 0 (< 0.05 passes; 100 % with a loss
    < 0.5 warns)."""
    from ..train import fit

    loss = loss or nn.SoftmaxCrossEntropy()
    net = copy.deepcopy(model)
    Xs, ys = X[:n], y[:n]
    history = fit(
        net,
        loss,
        optim.Adam(net.parameters(), lr),
        Xs,
        ys,
        epochs=epochs,
        batch_size=len(Xs),
        progress=False,
        seed=seed,
    )
    final_loss, acc = history.loss[-1], history.train_acc[-1]
    numbers = {"examples": len(Xs), "epochs": epochs, "final_loss": final_loss, "train_acc": acc}
    if acc >= 1.0 and final_loss < 0.05:
        return CheckResult(
            "overfit small subset",
            PASS,
            f"{len(Xs)} examples: train acc {acc:.0%}, loss {final_loss:.3g} after {epochs} epochs",
            numbers,
        )
    verdict = WARN if acc >= 1.0 and final_loss < 0.5 else FAIL
    return CheckResult(
        "overfit small subset",
        verdict,
        f"{len(Xs)} examples: train acc {acc:.0%}, loss {final_loss:.3g} after {epochs} epochs -- "
        "a correct net memorizes a handful of examples; look for a bug in a backward pass, "
        "or a learning rate far off",
        numbers,
    )


# ----------------------------------------------------------------------------- gradient check
KINK_LAYERS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Maxout, nn.MaxPool2d)


def _float64_copy(model: nn.Module) -> nn.Module:
    net = copy.deepcopy(model)
    for p in net.parameters():
        p.data = p.data.astype("float64")
        p.grad = None
    for _, m, name, b in list(net.named_buffers()):
        if b.dtype.kind == "f":
            m._buffers[name] = b.astype("float64")
    for _, m in net.named_modules():
        m.train(not isinstance(m, nn.Dropout))  # dropout off: the function must be fixed
    return net


def _kink_pattern(net: nn.Module, X: Array) -> tuple:
    """Which side of every kink each input of a kink layer is on, for one forward pass."""
    pattern = []
    x = X
    layers = list(net) if isinstance(net, nn.Sequential) else [net]
    for m in layers:
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.activation in (
            "relu",
            "leaky_relu",
        ):
            y = m(x)
            pattern.append(to_numpy(y) > 0)
            x = y
            continue
        if isinstance(m, nn.Maxout):  # the winning piece of every group
            v = to_numpy(x)
            pattern.append(v.reshape(v.shape[0], -1, m.pieces, *v.shape[2:]).argmax(axis=2))
        elif isinstance(m, KINK_LAYERS):
            pattern.append(to_numpy(x) > 0)
        x = m(x)
    return tuple(numpy.asarray(p).tobytes() for p in pattern)


#: below this both gradients are ~0 and their difference is compared in absolute terms
FLAT = 1e-7


def gradient_check(
    model: nn.Module,
    loss: Callable | None,
    X: Array,
    y: Array,
    samples: int = 8,
    h: float = 1e-5,
    seed: int = 0,
) -> CheckResult:
    """Centered differences in float64 on ``samples`` entries of every parameter tensor (all of
    them for tensors that small) against the analytic gradient of ``loss(model(X), y)``.
    ``numbers["tensors"]``: per tensor the largest relative error and the kinks crossed."""
    loss = loss or nn.SoftmaxCrossEntropy()
    net = _float64_copy(model)
    X = asarray(X).astype("float64")
    y = asarray(y)

    def value() -> float:
        return float(loss(net(X), y, check=False)[0])

    base_pattern = _kink_pattern(net, X)
    _, dscores = loss(net(X), y)
    net.zero_grad()
    net.backward(dscores)
    rng = numpy.random.default_rng(seed)
    tensors, worst, kinks_total, flat_total, flat_worst = {}, 0.0, 0, 0, 0.0
    for name, p in net.named_parameters():
        flat = p.data.reshape(-1)
        grad = to_numpy(p.grad).reshape(-1)
        idx = (
            range(flat.size)
            if flat.size <= samples
            else rng.choice(flat.size, samples, replace=False)
        )
        errors, kinks, flat_diffs = [], 0, []
        for i in idx:
            old = float(flat[i])
            flat[i] = old + h
            plus, pattern_plus = value(), _kink_pattern(net, X)
            flat[i] = old - h
            minus, pattern_minus = value(), _kink_pattern(net, X)
            flat[i] = old
            if pattern_plus != base_pattern or pattern_minus != base_pattern:
                kinks += 1  # a difference across a kink measures nothing
                continue
            numeric = (plus - minus) / (2 * h)
            analytic = float(grad[i])
            diff = abs(numeric - analytic)
            if max(abs(numeric), abs(analytic)) < FLAT:
                # both ~0 (a bias in front of BatchNorm): a relative error of the differences'
                # rounding noise means nothing; compared in absolute terms instead
                flat_diffs.append(diff)
            else:
                errors.append(diff / (abs(numeric) + abs(analytic)))
        err = max(errors) if errors else 0.0
        flat = max(flat_diffs) if flat_diffs else 0.0
        tensors[name] = {
            "max_relative_error": err,
            "checked": len(errors),
            "kinks_crossed": kinks,
            "near_zero": len(flat_diffs),
            "near_zero_max_difference": flat,
        }
        worst, kinks_total = max(worst, err), kinks_total + kinks
        flat_total, flat_worst = flat_total + len(flat_diffs), max(flat_worst, flat)
    numbers = {
        "tensors": tensors,
        "max_relative_error": worst,
        "kinks_crossed": kinks_total,
        "near_zero": flat_total,
        "near_zero_max_difference": flat_worst,
    }
    bad = [
        k
        for k, t in tensors.items()
        if t["max_relative_error"] >= 1e-4 or t["near_zero_max_difference"] >= FLAT
    ]
    kink_note = (
        f"; {kinks_total} differences crossed a kink and were left out" if kinks_total else ""
    )
    if flat_total:
        kink_note += (
            f"; {flat_total} entries with a gradient ~0 (< {FLAT:.0e}) agree to "
            f"{flat_worst:.1e} absolute"
        )
    if bad:
        return CheckResult(
            "gradient check",
            FAIL,
            f"relative error up to {worst:.1e} in {', '.join(bad)} (>= 1e-4): the "
            f"backward pass of that layer is wrong{kink_note}",
            numbers,
        )
    verdict = PASS if worst < 1e-7 else WARN
    return CheckResult(
        "gradient check",
        verdict,
        f"max relative error {worst:.1e} over {len(tensors)} tensors (< 1e-7 good, "
        f"< 1e-4 acceptable near kinks){kink_note}",
        numbers,
    )


# ----------------------------------------------------------------------------- learning rates
@dataclass
class LRRangeResult(CheckResult):
    """``rows``: per learning rate (lr, start loss, end loss, status); ``suggested``: (low,
    high)."""

    rows: list = field(default_factory=list)
    suggested: tuple | None = None

    def plot(self, path: PathLike) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        lrs = [r["lr"] for r in self.rows]
        ratio = [
            r["end"] / r["start"] if math.isfinite(r["end"]) else float("nan") for r in self.rows
        ]
        ax.semilogx(lrs, ratio, "o-")
        for r in self.rows:
            if r["status"] == "explodes":
                ax.axvline(r["lr"], color="C3", alpha=0.3)
        if self.suggested:
            ax.axvspan(*self.suggested, color="C2", alpha=0.15, label="suggested range")
            ax.legend()
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(
            xlabel="learning rate",
            ylabel="loss after / before",
            title="learning-rate range test (red: explodes or NaN)",
        )
        ax.set_ylim(0, 3.2)
        fig.tight_layout()
        from ..outputs import save_figure

        save_figure(fig, path, dpi=100)
        plt.close(fig)


def lr_range_test(
    model: nn.Module,
    X: Array,
    y: Array,
    lrs: Sequence | None = None,
    steps: int = 30,
    batch_size: int = 64,
    momentum: float = 0.9,
    loss: Callable | None = None,
    seed: int = 0,
) -> LRRangeResult:
    """For each learning rate (default 1e-7 ... 10, log scale), ``steps`` SGD-momentum steps on a
    fresh copy of ``model``, the loss measured on a fixed batch (up to 512 examples) before and
    after. A rate whose loss falls by less than 1 % barely moves (too low); one whose loss rises
    past 3x the start or goes NaN explodes (too high); the suggested range runs from a tenth of
    the fastest-falling rate to that rate, below the first one that explodes."""
    from ..backend import host_rng, local_rng

    loss = loss or nn.SoftmaxCrossEntropy()
    lrs = list(lrs) if lrs is not None else list(10.0 ** numpy.arange(-7, 1.01, 0.5))
    Xd, yd = asarray(X), asarray(y)
    xp = get_array_module(Xd)
    fixed = slice(0, min(len(X), 512))

    def measured(net: nn.Module) -> float:
        with numpy.errstate(all="ignore"):
            return _loss_of(net, loss, Xd[fixed], yd[fixed])

    rows: list[dict[str, Any]] = []
    for lr in lrs:
        net = copy.deepcopy(model)
        net.train()
        opt = optim.SGD(net.parameters(), lr, momentum=momentum)
        start = measured(net)
        with local_rng(seed):
            for _ in range(steps):
                idx = host_rng().choice(len(X), min(batch_size, len(X)), replace=False)
                idx = idx if xp is numpy else xp.asarray(idx)
                with numpy.errstate(all="ignore"):
                    value, d = loss(net(Xd[idx]), yd[idx], check=False)
                    if not math.isfinite(float(value)) or float(value) > 3 * start:
                        break
                    net.zero_grad()
                    net.backward(d)
                    opt.step()
        end = measured(net)
        if not math.isfinite(end) or end > 3 * start:
            status = "explodes"
        elif end > 0.99 * start:
            status = "barely moves"
        else:
            status = "falls"
        rows.append({"lr": float(lr), "start": start, "end": end, "status": status})
    first_explode = next((r["lr"] for r in rows if r["status"] == "explodes"), None)
    falling = [
        r
        for r in rows
        if r["status"] == "falls" and (first_explode is None or r["lr"] < first_explode)
    ]
    suggested = None
    if falling:
        best = min(falling, key=lambda r: r["end"] / r["start"])
        suggested = (best["lr"] / 10, best["lr"])
    # too low: the rates that barely move below the first one that falls; a rate above the
    # falling ones that barely moves (BatchNorm keeps the loss flat as it bounces) is too high
    first_fall = min((r["lr"] for r in falling), default=None)
    too_low = [
        r["lr"]
        for r in rows
        if r["status"] == "barely moves"
        and (first_fall is None or r["lr"] < first_fall)
        and (first_explode is None or r["lr"] < first_explode)
    ]
    stalls = [
        r["lr"]
        for r in rows
        if r["status"] == "barely moves" and first_fall is not None and r["lr"] > first_fall
    ]
    too_high = [r["lr"] for r in rows if r["status"] == "explodes"]
    numbers = {
        "too_low": too_low,
        "too_high": too_high,
        "stalls_above": stalls,
        "suggested": suggested,
    }
    parts = []
    if too_low:
        parts.append(f"barely moves up to lr {max(too_low):.0e} (too low)")
    if stalls:
        parts.append(f"stops falling again from lr {min(stalls):.0e} (too high)")
    if too_high:
        parts.append(f"explodes or NaN from lr {min(too_high):.0e} (too high)")
    if suggested:
        parts.append(
            f"falls fastest at lr {suggested[1]:.0e}: try {suggested[0]:.0e} to "
            f"{suggested[1]:.0e} (the lecture's rough start: 1e-5 to 1e-3)"
        )
        verdict = PASS
    else:
        parts.append("no learning rate made the loss fall: check the data and the model")
        verdict = FAIL
    return LRRangeResult("learning-rate range", verdict, "; ".join(parts), numbers, rows, suggested)
