#!/usr/bin/env bash
# One prepared GPU session (device time is short): environment, the GPU benchmark cases, Nsight
# Compute on the tuned kernels, and the CUDA tests on the GPU itself. From the repository root
# of a GPU machine; outputs under ${OUT:-gpu_out}/. Cases: arguments (default: topk dot_topk
# recommend). Carry a numpy < 2.5 wheel in .whl/ where the machine's numpy is 2.5 (numba-cuda
# does not import with it).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/numpy-*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
CASES=${*:-topk dot_topk recommend}
# shellcheck disable=SC2086
timeout 330 python3 benchmarks/gpu_bench.py --cases $CASES 2>&1 | grep -v -i warn | tee "$OUT/bench.txt"
if command -v ncu > /dev/null; then
  timeout 120 ncu --kernel-name regex:"^kernel" --launch-skip 2 --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    python3 benchmarks/gpu_profile.py > "$OUT/ncu.txt" 2>&1
  grep -E "kernel|Duration|Throughput|Registers|Achieved Occupancy|No Eligible" "$OUT/ncu.txt"
fi
PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src:tests timeout 240 python3 -m pytest -q -x -p no:randomly \
  tests/test_cuda_equivalence.py tests/test_dot_topk_cuda.py tests/test_cuda_device_csr.py \
  tests/test_cuda_models_device.py tests/test_cuda_compile.py 2>&1 | tee "$OUT/tests.txt" | tail -5
