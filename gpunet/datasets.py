"""Data sets: the lecture's spiral toy data, the bundled handwritten digits, and loaders for
CIFAR-10 and MNIST files a user already has on disk; plus seeded mini-batching."""

from __future__ import annotations

import numpy

from gpunet.types import Array, PathLike

from .backend import host_rng


def make_spiral(
    n_per_class: int = 100, n_classes: int = 3, noise: float = 0.2, seed: int | None = None
) -> tuple:
    """CS231n's spiral: ``n_classes`` interleaved arms of ``n_per_class`` 2-D points each.

    Arm k: r = t, theta = 4 (k + t) + noise * N(0, 1), t in [0, 1]; (x, y) = r (sin theta, cos
    theta).
    Returns X (n_per_class * n_classes, 2) float32 and y (same length,) int64. Not linearly
    separable.
    """
    if n_per_class < 1 or n_classes < 2:
        raise ValueError(
            f"need n_per_class >= 1 and n_classes >= 2, got {n_per_class}, {n_classes}"
        )
    rng = host_rng() if seed is None else numpy.random.default_rng(seed)
    X = numpy.zeros((n_per_class * n_classes, 2))
    y = numpy.zeros(n_per_class * n_classes, dtype=numpy.int64)
    for k in range(n_classes):
        ix = slice(n_per_class * k, n_per_class * (k + 1))
        r = numpy.linspace(0.0, 1, n_per_class)
        t = numpy.linspace(k * 4, (k + 1) * 4, n_per_class) + rng.normal(size=n_per_class) * noise
        X[ix] = numpy.c_[r * numpy.sin(t), r * numpy.cos(t)]
        y[ix] = k
    return X.astype(numpy.float32), y


class DatasetError(ValueError):
    """A data file is missing, truncated or not in the expected format."""


def split_indices(n: int, fractions: tuple, seed: int) -> tuple:
    perm = numpy.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


def split(X: Array, y: Array, fractions: tuple, seed: int) -> dict:
    """``{"X_train", "y_train", "X_val", "y_val", "X_test", "y_test"}``: one shuffle by
    ``split_indices``; ``fractions`` = (train, validation), the test set takes the rest."""
    tr, va, te = split_indices(len(X), fractions, seed)
    return {
        "X_train": X[tr],
        "y_train": y[tr],
        "X_val": X[va],
        "y_val": y[va],
        "X_test": X[te],
        "y_test": y[te],
    }


