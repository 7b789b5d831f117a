"""Host side of the fused softmax cross-entropy kernel (loss.cuh): 1 launch + the mean."""

from __future__ import annotations

import cupy

from gpunet.types import Array

from .sources import unit_source

LANES, ROWS = 32, 8  # GPUNET_LOSS_LANES, GPUNET_LOSS_ROWS: 32 threads per row, 8 rows per block
MAX_BLOCKS = 65535


@cupy.memoize(for_each_device=True)
def _module() -> Array:
    return cupy.RawModule(code=unit_source("loss"), options=("-std=c++14",))


@cupy.memoize(for_each_device=True)
def _kernel(name: str):
    """The compiled function, looked up once per device (not once per launch)."""
    return _module().get_function(name)


def softmax_cross_entropy(scores: Array, y: Array) -> tuple:
    """(mean loss as a 0-d array, dscores) for contiguous float scores (N, C), int labels (N,)."""
    N, C = scores.shape
    if N == 0:  # the mean of no rows is NaN, as NumPy's; and no zero-sized grid to launch
        return cupy.full((), cupy.nan, dtype=scores.dtype), cupy.empty_like(scores)
    scores = cupy.ascontiguousarray(scores)
    y = cupy.ascontiguousarray(y, dtype=cupy.int64)
    dscores = cupy.empty_like(scores)
    row_loss = cupy.empty(N, dtype=scores.dtype)
    name = "softmax_xent_float" if scores.dtype == cupy.float32 else "softmax_xent_double"
    _kernel(name)(
        (min(-(-N // ROWS), MAX_BLOCKS),),
        (LANES, ROWS),
        (scores, y, dscores, row_loss, cupy.int64(N), cupy.int64(C)),
    )
    return row_loss.mean(), dscores
