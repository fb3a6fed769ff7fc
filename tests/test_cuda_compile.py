"""Every CUDA kernel compiles for a real GPU (sm_90 PTX through NVVM), without needing one.

The simulator (tests/test_cuda_equivalence.py) runs the kernels as Python, so it cannot catch
what only Numba's CUDA compiler rejects (typing, unsupported intrinsics). This test compiles
each kernel specialisation the backend launches, in a subprocess with the simulator off.
It needs NVIDIA's NVVM library (``pip install "numba-cuda[cu13]"``), not a GPU or a driver;
skipped where NVVM is missing (CI installs only numba-cuda: the toolkit is ~0.5 GB).
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A whole compile, not just loading NVVM: some machines have NVVM but no NVRTC, which the
# compile also needs.
_PROBE = (
    "from numba.cuda.cudadrv import nvvm; nvvm.NVVM(); from numba import cuda; "
    "cuda.compile_ptx(lambda x: None, '(float32[:],)', cc=(9, 0))"
)


def _env():
    env = dict(os.environ)
    env["NUMBA_ENABLE_CUDASIM"] = "0"
    return env


def _nvvm_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", _PROBE], env=_env(), capture_output=True)
    return probe.returncode == 0


def compile_all() -> int:
    """Compile every case; print one line each; return the number of failures."""
    import time

    import numba.cuda.dispatcher as dispatcher
    import numpy as np
    from numba import cuda, typeof

    class _Sm90:  # device functions ask the current device for its compute capability
        compute_capability = (9, 0)

    dispatcher.get_current_device = lambda: _Sm90()
    C_device = importlib.import_module("fastrec.kernels.numba_cuda._device")
    C_checks = importlib.import_module("fastrec.kernels.numba_cuda._csr_checks")
    C_scoring = importlib.import_module("fastrec.kernels.numba_cuda.scoring")
    C_similarity = importlib.import_module("fastrec.kernels.numba_cuda.similarity")
    C_topk = importlib.import_module("fastrec.kernels.numba_cuda.topk")
    C_embedding = importlib.import_module("fastrec.kernels.numba_cuda.embedding")

    f32, f64, i32, i64 = np.float32, np.float64, np.int32, np.int64

    def a(shape, dt, order="C"):
        return np.zeros(shape, dtype=dt, order=order)

    cases = []
    for vt in (f32, f64):
        for it in (i32, i64):
            ip, ix, dv = a(5, it), a(4, it), a(4, vt)
            for P, shared in ((2048, True), (4096, False)):
                k = C_topk._topk_kernel(P, shared, vt)
                cases.append(
                    (
                        f"topk {vt.__name__} {it.__name__} P{P} sh{shared}",
                        k.py_func,
                        (
                            a((3, 4), vt),
                            5,
                            ip,
                            ix,
                            a((1, 1), vt),
                            a((1, 1), i32),
                            a((3, 5), i64),
                            a((3, 5), vt),
                        ),
                    )
                )
                cases.append(
                    (
                        f"topk F-order {vt.__name__}",
                        k.py_func,
                        (
                            a((3, 4), vt, "F"),
                            5,
                            ip,
                            ix,
                            a((1, 1), vt),
                            a((1, 1), i32),
                            a((3, 5), i64),
                            a((3, 5), vt),
                        ),
                    )
                )
                k = C_similarity._cosine_topk_kernel(P, shared, vt)
                cases.append(
                    (
                        f"cosine_topk {vt.__name__} {it.__name__} P{P} sh{shared}",
                        k.py_func,
                        (
                            ip,
                            ix,
                            dv,
                            a(5, i64),
                            a(4, i32),
                            a(4, vt),
                            a(4, f64),
                            5,
                            0.0,
                            0.0,
                            1,
                            False,
                            True,
                            a((2, 4), vt),
                            a((2, 4), i32),
                            a((2, 4), i32),
                            a((2, 4), i32),
                            a((1, 1), vt),
                            a((1, 1), i32),
                            a((4, 5), i32),
                            a((4, 5), vt),
                            a(4, i64),
                            a(4, i64),
                            a(1, i64),
                        ),
                    )
                )
                k = C_topk._recommend_kernel(P, shared, vt)
                cases.append(
                    (
                        f"recommend {vt.__name__} {it.__name__} P{P} sh{shared}",
                        k.py_func,
                        (
                            ip,
                            ix,
                            dv,
                            ip,
                            ix,
                            dv,
                            a(3, i64),
                            5,
                            ip,
                            ix,
                            a(5, i64),
                            a(1, i64),
                            a((2, 4), vt),
                            a((2, 4), i32),
                            a((2, 4), i32),
                            a((1, 1), vt),
                            a((1, 1), i32),
                            a((3, 5), i64),
                            a((3, 5), vt),
                            a(3, i64),
                            a(1, i64),
                        ),
                    )
                )
            cases.append(
                (
                    f"cosine_similarity {vt.__name__} {it.__name__}",
                    C_similarity._cosine_similarity_kernel.py_func,
                    (
                        ip,
                        ix,
                        dv,
                        a(5, i64),
                        a(4, i32),
                        a(4, vt),
                        a(4, f64),
                        a(4, f64),
                        0.0,
                        True,
                        a(5, i64),
                        a((2, 4), vt),
                        a((2, 4), i32),
                        a((2, 4), i32),
                        a(4, i64),
                        a(4, i64),
                        a(4, vt),
                    ),
                )
            )
            cases.append(
                (
                    f"scale_rows {vt.__name__}",
                    C_similarity._scale_rows.py_func,
                    (ip, dv, a(4, vt), a(4, f64)),
                )
            )
            cases.append(("column_counts", C_similarity._column_counts.py_func, (ix, a(4, i64))))
            cases.append(("row_work", C_device._row_work.py_func, (ip, ix, a(4, i64), a(4, i64))))
            cases.append(
                (
                    "scatter_T",
                    C_similarity._scatter_transpose.py_func,
                    (ip, ix, dv, a(4, i64), a(4, i32), a(4, vt)),
                )
            )
            cases.append(
                (
                    "compact_rows",
                    C_similarity._compact_rows.py_func,
                    (a(4, i64), a(5, i64), a((4, 3), i32), a((4, 3), vt), a(4, i64), a(4, vt)),
                )
            )
            cases.append(
                (
                    "compact_rows64",
                    C_similarity._compact_rows.py_func,
                    (a(4, i64), a(5, i64), a((4, 3), i64), a((4, 3), vt), a(4, i64), a(4, vt)),
                )
            )
            cases.append(
                (
                    "sigmoid_csr",
                    C_scoring._sigmoid_csr.py_func,
                    (ip, ix, dv, a(4, f64), 0.5, a(4, vt), 8),
                )
            )
            for hess in (False, True):  # the loss/grad pass and the Hessian-vector pass
                cases.append(
                    (
                        f"terms_csr hess={hess}",
                        C_scoring._terms_csr.py_func,
                        (
                            ip,
                            ix,
                            dv,
                            a(4, f64),
                            a(4, f64),
                            0.5,
                            a(4, f64),
                            a(4, f64),
                            a(4, f64),
                            8,
                            hess,
                        ),
                    )
                )
            cases.append(
                (
                    "xt_csr_column_max",
                    C_scoring._xt_csr_column_max.py_func,
                    (ip, ix, dv, a(4, f64), a(4, f64)),
                )
            )
            cases.append(
                (
                    "xt_csr_exact_sums",
                    C_scoring._xt_csr_exact_sums.py_func,
                    (ip, ix, dv, a(4, f64), a(4, f64), 3, a(4, f64), a(4, f64)),
                )
            )
        for order in "CF":
            X = a((3, 4), vt, order)
            lanes = (8,) if order == "C" else ()
            cases.append(
                (
                    f"sigmoid_dense_{order}",
                    (
                        C_scoring._sigmoid_dense_c if order == "C" else C_scoring._sigmoid_dense_f
                    ).py_func,
                    (X, a(4, f64), 0.5, a(3, vt)) + lanes,
                )
            )
            for hess in (False, True):
                cases.append(
                    (
                        f"terms_dense_{order} hess={hess}",
                        (
                            C_scoring._terms_dense_c if order == "C" else C_scoring._terms_dense_f
                        ).py_func,
                        (X, a(3, f64), a(4, f64), 0.5, a(3, f64), a(3, f64), a(3, f64))
                        + lanes
                        + (hess,),
                    )
                )
            cases.append(
                (
                    f"xt_partials_{order}",
                    (
                        C_scoring._xt_partials_c if order == "C" else C_scoring._xt_partials_f
                    ).py_func,
                    (X, a(3, f64), 256, a((2, 4), f64)),
                )
            )
        for B, wpb, items, pipe in ((512, 8, 8, True), (1024, 4, 16, False)):
            for it in (i32, i64):
                cases.append(
                    (
                        f"warp topk {vt.__name__} {it.__name__} B{B} pipelined={pipe}",
                        C_topk._warp_topk_kernel(B, wpb, items, pipe, None, vt).py_func,
                        (a((3, 4), vt), 5, a(4, it), a(1, it), a((3, 5), i64), a((3, 5), vt)),
                    )
                )
        cases.append(
            (
                "strided warp topk",
                C_topk._warp_topk_kernel(512, 8, 8, True, 64, vt).py_func,
                (a((3, 8), vt)[:, ::2], 5, a(4, i64), a(1, i64), a((3, 5), i64), a((3, 5), vt)),
            )
        )
        cases.append(
            (
                "strided topk",
                C_topk._topk_kernel(2048, True, vt).py_func,
                (
                    a((3, 8), vt)[:, ::2],
                    5,
                    a(4, i64),
                    a(1, i64),
                    a((1, 1), vt),
                    a((1, 1), i32),
                    a((3, 5), i64),
                    a((3, 5), vt),
                ),
            )
        )
        for B, shared, it, strided in ((64, True, i64, False), (256, False, i32, True)):
            Q = a((3, 8), vt)[:, ::2] if strided else a((3, 4), vt)
            cases.append(
                (
                    f"dot_topk {vt.__name__} B{B} shared={shared} strided={strided}",
                    C_embedding._dot_topk_kernel(B, shared, None, vt).py_func,
                    (
                        Q,
                        a((5, 4), vt, "F" if strided else "C"),
                        2,
                        a(5, vt),
                        True,
                        a(5, i64),
                        True,
                        5,
                        a(4, it),
                        a(1, it),
                        a((12, B), vt),
                        a((12, B), i32),
                        a((3, 2), i64),
                        a((3, 2), vt),
                    ),
                )
            )
    cases.append(("chunk_sums", C_scoring._chunk_sums.py_func, (a(4, f64), 256, a(2, f64))))
    cases.append(("add_levels", C_scoring._add_levels.py_func, (a(4, f64), a(4, f64), a(4, f64))))
    cases.append(
        ("finish_grad", C_scoring._finish_grad.py_func, (a(4, f64), a(4, f64), 2.0, 0.5, a(4, f64)))
    )
    for dt in (f32, f64, i64, np.bool_):
        cases.append(
            (f"summary_1d {dt.__name__}", C_device._summary_1d.py_func, (a(4, dt), a(5, f64)))
        )
        cases.append(
            (f"summary_2d {dt.__name__}", C_device._summary_2d.py_func, (a((2, 3), dt), a(5, f64)))
        )
        cases.append(
            (
                f"summary_2d strided {dt.__name__}",
                C_device._summary_2d.py_func,
                (a((2, 6), dt)[:, ::2], a(5, f64)),
            )
        )
    cases.append(("cast i64", C_device._cast_kernel.py_func, (a(4, i64), a(4, f64))))
    for pt in (i32, i64):  # device CSR checks: indptr, indices and data types as given
        for it in (i32, i64):
            cases.append(
                (f"row_lengths {pt.__name__}", C_topk._row_lengths.py_func, (a(5, pt), a(4, i64)))
            )
            cases.append(
                (
                    f"csr_row_order_counts {pt.__name__} {it.__name__}",
                    C_checks._csr_row_order_counts.py_func,
                    (a(5, pt), a(4, it), a(8, i64)),
                )
            )
            for dt in (f32, f64, it):  # `it`: a mask's pattern check passes indices as data
                cases.append(
                    (
                        f"csr_entry_counts {pt.__name__} {it.__name__} {dt.__name__}",
                        C_checks._csr_entry_counts.py_func,
                        (a(5, pt), a(4, it), a(4, dt), 3, True, a(8, i64)),
                    )
                )
    cases.append(("sum_chunks", C_scoring._sum_chunks.py_func, (a((2, 4), f64), a(4, f64))))
    cases.append(("fill_zero i32", C_device._fill_zero.py_func, (a(4, i32),)))
    cases.append(("fill_zero f64", C_device._fill_zero.py_func, (a(4, f64),)))
    cases.append(("cast", C_device._cast_kernel.py_func, (a(4, f32), a(4, f64))))
    bad = 0
    for name, fn, args in cases:
        t = time.time()
        try:
            cuda.compile_ptx(fn, tuple(typeof(x) for x in args), cc=(9, 0))
            print(f"ok   {name} ({time.time() - t:.1f}s)", flush=True)
        except Exception as exc:
            bad += 1
            print(f"FAIL {name}: {type(exc).__name__}: {str(exc)[:2000]}", flush=True)
    return bad


def test_every_cuda_kernel_compiles_for_sm90():
    if not _nvvm_available():
        pytest.skip("NVVM not installed (pip install 'numba-cuda[cu13]' to run this check)")
    code = "import sys, test_cuda_compile as t; sys.exit(1 if t.compile_all() else 0)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(),
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
