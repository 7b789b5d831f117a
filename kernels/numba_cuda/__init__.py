"""The Numba CUDA kernel path: CuPy arrays through kernels written in Python with Numba CUDA
(activations, PReLU, Maxout, BatchNorm), the cross-check of the CuPy path.
Entry module: ``path``."""

#: the operation keys this path runs (kernels/interface.py); gpunet.dispatch sends the others
#: (softmax_xent, matmul, sgd, adam) to the CuPy path
OPS = frozenset({"activation", "prelu", "maxout", "batchnorm"})
