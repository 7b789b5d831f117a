"""Data sets: the bundled digits, and the CIFAR-10 / MNIST loaders on small files written here in
the real formats, including truncated and corrupt ones."""

import gzip
import os

import numpy
import pytest

from gpunet import datasets as D


def test_digits_bundled_with_fixed_splits():
    d = D.load_digits()
    assert d["X_train"].shape[1] == 64 and d["X_train"].dtype == numpy.float32
    sizes = [len(d[k]) for k in ("X_train", "X_val", "X_test")]
    assert sum(sizes) == 1797 and sizes[0] == 1258
    assert d["X_train"].min() == 0 and d["X_train"].max() == 16
    assert set(numpy.unique(d["y_train"])) == set(range(10))
    again = D.load_digits()
    numpy.testing.assert_array_equal(d["y_test"], again["y_test"])
    assert D.load_digits(flatten=False)["X_val"].shape[1:] == (1, 8, 8)


def test_spiral_shape_and_classes():
    X, y = D.make_spiral(50, 4, seed=0)
    assert X.shape == (200, 2) and numpy.bincount(y).tolist() == [50] * 4
    assert numpy.abs(X).max() <= 1.0 + 1e-6


def _write_cifar(folder, n_per_batch=4, seed=0):
    rng = numpy.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, n_per_batch, dtype=numpy.uint8)
        pixels = rng.integers(0, 256, (n_per_batch, 3072), dtype=numpy.uint8)
        numpy.concatenate([labels[:, None], pixels], axis=1).tofile(os.path.join(folder, name))
    return labels, pixels  # of the test batch


def test_cifar10_binary_loader(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    labels, pixels = _write_cifar(str(folder))
    d = D.load_cifar10(str(tmp_path), val_size=3)
    assert d["X_train"].shape == (17, 3, 32, 32) and len(d["X_val"]) == 3
    numpy.testing.assert_array_equal(d["y_test"], labels)
    numpy.testing.assert_array_equal(
        d["X_test"][1].reshape(-1), pixels[1]
    )  # channel-major, as the format


def test_cifar10_missing_and_truncated(tmp_path):
    with pytest.raises(
        D.DatasetError, match=r"CIFAR-10 binary files not found under .*data_batch_1.bin"
    ):
        D.load_cifar10(str(tmp_path))
    _write_cifar(str(tmp_path))
    with open(tmp_path / "data_batch_3.bin", "r+b") as f:
        f.truncate(3073 * 2 + 100)
    with pytest.raises(
        D.DatasetError,
        match=r"data_batch_3.bin: 6246 bytes is not a whole number of CIFAR-10 records",
    ):
        D.load_cifar10(str(tmp_path))


def _idx(magic, array):
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(numpy.uint8).tobytes()


def _write_mnist(folder, gz, n=6, m=4):
    rng = numpy.random.default_rng(1)
    files = {
        "train-images-idx3-ubyte": _idx(2051, rng.integers(0, 256, (n, 28, 28))),
        "train-labels-idx1-ubyte": _idx(2049, rng.integers(0, 10, n)),
        "t10k-images-idx3-ubyte": _idx(2051, rng.integers(0, 256, (m, 28, 28))),
        "t10k-labels-idx1-ubyte": _idx(2049, rng.integers(0, 10, m)),
    }
    for name, data in files.items():
        if gz:
            with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(data)
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
    return files


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loader(tmp_path, gz):
    files = _write_mnist(str(tmp_path), gz)
    d = D.load_mnist(str(tmp_path), val_size=2)
    assert d["X_train"].shape == (4, 1, 28, 28) and d["X_test"].shape == (4, 1, 28, 28)
    expected = numpy.frombuffer(files["t10k-labels-idx1-ubyte"][8:], numpy.uint8)
    numpy.testing.assert_array_equal(d["y_test"], expected)


def test_mnist_corrupt_files(tmp_path):
    _write_mnist(str(tmp_path), gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(D.DatasetError, match="header says .* values but the file holds"):
        D.load_mnist(str(tmp_path), val_size=2)
    path.write_bytes(b"\x00\x00\x08\x01" + data[4:])
    with pytest.raises(D.DatasetError, match="magic number 2049 is not 2051"):
        D.load_mnist(str(tmp_path), val_size=2)
    os.remove(path)
    with pytest.raises(D.DatasetError, match="MNIST file not found"):
        D.load_mnist(str(tmp_path), val_size=2)
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(D.DatasetError, match="cannot read"):
        D.load_mnist(str(tmp_path), val_size=2)


def test_minibatches_cover_everything_and_are_seeded():
    b1 = D.minibatches(10, 4, rng=numpy.random.default_rng(0))
    assert [len(b) for b in b1] == [4, 4, 2]
    assert sorted(numpy.concatenate(b1).tolist()) == list(range(10))
    b2 = D.minibatches(10, 4, rng=numpy.random.default_rng(0))
    assert all((a == b).all() for a, b in zip(b1, b2))
    assert [len(b) for b in D.minibatches(10, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        D.minibatches(10, 0)
