#!/usr/bin/env bash
# The one GPU check, for the lent GPU machine (no package registry there): offline install, the
# gpu-marked tests, the three benchmarks; logs land under $OUT (4 files). About 8 minutes at most:
# run it with timeout_s=540 so that a rerun still fits a 15-minute lease.
#   bash scripts/gpu_check.sh          (OUT defaults to ./gpu_out)
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import numpy, numba, cupy; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__)"
  python3 -c "import numba_cuda; print('numba-cuda', numba_cuda.__version__)" 2>/dev/null || echo "numba-cuda: absent"
  python3 -c "import torch; print('torch', torch.__version__)" 2>/dev/null || echo "torch: absent"
} 2>&1 | tee "$OUT/env.txt"

python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -3 | tee "$OUT/install.txt"
python3 -m gpunet info 2>&1 | tee -a "$OUT/install.txt"

echo "== pytest -m gpu" | tee "$OUT/pytest.txt"
timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider --no-header -rfE 2>&1 | tail -60 | tee -a "$OUT/pytest.txt"

: > "$OUT/bench.txt"
run_bench() {  # seconds, then the bench arguments
  local limit=$1; shift
  echo "== python -m gpunet.bench --backend cupy $*" | tee -a "$OUT/bench.txt"
  timeout "$limit" python3 -m gpunet.bench --backend cupy "$@" 2>&1 | tee -a "$OUT/bench.txt"
}
run_bench 120 activations --save-table
run_bench 90 batchnorm
run_bench 60 step
echo "== done: results in $OUT"
