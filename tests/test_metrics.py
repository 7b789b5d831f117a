"""Metrics against hand-counted answers."""

import numpy
import pytest

from gpunet import metrics


def test_accuracy_error_rate_and_top_k():
    scores = numpy.array(
        [
            [0.1, 0.7, 0.2],  # top: 1, 2nd: 2
            [0.5, 0.2, 0.3],  # top: 0, 2nd: 2
            [0.3, 0.3, 0.4],  # top: 2, then a tie of 0 and 1
            [0.2, 0.5, 0.3],
        ]
    )  # top: 1, 2nd: 2
    y = numpy.array([1, 2, 0, 0])
    assert float(metrics.accuracy(scores, y)) == 0.25  # only row 0
    assert float(metrics.error_rate(scores, y)) == 0.75
    # label within the 2 highest (a tie with the 2nd counts as a hit): rows 0, 1, 2
    assert float(metrics.top_k_accuracy(scores, y, k=2)) == 0.75
    assert float(metrics.top_k_accuracy(scores, y, k=3)) == 1.0
    assert float(metrics.top_k_accuracy(scores, y, k=1)) == float(metrics.accuracy(scores, y))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metrics.top_k_accuracy(scores, y, k=0)
