"""Registers, spills and shared memory of the hot CUDA kernels for sm_90, without a GPU.

Compiles each kernel to PTX with Numba (NVVM) and assembles it with nvJitLink, printing ptxas's
resource line: what bounds occupancy (resident warps per SM), hence the bytes of loads in flight
that a memory-bound kernel needs. Needs ``pip install "numba-cuda[cu13]"`` (NVVM, nvJitLink and
cuda-bindings), not a GPU or a driver. From the repository root:

    python benchmarks/cuda_registers.py            # as compiled
    python benchmarks/cuda_registers.py --max-registers 64
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numba.cuda.dispatcher as dispatcher
import numpy as np
from numba import cuda, typeof


class _Sm90:  # device functions ask the current device for its compute capability
    compute_capability = (9, 0)


dispatcher.get_current_device = lambda: _Sm90()

C_scoring = importlib.import_module("fastrec.kernels.numba_cuda.scoring")
C_topk = importlib.import_module("fastrec.kernels.numba_cuda.topk")
C_embedding = importlib.import_module("fastrec.kernels.numba_cuda.embedding")

f32, f64, i32, i64 = np.float32, np.float64, np.int32, np.int64


def _a(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def cases():
    """(name, python function, example arguments): the kernels the GPU benchmark times."""
    return [
        (
            "sigmoid_dense_c f32",
            C_scoring._sigmoid_dense_c.py_func,
            (_a((3, 4), f32), _a(4, f64), 0.5, _a(3, f32), 8),
        ),
        (
            "terms_dense_c f32",
            C_scoring._terms_dense_c.py_func,
            (
                _a((3, 4), f32),
                _a(3, f64),
                _a(4, f64),
                0.5,
                _a(3, f64),
                _a(3, f64),
                _a(3, f64),
                8,
                False,
            ),
        ),
        *(
            (
                f"warp topk f32 B{B} {items} loads{' pipelined' if pipe else ''}",
                C_topk._warp_topk_kernel(B, 4, items, pipe, None, f32).py_func,
                (_a((3, 4), f32), 5, _a(4, i64), _a(1, i64), _a((3, 5), i64), _a((3, 5), f32)),
            )
            for B, items, pipe in ((512, 8, True), (512, 8, False), (1024, 16, True))
        ),
        (
            "dot_topk f32 B64",
            C_embedding._dot_topk_kernel(64, True, None, f32).py_func,
            (
                _a((3, 4), f32),
                _a((5, 4), f32),
                2,
                _a(1, f32),
                False,
                _a(1, i64),
                False,
                5,
                _a(4, i64),
                _a(1, i64),
                _a((1, 1), f32),
                _a((1, 1), i32),
                _a((3, 2), i64),
                _a((3, 2), f32),
            ),
        ),
        (
            "block topk f32 P2048",
            C_topk._topk_kernel(2048, True, f32).py_func,
            (
                _a((3, 4), f32),
                5,
                _a(4, i64),
                _a(1, i64),
                _a((1, 1), f32),
                _a((1, 1), i32),
                _a((3, 5), i64),
                _a((3, 5), f32),
            ),
        ),
        (
            "sigmoid_csr f32",
            C_scoring._sigmoid_csr.py_func,
            (_a(4, i32), _a(4, i32), _a(4, f32), _a(4, f64), 0.5, _a(3, f32), 8),
        ),
        (
            "xt_csr_exact_sums",
            C_scoring._xt_csr_exact_sums.py_func,
            (_a(4, i32), _a(4, i32), _a(4, f32), _a(4, f64), _a(4, f64), 3, _a(4, f64), _a(4, f64)),
        ),
    ]


def resources(ptx: str, name: str, max_registers: int | None) -> str:
    from cuda.bindings import nvjitlink

    options = ["-arch=sm_90", "-verbose"]
    if max_registers:
        options.append(f"-Xptxas=-maxrregcount={max_registers}")
    handle = nvjitlink.create(len(options), options)
    data = ptx.encode()
    nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), name)
    nvjitlink.complete(handle)
    log = bytearray(nvjitlink.get_info_log_size(handle))
    nvjitlink.get_info_log(handle, log)
    nvjitlink.destroy(handle)
    lines = log.decode(errors="replace").splitlines()
    keep = [
        s.split(":", 1)[-1].replace("ptxas", "").strip(" .")
        for s in lines
        if "spill" in s or "Used" in s
    ]
    return "; ".join(keep)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-registers", type=int, default=None)
    args = parser.parse_args(argv)
    for name, fn, example in cases():
        ptx, _ = cuda.compile_ptx(fn, tuple(typeof(x) for x in example), cc=(9, 0))
        print(f"{name:24s} {resources(ptx, name, args.max_registers)}")
    print(
        "\nsm_90: 65536 registers and 64 warps per SM; resident warps <= 65536 / (32 * "
        "registers rounded up to 8), and by shared memory (228 KB per SM)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