def load_digits(flatten: bool = True) -> dict:
    """The handwritten digits that scikit-learn ships (UCI, CC BY 4.0): 1,797 8x8 images of
    gray levels 0..16, 10 classes, bundled with gpunet (no download).

    Fixed splits (70% / 15% / 15%, the same on every machine): returns a dict with
    ``X_train, y_train, X_val, y_val, X_test, y_test`` -- X float32 in [0, 16], shape (n, 64) or
    (n, 1, 8, 8) with ``flatten=False``; y int64.
    """
    from importlib import resources

    with resources.files("gpunet.data").joinpath("digits.npz").open("rb") as f:
        with numpy.load(f, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    X = images.astype(numpy.float32)
    X = X.reshape(len(X), 64) if flatten else X.reshape(len(X), 1, 8, 8)
    y = labels.astype(numpy.int64)
    return split(X, y, (0.70, 0.15), seed=20261126)


# ----------------------------------------------------------------------------- CIFAR-10 (binary)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_cifar_batch(path: PathLike) -> tuple:
    raw = numpy.fromfile(path, dtype=numpy.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise DatasetError(
            f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records of "
            f"{_CIFAR_RECORD} bytes (1 label byte + 3072 pixel bytes); the file is truncated "
            "or not the binary version"
        )
    rec = raw.reshape(-1, _CIFAR_RECORD)
    labels = rec[:, 0].astype(numpy.int64)
    if labels.max() > 9:
        raise DatasetError(f"{path}: label byte {int(labels.max())} is not a CIFAR-10 class (0..9)")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(root: PathLike, val_size: float = 5000) -> dict:
    """CIFAR-10 from the official *binary* version (cifar-10-batches-bin: data_batch_1..5.bin,
    test_batch.bin) -- the format that needs no unpickling. Returns the same dict as
    ``load_digits`` with X float32 (n, 3, 32, 32) in [0, 255]; the last ``val_size`` training
    images are the validation split."""
    import os

    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    candidates = [root, os.path.join(root, "cifar-10-batches-bin")]
    folder = next(
        (c for c in candidates if all(os.path.isfile(os.path.join(c, n)) for n in names)), None
    )
    if folder is None:
        missing = [n for n in names if not os.path.isfile(os.path.join(root, n))]
        raise DatasetError(
            f"CIFAR-10 binary files not found under {root!r} (missing: {', '.join(missing)}). "
            "Expected the folder cifar-10-batches-bin of cifar-10-binary.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html"
        )
    parts = [_read_cifar_batch(os.path.join(folder, n)) for n in names[:5]]
    Xtr = numpy.concatenate([p[0] for p in parts])
    ytr = numpy.concatenate([p[1] for p in parts])
    Xte, yte = _read_cifar_batch(os.path.join(folder, names[5]))
    if not 0 <= val_size < len(Xtr):
        raise ValueError(f"val_size must be in [0, {len(Xtr)}), got {val_size}")
    n = len(Xtr) - val_size
    f32 = numpy.float32
    return {
        "X_train": Xtr[:n].astype(f32),
        "y_train": ytr[:n],
        "X_val": Xtr[n:].astype(f32),
        "y_val": ytr[n:],
        "X_test": Xte.astype(f32),
        "y_test": yte,
    }


# ----------------------------------------------------------------------------- MNIST (IDX)
def _read_idx(path: PathLike, magic: int, ndim: int) -> Array:
    import gzip
    import os

    path = os.fspath(path)
    for candidate in (path, path + ".gz"):
        if os.path.isfile(candidate):
            break
    else:
        raise DatasetError(f"MNIST file not found: {path!r} (or {path + '.gz'!r})")
    opener = gzip.open if candidate.endswith(".gz") else open
    try:
        with opener(candidate, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(
            f"{candidate}: cannot read ({exc}); the file is corrupt or truncated"
        ) from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{candidate}: {len(data)} bytes is shorter than an IDX header ({header} bytes)"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(
            f"{candidate}: magic number {found} is not {magic} (IDX "
            f"{'images' if ndim == 3 else 'labels'})"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(numpy.prod(dims))
    if len(data) - header != expected:
        raise DatasetError(
            f"{candidate}: header says {dims} = {expected} values but the file holds "
            f"{len(data) - header}; it is truncated or corrupt"
        )
    return numpy.frombuffer(data, dtype=numpy.uint8, offset=header).reshape(dims)


def load_mnist(root: PathLike, val_size: float = 5000) -> dict:
    """MNIST from its IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; gzipped or not) in ``root``. Returns the same
    dict as ``load_digits`` with X float32 (n, 1, 28, 28) in [0, 255]."""
    import os

    def pair(prefix: str) -> tuple:
        X = _read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte"), 2051, 3)
        y = _read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte"), 2049, 1).astype(
            numpy.int64
        )
        if len(X) != len(y):
            raise DatasetError(f"{prefix}: {len(X)} images but {len(y)} labels")
        return X[:, None].astype(numpy.float32), y

    Xtr, ytr = pair("train")
    Xte, yte = pair("t10k")
    if not 0 <= val_size < len(Xtr):
        raise ValueError(f"val_size must be in [0, {len(Xtr)}), got {val_size}")
    n = len(Xtr) - val_size
    return {
        "X_train": Xtr[:n],
        "y_train": ytr[:n],
        "X_val": Xtr[n:],
        "y_val": ytr[n:],
        "X_test": Xte,
        "y_test": yte,
    }


# ----------------------------------------------------------------------------- batching
def minibatches(
    n: int,
    batch_size: int,
    shuffle: bool = True,
    rng: numpy.random.Generator | None = None,
    drop_last: bool = False,
    min_size: int = 1,
) -> list:
    """Index arrays of the mini-batches of one epoch over ``n`` examples. The last partial batch
    is kept (or dropped with ``drop_last``); one smaller than ``min_size`` is merged into the
    batch before it (``min_size=2``: BatchNorm cannot train on one example). ``rng``: a NumPy
    Generator (default: gpunet's)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n < 0:
        raise ValueError(f"n (the number of examples) must be >= 0, got {n}")
    order = (rng or host_rng()).permutation(n) if shuffle else numpy.arange(n)
    stop = n - n % batch_size if drop_last else n
    batches = [order[i : i + batch_size] for i in range(0, stop, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_size:
        batches[-2:] = [numpy.concatenate(batches[-2:])]
    return batches
