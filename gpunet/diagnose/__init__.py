"""Babysitting the learning process (CS231n): the lecture's checklist, automated, with verdicts.

* the initialization study: ``activation_stats``, ``gradient_flow``, ``init_study``,
  ``plot_init_study`` (and ``gpunet init-study``);
* sanity checks, each a ``CheckResult`` (pass / warn / fail, the numbers, one line):
  ``check_initial_loss``, ``check_regularization``, ``overfit_small_subset``, ``gradient_check``,
  ``lr_range_test``;
* monitors during training (callbacks recording into the ``History``): ``UpdateRatioMonitor``,
  ``GradientNormMonitor``, ``ActivationMonitor``, ``GapMonitor``, ``LossMonitor``,
  ``default_monitors`` (``gpunet train --monitor``);
* ``read_history``: verdicts on a finished loss curve and accuracy gap;
* ``babysit``: all of it on a configuration, with a Markdown report (``gpunet babysit``).
"""

from typing import Any

from .activations import (  # noqa: F401
    LayerStats,
    activation_stats,
    gradient_flow,
    init_study,
    plot_init_study,
    study_table,
)
from .checks import (  # noqa: F401
    LRRangeResult,
    check_initial_loss,
    check_regularization,
    gradient_check,
    lr_range_test,
    overfit_small_subset,
)
from .curves import read_history  # noqa: F401
from .monitors import (  # noqa: F401
    ActivationMonitor,
    GapMonitor,
    GradientNormMonitor,
    LossMonitor,
    Monitor,
    UpdateRatioMonitor,
    default_monitors,
)
from .results import FAIL, PASS, WARN, CheckResult  # noqa: F401


def __getattr__(name: str) -> Any:  # the lazily imported names
    if name == "babysit":  # imported on use: it pulls in the whole run machinery
        from .report import babysit

        return babysit
    raise AttributeError(f"module 'gpunet.diagnose' has no attribute {name!r}")
