"""Batch normalization lets you use a higher learning rate (CS231n): the same net trained with and
without BatchNorm at a high learning rate, both curves in one plot.

    python examples/bn_vs_no_bn.py [--lr 0.5] [--out runs/bn_vs_no_bn.png]
"""

import argparse
import os

import numpy

import gpunet
from gpunet import nn, optim
from gpunet.datasets import load_digits
from gpunet.preprocess import Standardize
from gpunet.train import Trainer, TrainingDiverged, plot_histories


def train(batchnorm, lr, epochs, d):
    """(history, diverged?) -- a diverged run keeps its history up to the last finite loss."""
    gpunet.seed(0)
    model = nn.mlp(
        [64, 256, 256, 256, 10], activation="relu", batchnorm=batchnorm, init="he_normal"
    )
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    trainer = Trainer(model, nn.SoftmaxCrossEntropy(), opt, seed=0, progress=False)
    try:
        trainer.fit(
            d["X_train"], d["y_train"], val=(d["X_val"], d["y_val"]), epochs=epochs, batch_size=64
        )
        return trainer.history, False
    except TrainingDiverged as exc:
        print(f"  {'with' if batchnorm else 'without'} BatchNorm: {exc}")
        return trainer.history, True


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="runs/bn_vs_no_bn.png")
    args = parser.parse_args()
    print("backend:", gpunet.set_backend("auto"), gpunet.device_name())
    d = load_digits()
    pre = Standardize().fit(d["X_train"])
    d = {k: (pre.transform(v) if k.startswith("X") else v) for k, v in d.items()}
    runs = {}
    for bn in (True, False):
        name = "BatchNorm" if bn else "no BatchNorm"
        h, diverged = train(bn, args.lr, args.epochs, d)
        runs[name + (" (diverged)" if diverged else "")] = h
        if not diverged:
            print(
                f"{name:>13}: final loss {numpy.mean(h.loss[-20:]):.4f}, val acc "
                f"{h.val_acc[-1]:.4f}"
            )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    plot_histories(
        runs, args.out, title=f"SGD momentum 0.9, lr = {args.lr}: with vs without BatchNorm"
    )
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
