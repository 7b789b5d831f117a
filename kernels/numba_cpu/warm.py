"""A first run's compiles on both cores: a helper process compiles (into the kernel cache) half
of the kernels a training step needs while the training process compiles the other half.

On the 2-core development machine the quickstart's first `gpunet train` (cold kernel cache)
compiled BatchNorm's statistics, finishing and normalizing kernels (1.0 s, the forward pass),
softmax cross-entropy (0.36 s), then BatchNorm's backward sums (1.95 s) and dx (0.2 s) and SGD
(0.15 s), one after the other, on one core. ``start(dtype)`` (gpunet.run.build calls it on the
CPU) launches ``python -m gpunet.kernels.numba_cpu.warm DTYPE forward`` and compiles the
backward half itself before loading the data; each half calls the kernels through the same
functions, with arrays of the same kinds, as a step calls them, so that the compiled signatures
are the ones the step looks up. The training process then finds the helper's half in the cache
(Numba writes a cache entry whole, then its index, so a half-written one is never read), or
compiles it itself if it gets there first: a lost race costs a duplicate compile, never a wrong
kernel. Measured: the first `gpunet train` 4.8-5.3 s wall before, see BENCHMARKS.md after.
Since 2026-12-06 a serially run (N, C) BatchNorm is one kernel per direction and the optimizer
updates several parameters a call: the halves are the forward (BatchNorm in one call, 1.24 s to
compile; its normalizing kernel alone, which an evaluation calls; the loss, 0.32 s) and the
backward (BatchNorm in one call, 0.94 s; SGD on several parameters, 0.28 s).

It does nothing when those kernels are already cached (a warm run must not pay for a process),
when the cache cannot be written, or with ``GPUNET_PRECOMPILE=0``.

A convnet's first run has more to compile: beside each kernel's serial build, its parallel
(``prange``) build -- BatchNorm's four, max pooling's two, Winograd's transforms -- some 9 s of
the digits convnet's 24 s first run, compiled one after the other in the training process.
``start_parallel(spec)`` (gpunet.run.build, for convnets) launches ``python -m
gpunet.kernels.numba_cpu.warm --parallel SPEC``: the helper builds the same net and makes one
training step and one evaluation pass with every kernel's parallel build (into the cache), while
the training process runs serial builds only (kernels/shared/cpu_threads.py asks
``parallel_builds_pending()``, here ``parallel_pending``) until the helper exits; from then on
the parallel builds load from the cache. The helper then writes a marker
(``parallel-<hash of the spec>.json`` beside the cache entries) naming the cache indexes it
made, so that a later run with the same net and every one of those entries in place starts no
helper.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy

from gpunet.types import DTypeLike

from ..shared.cpu_threads import parallel_builds_pending as parallel_pending

__all__ = [
    "start",
    "needed",
    "warm",
    "GROUPS",
    "start_parallel",
    "parallel_pending",
    "warm_parallel",
]

#: the two halves of a first step's compiles: the helper process takes "forward" (BatchNorm's
#: statistics, finishing and normalizing kernels, the loss), the training process "backward"
#: (BatchNorm's backward sums and dx, the SGD update) before it loads its data
GROUPS = ("forward", "backward")


def _dispatchers(dtype: DTypeLike) -> list:
    """The Numba dispatchers of both halves (serial builds: a small net's step runs them
    serially, kernels/shared/cpu_threads.py)."""
    from . import batchnorm, loss, optim

    return [
        batchnorm._forward_rows_serial,
        batchnorm._ROWS["apply"][0],  # an evaluation's forward, with the running statistics
        batchnorm._backward_rows_serial,
        loss._KERNELS[numpy.dtype(dtype)],  # type: ignore[index]
        optim._SGD_MANY,
    ]


def needed(dtype: DTypeLike = numpy.float32) -> bool:
    """Whether there is anything to compile: some of these kernels have no cache entry yet, and
    the cache can be written."""
    if os.environ.get("GPUNET_PRECOMPILE", "1") == "0":
        return False
    for d in _dispatchers(dtype):
        index = _index_path(d)
        if index is None:  # no disk cache for it (not writable): nothing to share
            return False
        if not os.path.exists(index):
            folder = os.path.dirname(index)
            return os.access(folder, os.W_OK) if os.path.isdir(folder) else True
    return False


def start(dtype: DTypeLike = numpy.float32) -> subprocess.Popen | None:
    """If ``needed``: launch the helper on the "forward" half, compile the "backward" half here,
    and return the helper process (None when there was nothing to do)."""
    if not needed(dtype):
        return None
    name = numpy.dtype(dtype).name
    try:
        helper = subprocess.Popen(
            [sys.executable, "-m", __name__, name, "forward"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "GPUNET_PRECOMPILE": "0"},
        )
    except OSError:  # no process to spare: the training process compiles everything itself
        return None
    warm(dtype, "backward")
    return helper


def warm(dtype: DTypeLike = numpy.float32, group: str = "backward") -> None:
    """Call one half's kernels once on small arrays, as a training step of an ``mlp`` calls them
    (BatchNorm with its ReLU fused, softmax cross-entropy, SGD with momentum on small
    parameters, several a call)."""
    from ..interface import BNParams, BNSpec, BNStats, SGDStep
    from . import path

    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    t = numpy.dtype(dtype).type
    rng = numpy.random.default_rng(0)
    N, C = 8, 4
    x3 = rng.normal(size=(N, C, 1)).astype(t)
    params = BNParams(numpy.ones(C, t), numpy.zeros(C, t), numpy.zeros(C, t), numpy.ones(C, t))
    spec = BNSpec(batch_stats=True, update=True, factor=0.1, eps=1e-5, act="relu")
    if group == "forward":
        path.bn_forward(x3, params, spec)
        path.bn_forward(x3, params, BNSpec(batch_stats=False, update=False, factor=0.1, eps=1e-5,
                                           act="relu"))  # fmt: skip
        path.softmax_xent(rng.normal(size=(N, 10)).astype(t), rng.integers(0, 10, N))
        return
    dy3 = rng.normal(size=(N, C, 1)).astype(t)
    stats = BNStats(x3.mean(axis=(0, 2)).astype(t), numpy.ones(C, t))
    path.bn_backward(dy3, x3, stats, params, spec)
    items = [(numpy.ones(n, t), numpy.zeros(n, t), numpy.zeros(n, t)) for n in (16, 4)]
    path.sgd_many(items, SGDStep(0.1, 0.9, 0.0, 0.0, False, False), [False, False])


# ----------------------------------------------------------------------------- parallel builds
def _index_path(dispatcher: object) -> str | None:
    cache = getattr(dispatcher, "_cache", None)
    return getattr(getattr(cache, "_cache_file", None), "_index_path", None)


def _marker(spec: dict) -> str | None:
    """The marker file of ``spec``'s parallel builds (beside BatchNorm's cache entries), or None
    where the kernel cache cannot be written."""
    from . import batchnorm

    index = _index_path(batchnorm._STATS[1])
    if index is None:
        return None
    folder = os.path.dirname(index)
    if not os.access(folder if os.path.isdir(folder) else os.path.dirname(folder), os.W_OK):
        return None
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder, f"parallel-{digest}.json")


def _parallel_cached(marker: str) -> bool:
    try:
        with open(marker) as f:
            indexes = json.load(f)["indexes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(isinstance(p, str) and os.path.exists(p) for p in indexes)


def start_parallel(spec: dict) -> subprocess.Popen | None:
    """Launch the helper that compiles the parallel builds of ``spec``'s net (``{"convnet":
    nn.convnet's keyword arguments, "batch": n, "optimizer": name}``) unless they are cached;
    the training process runs serial builds until it exits (``parallel_pending``)."""
    from gpunet.config import CONFIG

    if os.environ.get("GPUNET_PRECOMPILE", "1") == "0":
        return None
    marker = _marker(spec)
    if marker is None or _parallel_cached(marker):
        return None
    try:
        helper = subprocess.Popen(
            [sys.executable, "-m", __name__, "--parallel", json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "GPUNET_PRECOMPILE": "0"},
        )
    except OSError:  # no process to spare: the parallel builds compile here when first used
        return None
    CONFIG.found.parallel_helper = helper
    return helper


def warm_parallel(spec: dict) -> list:
    """One training step and one evaluation pass of ``spec``'s net on random data with every
    CPU kernel's parallel build, then the marker; returns the cache indexes written."""
    from gpunet import config, nn, optim

    from . import activations, batchnorm, conv, direct_conv, winograd, winograd_planes
    from . import optim as cpu_optim

    kwargs = dict(spec["convnet"])
    rng = numpy.random.default_rng(0)
    with config.using(cpu_kernels="numba-parallel"):
        model = nn.convnet(**kwargs, init="he_normal")
        x = rng.normal(size=(spec["batch"], *kwargs["input_shape"])).astype(numpy.float32)
        y = rng.integers(0, kwargs.get("classes", 10), spec["batch"])
        model.input_grad = False
        opt = optim.OPTIMIZERS[spec.get("optimizer", "sgd")](model.parameters(), lr=1e-3)
        _, dscores = nn.SoftmaxCrossEntropy()(model.forward(x), y, check=False)
        model.zero_grad()
        model.backward(dscores)
        opt.step()
        model.eval()
        model.forward(x)
    modules = (activations, batchnorm, conv, cpu_optim, direct_conv, winograd, winograd_planes)
    dispatchers = [
        value[1]
        for module in modules
        for value in vars(module).values()
        if isinstance(value, tuple) and len(value) == 2 and hasattr(value[1], "overloads")
    ]
    dispatchers += [b[1] for b in batchnorm._ROWS.values()]
    indexes = [
        p for d in dispatchers if d.overloads and (p := _index_path(d)) and os.path.exists(p)
    ]
    marker = _marker(spec)
    if marker is not None:
        tmp = f"{marker}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"spec": spec, "indexes": sorted(set(indexes))}, f)
        os.replace(tmp, marker)
    return indexes


if __name__ == "__main__":
    if sys.argv[1:2] == ["--parallel"]:
        warm_parallel(json.loads(sys.argv[2]))
    else:
        warm(sys.argv[1] if len(sys.argv) > 1 else "float32", *sys.argv[2:3])
