#!/usr/bin/env bash
# The one GPU check, for the lent GPU machine (no package registry there):
#   offline install, the gpu-marked tests, the benchmarks; everything lands under $OUT.
# Usage there:  bash scripts/gpu_check.sh        (OUT defaults to ./gpu_out)
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import numpy, numba, cupy; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__)"
  python3 -c "import torch; print('torch', torch.__version__)" 2>/dev/null || echo "torch: absent"
} 2>&1 | tee "$OUT/env.txt"

python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -3 | tee "$OUT/install.txt"

echo "== pytest -m gpu" | tee "$OUT/pytest.txt"
timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider -x --no-header 2>&1 | tail -40 | tee -a "$OUT/pytest.txt"

echo "== python -m gpunet.bench gpunet info" | tee "$OUT/bench.txt"
python3 -m gpunet info 2>&1 | tee -a "$OUT/bench.txt" || true
for which in activations batchnorm step; do
  echo "== python -m gpunet.bench --backend cupy $which" | tee -a "$OUT/bench.txt"
  timeout 150 python3 -m gpunet.bench --backend cupy "$which" 2>&1 | tee -a "$OUT/bench.txt"
done
echo "== done: results in $OUT"
