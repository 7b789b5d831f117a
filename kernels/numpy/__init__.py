"""The NumPy kernel path: every operation on NumPy arrays in whole-array NumPy expressions, and
the CPU matrix products (kernels/shared/cpu_blas.py). Entry module: ``path``."""

#: the operation keys this path runs (kernels/interface.py): all of them
OPS = frozenset(
    {
        "activation",
        "prelu",
        "maxout",
        "batchnorm",
        "softmax_xent",
        "matmul",
        "conv2d",
        "max_pool2d",
        "sgd",
        "adam",
    }
)
