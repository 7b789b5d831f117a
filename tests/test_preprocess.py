"""Preprocessing: the math of each transform, inverse round trips, fit on the training data only."""

import numpy
import pytest

from gpunet import preprocess as P


def _correlated(n=2000, d=5, seed=0):
    rng = numpy.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) @ A + rng.normal(size=d) * 5).astype(numpy.float64)


def _cov(Z):
    Zc = Z - Z.mean(0)
    return Zc.T @ Zc / (len(Z) - 1)


def test_zero_center_mean_image_and_per_channel():
    X = numpy.random.default_rng(1).normal(3, 2, size=(100, 3, 4, 4))
    Z = P.ZeroCenter().fit_transform(X)
    numpy.testing.assert_allclose(Z.mean(0), 0, atol=1e-12)
    zc = P.ZeroCenter(per_channel=True).fit(X)
    assert zc.mean.shape == (3, 1, 1)
    Zc = zc.transform(X)
    numpy.testing.assert_allclose(Zc.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    numpy.testing.assert_allclose(zc.inverse_transform(Zc), X, atol=1e-12)


def test_standardize_and_constant_feature():
    X = _correlated()
    X[:, 2] = 7.0
    s = P.Standardize().fit(X)
    Z = s.transform(X)
    numpy.testing.assert_allclose(Z.mean(0), 0, atol=1e-10)
    numpy.testing.assert_allclose(numpy.delete(Z.std(0), 2), 1, rtol=1e-10)
    assert numpy.isfinite(Z).all() and (Z[:, 2] == 0).all()
    numpy.testing.assert_allclose(s.inverse_transform(Z), X, rtol=1e-12)


def test_pca_whiten_gives_identity_covariance():
    X = _correlated()
    pca = P.PCA(whiten=True).fit(X)
    Z = pca.transform(X)
    numpy.testing.assert_allclose(_cov(Z), numpy.eye(5), atol=1e-6)
    numpy.testing.assert_allclose(pca.inverse_transform(Z), X, atol=1e-8)
    dec = P.PCA().fit(X).transform(X)  # decorrelated, not scaled: diagonal, descending variance
    c = _cov(dec)
    numpy.testing.assert_allclose(c - numpy.diag(numpy.diag(c)), 0, atol=1e-8)
    assert (numpy.diff(numpy.diag(c)) <= 0).all()
    assert P.PCA(n_components=2).fit(X).transform(X).shape == (2000, 2)
    with pytest.raises(ValueError, match=r"n_components must be in \[1, 5\]"):
        P.PCA(n_components=6).fit(X)


def test_zca_whitening_identity_covariance_and_stays_close():
    X = _correlated()
    zca = P.ZCAWhiten(eps=1e-9).fit(X)
    Z = zca.transform(X)
    numpy.testing.assert_allclose(_cov(Z), numpy.eye(5), atol=1e-6)
    W = zca.W  # ZCA's whitening matrix is symmetric
    numpy.testing.assert_allclose(W, W.T, atol=1e-10)
    numpy.testing.assert_allclose(zca.inverse_transform(Z), X, atol=1e-6)


def test_fit_on_train_only_and_state_round_trip():
    X = _correlated(seed=2)
    train, test = X[:1000], X[1000:] + 100.0
    s = P.Standardize().fit(train)
    numpy.testing.assert_allclose(s.mean, train.mean(0))  # test data never touched the statistics
    Zt = s.transform(test)
    assert Zt.mean() > 10  # the shift of the test data shows
    s2 = P.Standardize().load_state_dict(s.state_dict())
    numpy.testing.assert_array_equal(s2.transform(test), Zt)
    with pytest.raises(RuntimeError, match="not fitted"):
        P.PCA().transform(X)
    with pytest.raises(TypeError, match="X must be a float array"):
        P.Standardize().fit(numpy.ones((3, 2), numpy.int64))
