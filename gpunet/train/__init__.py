"""Training: the loop (``fit``, ``Trainer``, ``evaluate``, ``predict``), its ``History``, the
callbacks (``EarlyStopping``, the divergence stop, checkpointing, and the babysitting monitors),
and the plots of training curves. One concern per module: loop.py, history.py, callbacks.py,
plots.py.
"""

from .callbacks import Callback, Checkpoint, EarlyStopping, StopOnDivergence, TrainingDiverged
from .history import History
from .loop import Trainer, evaluate, fit, predict
from .plots import plot_histories

__all__ = [
    "fit",
    "Trainer",
    "evaluate",
    "predict",
    "History",
    "Callback",
    "EarlyStopping",
    "StopOnDivergence",
    "Checkpoint",
    "TrainingDiverged",
    "plot_histories",
]
