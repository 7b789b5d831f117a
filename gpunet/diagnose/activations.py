"""What the activations and the backward signal look like, layer by layer: the lecture's
weight-initialization experiment as a library function.

* ``activation_stats(model, X)``: one forward pass; per layer the mean and std of its output, the
  fraction of saturated units (|tanh| > 0.99, sigmoid within 0.01 of 0 or 1), the fraction of
  dead units (a ReLU-family unit whose output is 0 for the whole batch) and a histogram.
* ``gradient_flow(model, X)``: the same pass, then a backward from a unit-Gaussian signal at the
  output; per layer the RMS of the gradient arriving at its input (what vanishing or exploding
  gradients look like).
* ``init_study(...)``: the lecture's net -- ``layers`` x (Linear(width, width) -> activation) on
  unit-Gaussian input -- for one initialization; ``plot_init_study`` draws one row of per-layer
  histograms per initialization, as on the slides.

Outcomes the lecture teaches (and tests/test_diagnose.py asserts): 0.01 N(0, 1) with tanh makes
the std collapse towards 0 layer after layer; N(0, 1) with tanh saturates most units at +-1;
Xavier with tanh keeps a healthy spread; Xavier with ReLU halves the variance each layer; He with
ReLU keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from gpunet.types import Array, PathLike

from .. import nn
from ..backend import asarray, get_array_module, to_numpy

__all__ = [
    "LayerStats",
    "activation_stats",
    "gradient_flow",
    "init_study",
    "plot_init_study",
    "layer_kind",
    "study_table",
]

SATURATING = {"tanh": (0.99, None), "sigmoid": (0.01, 0.99)}
RELU_FAMILY = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "softplus", "prelu", "maxout")


@dataclass
class LayerStats:
    """One layer's output on a batch (``dead``/``saturated`` None where they do not apply) and
    the RMS of the gradient at its input (``grad_rms``, from ``gradient_flow``)."""

    name: str
    kind: str
    mean: float
    std: float
    saturated: float | None
    dead: float | None
    hist: numpy.ndarray
    edges: numpy.ndarray
    grad_rms: float | None = None


def layer_kind(module: nn.Module) -> str:
    """The nonlinearity a layer ends with (``"tanh"``, ``"relu"``, ...), or its class name."""
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.activation:
        return module.activation
    names = {
        nn.Tanh: "tanh",
        nn.Sigmoid: "sigmoid",
        nn.ReLU: "relu",
        nn.LeakyReLU: "leaky_relu",
        nn.ELU: "elu",
        nn.SELU: "selu",
        nn.GELU: "gelu",
        nn.SiLU: "silu",
        nn.Softplus: "softplus",
        nn.PReLU: "prelu",
        nn.Maxout: "maxout",
    }
    return names.get(type(module), type(module).__name__)


def _layers(model: nn.Module) -> list:
    """(name, module) in the order data flows: a Sequential's children, else the model itself."""
    if isinstance(model, nn.Sequential):
        return [(str(i), m) for i, m in enumerate(model)]
    return [(type(model).__name__, model)]


def _stats(name: str, module: nn.Module, out: Array, bins: int) -> LayerStats:
    y = to_numpy(out).astype(numpy.float64)
    kind = layer_kind(module)
    saturated = dead = None
    if kind == "tanh":
        saturated = float((numpy.abs(y) > 0.99).mean())
    elif kind == "sigmoid":
        saturated = float(((y < 0.01) | (y > 0.99)).mean())
    if kind in RELU_FAMILY and y.ndim >= 2:
        per_unit = (
            (y <= 0).reshape(len(y), -1).all(axis=0)
            if kind in ("relu", "prelu")
            else ((numpy.abs(y) < 1e-12).reshape(len(y), -1).all(axis=0))
        )
        dead = float(per_unit.mean())
    finite = y[numpy.isfinite(y)]
    if finite.size:
        hist, edges = numpy.histogram(finite, bins=bins)
    else:
        hist, edges = numpy.zeros(bins, numpy.int64), numpy.linspace(0, 1, bins + 1)
    with numpy.errstate(all="ignore"):  # a diverging run's Inf activations: NaN, not a warning
        mean, std = float(y.mean()), float(y.std())
    return LayerStats(name, kind, mean, std, saturated, dead, hist, edges)


def activation_stats(model: nn.Module, X: Array, bins: int = 40) -> list:
    """Per layer statistics of one forward pass of ``X`` (the model's mode is used as it is).
    Returns a list of ``LayerStats`` in data-flow order."""
    x = asarray(X)
    stats = []
    for name, module in _layers(model):
        with numpy.errstate(all="ignore"):  # a diverging run's overflow: Inf/NaN in the stats
            x = module(x)
        stats.append(_stats(name, module, x, bins))
    return stats


