"""The Numba CPU kernel path: NumPy arrays through kernels Numba compiles for the CPU
(activations, BatchNorm, softmax cross-entropy, convolution and max pooling, the SGD and Adam
updates).
Entry module: ``path``."""

#: the operation keys this path runs (kernels/interface.py); gpunet.dispatch sends the others
#: (prelu, maxout, matmul) to the NumPy path
OPS = frozenset({"activation", "batchnorm", "softmax_xent", "conv2d", "max_pool2d", "sgd", "adam"})
