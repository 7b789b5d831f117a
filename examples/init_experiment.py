"""The lecture's weight-initialization experiment: a 10-layer net of 500 tanh (or ReLU) units on
unit-Gaussian data, one forward pass, a histogram of every layer's activations, for each
initialization. Small random weights make the activations collapse towards 0, large ones saturate
tanh at +-1, Xavier keeps tanh healthy, and ReLU needs He's factor 2.

    python examples/init_experiment.py [--out runs/init_experiment.png]
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy  # noqa: E402

import gpunet  # noqa: E402
from gpunet import nn  # noqa: E402

CASES = [
    ("tanh", "small_random", "W = 0.01 randn"),
    ("tanh", "normal", "W = randn"),
    ("tanh", "xavier_normal", "Xavier"),
    ("relu", "xavier_normal", "Xavier, ReLU"),
    ("relu", "he_normal", "He, ReLU"),
]


def layer_activations(activation, init, layers=10, width=500, n=1000):
    gpunet.seed(0)
    modules = []
    for _ in range(layers):
        modules.append(nn.Linear(width, width, bias=False, init=init))
        modules.append(nn.ACTIVATION_LAYERS[activation]())
    x = gpunet.asarray(numpy.random.default_rng(0).normal(size=(n, width)).astype(numpy.float32))
    outs = []
    for m in modules:
        x = m(x)
        if not isinstance(m, nn.Linear):
            outs.append(gpunet.to_numpy(x))
    return outs


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/init_experiment.png")
    args = parser.parse_args()
    print("backend:", gpunet.set_backend("auto"), gpunet.device_name())
    fig, axes = plt.subplots(len(CASES), 10, figsize=(20, 2.2 * len(CASES)), sharey="row")
    for row, (activation, init, title) in enumerate(CASES):
        outs = layer_activations(activation, init)
        stds = " ".join(f"{o.std():.2g}" for o in outs)
        print(f"{title:14s} layer std: {stds}")
        for k, o in enumerate(outs):
            ax = axes[row, k]
            lim = 1.05 if activation == "tanh" else max(o.max(), 1e-3)
            ax.hist(o.ravel(), bins=40, range=(-lim if activation == "tanh" else 0, lim))
            ax.set_yticks([])
            ax.set_title(f"layer {k + 1}\nstd {o.std():.2g}", fontsize=8)
        axes[row, 0].set_ylabel(title, fontsize=10)
    fig.suptitle(
        "Activations of a 10-layer, 500-unit net on unit-Gaussian input, by initialization"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