def gradient_flow(model: nn.Module, X: Array, seed: int = 0, bins: int = 40) -> list:
    """``activation_stats`` plus, per layer, the RMS of the gradient reaching its input when a
    unit-Gaussian gradient enters at the output. Parameter gradients are left as they were."""
    saved = {id(p): p.grad for p in model.parameters()}
    stats = activation_stats(model, X, bins)
    layers = _layers(model)
    out = layers[-1][1].__dict__["_forward_out"]
    xp = get_array_module(model.parameters()[0].data) if model.parameters() else numpy
    dout = xp.asarray(numpy.random.default_rng(seed).normal(size=out[0]).astype(out[1]))
    try:
        for (_, module), st in zip(reversed(layers), reversed(stats)):
            dout = module.backward(dout)
            st.grad_rms = float(to_numpy((dout.astype("float64") ** 2).mean()) ** 0.5)
    finally:
        for p in model.parameters():
            p.grad = saved[id(p)]
    return stats


def init_study(
    activation: str = "tanh",
    init: str = "small_random",
    layers: int = 10,
    width: int = 500,
    n: int = 1000,
    seed: int = 0,
    model: str = "mlp",
    image_size: int = 16,
    kernel_size: int = 3,
) -> list:
    """The lecture's experiment: ``layers`` x (Linear(width, width, no bias) -> activation) with
    ``init``, one forward pass of ``n`` unit-Gaussian examples, then the backward signal. Returns
    the ``LayerStats`` of the activation layers (one per depth).

    ``model="convnet"``: the same for convolutions, ``layers`` x (Conv2d(width, width, k x k,
    "same" padding, no bias) -> activation) on ``n`` unit-Gaussian images of ``width`` channels,
    ``image_size`` square. The initializations see fan_in = width k^2 (gpunet.init), and the
    lecture's outcomes carry over: small random weights shrink the activations layer by layer
    (and the gradients with them), Xavier keeps tanh's spread, ReLU halves the variance per layer
    under Xavier and keeps it under Kaiming/He."""
    import gpunet

    if activation not in nn.ACTIVATION_LAYERS:
        raise ValueError(
            f"activation must be one of {sorted(nn.ACTIVATION_LAYERS)}, got {activation!r}"
        )
    if model not in ("mlp", "convnet"):
        raise ValueError(f"model must be 'mlp' or 'convnet', got {model!r}")
    gpunet.seed(seed)
    modules: list[nn.Module] = []
    for _ in range(layers):
        if model == "convnet":
            layer: nn.Module = nn.Conv2d(
                width, width, kernel_size, padding=kernel_size // 2, bias=False, init=init
            )
        else:
            layer = nn.Linear(width, width, bias=False, init=init)
        modules += [layer, nn.ACTIVATION_LAYERS[activation]()]
    net = nn.Sequential(*modules).to(gpunet.get_backend())
    shape = (n, width, image_size, image_size) if model == "convnet" else (n, width)
    X = numpy.random.default_rng(seed).normal(size=shape).astype(numpy.float32)
    stats = gradient_flow(net, X)
    return [s for s in stats if s.kind not in ("Linear", "Conv2d")]


def study_table(label: str, stats: list) -> str:
    """The per-layer table the CLI prints: std, saturated and dead fractions, gradient RMS."""
    rows = [f"{label}", "  layer  kind             mean       std  saturated   dead   grad rms"]
    for k, s in enumerate(stats, 1):
        sat = "-" if s.saturated is None else f"{s.saturated:.2f}"
        dead = "-" if s.dead is None else f"{s.dead:.2f}"
        g = "-" if s.grad_rms is None else f"{s.grad_rms:.3g}"
        rows.append(
            f"  {k:5d}  {s.kind[:12]:12s} {s.mean:9.3g} {s.std:9.3g} {sat:>10} {dead:>6} {g:>10}"
        )
    return "\n".join(rows)


def plot_init_study(studies: dict, path: PathLike, title: str | None = None) -> None:
    """One row per study (label -> list of LayerStats), one histogram panel per layer, and the
    per-layer std and gradient RMS (the gradient-flow view) in each panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(studies)
    cols = max(len(s) for s in studies.values())
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.1 * rows), squeeze=False)
    for r, (label, stats) in enumerate(studies.items()):
        # one x range per row, as on the slides: a layer whose values collapse shows a spike at 0
        low = min(float(s.edges[0]) for s in stats)
        high = max(float(s.edges[-1]) for s in stats)
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(stats):
                ax.axis("off")
                continue
            s = stats[c]
            ax.bar(s.edges[:-1], s.hist, width=numpy.diff(s.edges), align="edge")
            ax.set_xlim(low, high)
            grad = "" if s.grad_rms is None else f"\ngrad {s.grad_rms:.2g}"  # the backward signal
            ax.set_title(f"L{c + 1} std {s.std:.2g}{grad}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title or "activations per layer (one forward pass on unit-Gaussian input)")
    fig.tight_layout()
    from ..outputs import save_figure

    save_figure(fig, path, dpi=80)
    plt.close(fig)
