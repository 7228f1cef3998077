#!/usr/bin/env bash
# One-shot GPU check of the fused Triton kernel (about 3 minutes on an H100):
#   1. environment (GPU, driver, versions) -> $OUT/env.txt
#   2. tests/test_triton.py on CUDA, compiled kernels (no interpreter) -> $OUT/test_triton.{log,xml}
#   3. benchmarks/bench_triton.py (kernel vs torch path vs reference) -> $OUT/bench_triton.{log,csv}
# Needs torch + triton installed and a CUDA device; uses the checkout via PYTHONPATH (no
# install). Every step runs even if an earlier one fails; the exit code is the first failure's.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        # default OUT: benchmarks/results/gpu
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/sasp-triton-cache}"
unset TRITON_INTERPRET SASP_BACKEND
status=0
run_step() {  # run_step NAME LIMIT_S CMD...: run with a time limit, report and return its exit code
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0))s"
    return "$rc"
}
keep() { if [ "$status" -eq 0 ]; then status=$1; fi; }

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
    python - <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except Exception as err:  # reported, the tests will skip
    print("triton import failed:", err)
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")
EOF
    git rev-parse --short HEAD 2>/dev/null || true
} 2>&1 | tee "$OUT/env.txt"

# pytest may be missing on a bare GPU image (and pip may be offline): a folder made here with
# `pip install --target .gpu_deps pytest` travels with the checkout and is used if needed
if ! python -c "import pytest" 2>/dev/null && [ -d .gpu_deps ]; then
    export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_deps"
fi
if python -c "import pytest" 2>/dev/null; then
    run_step tests 180 python -m pytest tests/test_triton.py -q -rs -p no:cacheprovider \
        --junitxml "$OUT/test_triton.xml" 2>&1 | tee "$OUT/test_triton.log"
    keep "${PIPESTATUS[0]}"
else
    echo "== tests: SKIPPED, pytest is not importable (pip install --target .gpu_deps pytest)" | tee "$OUT/test_triton.log"
    keep 3
fi
run_step bench 100 python benchmarks/bench_triton.py --csv "$OUT/bench_triton.csv" 2>&1 | tee "$OUT/bench_triton.log"
keep "${PIPESTATUS[0]}"
echo "gpu_check: exit $status; results in $OUT"
exit "$status"
