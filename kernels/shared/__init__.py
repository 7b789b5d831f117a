"""What several kernel paths share: the activations' scalar math for both Numba targets
(``activation_math``), the Numba kernel cache (``numba_cache``), the CPU thread policy
(``cpu_threads``) and the CPU matrix-product library (``cpu_blas``)."""
