#!/usr/bin/env bash
# The one GPU check, for the lent GPU machine (no package registry there). Parts, each with its own
# time limit, log and summary line under $OUT:
#   install  offline editable install, `gpunet info` (which compiles and runs a kernel)
#   cupy     pytest -m gpu, the CuPy paths          numba  pytest -m gpu, the Numba CUDA paths
#   e2e      pytest -m gpu, end to end              bench  the three benchmarks against torch
# GPUNET_REQUIRE_GPU=1: a skipped GPU test or a Numba-to-CuPy fallback is a failure. The full logs
# stay in $OUT; $OUT/summary.txt has one line per part and is printed last. Correctness first, then
# the BatchNorm benchmark (the target that decides issue #22), then the others. The parts' limits
# add up to 440 s (install 60, cupy 120, numba 75, e2e 45, bench 45 + 60 + 35): with the ~3-minute
# start, two runs fit a 15-minute lease. Run it with timeout_s=480.
#   bash scripts/gpu_check.sh          (OUT defaults to ./gpu_out)
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GPUNET_REQUIRE_GPU=1
: > "$OUT/summary.txt"
status=0

summary() {  # part, exit code, log: the last pytest-style summary line or the exit code
  local part=$1 rc=$2 log=$3 line
  line=$(grep -E '([0-9]+ (passed|failed|error|errors|skipped|deselected))|no tests ran' "$log" | tail -1)
  [ -n "$line" ] || line="(no summary line)"
  [ "$rc" -eq 124 ] && line="TIMED OUT; $line"
  printf '%-8s rc=%-3s %s\n' "$part" "$rc" "$line" >> "$OUT/summary.txt"
  if [ "$rc" -ne 0 ] || [ "$line" = "(no summary line)" ]; then status=1; fi
}

{
  echo "== $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import numpy, numba, cupy; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__)"
  python3 -c "import numba_cuda; print('numba-cuda', numba_cuda.__version__)" 2>/dev/null || echo "numba-cuda: absent"
  python3 -c "import torch; print('torch', torch.__version__)" 2>/dev/null || echo "torch: absent"
} > "$OUT/env.txt" 2>&1

# no package registry on the lent machine: --no-index, and the whole part bounded
timeout 60 bash -c 'python3 -m pip install -q --no-index --no-build-isolation --no-deps -e . \
  && python3 -m gpunet info' > "$OUT/install.log" 2>&1
rc=$?; printf '%-8s rc=%-3s %s\n' install "$rc" "$(tail -1 "$OUT/install.log")" >> "$OUT/summary.txt"
[ "$rc" -eq 0 ] || status=1

run_pytest() {  # part, seconds, pytest arguments...
  local part=$1 limit=$2; shift 2
  timeout "$limit" python3 -m pytest -m gpu -q -p no:cacheprovider --no-header -rfEs "$@" > "$OUT/$part.log" 2>&1
  summary "$part" $? "$OUT/$part.log"
}
run_pytest cupy 120 --ignore=tests/test_gpu_end_to_end.py -k "not numba"
run_pytest numba 75 --ignore=tests/test_gpu_end_to_end.py -k numba
run_pytest e2e 45 tests/test_gpu_end_to_end.py

: > "$OUT/bench.log"
for spec in "45 batchnorm" "60 activations --save-table" "35 step"; do
  set -- $spec
  limit=$1; shift
  echo "== python -m gpunet.bench --backend cupy $*" >> "$OUT/bench.log"
  timeout "$limit" python3 -m gpunet.bench --backend cupy "$@" >> "$OUT/bench.log" 2>&1
  rc=$?; printf '%-8s rc=%-3s %s\n' "bench" "$rc" "$1" >> "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || status=1
done

echo "== results in $OUT (logs: install cupy numba e2e bench)"
cat "$OUT/summary.txt"
exit $status
