"""Train an MLP on the bundled handwritten digits from Python (GPU if present, else CPU), the way
a user would with their own data: preprocess (fit on train only), build, fit, evaluate, plot.

    python examples/train_digits.py [--out runs/digits]
"""

import argparse
import os

import gpunet
from gpunet import nn, optim
from gpunet.datasets import load_digits
from gpunet.preprocess import Standardize
from gpunet.train import EarlyStopping, evaluate, fit


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/digits")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print("backend:", gpunet.set_backend("auto"), gpunet.device_name())
    gpunet.seed(0)

    d = load_digits()
    pre = Standardize().fit(d["X_train"])  # statistics of the training set only
    X_train, X_val, X_test = (pre.transform(d[k]) for k in ("X_train", "X_val", "X_test"))

    model = nn.mlp(
        [64, 128, 64, 10], activation="relu", batchnorm=True, init="he_normal", dropout=0.1
    )
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    history = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        opt,
        X_train,
        d["y_train"],
        val=(X_val, d["y_val"]),
        epochs=args.epochs,
        batch_size=64,
        lr_schedule=optim.CosineAnnealing(opt, args.epochs),
        callbacks=[EarlyStopping(patience=10)],
        checkpoint=os.path.join(args.out, "checkpoint.npz"),
        seed=0,
    )
    print(f"test accuracy: {evaluate(model, X_test, d['y_test'])[1]:.4f}")
    history.plot(os.path.join(args.out, "curves.png"), title="digits")
    print(f"curves: {os.path.join(args.out, 'curves.png')}")


if __name__ == "__main__":
    main()
