"""The functional core of gpunet: ``forward -> out`` and ``backward -> grads`` on xp arrays.

Every function takes NumPy arrays (NumPy reference) or CuPy arrays (GPU kernels, path chosen by
``gpunet.set_kernels``) and returns arrays on the same device.
"""
from .activations import (  # noqa: F401
    sigmoid, sigmoid_backward, tanh, tanh_backward, relu, relu_backward, leaky_relu,
    leaky_relu_backward, elu, elu_backward, selu, selu_backward, gelu, gelu_backward, softplus,
    softplus_backward, silu, silu_backward, ACTIVATIONS,
)
from .prelu import prelu, prelu_backward  # noqa: F401
from .maxout import maxout, maxout_backward  # noqa: F401
from .batchnorm import batch_norm_forward, batch_norm_backward, BatchNormCache  # noqa: F401
from .linear import linear_forward, linear_backward  # noqa: F401
from .conv import conv2d_forward, conv2d_backward  # noqa: F401
from .pooling import max_pool2d_forward, max_pool2d_backward  # noqa: F401
from .dropout import dropout_forward, dropout_backward, dropout_mask  # noqa: F401
