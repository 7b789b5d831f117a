#!/usr/bin/env bash
# The main job from a fresh clone: make .venv, install gpunet (with CuPy + numba-cuda when an NVIDIA
# GPU answers; else for the CPU, with MKL kept only where it measures faster than NumPy's OpenBLAS),
# then train the default MLP on the bundled digits. Extra arguments go to `gpunet train`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
extra=""
if command -v nvidia-smi >/dev/null 2>&1 && cuda=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$'); then
  if [ "${cuda:-0}" -ge 13 ]; then extra="[cuda13]"; elif [ "${cuda:-0}" -ge 12 ]; then extra="[cuda12]"; fi
fi
if [ -n "$extra" ]; then
  echo "NVIDIA GPU found (driver CUDA $cuda): installing gpunet$extra"
  .venv/bin/pip install -q -e ".$extra" || { echo "GPU extras failed to install; continuing on the CPU"; .venv/bin/pip install -q -e .; }
else
  # The CPU: NumPy's OpenBLAS, or Intel MKL where it measures faster on this machine (Linux x86-64,
  # where MKL's wheels exist): gpunet times both on a training step's products (0.5-1 s, kept per
  # machine; `gpunet info` says which and why) and MKL (~650 MB) is removed again where it is not
  # the faster -- on AMD CPUs OpenBLAS's AVX-512 kernels ran the products up to 2x faster.
  echo "no NVIDIA GPU answered: installing gpunet for the CPU"
  .venv/bin/pip install -q -e ".[mkl]" || { echo "MKL failed to install; using NumPy's OpenBLAS"; .venv/bin/pip install -q -e .; }
  blas=$(.venv/bin/python -c "from gpunet.kernels.shared import cpu_blas; print(cpu_blas.active())")
  if [ "$blas" != mkl ] && .venv/bin/python -c "import importlib.metadata as m; m.version('mkl')" 2>/dev/null; then
    echo "MKL measured no faster than NumPy's OpenBLAS here: removing it"
    .venv/bin/pip uninstall -q -y mkl intel-openmp tbb tcmlib umf intel-cmplr-lib-ur
  fi
  .venv/bin/gpunet info | grep "CPU matrix products" || true
fi
exec .venv/bin/gpunet train "$@"
