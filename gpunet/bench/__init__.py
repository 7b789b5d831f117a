"""Benchmarks: python -m gpunet.bench {activations,batchnorm,step}."""
