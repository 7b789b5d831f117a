"""The functional core of gpunet: ``forward -> out`` and ``backward -> grads`` on xp arrays.

Every function takes NumPy arrays (NumPy reference) or CuPy arrays (GPU kernels, path chosen by
``gpunet.set_kernels``) and returns arrays on the same device.
"""

from .activations import (  # noqa: F401
    ACTIVATIONS,
    elu,
    elu_backward,
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    selu,
    selu_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
    softplus,
    softplus_backward,
    tanh,
    tanh_backward,
)
from .batchnorm import BatchNormCache, batch_norm_backward, batch_norm_forward  # noqa: F401
from .conv import conv2d_backward, conv2d_forward  # noqa: F401
from .dropout import dropout_backward, dropout_forward, dropout_mask  # noqa: F401
from .linear import linear_backward, linear_forward  # noqa: F401
from .loss import multiclass_svm, softmax_cross_entropy  # noqa: F401
from .maxout import maxout, maxout_backward  # noqa: F401
from .pooling import (  # noqa: F401
    avg_pool2d_backward,
    avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from .prelu import prelu, prelu_backward  # noqa: F401
