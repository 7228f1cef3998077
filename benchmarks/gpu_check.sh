#!/usr/bin/env bash
# One-shot GPU check of the fused Triton kernel of similarity_as_points (a few minutes on an H100):
#   1. environment (GPU, driver, versions) -> $OUT/env.txt
#   2. the triton provider's tests on CUDA, compiled kernels (no interpreter): the "triton"
#      cases of tests/test_select.py, test_dtoc.py, test_similarity_as_points.py and all of
#      tests/test_triton.py -> $OUT/tests.{log,xml}
#   3. benchmarks/bench_similarity_as_points.py --device cuda (reference, torch, triton,
#      triton-nc, kernels) -> $OUT/bench_similarity_as_points.{log,csv}
# Needs torch + triton installed and a CUDA device; uses the checkout via PYTHONPATH (no
# install). Every step runs even if an earlier one fails; the exit code is the first failure's.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        # default OUT: benchmarks/out/gpu (not tracked)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out/gpu}"
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
    python - <<'PY'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except Exception as err:  # reported, the tests will skip
    print("triton import failed:", err)
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")
PY
    git rev-parse --short HEAD 2>/dev/null || true
} 2>&1 | tee "$OUT/env.txt"

# pytest (and hypothesis, which tests/test_select.py imports) may be missing on a bare GPU image
# (and pip may be offline): a folder made here with `pip install --target .gpu_deps pytest
# hypothesis` travels with the checkout and is used if needed
if ! python -c "import pytest, hypothesis" 2>/dev/null && [ -d .gpu_deps ]; then
    export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_deps"
fi
if python -c "import pytest, hypothesis" 2>/dev/null; then
    run_step tests 300 python -m pytest tests/test_select.py tests/test_dtoc.py tests/test_similarity_as_points.py \
        tests/test_triton.py -k triton -q -rs -p no:cacheprovider --junitxml "$OUT/tests.xml" 2>&1 | tee "$OUT/tests.log"
    keep "${PIPESTATUS[0]}"
else
    echo "== tests: SKIPPED, pytest or hypothesis is not importable (pip install --target .gpu_deps pytest hypothesis)" | tee "$OUT/tests.log"
    keep 3
fi
run_step bench 200 python benchmarks/bench_similarity_as_points.py --device cuda --sizes 1080x1920 4000x3000 \
    --csv "$OUT/bench_similarity_as_points.csv" 2>&1 | tee "$OUT/bench_similarity_as_points.log"
keep "${PIPESTATUS[0]}"
echo "gpu_check: exit $status; results in $OUT"
exit "$status"
