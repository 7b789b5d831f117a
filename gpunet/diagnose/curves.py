"""Reading a finished loss curve the way the lecture teaches: ``read_history(history)``.

Each shape, with the numbers that support it:

* barely moving: the loss of the last tenth of the run is above 90 % of the first tenth's
  -> the learning rate is too low;
* exploding or NaN: a non-finite loss, or a loss past 3x the initial one -> too high;
* a long plateau then a sudden drop: the first 20 % of the run within 5 % of its start, then a
  fall of more than 30 % within a tenth of the run -> a bad initialization;
* a growing train/val accuracy gap (> 0.1 and larger than at the middle of the run) ->
  overfitting: more regularization;
* no gap at a low training accuracy (< 0.9) -> too little capacity;
* otherwise: the loss falls and the gap is small -> healthy.
"""

from __future__ import annotations

import numpy

from ..train.history import History
from .results import FAIL, PASS, WARN, CheckResult

__all__ = ["read_history"]


def _smooth(loss: numpy.ndarray) -> numpy.ndarray:
    k = max(1, len(loss) // 50)
    return numpy.convolve(loss, numpy.ones(k) / k, mode="valid")


def read_history(history: History) -> list:
    """Verdicts (``CheckResult``) on the loss curve and the accuracy gap of a finished run."""
    loss = numpy.asarray(history.loss, dtype=float)
    results = []
    if len(loss) < 10:
        return [CheckResult("loss curve", WARN, f"only {len(loss)} iterations: too short to read")]
    finite = numpy.isfinite(loss)
    if not finite.all() or numpy.nanmax(loss) > 3 * loss[0]:
        where = int(numpy.argmax(~finite | (loss > 3 * loss[0]))) + 1
        results.append(
            CheckResult(
                "loss curve",
                FAIL,
                f"the loss {'went NaN/Inf' if not finite.all() else 'exploded past 3x its start'} "
                f"at "
                f"iteration {where}: the learning rate is too high",
                {"iteration": where, "initial": float(loss[0])},
            )
        )
        return results
    tenth = max(1, len(loss) // 10)
    first, last = float(loss[:tenth].mean()), float(loss[-tenth:].mean())
    s = _smooth(loss)
    plateau_len = max(2, len(s) // 5)
    plateau = numpy.abs(s[:plateau_len] - s[0]) <= 0.05 * abs(s[0])
    drops = (
        (s[:-tenth] - s[tenth:]) / numpy.maximum(numpy.abs(s[:-tenth]), 1e-12)
        if len(s) > tenth
        else numpy.zeros(0)
    )
    numbers = {"first_tenth": first, "last_tenth": last, "iterations": len(loss)}
    if last > 0.9 * first:
        results.append(
            CheckResult(
                "loss curve",
                FAIL,
                f"barely moving: {first:.4g} -> {last:.4g} over {len(loss)} iterations: the "
                "learning "
                "rate is too low",
                numbers,
            )
        )
    elif plateau.all() and drops[plateau_len:].size and drops[plateau_len:].max() > 0.3:
        at = int(numpy.argmax(drops[plateau_len:])) + plateau_len
        results.append(
            CheckResult(
                "loss curve",
                WARN,
                f"a plateau for the first {plateau_len} iterations, then a drop of "
                f"{100 * drops[at]:.0f} % around iteration {at}: a bad initialization "
                "(try Xavier/He)",
                {**numbers, "plateau": plateau_len, "drop_at": at},
            )
        )
    else:
        results.append(
            CheckResult(
                "loss curve",
                PASS,
                f"falls: {first:.4g} -> {last:.4g} over {len(loss)} iterations",
                numbers,
            )
        )
    train = numpy.asarray(history.train_acc, dtype=float)
    val = numpy.asarray(history.val_acc, dtype=float)
    if len(val) and numpy.isfinite(val).all():
        gap = train - val
        mid = gap[len(gap) // 2]
        g = {
            "final_gap": float(gap[-1]),
            "gap_at_middle": float(mid),
            "train_acc": float(train[-1]),
            "val_acc": float(val[-1]),
        }
        if gap[-1] > 0.1 and gap[-1] > mid:
            results.append(
                CheckResult(
                    "train/val gap",
                    WARN,
                    f"{gap[-1]:.2f} and growing (was {mid:.2f}): overfitting -- increase "
                    "regularization",
                    g,
                )
            )
        elif abs(gap[-1]) < 0.01 and train[-1] < 0.9:
            results.append(
                CheckResult(
                    "train/val gap",
                    WARN,
                    f"none ({gap[-1]:+.3f}) at train accuracy {train[-1]:.2f}: underfitting -- "
                    "increase model capacity",
                    g,
                )
            )
        else:
            results.append(
                CheckResult(
                    "train/val gap",
                    PASS,
                    f"{gap[-1]:+.3f} (train {train[-1]:.3f}, val {val[-1]:.3f})",
                    g,
                )
            )
    return results
