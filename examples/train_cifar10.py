"""Train an MLP on CIFAR-10 from the official binary files you already have:

    python examples/train_cifar10.py --data-dir ~/data/cifar-10-batches-bin [--epochs 10]

(cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked.) The lecture's
preprocessing for images: subtract the per-channel mean, nothing else.
"""

import argparse
import os
import sys

import gpunet
from gpunet import nn, optim
from gpunet.datasets import DatasetError, load_cifar10
from gpunet.preprocess import ZeroCenter
from gpunet.train import evaluate, fit


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", default=os.environ.get("CIFAR10_DIR", "data/cifar-10-batches-bin")
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/cifar10")
    args = parser.parse_args()
    try:
        d = load_cifar10(args.data_dir)
    except DatasetError as exc:
        print(f"CIFAR-10 is not there: {exc}", file=sys.stderr)
        print("Point --data-dir (or CIFAR10_DIR) at the unpacked binary version.", file=sys.stderr)
        return 2
    print("backend:", gpunet.set_backend("auto"), gpunet.device_name())
    gpunet.seed(0)
    pre = ZeroCenter(per_channel=True).fit(d["X_train"])
    X = {
        k: pre.transform(d[k]).reshape(len(d[k]), -1) / 64.0 for k in ("X_train", "X_val", "X_test")
    }
    model = nn.mlp([3072, 1024, 1024, 10], batchnorm=True, dropout=0.2)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    os.makedirs(args.out, exist_ok=True)
    h = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        X["X_train"],
        d["y_train"],
        val=(X["X_val"], d["y_val"]),
        epochs=args.epochs,
        batch_size=256,
        lr_schedule=optim.CosineAnnealing(opt, args.epochs),
        checkpoint=os.path.join(args.out, "checkpoint.npz"),
        resume=True,
        seed=0,
    )
    print(f"test accuracy: {evaluate(model, X['X_test'], d['y_test'])[1]:.4f}")
    h.plot(os.path.join(args.out, "curves.png"), title="CIFAR-10 MLP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
