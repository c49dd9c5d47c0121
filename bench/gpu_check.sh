#!/usr/bin/env bash
# One call on a GPU machine: the GPU tests, then the GPU benchmark. It expects
# Python with numpy, CuPy and (for the comparison) PyTorch; distgrad's own
# dependencies (safetensors, tqdm) are installed into a scratch directory when
# missing. Usage: bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import safetensors, tqdm" 2>/dev/null || {
  python3 -m pip install -q --target /tmp/distgrad-deps safetensors tqdm \
    && export PYTHONPATH="$PYTHONPATH:/tmp/distgrad-deps" \
    || echo "note: safetensors/tqdm missing; the checkpoint and trainer GPU tests will fail"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_ops.py -x
status=$?
python3 bench/gpu_step.py --steps 5 --rounds 3 || status=1
exit $status
