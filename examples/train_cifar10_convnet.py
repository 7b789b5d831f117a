"""CS231n's three-layer ConvNet on CIFAR-10, from the official binary files you already have:

    python examples/train_cifar10_convnet.py --data-dir ~/data/cifar-10-batches-bin [--epochs 5]

conv 7x7, 32 filters ("same" padding) -> ReLU -> 2x2 max pool -> affine 100 -> ReLU -> affine 10,
as in assignment 2 (``ThreeLayerConvNet``): ``nn.convnet([32], hidden=[100], kernel_size=7,
batchnorm=False)``; ``--batchnorm`` puts BatchNorm after the conv and the affine layer, before
the ReLU, as the lecture places it. Preprocessing as the lecture has it for images: subtract the
per-channel mean, nothing else. Adam, lr 1e-3 (the assignment's), cosine schedule, checkpoints
(rerun the command to resume), curves.png in --out.

(cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked.)
``--train-size`` trains on the first that many images (the assignment overfits 100 of them as a
sanity check).
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
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batchnorm", action="store_true", help="BatchNorm before each ReLU")
    parser.add_argument("--train-size", type=int, default=None, help="first N training images")
    parser.add_argument("--val-size", type=int, default=5000, help="held out of the training set")
    parser.add_argument("--out", default="runs/cifar10-convnet")
    args = parser.parse_args()
    try:
        d = load_cifar10(args.data_dir, val_size=args.val_size)
    except DatasetError as exc:
        print(f"CIFAR-10 is not there: {exc}", file=sys.stderr)
        print("Point --data-dir (or CIFAR10_DIR) at the unpacked binary version.", file=sys.stderr)
        return 2
    if args.train_size is not None:
        n = args.train_size
        d["X_train"], d["y_train"] = d["X_train"][:n], d["y_train"][:n]
    print("backend:", gpunet.set_backend("auto"), gpunet.device_name())
    gpunet.seed(0)
    pre = ZeroCenter(per_channel=True).fit(d["X_train"])
    # (N, 3, 32, 32) images, zero-centered per channel and scaled to about unit spread
    X = {k: pre.transform(d[k]) / 64.0 for k in ("X_train", "X_val", "X_test")}
    model = nn.convnet(
        [32], input_shape=(3, 32, 32), hidden=[100], kernel_size=7, batchnorm=args.batchnorm
    )
    print(model)
    opt = optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-3)
    os.makedirs(args.out, exist_ok=True)
    h = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        X["X_train"],
        d["y_train"],
        val=(X["X_val"], d["y_val"]),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_schedule=optim.CosineAnnealing(opt, args.epochs),
        checkpoint=os.path.join(args.out, "checkpoint.npz"),
        resume=True,
        seed=0,
    )
    print(f"test accuracy: {evaluate(model, X['X_test'], d['y_test'])[1]:.4f}")
    h.plot(os.path.join(args.out, "curves.png"), title="CIFAR-10, CS231n's three-layer ConvNet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
