#!/usr/bin/env bash
# One call on a GPU machine: the GPU tests, then the GPU benchmark. It expects
# Python with numpy, CuPy and (for the comparison) PyTorch; distgrad's own
# dependencies (safetensors, tqdm) are installed into a scratch directory when
# missing. Usage: bash bench/gpu_check.sh [LOG_DIR]
# With LOG_DIR, the test log and the benchmark's output are also written there.
set -uo pipefail
cd "$(dirname "$0")/.."
log_dir="${1:-}"
[ -n "$log_dir" ] && mkdir -p "$log_dir"
tee_to() { if [ -n "$log_dir" ]; then tee "$log_dir/$1"; else cat; fi; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import safetensors, tqdm, threadpoolctl, ml_dtypes" 2>/dev/null || {
  python3 -m pip install -q --target /tmp/distgrad-deps safetensors tqdm threadpoolctl ml_dtypes \
    && export PYTHONPATH="$PYTHONPATH:/tmp/distgrad-deps" \
    || echo "note: distgrad's dependencies are missing; the checkpoint and trainer GPU tests will fail"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import numpy, cupy; print('numpy', numpy.__version__, 'cupy', cupy.__version__)"
# Several workers compile CuPy's kernels in parallel (pytest-xdist, where installed).
par=()
python3 -c "import xdist" 2>/dev/null && par=(-n "${GPU_CHECK_WORKERS:-8}")
timeout_opt=()
python3 -c "import pytest_timeout" 2>/dev/null && timeout_opt=(--timeout=300)
python3 -m pytest -q -p no:cacheprovider -rfE --tb=short "${par[@]}" "${timeout_opt[@]}" \
  tests/test_gpu.py tests/test_rng_devices.py tests/test_bfloat16.py tests/test_autocast.py \
  tests/test_flash_attention.py 2>&1 | tee_to tests.log
status=${PIPESTATUS[0]}
python3 bench/gpu_step.py --steps 5 --rounds 3 ${GPU_CHECK_BENCH_ARGS:-} 2>&1 | tee_to bench.log
[ "${PIPESTATUS[0]}" = 0 ] || status=1
exit $status
