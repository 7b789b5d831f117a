"""The lecture's toy problem: a 2-layer net learns the (not linearly separable) spiral."""

import gpunet
from gpunet import nn, optim
from gpunet.datasets import make_spiral


def test_two_layer_net_learns_the_spiral():
    X, y = make_spiral(100, 3, seed=0)
    gpunet.seed(0)
    model = nn.mlp([2, 100, 3], activation="relu", batchnorm=False, init="he_normal")
    opt = optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    loss_fn = nn.SoftmaxCrossEntropy()
    for _ in range(1000):
        loss, dscores = loss_fn(model(X), y)
        model.zero_grad()
        model.backward(dscores)
        nn.l2_penalty_backward(model, 1e-3)
        opt.step()
    accuracy = float((model(X).argmax(1) == y).mean())
    assert accuracy >= 0.95, accuracy


def test_a_linear_classifier_cannot():
    """The data really needs the hidden layer (otherwise the test above would prove little)."""
    X, y = make_spiral(100, 3, seed=0)
    gpunet.seed(0)
    model = nn.Linear(2, 3)
    opt = optim.SGD(model.parameters(), lr=1.0)
    for _ in range(300):
        _, d = nn.SoftmaxCrossEntropy()(model(X), y)
        model.zero_grad()
        model.backward(d)
        opt.step()
    assert float((model(X).argmax(1) == y).mean()) < 0.65
