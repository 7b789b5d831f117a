"""Modules: layers, activations, BatchNorm, losses, and the ``mlp`` and ``convnet`` builders."""

from .activation import (  # noqa: F401
    ACTIVATION_LAYERS,
    ELU,
    GELU,
    SELU,
    LeakyReLU,
    Maxout,
    PReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
)
from .batchnorm import BatchNorm1d, BatchNorm2d  # noqa: F401
from .builders import convnet, mlp  # noqa: F401
from .layers import (  # noqa: F401
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    SymmetryWarning,
)
from .loss import MulticlassSVM, SoftmaxCrossEntropy, l2_penalty, l2_penalty_backward  # noqa: F401
from .module import Module, Parameter, Sequential  # noqa: F401
