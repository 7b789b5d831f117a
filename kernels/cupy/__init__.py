"""The CuPy kernel path: CuPy arrays through gpunet's CUDA C (the ``*.cuh`` files here).

Entry module: ``path`` (imports CuPy). ``sources`` and ``elementwise_ops`` are plain text and
data, readable without CuPy (the tests compile every source with NVRTC, nvcc and the emulator).
"""

from ..interface import OP_FUNCTIONS

#: the operation keys this path runs (kernels/interface.py): all of them
OPS = frozenset(OP_FUNCTIONS)
