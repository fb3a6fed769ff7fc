"""Launch each tuned CUDA kernel a few times at gpu_bench.py's sizes, for a profiler.

Run under Nsight Compute on a GPU machine, from the repository root, e.g.:

    ncu --kernel-name regex:"sigmoid|^kernel" --launch-skip 2 --launch-count 3 \
        --section SpeedOfLight --section Occupancy --section WarpStateStats \
        python benchmarks/gpu_profile.py

Each kernel runs three times (the first compiles); data are generated on the device.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

from fastrec.kernels import numba_cuda as C  # noqa: E402


def main() -> int:
    rng = np.random.default_rng(1)
    X = cuda.to_device(rng.random((2_000_000, 64), dtype=np.float32))
    w = cuda.to_device(rng.normal(size=64) / 4)
    out = cuda.device_array(X.shape[0], dtype=np.float32)
    S = cuda.to_device(rng.random((4096, 100_000), dtype=np.float32))
    for _ in range(3):
        C.sigmoid_dense(X, w, 0.1, out, None)
        C.topk(S, 100, None, None, None)
    X = S = None
    Q = cuda.to_device(rng.uniform(-0.1, 0.1, (50_000, 64)).astype(np.float32))
    items = cuda.to_device(rng.uniform(-0.1, 0.1, (20_000, 64)).astype(np.float32))
    for _ in range(3):
        C.dot_topk(Q, items, 10, None, None, None, None, None)
    cuda.synchronize()
    print(
        "profiled: sigmoid_dense 2M x 64 fp32, topk 4096 x 100k fp32 k=100, "
        "dot_topk 50k x 20k x 64 fp32 k=10"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
