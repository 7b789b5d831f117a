"""Data preprocessing, fitted on the training data only and applied unchanged to validation and
test data (CS231n: "statistics are fitted on the training set").

Every transform has ``fit(X)``, ``transform(X)``, ``fit_transform(X)``, ``inverse_transform(Z)``,
and ``state_dict()`` / ``load_state_dict()`` (plain arrays: saved in the checkpoint with the
model). X is (N, D) or (N, C, H, W) on either backend; statistics live on X's device.

* ZeroCenter: x - mean image (per_channel=True: x - per-channel mean, as VGG). The lecture's
  choice for images.
* Standardize: (x - mean) / std per feature; a constant feature gets std 1 (no division by 0).
* PCA(n_components, whiten): z = (x - mean) V_k (decorrelated); whitened z / sqrt(lambda + eps),
  so the covariance of transformed training data is the identity.
* ZCAWhiten(eps): x -> (x - mean) V diag(1 / sqrt(lambda + eps)) V^T (whitened, stays in pixel
space).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy

from gpunet.types import Array

from .backend import get_array_module, to_numpy


class Transform:
    _state: tuple = ()

    def fit(self, X: Array) -> Transform:
        raise NotImplementedError

    def transform(self, X: Array) -> Array:
        raise NotImplementedError

    def inverse_transform(self, Z: Array) -> Array:
        raise NotImplementedError

    def fit_transform(self, X: Array) -> Array:
        return self.fit(X).transform(X)

    def _check_fitted(self) -> None:
        if getattr(self, self._state[0], None) is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X_train) first")

    def _check_input(self, X: Array, name: str = "X"):
        if not hasattr(X, "shape") or X.ndim < 2:
            raise ValueError(
                f"{name} must be an array of shape (N, features...), got "
                f"{getattr(X, 'shape', type(X))}"
            )
        if X.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array, got dtype {X.dtype}")
        xp = get_array_module(X)
        bad = ~xp.isfinite(X.reshape(len(X), -1)).all(axis=1)
        if bool(bad.any()):
            raise ValueError(
                f"{name} holds NaN/Inf values in {int(bad.sum())} examples (first: row "
                f"{int(xp.argmax(bad))}): clean or impute the data before {type(self).__name__}"
            )
        mean = getattr(self, "mean", None)
        if mean is not None:
            per_channel = getattr(self, "per_channel", False)
            got = X.shape[1] if per_channel else int(numpy.prod(X.shape[1:]))
            if got != mean.size:
                what = "channels" if per_channel else "features"
                raise ValueError(
                    f"{name} has {got} {what} per example but {type(self).__name__} was fitted "
                    f"on data with {mean.size}: transform data shaped like the training data"
                )
        return get_array_module(X)

    def state_dict(self) -> dict:
        self._check_fitted()
        return {k: to_numpy(getattr(self, k)) for k in self._state}

    def load_state_dict(self, state: dict) -> Transform:
        missing = [k for k in self._state if k not in state]
        if missing:
            raise KeyError(f"{type(self).__name__} state is missing {missing}")
        for k in self._state:
            setattr(self, k, numpy.asarray(to_numpy(state[k])))
        return self

    def _on(self, xp: ModuleType, a: Array) -> Array:
        return xp.asarray(a)


class ZeroCenter(Transform):
    """Subtract the training mean: the mean image, or the per-channel mean (axis 1) with
    ``per_channel=True``."""

    _state = ("mean",)

    def __init__(self, per_channel: bool = False):
        self.per_channel, self.mean = per_channel, None

    def fit(self, X: Array) -> Transform:
        self._check_input(X)
        if self.per_channel:
            if X.ndim < 3:
                raise ValueError(f"per_channel=True needs (N, C, ...) images, got shape {X.shape}")
            axes = (0,) + tuple(range(2, X.ndim))
            self.mean = X.astype("float64").mean(axis=axes, keepdims=True)[0]
        else:
            self.mean = X.astype("float64").mean(axis=0)
        return self

    def transform(self, X: Array) -> Array:
        self._check_fitted()
        xp = self._check_input(X)
        return (X - self._on(xp, self.mean)).astype(X.dtype)

    def inverse_transform(self, Z: Array) -> Array:
        self._check_fitted()
        xp = self._check_input(Z, "Z")
        return (Z + self._on(xp, self.mean)).astype(Z.dtype)


class Standardize(Transform):
    """Zero mean and unit variance per feature (constant features: std taken as 1)."""

    _state = ("mean", "std")

    def __init__(self):
        self.mean = self.std = None

    def fit(self, X: Array) -> Transform:
        xp = self._check_input(X)
        Xd = X.astype("float64")
        self.mean = Xd.mean(axis=0)
        std = Xd.std(axis=0)
        self.std = xp.where(std > 0, std, 1.0)
        return self

    def transform(self, X: Array) -> Array:
        self._check_fitted()
        xp = self._check_input(X)
        return ((X - self._on(xp, self.mean)) / self._on(xp, self.std)).astype(X.dtype)

    def inverse_transform(self, Z: Array) -> Array:
        self._check_fitted()
        xp = self._check_input(Z, "Z")
        return (Z * self._on(xp, self.std) + self._on(xp, self.mean)).astype(Z.dtype)


def _eig_cov(X: Array) -> tuple:
    """mean, eigenvalues (descending), eigenvectors of the covariance of X flattened to (N, D)."""
    xp = get_array_module(X)
    Xd = X.reshape(len(X), -1).astype("float64")
    if len(Xd) < 2:
        raise ValueError("fitting a covariance needs at least 2 examples")
    mean = Xd.mean(axis=0)
    Xc = Xd - mean
    cov = Xc.T @ Xc / (len(Xd) - 1)
    lam, vec = xp.linalg.eigh(cov)
    order = xp.argsort(lam)[::-1]
    return mean, xp.maximum(lam[order], 0.0), vec[:, order]


class PCA(Transform):
    """Project onto the top principal components (all with ``n_components=None``); ``whiten``
    divides each by sqrt(eigenvalue + eps). Output (N, k)."""

    _state = ("mean", "components", "scale", "in_shape")

    def __init__(self, n_components: int | None = None, whiten: bool = False, eps: float = 1e-8):
        self.n_components, self.whiten, self.eps = n_components, whiten, eps
        self.mean: Array | None = None
        self.components: Array | None = None
        self.scale: Array | None = None
        self.in_shape: Array | None = None

    def fit(self, X: Array) -> Transform:
        self._check_input(X)
        mean, lam, vec = _eig_cov(X)
        D = vec.shape[0]
        k = D if self.n_components is None else int(self.n_components)
        if not 1 <= k <= D:
            raise ValueError(f"n_components must be in [1, {D}], got {self.n_components}")
        self.mean, self.components = mean, vec[:, :k]
        self.scale = 1.0 / (lam[:k] + self.eps) ** 0.5 if self.whiten else lam[:k] * 0 + 1.0
        self.explained_variance = lam[:k]
        self.in_shape = numpy.asarray(X.shape[1:])
        return self

    def transform(self, X: Array) -> Array:
        self._check_fitted()
        xp = self._check_input(X)
        Xd = X.reshape(len(X), -1).astype("float64") - self._on(xp, self.mean)
        return ((Xd @ self._on(xp, self.components)) * self._on(xp, self.scale)).astype(X.dtype)

    def inverse_transform(self, Z: Array) -> Array:
        """Back to input space (exact when all components are kept)."""
        self._check_fitted()
        xp = self._check_input(Z, "Z")
        Xd = (Z.astype("float64") / self._on(xp, self.scale)) @ self._on(
            xp, self.components
        ).T + self._on(xp, self.mean)
        return Xd.reshape((len(Z),) + tuple(int(s) for s in to_numpy(self.in_shape))).astype(
            Z.dtype
        )


class ZCAWhiten(Transform):
    """ZCA whitening: decorrelate to unit variance, then rotate back to the input axes."""

    _state = ("mean", "W", "W_inv")

    def __init__(self, eps: float = 1e-5):
        self.eps = eps
        self.mean = self.W = self.W_inv = None

    def fit(self, X: Array) -> Transform:
        self._check_input(X)
        self.mean, lam, vec = _eig_cov(X)
        self.W = (vec / (lam + self.eps) ** 0.5) @ vec.T
        self.W_inv = (vec * (lam + self.eps) ** 0.5) @ vec.T
        return self

    def transform(self, X: Array) -> Array:
        self._check_fitted()
        xp = self._check_input(X)
        Xd = X.reshape(len(X), -1).astype("float64") - self._on(xp, self.mean)
        return (Xd @ self._on(xp, self.W)).reshape(X.shape).astype(X.dtype)

    def inverse_transform(self, Z: Array) -> Array:
        self._check_fitted()
        xp = self._check_input(Z, "Z")
        Xd = Z.reshape(len(Z), -1).astype("float64") @ self._on(xp, self.W_inv) + self._on(
            xp, self.mean
        )
        return Xd.reshape(Z.shape).astype(Z.dtype)


PREPROCESSORS: dict[str, Callable[[], Transform] | None] = {
    "none": None,
    "zero_center": ZeroCenter,
    "standardize": Standardize,
    "pca": PCA,
    "pca_whiten": lambda: PCA(whiten=True),
    "zca": ZCAWhiten,
}
