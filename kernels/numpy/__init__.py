"""The NumPy kernel path: every operation on NumPy arrays in whole-array NumPy expressions, and
the CPU matrix products (kernels/shared/cpu_blas.py). Entry module: ``path``."""

from ..interface import OP_FUNCTIONS

#: the operation keys this path runs (kernels/interface.py): all of them
OPS = frozenset(OP_FUNCTIONS)
