"""Device code of gpunet and its four kernel paths (shipped as ``gpunet.kernels``).

Kernels know nothing of layers: they take arrays and sizes. The layout, as Keras 3 lays out its
backends -- one subpackage per path, the same module names in each, one entry module ``path``:

=====================  ===========================================================  =========
subpackage             what runs                                                    arrays
=====================  ===========================================================  =========
``numpy/``             vectorized NumPy expressions; the CPU BLAS (complete path)   NumPy
``numba_cpu/``         Numba CPU kernels (activations, BatchNorm, loss, optimizers)  NumPy
``cupy/``              CUDA C (``*.cuh``) through CuPy; cuBLAS (complete path)      CuPy
``numba_cuda/``        Numba CUDA kernels (activations, PReLU, Maxout, BatchNorm)   CuPy
``shared/``            what several paths use: the Numba scalar math of the
                       activations, the Numba cache, the CPU thread policy and BLAS
=====================  ===========================================================  =========

``interface.py`` declares the operations (``KernelPath``, ``BNSpec``, ...), ``activation_table.py``
is the one table of the activations, and ``generate.py`` writes the code derived from it
(``cupy/generated.cuh``, ``numba_cuda/fused_switch.py``). gpunet/dispatch.py picks the path of
each call; paths never import each other (only ``shared``).
"""
