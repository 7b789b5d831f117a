"""Plot every activation function of the lecture and its derivative, computed by gpunet's kernels
(GPU if present, else CPU), to activations.png.

    python examples/activations.py [--out runs/activations.png]
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy  # noqa: E402

import gpunet  # noqa: E402
from gpunet import functional as F  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/activations.png")
    args = parser.parse_args()
    backend = gpunet.set_backend("auto")
    x = gpunet.asarray(numpy.linspace(-5, 5, 1001, dtype=numpy.float32))
    ones = gpunet.get_array_module(x).ones_like(x)
    fig, axes = plt.subplots(2, 5, figsize=(18, 6.5), sharex=True)
    for ax, (name, (fwd, bwd)) in zip(
        axes.flat, [*F.ACTIVATIONS.items(), ("gelu (tanh)", (None, None))]
    ):
        if bwd is None:
            y, d = F.gelu(x, approximate="tanh"), F.gelu_backward(ones, x, approximate="tanh")
        else:
            y, d = fwd(x), bwd(ones, x)
        xs = gpunet.to_numpy(x)
        ax.plot(xs, gpunet.to_numpy(y), label="f(x)")
        ax.plot(xs, gpunet.to_numpy(d), "--", label="f'(x)")
        ax.set_title(name)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_ylim(-2, 5)
        print(
            f"{name:12s} f(-5)={float(y[0]):+.4f}  f(5)={float(y[-1]):+.4f}  "
            f"f'(-5)={float(d[0]):+.4f}  f'(5)={float(d[-1]):+.4f}"
        )
    axes.flat[0].legend()
    fig.suptitle(f"gpunet activation functions ({backend}: {gpunet.device_name()})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
