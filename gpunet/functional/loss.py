"""Classification losses, each ``(scores, y) -> (loss, dscores)``, averaged over the batch.

Softmax cross-entropy:  L_i = -log(exp(s_{y_i}) / sum_j exp(s_j)) = logsumexp(s) - s_{y_i}
    dL/ds = (softmax(s) - onehot(y)) / N.   Evaluated with the max subtracted (log-sum-exp), so a
    shift of all scores by +1e7 changes nothing. With small random weights on C classes the initial
    loss is about log(C) -- the lecture's first sanity check.
Multiclass SVM (Weston-Watkins hinge): L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin)
    dL/ds_j = 1[margin_j > 0] / N,   dL/ds_{y_i} = -sum_j 1[margin_j > 0] / N.

Shapes: scores (N, C) float; y (N,) integer labels in [0, C).
"""

from __future__ import annotations

from gpunet.types import Array

from .._checks import check_array, float_inputs
from ..backend import get_array_module


def check_labels(scores: Array, y: Array) -> None:
    """Scores (N, C) float and integer labels (N,) in [0, C), on the same device."""
    float_inputs(scores=scores)
    check_array(y, "y")
    get_array_module(scores, y)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (scores.shape[0],):
        raise ValueError(
            f"y must have shape ({scores.shape[0]},) (one label per row of scores), got {y.shape}"
        )
    if y.size and (int(y.min()) < 0 or int(y.max()) >= scores.shape[1]):
        raise ValueError(
            f"labels in y must be in [0, {scores.shape[1]}), got min {int(y.min())}, max "
            f"{int(y.max())}"
        )
    if scores.shape[0] == 0:
        raise ValueError("scores has no rows: the mean loss of an empty batch is undefined")


def softmax_cross_entropy(scores: Array, y: Array, check: bool = True) -> tuple:
    """Returns ``(loss, dscores)``; loss is a 0-d array on the scores' device (no host sync)."""
    if check:
        check_labels(scores, y)
    from ..dispatch import kernels_for

    return kernels_for("softmax_xent", scores).softmax_xent(scores, y)


def multiclass_svm(scores: Array, y: Array, margin: float = 1.0, check: bool = True) -> tuple:
    """Returns ``(loss, dscores)`` of the multiclass hinge loss."""
    if check:
        check_labels(scores, y)
    xp = get_array_module(scores)
    N = scores.shape[0]
    rows = xp.arange(N)
    margins = scores - scores[rows, y][:, None] + margin
    margins[rows, y] = 0
    active = margins > 0
    loss = xp.where(active, margins, 0).sum() / N
    dscores = active.astype(scores.dtype)
    dscores[rows, y] = -active.sum(axis=1)
    dscores /= N
    return loss, dscores
