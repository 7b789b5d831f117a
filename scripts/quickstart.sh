#!/usr/bin/env bash
# The main job from a fresh clone: make .venv, install gpunet (with CuPy + numba-cuda when an NVIDIA
# GPU answers; else with MKL for the CPU's matrix products, on Linux x86-64 where its wheels exist),
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
  # [mkl]: MKL's matrix products (5-12 % faster than NumPy's OpenBLAS here, on the threads of the
  # Numba kernels; BENCHMARKS.md). Its marker makes it a no-op where no MKL wheel exists; should
  # the download fail, gpunet runs on NumPy's OpenBLAS.
  echo "no NVIDIA GPU answered: installing gpunet for the CPU (with MKL where it exists)"
  .venv/bin/pip install -q -e ".[mkl]" || { echo "MKL failed to install; using NumPy's OpenBLAS"; .venv/bin/pip install -q -e .; }
fi
exec .venv/bin/gpunet train "$@"
