"""End to end on the GPU (skipped without one): the same network and data give the same numbers on
NumPy and CuPy, and the main job trains on the GPU."""

import numpy
import pytest

import gpunet
from gpunet import nn, optim

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kernels", ["cupy", "numba"])
def test_mlp_forward_backward_step_match_numpy(kernels):
    from gpunet.dispatch import numba_cuda_problem

    if kernels == "numba":  # a fallback would run the CuPy kernels and pass unseen
        assert numba_cuda_problem() is None, numba_cuda_problem()
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(64, 20)).astype(numpy.float32)
    y = rng.integers(0, 5, 64)
    results = {}
    for backend in ("numpy", "cupy"):
        gpunet.set_backend(backend)
        gpunet.seed(1)
        model = nn.mlp([20, 32, 16, 5], activation="relu", batchnorm=True).to(backend)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        with gpunet.use_kernels(kernels):
            for _ in range(3):
                loss, d = nn.SoftmaxCrossEntropy()(model(gpunet.asarray(x)), gpunet.asarray(y))
                model.zero_grad()
                model.backward(d)
                opt.step()
        results[backend] = (
            float(loss),
            {k: gpunet.to_numpy(v) for k, v in model.state_dict().items()},
        )
    assert results["cupy"][0] == pytest.approx(results["numpy"][0], rel=1e-4)
    for k, v in results["numpy"][1].items():
        numpy.testing.assert_allclose(results["cupy"][1][k], v, rtol=1e-3, atol=1e-4, err_msg=k)


def test_main_job_on_gpu(tmp_path):
    from gpunet.run import TrainConfig, run

    result = run(TrainConfig(backend="cupy", out=str(tmp_path), progress=False))
    assert gpunet.get_backend() == "cupy"
    assert result["test_acc"] >= 0.95


def test_dropout_and_seed_reproducible_on_gpu():
    gpunet.set_backend("cupy")
    outs = []
    for _ in range(2):
        gpunet.seed(3)
        layer = nn.Dropout(0.5)
        outs.append(gpunet.to_numpy(layer(gpunet.asarray(numpy.ones((100, 100), numpy.float32)))))
    numpy.testing.assert_array_equal(outs[0], outs[1])
    assert abs((outs[0] == 0).mean() - 0.5) < 0.02


def test_data_too_large_for_the_device_moves_batch_by_batch(monkeypatch):
    from gpunet import train
    from gpunet.datasets import make_spiral

    monkeypatch.setattr(
        gpunet.backend, "DEVICE_DATA_FRACTION", 0.0
    )  # nothing "fits": stays on the host
    gpunet.set_backend("cupy")
    gpunet.seed(0)
    X, y = make_spiral(100, 3, seed=0)
    model = nn.mlp([2, 64, 3])
    h = train.fit(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.Adam(model.parameters(), 0.02),
        X,
        y,
        epochs=20,
        batch_size=32,
        progress=False,
        seed=0,
    )
    assert h.train_acc[-1] > 0.8
